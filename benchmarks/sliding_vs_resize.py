"""When does sliding-window evaluation help? A measured case on CWFID (1296x966 carrot-field photos).

Two fine-tuning runs of the same small network (``tiny``, ``image_size`` 128 by default, from scratch), both
evaluated on the 21 official CWFID test photos at full size, once by the paper's protocol
(``eval_mode=resize``: short side 128, whole image) and once by sliding 128-px windows over the
full-resolution photo (``eval_mode=sliding``, stride 64):

* ``photos``: fine-tuned on the whole photos. Training crops (RandomResizedCrop, 25-100 % of the
  area) are shrunk about 4-9x to 128 px, so the network learns plants at that reduced scale.
* ``tiles``: fine-tuned on 256x256 tiles cut from the same training photos. Crops of a tile are
  shrunk at most 2x: the network learns plants near their full-resolution size.

Both folder datasets are built under ``--work`` from symlinks and tiles of the CWFID folder (the
real data stays where it is). Writes ``<work>/sliding_vs_resize_<image_size>.json``::

    python -m benchmarks.sliding_vs_resize --cwfid ../shared/data/cwfid --work runs/sliding --epochs 25
    python -m benchmarks.sliding_vs_resize --cwfid ../shared/data/cwfid --work runs/sliding --epochs 25 \
        --image-size 64 --cases photos
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from smir_lib.engine.config import load_config
from smir_lib.engine.finetune import evaluate, finetune

CLASSES = ("classes:\n  - {name: soil, mask_color: [0, 0, 0]}\n  - {name: crop, mask_color: [0, 255, 0]}\n"
           "  - {name: weed, mask_color: [255, 0, 0]}\n")
TILE = 256


def cwfid_splits(cwfid: Path) -> dict[str, list[str]]:
    """The official split with id 28 in test only and the last 4 train ids as val (as data.cwfid)."""
    official = yaml.safe_load((cwfid / "train_test_split.yaml").read_text())
    test = sorted(official["test"])
    train = sorted(set(official["train"]) - set(test))
    return {"train": [f"{i:03d}" for i in train[:-4]], "val": [f"{i:03d}" for i in train[-4:]],
            "test": [f"{i:03d}" for i in test]}


def photo_folder(cwfid: Path, out: Path, splits: dict[str, list[str]]) -> Path:
    """The photos as a folder dataset: images/NNN.png and masks/NNN.png are symlinks."""
    for sub in ("images", "masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for stem in sum(splits.values(), []):
        for sub, source in (("images", f"images/{stem}_image.png"), ("masks", f"annotations/{stem}_annotation.png")):
            link = out / sub / f"{stem}.png"
            if not link.exists():
                link.symlink_to((cwfid / source).resolve())
    (out / "classes.yaml").write_text(CLASSES)
    (out / "splits.yaml").write_text(yaml.safe_dump(splits))
    return out


def tile_folder(cwfid: Path, out: Path, splits: dict[str, list[str]]) -> Path:
    """Train and val photos cut into TILE x TILE tiles (files); test photos whole (symlinks)."""
    photo_folder(cwfid, out, {"test": splits["test"]})
    tiled: dict[str, list[str]] = {"train": [], "val": [], "test": splits["test"]}
    for split in ("train", "val"):
        for stem in splits[split]:
            image = np.array(Image.open(cwfid / f"images/{stem}_image.png").convert("RGB"))
            mask = np.array(Image.open(cwfid / f"annotations/{stem}_annotation.png").convert("RGB"))
            for top in range(0, image.shape[0] - TILE + 1, TILE):
                for left in range(0, image.shape[1] - TILE + 1, TILE):
                    name = f"{stem}_{top}_{left}"
                    Image.fromarray(image[top:top + TILE, left:left + TILE]).save(out / "images" / f"{name}.png")
                    Image.fromarray(mask[top:top + TILE, left:left + TILE]).save(out / "masks" / f"{name}.png")
                    tiled[split].append(name)
    (out / "splits.yaml").write_text(yaml.safe_dump(tiled))
    return out


def run_case(name: str, root: Path, work: Path, epochs: int, workers: int, size: int = 128) -> dict:
    cfg = load_config("fast", {"dataset": "folder", "data_root": str(root), "model": "tiny", "image_size": size,
                               "msssim_win": 3,
                               "finetune_epochs": epochs, "warmup_epochs": 2, "finetune_batch": 8,
                               "train_size": None, "val_size": None, "test_size": None, "workers": workers,
                               "progress": False, "seed": 0})
    tic = time.perf_counter()
    run = work / f"ft_{name}" if size == 128 else work / f"ft_{name}_{size}"
    finetune(cfg, run, init="scratch")
    row = {"case": name, "image_size": size, "epochs": epochs, "finetune_s": round(time.perf_counter() - tic, 1)}
    best = run / "finetune" / "best.pt"
    for mode in ("resize", "sliding"):
        tic = time.perf_counter()
        metrics = evaluate(load_config(cfg, {"eval_mode": mode}), best, split="test")
        row[mode] = {"miou": round(metrics["miou"], 4), "eval_s": round(time.perf_counter() - tic, 1),
                     "per_class_iou": {n: round(v, 4) for n, v in zip(metrics["class_names"],
                                                                       metrics["per_class_iou"])}}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cwfid", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=128, help="image_size (and window) of the runs")
    parser.add_argument("--cases", nargs="+", default=["photos", "tiles"], choices=("photos", "tiles"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    splits = cwfid_splits(args.cwfid)
    makers = {"photos": photo_folder, "tiles": tile_folder}
    roots = {name: makers[name](args.cwfid, args.work / name, splits) for name in args.cases}
    rows = [run_case(name, root, args.work, args.epochs, args.workers, args.image_size) for name, root in roots.items()]
    out = args.work / f"sliding_vs_resize_{args.image_size}.json"
    out.write_text(json.dumps({"rows": rows, "torch": torch.__version__}, indent=2))
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
