"""What trained models do, display-ready: the data behind the paper's figures and the browsers.

Each function runs a trained model on a few images in batched forward passes (inference mode,
eval mode restored afterwards) and returns ``[0, 1]`` images and maps for ``smir_lib.notebook.plots``:

* :func:`selection_views`: one image through the whole selection (paper Fig. 2): the K masked
  copies ``selective_mask`` scores, their reconstructions and loss maps, the averaged score,
  the top half and the selectively masked image; the masks are the ones ``selective_mask`` drew.
* :func:`stored_mask_views`: the images of a finished selective step under the masks the step
  trained with, and the final model's reconstructions of them (paper Fig. 4).
* :func:`predict_labels`: predicted class maps of a segmentation model (notebook 06).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from smir_lib.data.transforms import denormalize, normalize, resize_short_side
from smir_lib.data.views import item_image
from smir_lib.engine.config import load_config
from smir_lib.engine.inference import segment_logits
from smir_lib.engine.pretrain import load_pretrain_result
from smir_lib.engine.pretrain_data import load_masks, load_split
from smir_lib.metrics import class_map
from smir_lib.notebook.measure import reconstruct
from smir_lib.patches import mask_images, patch_grid
from smir_lib.selective import selective_mask

__all__ = ["selection_views", "stored_mask_views", "predict_labels"]


def selection_views(model: nn.Module, image: torch.Tensor, grid, *, k: int = 5, ratio: float = 0.5,
                    generator: torch.Generator | None = None) -> dict:
    """Paper Fig. 2 for one normalised ``image`` ``(3, H, W)``: the selection step by step.

    Returns display images ``image`` (3, H, W), ``masked`` and ``reconstructions`` (K, 3, H, W),
    ``selective_masked`` (3, H, W); maps ``maps`` (K, gh, gw) and ``mean_map`` (gh, gw); masks
    ``random_masks`` (K, gh, gw) and ``selected`` (gh, gw) bool, the mask ``selective_mask``
    returned (the top ``floor(ratio * n)`` of ``mean_map``).
    """

    x = image[None]  # (1, 3, H, W)
    sel = selective_mask(model, x, grid, k=k, ratio=ratio, generator=generator, return_all=True)
    random_masks = sel.random_masks[0]  # (K, gh, gw): the copies the scores came from
    masked = mask_images(x.expand(len(random_masks), -1, -1, -1), random_masks, grid)  # (K, 3, H, W)
    return {"image": denormalize(image), "masked": denormalize(masked),
            "reconstructions": denormalize(reconstruct(model, masked)), "maps": sel.k_scores[0],
            "mean_map": sel.scores[0], "random_masks": random_masks, "selected": sel.mask[0],
            "selective_masked": denormalize(mask_images(x, sel.mask, grid))[0]}


def stored_mask_views(run_dir: str | Path, model: nn.Module, step: int | None = None,
                      n_images: int = 3, first: int = 0) -> dict:
    """Paper Fig. 4 from a finished selective run: images under the masks a step trained with.

    ``step`` (default: the last) of the run in ``run_dir``; images ``first .. first + n_images``
    of that step's stored masks. Each pool image is resized to short side ``image_size`` (where
    its mask was scored), masked with its stored grid mask and reconstructed by ``model``.
    Returns lists of display images ``masked``, ``reconstructed``, ``original`` and
    ``pool_indices``, ``step`` and ``n_stored`` (how many images the step masked).
    """

    result = load_pretrain_result(run_dir)
    cfg = load_config(Path(run_dir) / "config.json")  # the run's own configuration
    selective = [s for s in result.steps if s.get("masks")]
    if not selective:
        raise ValueError(f"{run_dir} holds no selective step with stored masks: expected a finished "
                         "`pretrain_selective` run (notebook 05)")
    chosen = selective[-1] if step is None else next((s for s in selective if s["step"] == step), None)
    if chosen is None:
        raise ValueError(f"step {step} of {run_dir} stored no masks; steps with masks: "
                         f"{[s['step'] for s in selective]}")
    stored = load_masks(chosen["masks"])
    pool = load_split(cfg.replace(cache_images=False), "pool")
    out = {"masked": [], "reconstructed": [], "original": [], "pool_indices": [],
           "step": chosen["step"], "n_stored": len(stored["indices"])}
    for n in range(first, min(first + n_images, len(stored["indices"]))):  # one image each: sizes may differ
        index = int(stored["indices"][n])
        image = normalize(resize_short_side(item_image(pool[index]), cfg.image_size))[None]  # (1, 3, h, w)
        masked = mask_images(image, stored["grids"][n][None], patch_grid(*image.shape[-2:], cfg.n_patches))
        out["masked"].append(denormalize(masked)[0])
        out["reconstructed"].append(denormalize(reconstruct(model, masked))[0])
        out["original"].append(denormalize(image)[0])
        out["pool_indices"].append(index)
    return out


def predict_labels(model: nn.Module, images: torch.Tensor, cfg) -> torch.Tensor:
    """Predicted class maps ``(B, H, W)`` of a segmentation model for ``[0, 1]`` images ``(B, 3, H, W)``.

    The evaluation's own path (``smir_lib.engine.inference.segment_logits`` under ``cfg.eval_mode``), in
    eval mode; the model's train/eval state is restored afterwards.
    """

    was_training = model.training
    try:
        return class_map(segment_logits(model.eval(), images, cfg, images.device))  # (B, H, W)
    finally:
        model.train(was_training)
