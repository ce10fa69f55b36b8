"""Selective masks: hide the patches that the current model reconstructs worst.

For every image the recipe is (the authors' recipe):

1. draw ``K = 5`` independent random masks hiding 50 % of the patches;
2. reconstruct each masked copy with the model;
3. score every patch of each reconstruction against the *original* image
   (``patch_loss_map``: L1 + (1 - SSIM) per patch);
4. average the ``K`` score maps;
5. hide the ``floor(0.5 * n_patches)`` patches with the highest average score.

A patch scores high when the model cannot infer it from its surroundings, whether it was hidden
in a given copy or not, so averaging over ``K`` random masks makes the score a property of the
patch rather than of one mask.

The authors run this image by image, patch by patch. Here all ``B * K`` masked copies of a batch
go through the model in as few forward passes as memory allows (``chunk_size`` copies each, in
inference mode, under the engine's one mixed-precision policy ``smir_lib.runtime.autocast``), and
every score map of a chunk comes from one vectorised ``patch_loss_map`` call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from smir_lib.losses import patch_loss_map
from smir_lib.patches import PatchGrid, mask_images, n_hidden, random_patch_mask
from smir_lib.runtime import autocast

__all__ = ["SelectiveMasks", "top_patch_mask", "score_patches", "selective_mask"]


@dataclass
class SelectiveMasks:
    """What ``selective_mask`` found for a batch of ``B`` images on a ``gh x gw`` grid."""

    mask: torch.Tensor  # (B, gh, gw) bool: the selected (hidden) patches
    scores: torch.Tensor  # (B, gh, gw) float: patch scores averaged over the K random masks
    random_masks: torch.Tensor | None = None  # (B, K, gh, gw) bool: the K random masks used
    k_scores: torch.Tensor | None = None  # (B, K, gh, gw) float: each mask's scores (return_all)


def top_patch_mask(scores: torch.Tensor, n_hidden: int) -> torch.Tensor:
    """Hide the ``n_hidden`` highest-scoring patches of each map ``(B, gh, gw)``.

    Ties are broken deterministically: among equal scores the patch with the lower flat index
    (row-major) is hidden first, thanks to a *stable* descending sort. Returns ``(B, gh, gw)``
    bool with exactly ``n_hidden`` ``True`` per map.
    """
    flat = scores.flatten(1)  # (B, N)
    if not 0 <= n_hidden <= flat.shape[1]:
        raise ValueError(f"n_hidden is {n_hidden}; expected 0..{flat.shape[1]} (the patch count)")
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices  # (B, N)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask.scatter_(1, order[:, :n_hidden], True)
    return mask.view_as(scores)


def score_patches(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, grid: PatchGrid,
                  *, chunk_size: int | None = None, fill: float = 0.0, amp: str = "auto",
                  win_size: int = 3) -> torch.Tensor:
    """Reconstruct masked copies of ``images`` and score their patches against the originals.

    ``images`` is ``(B, 3, H, W)`` (normalised) and ``masks`` is ``(B, K, gh, gw)``: copy
    ``(b, k)`` is image ``b`` with mask ``k`` applied. The ``B * K`` copies run through ``model``
    ``chunk_size`` at a time (default: all at once). If a chunk runs out of CUDA memory the chunk
    is halved and retried, and later chunks keep the smaller size. The model runs under the
    mixed-precision mode ``amp`` (``smir_lib.runtime.amp_dtype``: ``auto`` is bf16/fp16 on CUDA,
    float32 on the CPU); the scores are computed in float32 whatever the mode. Call it in
    inference mode with the model in eval mode (``selective_mask`` does).
    Returns ``(B, K, gh, gw)`` float32.
    """
    n_img, k = masks.shape[:2]
    flat_masks = masks.reshape(n_img * k, *grid.shape)  # (B*K, gh, gw), copy j is image j // K
    scores = torch.empty(n_img * k, *grid.shape, device=images.device)  # (B*K, gh, gw)
    chunk = chunk_size or n_img * k
    start = 0
    while start < n_img * k:
        stop = min(start + chunk, n_img * k)
        source = torch.arange(start, stop, device=images.device) // k  # image of each copy
        originals = images.index_select(0, source)  # (n, 3, H, W)
        try:
            with autocast(amp, images.device):
                recon = model(mask_images(originals, flat_masks[start:stop], grid, fill))
            scores[start:stop] = patch_loss_map(recon, originals, grid, win_size=win_size)
            out_of_memory = False
        except torch.cuda.OutOfMemoryError:
            if chunk == 1:
                raise
            out_of_memory = True
        if out_of_memory:  # outside the except block, so the failed chunk's tensors are freed
            originals = recon = None
            torch.cuda.empty_cache()
            chunk = max(1, chunk // 2)  # retry this chunk, smaller
            continue
        start = stop
    return scores.view(n_img, k, *grid.shape)


def selective_mask(model: nn.Module, images: torch.Tensor, grid: PatchGrid, *, k: int = 5,
                   ratio: float = 0.5, generator: torch.Generator | None = None,
                   random_masks: torch.Tensor | None = None, chunk_size: int | None = None,
                   fill: float = 0.0, amp: str = "auto", win_size: int = 3,
                   return_all: bool = False) -> SelectiveMasks:
    """Selective masks for a batch of normalised images ``(B, 3, H, W)`` on ``grid``.

    ``k`` random masks hiding ``ratio`` of the patches per image, drawn from ``generator``, or
    the given ``random_masks`` ``(B, K, gh, gw)`` (then ``k`` is their ``K``; the engine draws
    each image's masks from its own seed so that sharded scoring equals one process); their
    reconstructions are scored against the original images; the score maps are averaged over
    ``K``; the top ``floor(ratio * n_patches)`` patches are hidden (ties: lower flat index
    first). The model runs in eval and inference mode under the mixed-precision mode ``amp``
    (see ``score_patches``), and its train/eval state is restored afterwards. ``chunk_size``
    limits how many of the ``B * K`` copies go through the model at once.

    Returns ``SelectiveMasks`` with the masks, the averaged scores and the random masks used
    (and every copy's score map when ``return_all``).
    """
    if images.ndim != 4 or tuple(images.shape[-2:]) != (grid.height, grid.width):
        raise ValueError(f"images are {tuple(images.shape)}; expected (B, 3, {grid.height}, "
                         f"{grid.width}) to match the grid: build the grid from the image size")
    n_img = images.shape[0]
    if random_masks is None:
        if k < 1:
            raise ValueError(f"k is {k}; expected at least 1 random mask per image (the paper uses 5)")
        random_masks = random_patch_mask(n_img * k, grid, ratio, generator=generator,
                                         device=images.device).view(n_img, k, *grid.shape)
    elif random_masks.ndim != 4 or (random_masks.shape[0], *random_masks.shape[2:]) != (n_img, *grid.shape):
        raise ValueError(f"random_masks are {tuple(random_masks.shape)}; expected (B={n_img}, K, "
                         f"{grid.shape[0]}, {grid.shape[1]}): one (K, gh, gw) stack per image")
    random_masks = random_masks.to(images.device)  # (B, K, gh, gw)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            k_scores = score_patches(model, images, random_masks, grid, chunk_size=chunk_size,
                                     fill=fill, amp=amp, win_size=win_size)  # (B, K, gh, gw)
            scores = k_scores.mean(dim=1)  # (B, gh, gw): a property of the patch, not of one mask
            mask = top_patch_mask(scores, n_hidden(grid, ratio))
    finally:
        model.train(was_training)
    # Clone outside inference mode so that callers may use the results in autograd code.
    return SelectiveMasks(mask=mask.clone(), scores=scores.clone(), random_masks=random_masks,
                          k_scores=k_scores.clone() if return_all else None)
