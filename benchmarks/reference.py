"""The per-patch Python-loop reference for the patch score, written the obvious way.

This is what the authors' code does and what :func:`smir_lib.losses.patch_loss_map` must agree
with: for every image and every patch, crop the patch from the reconstruction and the original,
compute ``mean |y_hat_p - y_p| + (1 - SSIM(y_hat_p, y_p))`` with ``pytorch_msssim.ssim`` on the
crop alone (3x3 Gaussian window, sigma 1.5), and read the number back with ``.item()``.

The ``.item()`` per patch is deliberate: it is the device synchronisation the authors pay on a
GPU for every one of the 441 patches of every reconstruction. It serves two purposes:

* ``tests/test_losses.py`` checks the vectorised map against it (same numbers to 1e-5);
* ``benchmarks/scoring.py`` times it against the vectorised map (the "at least 100x" target).

It is slow on purpose and must stay obviously correct: no cleverness here.
"""

from __future__ import annotations

import warnings

import torch
from pytorch_msssim import ssim

from smir_lib.patches import PatchGrid

__all__ = ["patch_loss_map_loop"]


def patch_loss_map_loop(pred: torch.Tensor, target: torch.Tensor, grid: PatchGrid, *,
                        win_size: int = 3, data_range: float = 1.0, win_sigma: float = 1.5,
                        sync: bool = True) -> torch.Tensor:
    """Per-patch score ``L1 + (1 - SSIM)`` of ``pred`` against ``target``, one patch at a time.

    ``pred`` and ``target`` are ``(B, C, H, W)`` on the grid's ``H x W``, in any float dtype (the
    arithmetic stays in it, so float64 inputs give a tight reference). Returns ``(B, gh, gw)``
    float64 on the CPU. With ``sync=True`` (the authors' behaviour) every patch score is read
    back with ``.item()``, one host-device synchronisation per patch on a GPU; with ``False`` the
    scores stay on the device until the end. The loop runs on one CPU thread (hundreds of tiny
    calls: more threads only add overhead), the caller's thread count is restored afterwards.
    pytorch-msssim's warning for crops shorter than the window is silenced (it then skips the
    filter along that side, and so does the vectorised map).
    """
    if tuple(pred.shape[-2:]) != (grid.height, grid.width) or pred.shape != target.shape:
        raise ValueError(f"pred is {tuple(pred.shape)}, target {tuple(target.shape)}, the grid "
                         f"is for {grid.height}x{grid.width}: pass (B, C, H, W) pairs on its size")
    scores = torch.zeros(pred.shape[0], grid.gh, grid.gw, dtype=torch.float64)  # (B, gh, gw)
    device_scores = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for b in range(pred.shape[0]):
                for i in range(grid.gh):
                    for j in range(grid.gw):
                        rows, cols = grid.patch_slices(i, j)
                        p = pred[b:b + 1, :, rows, cols]  # (1, C, h, w): the patch alone
                        t = target[b:b + 1, :, rows, cols]
                        similarity = ssim(p, t, data_range=data_range, win_size=win_size,
                                          win_sigma=win_sigma, size_average=True)
                        score = (p - t).abs().mean() + (1.0 - similarity)
                        if sync:
                            scores[b, i, j] = score.item()  # a device sync per patch, as the authors
                        else:
                            device_scores.append(score)
    finally:
        torch.set_num_threads(threads)
    if not sync:
        scores = torch.stack(device_scores).view(pred.shape[0], grid.gh, grid.gw).double().cpu()
    return scores
