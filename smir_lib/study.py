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
    """The ``PretrainResult`` a finished run left in ``folder``, or None when it has not finished.

    The engine's ``smir_lib.pretrain.load_pretrain_result`` reads it; this only turns "not
    finished" (no ``result.json`` or no ``pretrained.pt``) into None for "found it, loading it".
    """
    from smir_lib.pretrain import load_pretrain_result as load_finished

    folder = Path(folder)
    if not (folder / "pretrained.pt").is_file():
        return None
    try:
        return load_finished(folder)
    except FileNotFoundError:
        return None


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
    from smir_lib.models import build_model

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


# ----------------------------------------------------------------------------- the study loop

#: Display order and names of the initialisations compared downstream.
INIT_LABELS = {"scratch": "scratch", "imagenet": "ImageNet encoder", "random": "random IR (self)",
               "selective": "selective IR (self)", "selective_cross": "selective IR (cross)"}

#: Budgets of the reproduction study on top of the profile ("profile": the profile as it is).
STUDY_BUDGETS: dict[str, dict] = {
    "tiny": {"pool_size": 16, "partitions": 2, "pretrain_epochs": 1, "finetune_epochs": 2,
             "train_size": 8, "val_size": 4, "test_size": 4},
    "profile": {},
}


def imagenet_weights(cfg) -> Path | None:
    """A torchvision ImageNet ResNet file for ``cfg.model``, or None (then that baseline is skipped).

    Looked for in ``$SMIR_IMAGENET_WEIGHTS``, then ``<data dir>/weights/<model>*.pth``.
    The ``tiny`` preset has no ImageNet weights.
    """
    import os

    if cfg.model not in ("resnet18", "resnet34"):
        return None
    env = os.environ.get("SMIR_IMAGENET_WEIGHTS")
    if env and Path(env).is_file():
        return Path(env)
    roots = [Path(cfg.data_root)] if cfg.data_root else []
    roots += [Path(os.environ["SMIR_DATA_DIR"])] if os.environ.get("SMIR_DATA_DIR") else []
    roots += [Path(__file__).resolve().parent.parent / "data"]
    for root in roots:
        found = sorted((root / "weights").glob(f"{cfg.model}*.pth"))
        if found:
            return found[0]
    return None


def finetune_inits(cfg, run_dir: Path, inits: dict[str, str | Path]) -> dict[str, dict]:
    """Fine-tune from each initialisation into ``run_dir/finetune_<name>/``; ``{name: results}``.

    A finished fine-tuning in its folder is read back by the engine, not redone.
    """
    from smir_lib.finetune import finetune

    return {name: finetune(cfg, Path(run_dir) / f"finetune_{name}", init) for name, init in inits.items()}


def mask_object_shares(model, ds, cfg, n_images: int = 8, seed: int = 0) -> dict:
    """Share of hidden labelled pixels on objects (every class but the most frequent) for random
    and selective masks of ``model`` on the first ``n_images`` of labelled ``ds``."""
    from smir_lib.data.transforms import normalize
    from smir_lib.patches import mask_to_pixels, patch_grid, random_patch_mask
    from smir_lib.selective import selective_mask

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


def summarize(per_seed: dict[str, list[dict]], class_names: list[str]) -> dict:
    """Mean and std over seeds of mIoU and per-class IoU, per initialisation.

    ``per_seed[init]`` is a list of the engine's test metrics (``miou``, ``per_class_iou``).
    """
    out = {}
    for init, tests in per_seed.items():
        miou = torch.tensor([t["miou"] for t in tests], dtype=torch.float64)
        per_class = torch.tensor([t["per_class_iou"] for t in tests], dtype=torch.float64)  # (S, C)
        std = (lambda v: v.std(0, unbiased=True) if len(v) > 1 else torch.zeros_like(v[0]))
        out[init] = {"label": INIT_LABELS.get(init, init), "n_seeds": len(tests),
                     "miou_mean": miou.mean().item(), "miou_std": std(miou[:, None])[0].item(),
                     "per_class_mean": per_class.nanmean(0).tolist(), "per_class_std": std(per_class).tolist(),
                     "miou_per_seed": miou.tolist()}
    order = torch.tensor(next(iter(out.values()))["per_class_mean"]).nan_to_num(2.0).argsort() if out else []
    return {"class_names": list(class_names), "inits": out,
            "lowest_classes": [class_names[i] for i in list(order)[:1]]}


