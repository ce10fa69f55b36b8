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


def find_checkpoint(folder: Path) -> Path | None:
    """The best checkpoint the engine left in ``folder`` (``best.pt`` first), or None."""
    folder = Path(folder)
    for name in ("best.pt", "final.pt", "last.pt", "checkpoint.pt"):
        if (folder / name).is_file():
            return folder / name
    found = sorted(folder.glob("**/*.pt"))
    return found[-1] if found else None


def _model_preset(ctx) -> str:
    try:
        cfg = ctx.config()
    except ImportError:
        return "tiny" if ctx.profile == "fast" else "resnet34"
    for path in (("model", "preset"), ("model",), ("preset",)):
        value = cfg
        for key in path:
            value = value.get(key) if isinstance(value, dict) else getattr(value, key, None)
        if isinstance(value, str):
            return value
    return "tiny" if ctx.profile == "fast" else "resnet34"


def reconstruction_model(ctx, kind: str = "random"):
    """The reconstruction model pretrained with ``kind`` masking, and a sentence saying where it came from.

    "Found a trained model, loading it": when ``RUN_DIR/pretrain_<kind>/`` holds a checkpoint
    (written by notebook 02 or 05) it is loaded; otherwise the engine trains one now with the
    notebook's profile (``smir_lib.pretrain.pretrain_random`` / ``pretrain_selective``).
    Returns ``(model in eval mode, message)``.
    """
    from smir_lib.models import build_unet, load_pretrained

    folder = Path(ctx.run_dir) / f"pretrain_{kind}"
    ckpt = find_checkpoint(folder)
    if ckpt is None:
        from smir_lib import pretrain

        train = {"random": pretrain.pretrain_random, "selective": pretrain.pretrain_selective}[kind]
        train(ctx.config(), folder)
        ckpt = find_checkpoint(folder)
        message = f"No {kind}-mask model in {folder}: trained one now ({ctx.profile} profile), saved to {ckpt}"
    else:
        message = f"Found a trained model, loading it: {ckpt}"
    model = build_unet(_model_preset(ctx), out_channels=3)
    load_pretrained(model, ckpt, reinit_head=False)
    return model.eval(), message
