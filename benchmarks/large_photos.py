"""Training on large photographs: items per second before and after shrinking them once (issue 30).

Writes two folder datasets of the same synthetic fields, one as 8 MP photos (3264x2448 JPEG,
upscaled) and one stored at the most a 256-px training crop uses (short side 592,
:func:`smir_lib.data.views.crop_source_side`), and times the training items of

* fine-tuning (``LabelledSet`` train items: decode, RandomResizedCrop, flip, jitter), and
* random-mask pretraining (``MaskedPoolSet`` items of the pool),

read from the 8 MP photos as they are (before), from the 8 MP photos through
:func:`~smir_lib.engine.pretrain_data.training_source` (after: decoded and shrunk once, the one-off
cost reported apart), and from the photos already at 592 px (the reference). One thread, CPU
time (``time.process_time``), median of ``--repeats`` passes over every item. Also reports how far
the items after shrinking are from the items before (same seeds): mean absolute pixel difference
and the share of label pixels that agree. Writes ``<work>/large_photos.json``; ``--markdown JSON``
prints the table of benchmarks/RESULTS.md from such a file::

    python -m benchmarks.large_photos --work runs/large_photos --photos 6
    python -m benchmarks.large_photos --markdown benchmarks/results/large_photos.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from smir_lib.data import get_dataset
from smir_lib.data.folder_example import write_example_folder
from smir_lib.data.views import crop_source_side
from smir_lib.engine.config import load_config
from smir_lib.engine.finetune import LabelledSet
from smir_lib.engine.pretrain_data import MaskedPoolSet, training_source

LARGE = (3264, 2448)  # width, height: an 8 MP camera photo


def write_sets(work: Path, n: int, size: int) -> dict[str, Path]:
    """The same fields as 8 MP photos and at the crop source side (short side ``crop_source_side(size)``)."""
    side = crop_source_side(size)
    small = (round(LARGE[0] * side / LARGE[1]), side)
    base = write_example_folder(work / "render", n_images=n, n_pool=0, size=(306, 408))
    roots = {}
    for name, wh in (("8mp", LARGE), ("stored_small", small)):
        root = work / name
        for sub in ("images", "masks"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        for image in sorted((base / "images").iterdir()):
            Image.open(image).resize(wh, Image.BICUBIC).save(root / "images" / image.name, quality=90)
            mask = base / "masks" / f"{image.stem}_mask.png"
            Image.open(mask).resize(wh, Image.NEAREST).save(root / "masks" / mask.name)
        (root / "classes.yaml").write_text((base / "classes.yaml").read_text())
        (root / "splits.yaml").write_text(f"train: {[f'field_{i:03d}' for i in range(n - 2)]}\n"
                                          f"val: [field_{n - 2:03d}]\ntest: [field_{n - 1:03d}]\n")
        roots[name] = root
    return roots


def items_per_second(items, repeats: int) -> float:
    """Median items per CPU second over ``repeats`` passes (a new epoch each pass)."""
    rates = []
    for epoch in range(repeats):
        items.set_epoch(epoch)
        tic = time.process_time()
        for i in range(len(items)):
            items[i]
        rates.append(len(items) / (time.process_time() - tic))
    return statistics.median(rates)


def stages(ds, cfg) -> dict:
    """The two RandomResizedCrop stages' items over ``ds``: fine-tuning and random-mask pretraining."""
    return {"finetune": LabelledSet(ds, "train", cfg), "random_pretrain": MaskedPoolSet(ds, range(len(ds)), cfg, "random")}


def closeness(before, after, epochs: int = 3) -> dict:
    """How far the shrunk photos' fine-tuning items are from the full photos' (same seeds)."""
    diffs, agree = [], []
    for epoch in range(epochs):
        before.set_epoch(epoch)
        after.set_epoch(epoch)
        for i in range(len(before)):
            (x1, l1), (x2, l2) = before[i], after[i]
            diffs.append(float((x1 - x2).abs().mean()))
            agree.append(float((l1 == l2).float().mean()))
    return {"mean_abs_pixel_diff": round(float(np.mean(diffs)), 5), "worst_item_abs_diff": round(max(diffs), 5),
            "label_agreement": round(float(np.mean(agree)), 5), "worst_item_label_agreement": round(min(agree), 5)}


def markdown(result: dict) -> str:
    """The RESULTS.md table of a ``large_photos.json``."""
    lines = [f"{result['photos']} photos of {result['photo_size'][0]}x{result['photo_size'][1]}, image_size "
             f"{result['image_size']} (crop source side {result['crop_source_side']} px); {result['clock']}; "
             f"one-off shrink {result['one_off_shrink_cpu_s']} CPU s in all.", "",
             "| stage | 8 MP before (items/s) | 8 MP after | stored at the crop source side | after / before "
             "| stored / after |", "|---|---:|---:|---:|---:|---:|"]
    for stage, row in result["items_per_cpu_second"].items():
        lines.append(f"| {stage} | {row['8mp_before']} | {row['8mp_after']} | {row['stored_at_592']} | "
                     f"{row['speedup_after_vs_before']}x | {row['reference_over_after']} |")
    close = result["closeness"]
    lines += ["", f"Items after shrinking against before (same seeds): mean absolute pixel difference "
              f"{close['mean_abs_pixel_diff']} (worst item {close['worst_item_abs_diff']}), label pixels agreeing "
              f"{close['label_agreement']} (worst item {close['worst_item_label_agreement']})."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", type=Path, help="print the table of a large_photos.json and stop")
    parser.add_argument("--work", type=Path)
    parser.add_argument("--photos", type=int, default=6)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return
    if args.work is None:
        parser.error("--work is required (or --markdown JSON)")
    torch.set_num_threads(1)
    roots = write_sets(args.work, args.photos, args.size)
    cfg = {name: load_config("fast", {"dataset": "folder", "data_root": str(root), "image_size": args.size,
                                      "progress": False}) for name, root in roots.items()}
    large = get_dataset("folder", "train", root=roots["8mp"])
    tic = time.process_time()
    shrunk = training_source(large, cfg["8mp"], "folder")
    fill_s = time.process_time() - tic
    reference = get_dataset("folder", "train", root=roots["stored_small"])
    rows = {}
    for case, ds, c in (("8mp_before", large, cfg["8mp"]), ("8mp_after", shrunk, cfg["8mp"]),
                        ("stored_at_592", reference, cfg["stored_small"])):
        for stage, items in stages(ds, c).items():
            rows.setdefault(stage, {})[case] = round(items_per_second(items, args.repeats), 2)
    for stage, row in rows.items():
        row["speedup_after_vs_before"] = round(row["8mp_after"] / row["8mp_before"], 1)
        row["reference_over_after"] = round(row["stored_at_592"] / row["8mp_after"], 2)
    result = {"photos": args.photos - 2, "photo_size": list(LARGE), "image_size": args.size,
              "crop_source_side": crop_source_side(args.size), "one_off_shrink_cpu_s": round(fill_s, 2),
              "items_per_cpu_second": rows,
              "closeness": closeness(LabelledSet(large, "train", cfg["8mp"]), LabelledSet(shrunk, "train", cfg["8mp"])),
              "torch": torch.__version__, "clock": "process_time, 1 thread"}
    (args.work / "large_photos.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
