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
inference mode, with automatic mixed precision on CUDA), and every score map of a chunk comes
from one vectorised ``patch_loss_map`` call.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from .losses import patch_loss_map
from .patches import PatchGrid, mask_images, n_hidden, random_patch_mask

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


def _autocast(device: torch.device, amp: bool | None):
    """Mixed precision for inference: on by default on CUDA (bfloat16 where supported)."""
    if amp is None:
        amp = device.type == "cuda"
    if not amp:
        return contextlib.nullcontext()
    dtype = torch.float16
    if device.type != "cuda" or torch.cuda.is_bf16_supported():
        dtype = torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def score_patches(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, grid: PatchGrid,
                  *, chunk_size: int | None = None, fill: float = 0.0, amp: bool | None = None,
                  data_range: float = 1.0, win_size: int = 3) -> torch.Tensor:
    """Reconstruct masked copies of ``images`` and score their patches against the originals.

    ``images`` is ``(B, 3, H, W)`` (normalised) and ``masks`` is ``(B, K, gh, gw)``: copy
    ``(b, k)`` is image ``b`` with mask ``k`` applied. The ``B * K`` copies run through ``model``
    ``chunk_size`` at a time (default: all at once). If a chunk runs out of CUDA memory the chunk
    is halved and retried, and later chunks keep the smaller size. Call it in inference mode
    with the model in eval mode (``selective_mask`` does).
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
            with _autocast(images.device, amp):
                recon = model(mask_images(originals, flat_masks[start:stop], grid, fill))
            scores[start:stop] = patch_loss_map(recon, originals, grid, win_size=win_size,
                                                data_range=data_range)
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
                   chunk_size: int | None = None, fill: float = 0.0, amp: bool | None = None,
                   data_range: float = 1.0, random_ratio: float | None = None,
                   win_size: int = 3, return_all: bool = False) -> SelectiveMasks:
    """Selective masks for a batch of normalised images ``(B, 3, H, W)`` on ``grid``.

    ``k`` random masks of ``random_ratio`` (default: ``ratio``) per image, drawn from
    ``generator``; their reconstructions are scored against the original images; the score maps
    are averaged over ``k``; the top ``floor(ratio * n_patches)`` patches are hidden (ties: lower
    flat index first). The model runs in eval and inference mode, with mixed precision on CUDA
    unless ``amp=False``, and its train/eval state is restored afterwards. ``chunk_size`` limits
    how many of the ``B * K`` copies go through the model at once (see ``score_patches``).

    Returns ``SelectiveMasks`` with the masks, the averaged scores and the random masks used
    (and every copy's score map when ``return_all``).
    """
    if images.ndim != 4 or tuple(images.shape[-2:]) != (grid.height, grid.width):
        raise ValueError(f"images are {tuple(images.shape)}; expected (B, 3, {grid.height}, "
                         f"{grid.width}) to match the grid: build the grid from the image size")
    if k < 1:
        raise ValueError(f"k is {k}; expected at least 1 random mask per image (the paper uses 5)")
    n_img = images.shape[0]
    draw_ratio = ratio if random_ratio is None else random_ratio
    random_masks = random_patch_mask(n_img * k, grid, draw_ratio, generator=generator,
                                     device=images.device)
    random_masks = random_masks.view(n_img, k, *grid.shape)  # (B, K, gh, gw)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            k_scores = score_patches(model, images, random_masks, grid, chunk_size=chunk_size,
                                     fill=fill, amp=amp, data_range=data_range, win_size=win_size)
            scores = k_scores.mean(dim=1)  # (B, gh, gw)
            mask = top_patch_mask(scores, n_hidden(grid, ratio))
    finally:
        model.train(was_training)
    # Clone outside inference mode so that callers may use the results in autograd code.
    return SelectiveMasks(mask=mask.clone(), scores=scores.clone(), random_masks=random_masks,
                          k_scores=k_scores.clone() if return_all else None)
