"""References written the obvious way: the per-patch loop patch score, the whole-image augmentation.

**The patch score.**

This is what the authors' code does and what :func:`smir_lib.losses.patch_loss_map` must agree
with: for every image and every patch, crop the patch from the reconstruction and the original,
compute ``mean |y_hat_p - y_p| + (1 - SSIM(y_hat_p, y_p))`` with ``pytorch_msssim.ssim`` on the
crop alone (3x3 Gaussian window, sigma 1.5), and read the number back with ``.item()``.

The ``.item()`` per patch is deliberate: it is the device synchronisation the authors pay on a
GPU for every one of the 441 patches of every reconstruction. It serves two purposes:

* ``tests/test_losses.py`` checks the vectorised map against it (same numbers to 1e-5);
* ``benchmarks/scoring.py`` times it against the vectorised map (the "at least 100x" target).

It is slow on purpose and must stay obviously correct: no cleverness here.

**The augmentation.** :func:`augment_whole_image` is what
:class:`smir_lib.data.transforms.TrainAugment` computed before it cropped the box first:
kornia's ``AugmentationSequential`` of its crop and flip on the whole float image, then its jitter.
``tests/test_data_transforms.py`` checks that the two agree bit for bit, and
``benchmarks/data_pipeline.py`` times them against each other.
"""

from __future__ import annotations

import warnings

import torch
from pytorch_msssim import ssim

from smir_lib.patches import PatchGrid

__all__ = ["patch_loss_map_loop", "augment_whole_image"]


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


def augment_whole_image(aug, image: torch.Tensor, *extras: torch.Tensor,
                        generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """``aug(image, *extras, generator=generator)`` (a ``TrainAugment``) the straightforward way.

    Fresh kornia modules with ``aug``'s settings, in an ``AugmentationSequential`` over the whole
    image (``uint8`` turned into floats first, as the cache's copy did), the extras as float64
    masks (resampled without kornia's integer handling) and cast back, then the jitter; all under
    the seed ``aug`` draws from ``generator``.
    """
    import kornia.augmentation as K

    from smir_lib.data.transforms import TrainAugment
    from smir_lib.runtime import forked_rng

    fresh = TrainAugment(aug.size, aug.scale, aug.ratio, aug.hflip, aug.jitter, aug.jitter_p, aug.jitter_target)
    crop, flip, jitter = fresh.modules()
    geometry = K.AugmentationSequential(crop, flip, data_keys=["input"] + ["mask"] * len(extras))
    batched = image.dim() == 4
    img = (image.float() / 255 if image.dtype == torch.uint8 else image.clone()).reshape(-1, *image.shape[-3:])
    masks = [e.reshape(-1, 1, *e.shape[-2:]).double() for e in extras]
    with forked_rng(int(torch.randint(0, 2**62, (1,), generator=generator))):
        out = geometry(img, *masks) if extras else [geometry(img)]
        out = list(out) if isinstance(out, (list, tuple)) else [out]
        geo = out[0]
        jittered = jitter(geo.clone()).clamp_(0.0, 1.0) if jitter is not None else geo
    unbatch = (lambda t: t) if batched else (lambda t: t[0])
    result = [unbatch(jittered)] + ([] if aug.jitter_target else [unbatch(geo)])
    return tuple(result + [unbatch(m[:, 0]).to(e.dtype) for m, e in zip(out[1:], extras)])
