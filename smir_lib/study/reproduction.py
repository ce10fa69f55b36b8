"""The reproduction study loop: pretrain each way, fine-tune from each initialisation, summarise.

:func:`run_study` runs, per seed, random and selective pretraining on the dataset (self), and
selective pretraining on another pool (cross) when asked; then fine-tunes from scratch, the
ImageNet encoder (when its weights exist) and each pretrained model; :func:`summarize` turns the
per-seed test metrics into means and spreads and :func:`verdict` into sentences computed from
the numbers. ``smir_lib.study.reproduction_report`` writes the committed report from these results.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from smir_lib.engine.config import load_config
from smir_lib.engine.finetune import finetune
from smir_lib.engine.pretrain import pretrain_random, pretrain_selective
from smir_lib.engine.pretrain_data import load_split
from smir_lib.files import atomic_write_text
from smir_lib.models import build_model, load_pretrained
from smir_lib.notebook.measure import mask_object_shares
from smir_lib.study.inits import INIT_LABELS

__all__ = ["STUDY_BUDGETS", "imagenet_weights", "finetune_inits", "summarize",
           "results_markdown", "miou_gap", "verdict", "run_study"]




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
    roots += [Path(__file__).resolve().parents[2] / "data"]
    for root in roots:
        found = sorted((root / "weights").glob(f"{cfg.model}*.pth"))
        if found:
            return found[0]
    return None


def finetune_inits(cfg, run_dir: Path, inits: dict[str, str | Path]) -> dict[str, dict]:
    """Fine-tune from each initialisation into ``run_dir/finetune_<name>/``; ``{name: results}``.

    A finished fine-tuning in its folder is read back by the engine, not redone.
    """

    return {name: finetune(cfg, Path(run_dir) / f"finetune_{name}", init) for name, init in inits.items()}


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
    """The results table: one row per initialisation, mIoU and per-class IoU as mean ± std.

    A row from one seed has no spread to show: its cells are the values alone (no "± 0.000").
    """
    names = summary["class_names"]
    lines = ["| initialisation | seeds | mIoU | " + " | ".join(f"IoU {n}" for n in names) + " |",
             "|---|---:|---:|" + "---:|" * len(names)]
    for row in summary["inits"].values():
        cell = (lambda m, s: f"{m:.3f} ± {s:.3f}") if row["n_seeds"] > 1 else (lambda m, s: f"{m:.3f}")
        cells = [cell(m, s) for m, s in zip(row["per_class_mean"], row["per_class_std"])]
        lines.append(f"| {row['label']} | {row['n_seeds']} | {cell(row['miou_mean'], row['miou_std'])} | "
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
               "n_share_images": n_share_images,
               "cross_dataset": cross_dataset, **summary, "object_share_hidden": object_share,
               "verdict": verdict(summary), "verdict_vs_scratch": verdict(summary, "selective", "scratch")}
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(results, indent=2), run_dir / "results.json")
    atomic_write_text(results_markdown(summary) + "\n\n" + results["verdict"] + "\n", run_dir / "results.md")
    return results

