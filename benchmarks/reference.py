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

import torch
from pytorch_msssim import ssim

from smir_lib.patches import PatchGrid

__all__ = ["patch_loss_map_loop"]


def patch_loss_map_loop(pred: torch.Tensor, target: torch.Tensor, grid: PatchGrid, *,
                        win_size: int = 3, data_range: float = 1.0, win_sigma: float = 1.5,
                        sync: bool = True) -> torch.Tensor:
    """Per-patch score ``L1 + (1 - SSIM)`` of ``pred`` against ``target``, one patch at a time.

    ``pred`` and ``target`` are ``(B, C, H, W)`` on the grid's ``H x W``. Returns ``(B, gh, gw)``
    float32 on the CPU. With ``sync=True`` (the authors' behaviour) every patch score is read
    back with ``.item()``, one host-device synchronisation per patch on a GPU; with ``False`` the
    scores stay on the device until the end (still one small kernel launch series per patch).
    """
    if tuple(pred.shape[-2:]) != (grid.height, grid.width) or pred.shape != target.shape:
        raise ValueError(f"pred is {tuple(pred.shape)}, target {tuple(target.shape)}, the grid "
                         f"is for {grid.height}x{grid.width}: pass (B, C, H, W) pairs on its size")
    pred, target = pred.float(), target.float()
    scores = torch.empty(pred.shape[0], grid.gh, grid.gw)  # (B, gh, gw) on the CPU
    device_scores = []
    for b in range(pred.shape[0]):
        for i in range(grid.gh):
            for j in range(grid.gw):
                rows, cols = grid.patch_slices(i, j)
                p = pred[b:b + 1, :, rows, cols]  # (1, C, h, w): the patch alone
                t = target[b:b + 1, :, rows, cols]
                l1 = (p - t).abs().mean()
                similarity = ssim(p, t, data_range=data_range, win_size=win_size,
                                  win_sigma=win_sigma, size_average=True)
                score = l1 + (1.0 - similarity)
                if sync:
                    scores[b, i, j] = score.item()  # one device sync per patch, like the authors
                else:
                    device_scores.append(score)
    if not sync:
        scores = torch.stack(device_scores).view(pred.shape[0], grid.gh, grid.gw).float().cpu()
    return scores
