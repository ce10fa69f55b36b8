"""The reproduction study's report: budgets read from what ran, claims checked, one table per dataset.

:func:`report` writes ``<stem>.md`` and ``<stem>.json`` from ``{dataset: run_study results}``.
Each dataset's budget (:func:`budget`) is read from the files its runs left (stages, images,
iterations), never from the config alone, and the masks the selective steps really trained with
are measured (``measure.stored_mask_shares``). Every sentence about the paper's claims is
computed from the table (:func:`direction_lines`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from smir_lib.files import atomic_write_text
from smir_lib.notebook.measure import stored_mask_shares
from smir_lib.study.reproduction import results_markdown, verdict
from smir_lib.study.tables import pretraining_spent

__all__ = ["budget", "direction_lines", "report", "GPU_COMMAND"]


def budget(run_dir: Path) -> dict:
    """Epochs, images and optimiser iterations of one seed's runs in ``run_dir`` (from their files).

    Iterations per epoch are ``ceil(n_train / batch)`` (the loader keeps a last, smaller batch).
    """
    def load(path):
        return json.loads((run_dir / path).read_text())

    out = {}
    for name in ("pretrain_random", "pretrain_selective", "pretrain_selective_cross"):
        if not (run_dir / name / "result.json").is_file():
            continue
        cfg, spent = load(f"{name}/config.json"), pretraining_spent(run_dir / name)
        out[name] = {"pool": cfg["pool_dataset"] or cfg["dataset"], "batch": spent["batch"], "stages": spent["stages"],
                     "images_seen": spent["images"], "iterations": spent["iterations"]}
    cfg, ran = load("finetune_scratch/config.json"), load("finetune_scratch/results.json")
    n_train = ran["n_train"]  # what the fine-tuning read, not the config's limit
    out["finetune"] = {"epochs": len(ran["history"]), "batch": cfg["finetune_batch"], "n_train": n_train,
                       "n_val": ran["n_val"], "n_test": ran["test"]["n_images"],
                       "iterations": -(-n_train // cfg["finetune_batch"]) * len(ran["history"])}
    out["config"] = {k: cfg[k] for k in ("model", "image_size", "msssim_win", "n_patches", "k", "mask_ratio",
                                         "partitions", "lr", "warmup_epochs", "synthetic_size")}
    return out


GPU_COMMAND = ("SMIR_IMAGENET_WEIGHTS=/path/to/resnet34-b627a593.pth smir reproduce "
               "--config paper --datasets cwfid synthetic --seeds 0 1 2 --threads 8 --run-dir runs/study_gpu "
               "--report notebooks/results/reproduction_gpu pool_size=39 train_size=35 val_size=4 test_size=21 "
               "pretrain_batch=4 pretrain_epochs=100 finetune_epochs=100 workers=4 progress=false")


#: The paper's claims as pairs (better, than), in the order the report checks them.
COMPARISONS = (("selective", "random"), ("random", "scratch"), ("selective", "scratch"),
               ("selective", "selective_cross"), ("selective", "imagenet"))


def direction_lines(res: dict) -> list[str]:
    """The paper's claims checked against this table, sentence by sentence, from the numbers."""
    rows, names = res["inits"], res["class_names"]
    order = sorted(rows, key=lambda i: -rows[i]["miou_mean"])
    lines = ["Observed mIoU order (mean over seeds): " + " > ".join(rows[i]["label"] for i in order)
             + " (paper: selective > random > scratch; self > cross).",
             *("- " + verdict(res, a, b) for a, b in COMPARISONS if a in rows and b in rows)]
    if "scratch" in rows:
        rare = min(range(len(names)), key=lambda c: rows["scratch"]["per_class_mean"][c])
        gains = {i: rows[i]["per_class_mean"][rare] - rows["scratch"]["per_class_mean"][rare]
                 for i in rows if i != "scratch"}
        lines.append(f"- Lowest class under scratch: {names[rare]}; its IoU change against scratch: "
                     + ", ".join(f"{rows[i]['label']} {g:+.3f}" for i, g in gains.items()) + ".")
    return lines


def _stored_shares(run_dir: Path, seeds) -> dict | None:
    """``stored_mask_shares`` of every seed's selective run: ``{kind: {"mean", "per_seed"}}``."""
    per_seed = [stored_mask_shares(run_dir / f"seed_{s}" / "pretrain_selective") for s in seeds]
    if any(p is None for p in per_seed):
        return None
    return {k: {"mean": sum(p[k] for p in per_seed) / len(per_seed), "per_seed": [p[k] for p in per_seed]}
            for k in per_seed[0]}


