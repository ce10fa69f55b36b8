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

Masking strategies (issue 28): ``selective`` above is the paper's and the default
(``Config.mask_strategy``). The others are named options of the same selective steps, for the
question *why* selection helps or not. Every one hides exactly ``floor(ratio * n_patches)``
patches of the same grid.

======================  ===========================================================  ======
strategy                which patches are hidden                                     passes
======================  ===========================================================  ======
``random``              the first of the image's K random masks (MAE-style; fixed    0
                        for the step, unlike the random-masking baseline's masks)
``selective``           top half of the score averaged over K random masks (paper)   K
``selective_unmasked``  top half of the score of the *unmasked* image                1
``easiest``             bottom half of the ``selective`` score (control: is it       K
                        difficulty that helps?)
``block``               BEiT's blockwise masks (Bao et al., ICLR 2022): rectangles   0
                        of >= 16 patches, aspect 0.3..3.3, until the count is hit
``hard_ramp``           a share of top-scored patches rising 0 -> 1 over the steps,  K
                        the rest random (easy to hard: HPM, Wang et al. CVPR 2023;
                        AnatoMask, Li et al. ECCV 2024)
``objects_oracle``      the patches with the most labelled foreground (needs labels  0
                        of the pool's images; a control, never a default)
======================  ===========================================================  ======

``passes``: model forward passes per image to choose the mask.

:func:`strategy_scores` runs the model (when the strategy needs it) and :func:`strategy_mask`
chooses from the scores; :func:`choose_masks` does both for a batch with one generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from smir_lib.losses import patch_loss_map
from smir_lib.patches import PatchGrid, mask_images, n_hidden, random_patch_mask
from smir_lib.runtime import autocast

__all__ = ["SelectiveMasks", "top_patch_mask", "score_patches", "selective_mask", "STRATEGIES",
           "forward_passes", "ramp_share", "block_mask", "ramp_mask", "foreground_share", "oracle_mask",
           "strategy_scores", "strategy_mask", "choose_masks"]


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


# ----- masking strategies (issue 28) -------------------------------------------------------------

STRATEGIES = ("random", "selective", "selective_unmasked", "easiest", "block", "hard_ramp", "objects_oracle")
"""Every ``Config.mask_strategy`` value; ``selective`` (the paper) is the default."""

_SCORED = ("selective", "easiest", "hard_ramp")  # rank by the score averaged over K random masks


def forward_passes(strategy: str, k: int) -> int:
    """Model forward passes per image to choose a ``strategy`` mask with ``k`` random masks."""
    _check_strategy(strategy)
    return k if strategy in _SCORED else 1 if strategy == "selective_unmasked" else 0


def ramp_share(step: int, partitions: int) -> float:
    """``hard_ramp``'s share of top-scored patches at selective step ``step`` (1..partitions-1).

    Rises linearly from 0 at step 1 (all random) to 1 at the last step (all selective), as HPM's
    and AnatoMask's easy-to-hard schedules rise over training.

    >>> [round(ramp_share(s, 10), 3) for s in (1, 5, 9)]
    [0.0, 0.5, 1.0]
    """
    if not 1 <= step < partitions:
        raise ValueError(f"step is {step}; selective steps are 1..{partitions - 1} of {partitions} partitions")
    return 1.0 if partitions <= 2 else (step - 1) / (partitions - 2)


def block_mask(batch: int, grid: PatchGrid, ratio: float = 0.5, *, generator: torch.Generator | None = None,
               min_patches: int = 16, min_aspect: float = 0.3) -> torch.Tensor:
    """BEiT's blockwise masks (Bao et al., "BEiT", ICLR 2022, ``masking_generator.py``) on ``grid``.

    Per image, rectangles are added until ``n_hidden(grid, ratio)`` patches are hidden: a block's
    area is uniform in ``[min_patches, patches still to hide]``, its aspect ratio log-uniform in
    ``[min_aspect, 1 / min_aspect]``, its position uniform; a block is kept when it hides at least
    one new patch and no more than are still to hide (10 tries, as BEiT). Where BEiT stops short
    when no block fits, the blocks' lower bound falls to what is left and, after 10 failed tries,
    one random visible patch is hidden: every mask hides exactly the count (BEiT's may hide fewer).
    Input-independent: no model. A sequential draw per image, like BEiT's. Returns ``(batch, gh, gw)`` bool.
    """
    count, (gh, gw) = n_hidden(grid, ratio), grid.shape
    log_aspect = (math.log(min_aspect), -math.log(min_aspect))
    masks = torch.zeros(batch, gh, gw, dtype=torch.bool)

    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * torch.rand(1, generator=generator).item()

    def integer(hi: int) -> int:  # uniform in 0..hi
        return int(torch.randint(hi + 1, (1,), generator=generator))

    for mask in masks:  # (gh, gw), filled in place
        while (left := count - int(mask.sum())) > 0:
            for _ in range(10):
                area = uniform(min(min_patches, left), left)
                aspect = math.exp(uniform(*log_aspect))
                h, w = max(1, round(math.sqrt(area * aspect))), max(1, round(math.sqrt(area / aspect)))
                if h >= gh or w >= gw:  # BEiT keeps blocks strictly inside the grid
                    continue
                top, lft = integer(gh - h), integer(gw - w)
                new = h * w - int(mask[top:top + h, lft:lft + w].sum())
                if 0 < new <= left:
                    mask[top:top + h, lft:lft + w] = True
                    break
            else:  # no block fitted: one random visible patch
                visible = (~mask).flatten().nonzero().squeeze(1)
                mask.view(-1)[visible[integer(len(visible) - 1)]] = True
    return masks


def ramp_mask(scores: torch.Tensor, count: int, share: float, *,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Hide the ``round(share * count)`` top-scored patches of each map ``(B, gh, gw)`` and
    ``count`` minus that many random others (``hard_ramp``). Returns ``(B, gh, gw)`` bool."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share is {share}; expected a fraction of the hidden patches in [0, 1]")
    n_top = round(share * count)
    top = top_patch_mask(scores, n_top)  # (B, gh, gw)
    keys = torch.rand(scores.shape, generator=generator, device=generator.device if generator else None)
    keys = keys.to(scores.device).masked_fill(top, float("inf"))  # the top patches are never drawn again
    return top | top_patch_mask(-keys, count - n_top)  # the smallest keys: a uniform draw of the rest


def foreground_share(labels: torch.Tensor, grid: PatchGrid, background: int = 0,
                     ignore_index: int = 255) -> torch.Tensor:
    """Share of each patch's pixels labelled foreground (neither ``background`` nor ignored).

    ``labels`` is ``(B, H, W)`` class indices on the grid's image. Returns ``(B, gh, gw)`` float.
    """
    if tuple(labels.shape[-2:]) != (grid.height, grid.width):
        raise ValueError(f"labels are {tuple(labels.shape)}; expected (B, {grid.height}, {grid.width}) on the grid's image")
    fg = ((labels != background) & (labels != ignore_index)).float()  # (B, H, W)
    rows, cols = grid.pixel_rows(labels.device), grid.pixel_cols(labels.device)
    per_row = torch.zeros(fg.shape[0], grid.gh, grid.width, device=fg.device).index_add_(1, rows, fg)  # (B, gh, W)
    sums = torch.zeros(fg.shape[0], grid.gh, grid.gw, device=fg.device).index_add_(2, cols, per_row)  # (B, gh, gw)
    area = torch.tensor(grid.row_heights).outer(torch.tensor(grid.col_widths)).to(fg.device)  # (gh, gw) px
    return sums / area


def oracle_mask(foreground: torch.Tensor, count: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Hide the ``count`` patches with the largest ``foreground`` share ``(B, gh, gw)``; ties
    (say, the many patches of bare soil) in a random order drawn from ``generator``."""
    flat = foreground.flatten(1)  # (B, N)
    if not 0 <= count <= flat.shape[1]:
        raise ValueError(f"count is {count}; expected 0..{flat.shape[1]} (the patch count)")
    shuffled = torch.rand(flat.shape, generator=generator).argsort(dim=1).to(flat.device)  # (B, N) random order
    ranked = torch.sort(flat.gather(1, shuffled), dim=1, descending=True, stable=True).indices
    order = shuffled.gather(1, ranked)  # by share, ties in the random order
    mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, order[:, :count], True)
    return mask.view_as(foreground)


def strategy_scores(strategy: str, model: nn.Module, images: torch.Tensor, grid: PatchGrid,
                    random_masks: torch.Tensor, **score_options) -> torch.Tensor | None:
    """The score a ``strategy`` ranks patches by, ``(B, gh, gw)``, or None when it needs no model.

    ``selective``, ``easiest``, ``hard_ramp``: the score averaged over ``random_masks``
    ``(B, K, gh, gw)`` (:func:`selective_mask`); ``selective_unmasked``: the score of the unmasked
    image, one forward pass (:func:`selective_mask` with one all-visible mask). ``score_options``
    go to :func:`selective_mask` (``chunk_size``, ``fill``, ``amp``, ``win_size``).
    """
    _check_strategy(strategy)
    if strategy in _SCORED:
        return selective_mask(model, images, grid, random_masks=random_masks, **score_options).scores
    if strategy == "selective_unmasked":
        visible = torch.zeros(images.shape[0], 1, *grid.shape, dtype=torch.bool)  # (B, 1, gh, gw)
        return selective_mask(model, images, grid, random_masks=visible, **score_options).scores
    return None


def strategy_mask(strategy: str, random_masks: torch.Tensor, scores: torch.Tensor | None, grid: PatchGrid,
                  ratio: float = 0.5, *, generator: torch.Generator | None = None, share: float = 1.0,
                  foreground: torch.Tensor | None = None) -> torch.Tensor:
    """The ``(B, gh, gw)`` masks ``strategy`` hides (see the table in the module docstring).

    ``random_masks`` ``(B, K, gh, gw)``: the images' K random masks (``random`` hides the first);
    ``scores`` from :func:`strategy_scores`; ``generator`` draws what ``block``, ``hard_ramp``
    and ``objects_oracle`` draw; ``share``: ``hard_ramp``'s share of top-scored patches
    (:func:`ramp_share`); ``foreground``: ``objects_oracle``'s :func:`foreground_share`.
    """
    _check_strategy(strategy)
    count = n_hidden(grid, ratio)
    if strategy == "random":
        return random_masks[:, 0]
    if strategy == "block":
        return block_mask(random_masks.shape[0], grid, ratio, generator=generator).to(random_masks.device)
    if strategy == "objects_oracle":
        if foreground is None:
            raise ValueError("mask_strategy objects_oracle needs the pool's labels (foreground_share); "
                             "this pool has none: choose another mask_strategy or a labelled pool")
        return oracle_mask(foreground, count, generator=generator)
    if scores is None:
        raise ValueError(f"mask_strategy {strategy} ranks patches by a score: pass strategy_scores(...)")
    if strategy == "easiest":
        return top_patch_mask(-scores, count)  # the lowest scores; ties: lower flat index first
    if strategy == "hard_ramp":
        return ramp_mask(scores, count, share, generator=generator)
    return top_patch_mask(scores, count)  # selective, selective_unmasked


def choose_masks(strategy: str, model: nn.Module | None, images: torch.Tensor, grid: PatchGrid, *,
                 k: int = 5, ratio: float = 0.5, generator: torch.Generator | None = None,
                 share: float = 1.0, labels: torch.Tensor | None = None, **score_options) -> SelectiveMasks:
    """``strategy``'s masks for a batch of normalised images ``(B, 3, H, W)``, all from one ``generator``.

    The K random masks are drawn first, exactly as :func:`selective_mask` draws them (so
    ``choose_masks("selective", ...)`` equals ``selective_mask(...)`` with the same generator), then
    the scores (:func:`strategy_scores`), then the mask (:func:`strategy_mask`; ``labels``
    ``(B, H, W)`` give ``objects_oracle`` its foreground). ``model`` may be None for
    strategies that need no forward pass. Returns ``SelectiveMasks`` (``scores`` NaN when unscored).
    """
    random_masks = random_patch_mask(images.shape[0] * k, grid, ratio, generator=generator,
                                     device=images.device).view(images.shape[0], k, *grid.shape)
    scores = strategy_scores(strategy, model, images, grid, random_masks, ratio=ratio, **score_options) \
        if forward_passes(strategy, k) else None
    foreground = None if labels is None else foreground_share(labels, grid)
    mask = strategy_mask(strategy, random_masks, scores, grid, ratio, generator=generator, share=share,
                         foreground=foreground)
    if scores is None:
        scores = torch.full(mask.shape, float("nan"), device=mask.device)
    return SelectiveMasks(mask=mask, scores=scores, random_masks=random_masks)


def _check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"mask_strategy is {strategy!r}; expected one of {', '.join(STRATEGIES)}")