def results_markdown(summary: dict) -> str:
    """The results table: one row per initialisation, mIoU and per-class IoU as mean ± std."""
    names = summary["class_names"]
    lines = ["| initialisation | seeds | mIoU | " + " | ".join(f"IoU {n}" for n in names) + " |",
             "|---|---:|---:|" + "---:|" * len(names)]
    for row in summary["inits"].values():
        cells = [f"{m:.3f} ± {s:.3f}" for m, s in zip(row["per_class_mean"], row["per_class_std"])]
        lines.append(f"| {row['label']} | {row['n_seeds']} | {row['miou_mean']:.3f} ± {row['miou_std']:.3f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def miou_gap(a: dict, b: dict) -> tuple[float, float]:
    """``(difference of mean mIoU, seed spread)`` of two summary rows; the spread is the larger
    of the two standard deviations, the yardstick every verdict compares a difference with."""
    return a["miou_mean"] - b["miou_mean"], max(a["miou_std"], b["miou_std"])


def verdict(summary: dict, better: str = "selective", than: str = "random") -> str:
    """A sentence, built from the numbers, saying whether ``better`` beat ``than`` in mIoU."""
    rows = summary["inits"]
    if better not in rows or than not in rows:
        return f"No comparison: {better!r} or {than!r} was not run."
    a, b = rows[better], rows[than]
    diff, spread = miou_gap(a, b)
    seeds = a["n_seeds"]
    if seeds > 1:
        noise = (f"within the seed spread of {spread:.3f}" if abs(diff) <= spread
                 else f"larger than the seed spread of {spread:.3f}")
    else:
        noise = "one seed only, so no spread to compare with"
    # Short names ("selective IR") unless they would read the same, as self against cross does.
    name_a, name_b = a["label"].split(" (")[0], b["label"].split(" (")[0]
    if name_a == name_b:
        name_a, name_b = a["label"], b["label"]
    head = (f"In this run {a['label']} reached {a['miou_mean']:.3f} mIoU against {b['miou_mean']:.3f} for "
            f"{b['label']}: ")
    if seeds > 1 and abs(diff) <= spread:  # inside the noise: no winner either way
        return head + (f"no clear winner, {name_a} did NOT beat {name_b} beyond the noise "
                       f"(difference {diff:+.3f}, {noise}).")
    beat = "beat" if diff > 0 else "did NOT beat"
    return head + f"{name_a} {beat} {name_b} (difference {diff:+.3f}, {noise})."


def run_study(dataset: str, seeds: Sequence[int], run_dir: Path | str, *, profile: str = "fast",
              budget: str | dict = "profile", cross_dataset: str | None = None,
              overrides: dict | None = None, n_share_images: int = 8) -> dict:
    """The reproduction study: per seed, random and selective pretraining on ``dataset`` (self),
    selective pretraining on ``cross_dataset`` (cross, when given), then fine-tuning from scratch,
    ImageNet (when its weights exist), random IR, selective IR (self) and (cross); summarised
    over seeds with the share of hidden pixels on objects for random and selective masks.

    Writes ``run_dir/seed_<s>/...`` (engine folders), ``run_dir/results.json`` and
    ``run_dir/results.md``; returns the results dict. Finished parts are read back, not redone.
    """
    import json

    from smir_lib.config import load_config
    from smir_lib.models import load_pretrained
    from smir_lib.models import build_model
    from smir_lib.pretrain import pretrain_random, pretrain_selective
    from smir_lib.pretrain_data import load_split

    run_dir = Path(run_dir)
    extra = STUDY_BUDGETS[budget] if isinstance(budget, str) else dict(budget)
    per_seed: dict[str, list[dict]] = {}
    shares: list[dict] = []
    for seed in seeds:
        cfg = load_config(profile, overrides={**extra, **(overrides or {}), "dataset": dataset, "seed": int(seed)})
        folder = run_dir / f"seed_{seed}"
        rnd = pretrain_random(cfg, folder / "pretrain_random")
        sel = pretrain_selective(cfg, folder / "pretrain_selective")
        inits = {"scratch": "scratch", "random": rnd.best_checkpoint, "selective": sel.best_checkpoint}
        if cross_dataset:
            cross = pretrain_selective(cfg.replace(pool_dataset=cross_dataset), folder / "pretrain_selective_cross")
            inits["selective_cross"] = cross.best_checkpoint
        weights = imagenet_weights(cfg)
        if weights is not None:
            inits = {"scratch": "scratch", "imagenet": f"imagenet:{weights}", **inits}
        for name, res in finetune_inits(cfg, folder, inits).items():
            per_seed.setdefault(name, []).append(res["test"])
        model = build_model(cfg, 3)
        load_pretrained(model, rnd.best_checkpoint, reinit_head=False)
        shares.append(mask_object_shares(model, load_split(cfg, "train"), cfg, n_share_images, int(seed)))
    class_names = next(iter(per_seed.values()))[0]["class_names"]
    summary = summarize(per_seed, class_names)
    object_share = {k: {"mean": float(torch.tensor([s[k] for s in shares]).mean()),
                        "per_seed": [s[k] for s in shares]} for k in shares[0]}
    results = {"dataset": dataset, "seeds": list(seeds), "profile": profile, "budget": extra,
               "cross_dataset": cross_dataset, **summary, "object_share_hidden": object_share,
               "verdict": verdict(summary), "verdict_vs_scratch": verdict(summary, "selective", "scratch")}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    (run_dir / "results.md").write_text(results_markdown(summary) + "\n\n" + results["verdict"] + "\n")
    return results