def _mean_std(values) -> str:
    v = torch.tensor(values, dtype=torch.float64)
    return f"{v.mean():.3f} ± {v.std() if len(v) > 1 else 0.0:.3f}"


def _budget_lines(b: dict) -> list[str]:
    lines = [f"Budget per seed: {b['config']}."]
    for name in ("pretrain_random", "pretrain_selective", "pretrain_selective_cross"):
        if name in b:
            r = b[name]
            stages = " + ".join(f"{s['epochs']} epochs x {s['n_train']} images" for s in r["stages"])
            lines.append(f"- {name} (pool {r['pool']}, batch {r['batch']}): {stages} = "
                         f"{r['images_seen']} images, {r['iterations']} iterations.")
    f = b["finetune"]
    lines.append(f"- each fine-tuning: {f['epochs']} epochs x {f['n_train']} images, batch {f['batch']} = "
                 f"{f['iterations']} iterations; best of {f['n_val']} validation images tested on "
                 f"{f['n_test']} test images.")
    return lines


def report(results: dict[str, dict], command: str, wall_s: float | None, out_stem: Path,
           run_dirs: dict[str, Path] | None = None, note: str | None = None) -> dict:
    """Write ``out_stem.json`` and ``out_stem.md`` from ``{dataset: run_study results}``.

    ``run_dirs`` (``{dataset: folder}``) adds each dataset's budget read from its first seed's
    files; ``note`` is printed under the command.
    """
    sections, combined = [], {"command": command, "wall_seconds": wall_s, "note": note, "datasets": {}}
    for dataset, res in results.items():
        spent = budget(Path(run_dirs[dataset]) / f"seed_{res['seeds'][0]}") if run_dirs else None
        stored = _stored_shares(Path(run_dirs[dataset]), res["seeds"]) if run_dirs else None
        rows = res["inits"]
        lowest = {init: res["class_names"][min(range(len(row["per_class_mean"])),
                                               key=lambda c: row["per_class_mean"][c])]
                  for init, row in rows.items()}
        verdicts = [verdict(res, a, b) for a, b in COMPARISONS if a in rows and b in rows]
        directions = direction_lines(res)
        share = res["object_share_hidden"]
        combined["datasets"][dataset] = {**res, "lowest_class_per_init": lowest, "verdicts": verdicts,
                                         "budget_per_seed": spent, "stored_mask_plant_share": stored,
                                         "directions": directions}
        per_seed = ", ".join(f"{k} {_mean_std(v['per_seed'])}" for k, v in share.items())
        sections += [f"### {dataset} (cross pool: {res['cross_dataset']}, seeds {res['seeds']})", "",
                     results_markdown(res), "",
                     "Lowest class (by mean IoU) per initialisation: "
                     + ", ".join(f"{rows[i]['label']}: {c}" for i, c in lowest.items()) + ".", "",
                     f"Share of hidden labelled pixels on plants (all classes but the most frequent), "
                     f"mean ± std over seeds: {per_seed} (image = share of plant pixels in the images; "
                     f"selective masks chosen by each seed's random-IR model on the first "
                     f"{res.get('n_share_images', '')} training images, centre crops).", "",
                     *([f"The masks the selective steps trained with (pool images, steps 1..P-1), share of hidden "
                        f"pixels on plants, mean ± std over seeds: "
                        + ", ".join(f"{k} {_mean_std(v['per_seed'])}" for k, v in stored.items()) + ".", ""]
                       if stored else []),
                     *directions, "",
                     *(["ImageNet encoder: not run (no weights file for this model; the tiny preset has none)."]
                       if "imagenet" not in rows else []), "",
                     *(_budget_lines(spent) + [""] if spent else [])]
    header = ["# Reproduction study: scratch, random and selective pretraining over seeds", "",
              f"Produced by: `{command}`", ""]
    if note:
        header += [note, ""]
    if wall_s is not None:
        header += [f"Wall time of this (collecting) call: {wall_s:.0f} s.", ""]
    combined["gpu_command"] = GPU_COMMAND
    sections += ["### Paper preset on a GPU", "",
                 "Not run here (no GPU was available to this study). The command, CWFID and synthetic at "
                 "256 px with the ResNet-34 U-Net, 10 partitions, K = 5, MS-SSIM 11x11, 100 epochs per "
                 "step and 100 fine-tuning epochs (the paper: 1000 and 500):", "", f"    {GPU_COMMAND}", ""]
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(combined, indent=2, default=str), out_stem.with_suffix(".json"))
    atomic_write_text("\n".join(header + sections), out_stem.with_suffix(".md"))
    return combined
