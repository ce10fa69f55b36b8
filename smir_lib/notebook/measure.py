"""Measurements the notebooks and the study make on labels, masks and reconstructions.

The paper shows by eye that selective masks hide plants more than random masks do. Here that is
measured: :func:`hidden_class_shares` is the share of hidden pixels that falls on each class,
computed from the labels. :func:`class_pixel_shares` is the same share over all pixels, the value
a mask that ignores image content would match on average. :func:`stored_mask_shares` reads the
masks a selective run really trained with; :func:`mae_views` is the MAE-style figure's data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from smir_lib.data.transforms import EvalTransform, denormalize, normalize, resize_nearest, short_side_shape
from smir_lib.engine.config import load_config
from smir_lib.engine.pretrain_data import load_masks, load_split
from smir_lib.losses import patch_loss_map, patch_loss_terms, reconstruction_loss
from smir_lib.models import OUTPUT_STRIDE
from smir_lib.patches import apply_pixel_mask, mask_to_pixels, patch_grid, random_patch_mask
from smir_lib.selective import selective_mask

__all__ = ["class_pixel_counts", "class_pixel_shares", "hidden_class_shares", "dataset_class_shares",
           "load_batch", "reconstruct", "mae_views", "reconstruction_quality", "heldback_quality", "score_terms", "object_share_per_image", "class_hidden_fraction",
           "mask_object_shares", "stored_mask_shares"]


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


def class_hidden_fraction(pixel_masks: torch.Tensor, labels: torch.Tensor, num_classes: int,
                          ignore_index: int = 255) -> torch.Tensor:
    """Fraction of each class's labelled pixels that the masks hide ``(C,)`` float64.

    ``pixel_masks`` (B, H, W) bool, True = hidden; ``labels`` (B, H, W). A random 50 % mask hides
    about half of every class; a mask that seeks plants hides most of theirs. NaN for a class
    with no labelled pixel. The other view of the same counts as :func:`hidden_class_shares`
    (which divides by the hidden pixels instead of by the class's pixels).
    """
    hidden = class_pixel_counts(labels, num_classes, ignore_index, where=pixel_masks).double()
    return hidden / class_pixel_counts(labels, num_classes, ignore_index).double()  # 0 / 0 -> NaN


def object_share_per_image(pixel_masks: torch.Tensor, labels: torch.Tensor, background: int,
                           num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """Per image, the share of its HIDDEN labelled pixels that lie on objects (not ``background``).

    ``pixel_masks`` (B, H, W) bool, True = hidden; ``labels`` (B, H, W). Returns ``(B,)`` float64;
    an image with no hidden labelled pixel gets NaN. The spread of these values over images is
    what a single pooled share (:func:`hidden_class_shares`) hides.
    """
    labelled = (labels >= 0) & (labels < num_classes) & (labels != ignore_index)  # (B, H, W)
    hidden = (pixel_masks & labelled).flatten(1).sum(1).double()  # (B,)
    on_objects = (pixel_masks & labelled & (labels != background)).flatten(1).sum(1).double()
    return on_objects / hidden  # 0 / 0 -> NaN: nothing hidden to measure


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


def reconstruct(model, masked: torch.Tensor) -> torch.Tensor:
    """The model's reconstruction ``(B, 3, H, W)`` (normalised, float32) of normalised ``masked``
    images, in eval and inference mode; the model's train/eval state is restored afterwards."""
    was_training = model.training
    try:
        with torch.inference_mode():
            return model.eval()(masked).float()
    finally:
        model.train(was_training)


def mae_views(model, images: torch.Tensor, grid, mask: torch.Tensor, *, fill: float = 0.0,
              win_size: int = 11) -> dict:
    """The MAE panel of normalised ``images`` (B, 3, H, W) under grid ``mask`` (B, gh, gw).

    Returns display-ready (denormalised) ``original``, ``masked``, ``reconstruction``, ``pasted``
    (the reconstruction with the visible patches pasted back from the original), the
    ``loss_map`` (B, gh, gw) of the reconstruction, and the whole-image losses
    (``L1 + 1 - MS-SSIM``, window ``win_size``) of the masked input, the reconstruction and the
    pasted image against the original.
    """

    pixels = mask_to_pixels(mask, grid)  # (B, H, W) bool, True = hidden
    masked = apply_pixel_mask(images, pixels, fill)
    recon = reconstruct(model, masked)  # (B, 3, H, W), normalised
    pasted = torch.where(pixels[:, None], recon, images)  # hidden: model output; visible: original
    losses = {name: reconstruction_loss(v, images, win_size=win_size).item()
              for name, v in (("masked", masked), ("reconstruction", recon), ("pasted", pasted))}
    return {"original": denormalize(images), "masked": denormalize(masked), "reconstruction": denormalize(recon),
            "pasted": denormalize(pasted), "loss_map": patch_loss_map(recon, images, grid), "losses": losses}


def reconstruction_quality(model, images: torch.Tensor, grid, mask: torch.Tensor) -> dict:
    """How much a reconstruction model has learned, measured on normalised ``images`` (B, 3, H, W).

    With grid ``mask`` (B, gh, gw) hidden, in display space ([0, 1], clamped):

    * ``psnr_hidden``: PSNR of the reconstruction on the hidden pixels;
    * ``psnr_fill``: PSNR of the mean-colour fill there (what the masked input shows);
    * ``gain_db``: their difference, ``10 log10(MSE_fill / MSE_reconstruction)``: above 0 dB the
      model's guess beats the mean colour; an untrained network scores below 0;
    * ``hidden_visible_ratio``: mean patch score (L1 + 1 - SSIM, ``patch_loss_map``) of the
      hidden patches over that of the visible ones; above 1 the loss map "sees" the mask.
    """

    pixels = mask_to_pixels(mask, grid)  # (B, H, W) bool, True = hidden
    masked = apply_pixel_mask(images, pixels)  # hidden pixels: the mean colour (0 when normalised)
    recon = reconstruct(model, masked)  # (B, 3, H, W), normalised
    target = denormalize(images)
    hidden = pixels[:, None].expand_as(target)  # (B, 3, H, W)
    mse = {name: ((denormalize(v).clamp(0, 1) - target)[hidden] ** 2).mean().item()
           for name, v in (("reconstruction", recon), ("fill", masked))}
    scores = patch_loss_map(recon, images, grid)  # (B, gh, gw)
    return {"psnr_hidden": -10 * torch.log10(torch.tensor(mse["reconstruction"])).item(),
            "psnr_fill": -10 * torch.log10(torch.tensor(mse["fill"])).item(),
            "gain_db": 10 * torch.log10(torch.tensor(mse["fill"] / mse["reconstruction"])).item(),
            "hidden_visible_ratio": (scores[mask].mean() / scores[~mask].mean()).item()}


def score_terms(model, images: torch.Tensor, grid, mask: torch.Tensor) -> dict:
    """Why patches score what they score: the two terms of the patch score, hidden and visible.

    Returns ``{"hidden": {"l1", "ssim"}, "visible": {...}, "coarse": {...}}``, each the mean
    ``L1`` and ``1 - SSIM`` term (``losses.patch_loss_terms``) of the reconstruction of
    normalised ``images`` (B, 3, H, W) under grid ``mask`` (B, gh, gw), over the hidden and the
    visible patches. ``coarse`` scores the *original* drawn at the head's resolution (averaged
    over ``OUTPUT_STRIDE`` x ``OUTPUT_STRIDE`` pixels, bilinearly upsampled back, as the head's
    output is): a reference for how much pixel-level structure a picture at that resolution keeps,
    over all patches.
    """
    import torch.nn.functional as F


    recon = reconstruct(model, apply_pixel_mask(images, mask_to_pixels(mask, grid)))
    l1, ssim = patch_loss_terms(recon, images, grid)  # (B, gh, gw) each
    coarse = F.interpolate(F.avg_pool2d(images, OUTPUT_STRIDE, ceil_mode=True), size=images.shape[-2:],
                           mode="bilinear", align_corners=False)
    c_l1, c_ssim = patch_loss_terms(coarse, images, grid)
    return {"hidden": {"l1": l1[mask].mean().item(), "ssim": ssim[mask].mean().item()},
            "visible": {"l1": l1[~mask].mean().item(), "ssim": ssim[~mask].mean().item()},
            "coarse": {"l1": c_l1.mean().item(), "ssim": c_ssim.mean().item()}}


def heldback_quality(model, cfg, n_images: int = 32, seed: int = 0) -> dict:
    """:func:`reconstruction_quality` of ``model`` on the first ``n_images`` test-split images.

    The test split is held back from every pretraining pool; ``cfg`` gives the dataset, the image
    size and the patch grid; one random mask per image from ``seed``. The result also holds
    ``n_images``. The teaching models' manifest (``smir_lib.notebook.zoo``) and notebook 02 both call this.
    """

    test = load_split(cfg.replace(test_size=None, cache_images=False), "test")
    images, _ = load_batch(test, range(min(n_images, len(test))), size=cfg.image_size)
    x, grid = normalize(images), patch_grid(cfg.image_size, cfg.image_size, cfg.n_patches)
    mask = random_patch_mask(len(x), grid, cfg.mask_ratio, generator=torch.Generator().manual_seed(seed))
    return {**reconstruction_quality(model, x, grid, mask), "n_images": len(x)}


def mask_object_shares(model, ds, cfg, n_images: int = 8, seed: int = 0) -> dict:
    """Share of hidden labelled pixels on objects (every class but the most frequent) for random
    and selective masks of ``model`` on the first ``n_images`` of labelled ``ds``."""

    images, labels = load_batch(ds, range(min(n_images, len(ds))), size=cfg.image_size)
    grid, c = patch_grid(cfg.image_size, cfg.image_size, cfg.n_patches), len(ds.class_names)
    x = normalize(images)
    sel = selective_mask(model, x, grid, k=cfg.k, ratio=cfg.mask_ratio, generator=torch.Generator().manual_seed(seed))
    rnd = random_patch_mask(len(x), grid, cfg.mask_ratio, generator=torch.Generator().manual_seed(seed + 1))
    shares = {"image": class_pixel_shares(labels, c, ds.ignore_index),
              "random": hidden_class_shares(mask_to_pixels(rnd, grid), labels, c, ds.ignore_index),
              "selective": hidden_class_shares(mask_to_pixels(sel.mask, grid), labels, c, ds.ignore_index)}
    background = int(shares["image"].argmax())
    objects = [i for i in range(c) if i != background]
    return {k: float(v[objects].sum()) for k, v in shares.items()}

def stored_mask_shares(run_dir: str | Path) -> dict | None:
    """Share of hidden labelled pixels on objects in the masks a selective run trained with.

    ``mask_object_shares`` measures masks that a model *would* choose; this reads the finished
    selective run in ``run_dir`` (its ``config.json`` and every ``step_k/masks.pt``: pool images,
    grids on the image resized to short side ``image_size``) and compares them with one random
    mask per image (same patch count, generator seeded by ``1000 * seed + pool index``).
    Objects = every class but the most frequent. Returns ``{"image", "random", "selective"}``
    shares, or None when the pool images have no labels (a synthetic pool, an unlabelled folder).
    """

    run_dir = Path(run_dir)
    cfg = load_config(run_dir / "config.json")  # the run's resolved configuration
    pool = load_split(cfg.replace(cache_images=False), "pool")
    whole = cfg.replace(cache_images=False, train_size=None, val_size=None, test_size=None)
    labelled = {}  # image file -> (labelled split, index): the pool's labels, where it has them
    for split in ("train", "val", "test"):
        ds = load_split(whole, split)
        labelled.update({str(p): (ds, i) for i, p in enumerate(getattr(ds, "images", [])[:len(ds)])})
    files = [str(p) for p in getattr(pool, "images", [])[:len(pool)]]
    if not files or any(f not in labelled for f in files):
        return None
    n = len(pool.class_names)
    counts = {k: torch.zeros(n, dtype=torch.long) for k in ("image", "random", "selective")}
    for step in range(1, cfg.partitions):
        masks = load_masks(run_dir / f"step_{step}" / "masks.pt")
        for index, grid_mask in zip(masks["indices"].tolist(), masks["grids"]):  # per image
            ds, i = labelled[files[index]]
            label = ds.load_label(i)  # (H, W)
            label = resize_nearest(label, short_side_shape(*label.shape, cfg.image_size))  # (h, w)
            grid = patch_grid(*label.shape, cfg.n_patches)
            rnd = random_patch_mask(1, grid, cfg.mask_ratio,
                                    generator=torch.Generator().manual_seed(1000 * cfg.seed + index))[0]
            counts["image"] += class_pixel_counts(label, n, ds.ignore_index)
            for kind, m in (("random", rnd), ("selective", grid_mask)):
                pixels = mask_to_pixels(m[None], grid)[0]  # (h, w) bool, True = hidden
                counts[kind] += class_pixel_counts(label, n, ds.ignore_index, where=pixels)
    background = int(counts["image"].argmax())
    return {k: float(1 - v[background] / v.sum()) for k, v in counts.items()}
