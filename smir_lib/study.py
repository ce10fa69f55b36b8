"""Measurements the notebooks make on labels and masks, and the reproduction study loop.

The paper shows by eye that selective masks hide plants more than random masks do. Here that is
measured: :func:`hidden_class_shares` is the share of hidden pixels that falls on each class,
computed from the labels. :func:`class_pixel_shares` is the same share over all pixels, the value
a mask that ignores image content would match on average.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch


def class_pixel_counts(labels: torch.Tensor, num_classes: int, ignore_index: int = 255,
                       where: torch.Tensor | None = None) -> torch.Tensor:
    """Pixels per class ``(C,)`` over ``labels`` (any shape), optionally only where ``where`` is True.

    The ignore index (and any value outside ``[0, C)``) is not counted.
    """
    lab = labels.reshape(-1)
    keep = (lab >= 0) & (lab < num_classes) & (lab != ignore_index)
    if where is not None:
        if where.shape != labels.shape:
            raise ValueError(f"mask shape {tuple(where.shape)} differs from label shape {tuple(labels.shape)}; "
                             "expand grid masks to pixels first (smir_lib.patches.mask_to_pixels)")
        keep &= where.reshape(-1)
    return torch.bincount(lab[keep], minlength=num_classes)[:num_classes]


def _shares(counts: torch.Tensor) -> torch.Tensor:
    total = counts.sum()
    return counts.double() / total if total > 0 else torch.zeros(counts.shape, dtype=torch.float64)


def class_pixel_shares(labels: torch.Tensor, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """Fraction of labelled pixels in each class ``(C,)``, summing to 1."""
    return _shares(class_pixel_counts(labels, num_classes, ignore_index))


def hidden_class_shares(pixel_masks: torch.Tensor, labels: torch.Tensor, num_classes: int,
                        ignore_index: int = 255) -> torch.Tensor:
    """Fraction of the HIDDEN labelled pixels that lie on each class ``(C,)``.

    ``pixel_masks`` (B, H, W) bool, True = hidden; ``labels`` (B, H, W). Compare with
    :func:`class_pixel_shares`: a class hidden more often than it occurs is over-selected.
    """
    return _shares(class_pixel_counts(labels, num_classes, ignore_index, where=pixel_masks))


def dataset_class_shares(ds, limit: int | None = None) -> torch.Tensor:
    """Per-class pixel shares ``(C,)`` over the first ``limit`` items of a labelled dataset.

    One item at a time (images of a real dataset differ in size), counts summed over items.
    """
    n = len(ds) if limit is None else min(limit, len(ds))
    ignore = getattr(ds, "ignore_index", 255)
    counts = sum(class_pixel_counts(ds[i][1], len(ds.class_names), ignore) for i in range(n))
    return _shares(counts)


def load_batch(ds, indices: Sequence[int], size: int | None = 256):
    """Items ``indices`` of ``ds`` stacked: images (N, 3, S, S) [0, 1] and labels (N, S, S) or None.

    ``size``: short side resized to ``size`` and centre-cropped (the validation transform) so
    images of different sizes stack; ``None`` keeps them as they are (they must then agree).
    """
    from smir_lib.data.transforms import EvalTransform

    transform = EvalTransform(size) if size else None
    images, labels = [], []
    for i in indices:
        item = ds[i]
        image, label = (item, None) if torch.is_tensor(item) else item
        if transform is not None:
            out = transform(image, label) if label is not None else transform(image)
            image, label = (out[0], out[1]) if label is not None else (out[0], None)
        images.append(image)
        labels.append(label)
    return torch.stack(images), (torch.stack(labels) if labels[0] is not None else None)


def load_pretrain_result(folder: Path):
    """The ``PretrainResult`` a finished run left in ``folder`` (its ``result.json``), or None."""
    import json

    from smir_lib.pretrain import PretrainResult

    folder = Path(folder)
    if not (folder / "result.json").is_file() or not (folder / "pretrained.pt").is_file():
        return None
    result = json.loads((folder / "result.json").read_text())
    history = json.loads((folder / "history.json").read_text()) if (folder / "history.json").is_file() else []
    return PretrainResult(result["method"], folder, Path(result["best_checkpoint"]), history, result["steps"])


def pretrained(ctx, kind: str = "random", cfg=None):
    """The ``PretrainResult`` of ``kind`` ("random" or "selective") pretraining in this run folder.

    "Found a trained model, loading it": when ``RUN_DIR/pretrain_<kind>/`` holds a finished run
    (notebook 02 writes the random one, notebook 05 the selective one) it is read back; otherwise
    the engine trains it now (``smir_lib.pretrain.pretrain_random`` / ``pretrain_selective``)
    with ``cfg`` (default: the notebook's profile). Returns ``(result, message)``.
    """
    from smir_lib import pretrain

    folder = Path(ctx.run_dir) / f"pretrain_{kind}"
    result = load_pretrain_result(folder)
    if result is not None:
        return result, f"Found a trained {kind}-mask model, loading it: {result.best_checkpoint}"
    train = {"random": pretrain.pretrain_random, "selective": pretrain.pretrain_selective}[kind]
    result = train(cfg or ctx.config(), folder)
    return result, f"No {kind}-mask model in {folder}: trained one now ({ctx.profile} profile)"


def reconstruction_model(ctx, kind: str = "random", cfg=None):
    """The reconstruction network pretrained with ``kind`` masking, in eval mode, and where it came from.

    See :func:`pretrained`. Returns ``(model, message)``.
    """
    from smir_lib.models import load_pretrained
    from smir_lib.pretrain import build_model

    cfg = cfg or ctx.config()
    result, message = pretrained(ctx, kind, cfg)
    model = build_model(cfg, out_channels=3)
    load_pretrained(model, result.best_checkpoint, reinit_head=False)
    return model.eval(), message


def mae_views(model, images: torch.Tensor, grid, mask: torch.Tensor, *, fill: float = 0.0,
              win_size: int = 11) -> dict:
    """The MAE panel of normalised ``images`` (B, 3, H, W) under grid ``mask`` (B, gh, gw).

    Returns display-ready (denormalised) ``original``, ``masked``, ``reconstruction``, ``pasted``
    (the reconstruction with the visible patches pasted back from the original), the
    ``loss_map`` (B, gh, gw) of the reconstruction, and the whole-image losses
    (``L1 + 1 - MS-SSIM``, window ``win_size``) of the masked input, the reconstruction and the
    pasted image against the original.
    """
    from smir_lib.data.transforms import denormalize
    from smir_lib.losses import patch_loss_map, reconstruction_loss
    from smir_lib.patches import apply_pixel_mask, mask_to_pixels

    pixels = mask_to_pixels(mask, grid)  # (B, H, W) bool, True = hidden
    masked = apply_pixel_mask(images, pixels, fill)
    was_training = model.training
    with torch.inference_mode():
        recon = model.eval()(masked)  # (B, 3, H, W), normalised
    model.train(was_training)
    pasted = torch.where(pixels[:, None], recon, images)  # hidden: model output; visible: original
    losses = {name: reconstruction_loss(v, images, win_size=win_size).item()
              for name, v in (("masked", masked), ("reconstruction", recon), ("pasted", pasted))}
    return {"original": denormalize(images), "masked": denormalize(masked), "reconstruction": denormalize(recon),
            "pasted": denormalize(pasted), "loss_map": patch_loss_map(recon, images, grid), "losses": losses}
