"""Run the reproduction study (issue 8) on a CPU budget and write ``reproduction_cpu.{md,json}``.

The study itself is ``smir_lib.study.run_study`` (the loop notebook 07 calls); this script only
runs it for the datasets asked for, each with the other one as the "cross" pretraining pool, and
writes one combined table. Each dataset can run in its own process (``--datasets cwfid``), and
``--seeds`` may be split between processes: every finished part is read back, not redone, so
calling it again with all seeds and ``--report`` only collects the results (it re-tests each
fine-tuned checkpoint and re-measures the mask shares, about two minutes)::

    export OMP_NUM_THREADS=1
    python notebooks/results/reproduce.py --datasets cwfid --seeds 0 1 --cache-files &
    python notebooks/results/reproduce.py --datasets cwfid --seeds 2 --cache-files &
    python notebooks/results/reproduce.py --datasets synthetic --seeds 0 1 2 --cache-files; wait
    python notebooks/results/reproduce.py --datasets cwfid synthetic --seeds 0 1 2 --cache-files \
        --report notebooks/results/reproduction_cpu

The budget is ``smir_lib/configs/study_cpu.yaml`` (``--config``, default); ``key=value``
arguments override it. ``GPU_COMMAND`` below runs the paper preset instead.

One thread per process: on a busy 2-core machine two threads per process ran ~10x slower.
``--cache-files`` keeps decoded image and label files (and the pool images resized for the
selective steps) in memory, returning copies of the same tensors: CWFID otherwise decodes and
resizes 1296x966 PNGs for every item, which made a selective step about 6x slower.

Besides ``run_study``'s measurements, the report reads the masks the selective steps really
trained with (:func:`stored_mask_shares`) and each run's budget in images and iterations
(:func:`budget`), and checks the paper's claims one by one against the table.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import torch

CROSS = {"cwfid": "synthetic", "synthetic": "cwfid"}


def cache_decoded_files(patch=setattr) -> None:
    """Memoise ``smir_lib.data.base`` file decoding (images and labels); callers get copies.

    ``patch(owner, name, value)`` replaces the functions (``setattr``, or pytest's
    ``monkeypatch.setattr`` so that a test undoes it).
    """
    from smir_lib.data import base

    load = functools.lru_cache(maxsize=None)(base.load_image)

    def load_image(path):
        image = load(path).clone()
        image.source_path = str(path)  # lets the resize below know the file it came from
        return image

    patch(base, "load_image", load_image)
    from smir_lib import pretrain_data

    resize = pretrain_data.resize_short_side
    resized: dict = {}  # (file, size) -> the pool image resized for scoring / selective steps

    def resize_short_side(image, size=256, label=None):
        key = (getattr(image, "source_path", None), size)
        if label is not None or key[0] is None:
            return resize(image, size, label)
        if key not in resized:
            resized[key] = resize(image, size)
        return resized[key].clone()

    patch(pretrain_data, "resize_short_side", resize_short_side)
    labels: dict = {}  # label file -> decoded array (a file decodes the same in every split)

    def load_label(self, index: int) -> torch.Tensor:
        path = self.labels[index]
        if path not in labels:
            labels[path] = self.decode_label(path)
        return torch.from_numpy(labels[path].copy()).long()

    patch(base.SegmentationFiles, "load_label", load_label)


def stored_mask_shares(run_dir: Path, seeds, dataset: str = "cwfid") -> dict | None:
    """Share of hidden labelled pixels on plants in the masks the selective steps really trained with.

    ``run_study`` measures masks that the random-IR model would choose; this reads each
    ``seed_<s>/pretrain_selective/step_k/masks.pt`` instead (pool images, grids on the image
    resized to short side ``image_size``) and compares it with one random mask per image (same
    patch count, generator seeded by seed and image). Plants = every class but the most frequent.
    Needs pool images that have labels (CWFID: the pool is its train + val images); else None.
    """
    from smir_lib.config import load_config
    from smir_lib.data.transforms import resize_nearest, short_side_shape
    from smir_lib.patches import mask_to_pixels, patch_grid, random_patch_mask
    from smir_lib.pretrain_data import load_masks, load_split
    from smir_lib.study import class_pixel_counts

    if dataset != "cwfid":
        return None
    per_seed = []
    for seed in seeds:
        folder = Path(run_dir) / f"seed_{seed}" / "pretrain_selective"
        raw = json.loads((folder / "config.json").read_text())
        raw.pop("method", None)
        cfg = load_config("paper", overrides=raw)  # the run's resolved configuration
        pool = load_split(cfg, "pool")
        files = getattr(pool, "dataset", pool).images  # a trimmed pool is Subset(pool, range(n))
        labelled = {}  # pool image file -> (labelled split, index)
        for split in ("train", "val"):
            ds = load_split(cfg, split)
            base = getattr(ds, "dataset", ds)
            labelled.update({str(path): (base, i) for i, path in enumerate(base.images)})
        n = len(pool.class_names) if hasattr(pool, "class_names") else 3
        counts = {k: torch.zeros(n, dtype=torch.long) for k in ("image", "random", "selective")}
        for step in range(1, cfg.partitions):
            masks = load_masks(folder / f"step_{step}" / "masks.pt")
            for index, grid_mask in zip(masks["indices"].tolist(), masks["grids"]):
                ds, i = labelled[str(files[index])]
                label = ds.load_label(i)  # (H, W)
                label = resize_nearest(label, short_side_shape(*label.shape, cfg.image_size))  # (h, w)
                grid = patch_grid(*label.shape, cfg.n_patches)
                assert grid.shape == tuple(grid_mask.shape), (grid.shape, grid_mask.shape)
                rnd = random_patch_mask(1, grid, cfg.mask_ratio,
                                        generator=torch.Generator().manual_seed(1000 * seed + index))
                counts["image"] += class_pixel_counts(label, n, ds.ignore_index)
                for kind, m in (("random", rnd[0]), ("selective", grid_mask)):
                    pixels = mask_to_pixels(m[None], grid)[0]  # (h, w) bool, True = hidden
                    counts[kind] += class_pixel_counts(label, n, ds.ignore_index, where=pixels)
        background = int(counts["image"].argmax())
        per_seed.append({k: float(1 - v[background] / v.sum()) for k, v in counts.items()})
    return {k: {"mean": sum(p[k] for p in per_seed) / len(per_seed), "per_seed": [p[k] for p in per_seed]}
            for k in per_seed[0]}


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
        cfg, steps = load(f"{name}/config.json"), load(f"{name}/result.json")["steps"]
        batch = cfg["pretrain_batch"]
        out[name] = {"pool": cfg["pool_dataset"] or cfg["dataset"], "batch": batch,
                     "stages": [{"n_train": s["n_train"], "n_val": s["n_val"], "epochs": s["epochs"]} for s in steps],
                     "images_seen": sum(s["n_train"] * s["epochs"] for s in steps),
                     "iterations": sum(-(-s["n_train"] // batch) * s["epochs"] for s in steps)}
    cfg = load("finetune_scratch/config.json")
    n_train = cfg["train_size"]
    out["finetune"] = {"epochs": cfg["finetune_epochs"], "batch": cfg["finetune_batch"], "n_train": n_train,
                       "n_val": cfg["val_size"], "n_test": cfg["test_size"],
                       "iterations": -(-n_train // cfg["finetune_batch"]) * cfg["finetune_epochs"]}
    out["config"] = {k: cfg[k] for k in ("model", "image_size", "msssim_win", "n_patches", "k", "mask_ratio",
                                         "partitions", "lr", "warmup_epochs", "synthetic_size")}
    return out


GPU_COMMAND = ("SMIR_IMAGENET_WEIGHTS=/path/to/resnet34-b627a593.pth python notebooks/results/reproduce.py "
               "--config paper --datasets cwfid synthetic --seeds 0 1 2 --threads 8 --run-dir runs/study_gpu "
               "--report notebooks/results/reproduction_gpu pool_size=39 train_size=35 val_size=4 test_size=21 "
               "pretrain_batch=4 pretrain_epochs=100 finetune_epochs=100 workers=4 progress=false")


def _compare(res: dict, a: str, b: str) -> str:
    """``a`` against ``b`` in mIoU, with full labels, the difference and the seed spread."""
    from smir_lib.study import miou_gap

    rows = res["inits"]
    if a not in rows or b not in rows:
        return f"{a} against {b}: not run."
    x, y = rows[a], rows[b]
    diff, spread = miou_gap(x, y)
    where = "within" if abs(diff) <= spread else "larger than"
    return (f"{x['label']} {x['miou_mean']:.3f} ± {x['miou_std']:.3f} against {y['label']} "
            f"{y['miou_mean']:.3f} ± {y['miou_std']:.3f}: {'higher' if diff > 0 else 'NOT higher'} "
            f"(difference {diff:+.3f}, {where} the seed spread of {spread:.3f}).")


def _direction_lines(res: dict) -> list[str]:
    """The paper's claims checked against this table, sentence by sentence, from the numbers."""
    rows, names = res["inits"], res["class_names"]
    order = sorted(rows, key=lambda i: -rows[i]["miou_mean"])
    lines = ["Observed mIoU order (mean over seeds): " + " > ".join(rows[i]["label"] for i in order)
             + " (paper: selective > random > scratch; self > cross).",
             "- " + _compare(res, "selective", "random"), "- " + _compare(res, "random", "scratch"),
             "- " + _compare(res, "selective", "scratch"), "- " + _compare(res, "selective", "selective_cross")]
    if "imagenet" in rows:
        lines.append("- " + _compare(res, "selective", "imagenet"))
    if "scratch" in rows:
        rare = min(range(len(names)), key=lambda c: rows["scratch"]["per_class_mean"][c])
        gains = {i: rows[i]["per_class_mean"][rare] - rows["scratch"]["per_class_mean"][rare]
                 for i in rows if i != "scratch"}
        lines.append(f"- Lowest class under scratch: {names[rare]}; its IoU change against scratch: "
                     + ", ".join(f"{rows[i]['label']} {g:+.3f}" for i, g in gains.items()) + ".")
    return lines


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
    from smir_lib.study import results_markdown, verdict

    sections, combined = [], {"command": command, "wall_seconds": wall_s, "note": note, "datasets": {}}
    for dataset, res in results.items():
        spent = budget(Path(run_dirs[dataset]) / f"seed_{res['seeds'][0]}") if run_dirs else None
        stored = stored_mask_shares(Path(run_dirs[dataset]), res["seeds"], dataset) if run_dirs else None
        rows = res["inits"]
        lowest = {init: res["class_names"][min(range(len(row["per_class_mean"])),
                                               key=lambda c: row["per_class_mean"][c])]
                  for init, row in rows.items()}
        verdicts = [verdict(res, "selective", "random"), verdict(res, "random", "scratch"),
                    verdict(res, "selective", "scratch"), _compare(res, "selective", "selective_cross")]
        if "imagenet" in rows:
            verdicts.append(verdict(res, "selective", "imagenet"))
        directions = _direction_lines(res)
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
    header = [f"Produced by: `{command}`", ""]
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
    out_stem.with_suffix(".json").write_text(json.dumps(combined, indent=2, default=str))
    out_stem.with_suffix(".md").write_text("\n".join(header + sections))
    return combined


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="smir_lib/configs/study_cpu.yaml")
    parser.add_argument("--datasets", nargs="+", default=["cwfid", "synthetic"], choices=sorted(CROSS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--run-dir", default="runs/study_cpu")
    parser.add_argument("--share-images", type=int, default=35)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache-files", action="store_true")
    parser.add_argument("--report", default=None, help="write <REPORT>.md and <REPORT>.json")
    parser.add_argument("--note", default=None, help="a line for the report (e.g. how the runs were split)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    import shlex
    import sys

    torch.set_num_threads(args.threads)
    if args.cache_files:
        cache_decoded_files()
    from smir_lib.config import parse_overrides
    from smir_lib.study import run_study

    tic = time.perf_counter()
    overrides = parse_overrides(args.overrides)
    results = {}
    for dataset in args.datasets:
        results[dataset] = run_study(dataset, args.seeds, Path(args.run_dir) / dataset, profile=args.config,
                                     cross_dataset=CROSS[dataset], overrides=overrides,
                                     n_share_images=args.share_images)
        results[dataset]["n_share_images"] = args.share_images
        print(results[dataset]["verdict"], flush=True)
    if args.report:
        command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
        run_dirs = {d: Path(args.run_dir) / d for d in results}
        report(results, command, time.perf_counter() - tic, Path(args.report), run_dirs, args.note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
