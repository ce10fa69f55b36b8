"""CWFID: the Crop/Weed Field Image Dataset (Haug & Ostermann, CVPPP 2014).

60 RGB images (1296x966) of a carrot field with colour-coded annotations: (0, 0, 0) soil,
(0, 255, 0) crop, (255, 0, 0) weed. Non-commercial research use only.

Layout (as in the GitHub repository cwfid/dataset)::

    cwfid/images/NNN_image.png
    cwfid/annotations/NNN_annotation.png      (and NNN_annotation.yaml polygons, unused here)
    cwfid/masks/NNN_mask.png                  (vegetation mask, unused here)
    cwfid/train_test_split.yaml               train: [...], test: [...]

Splits: the official file lists 40 train ids and 21 test ids, and id 28 appears in *both*. We
keep id 28 in **test only** (evaluation images must never be trained on) and warn once, so the
official test split keeps its 21 images and train has 39. CWFID has no validation split: the
last 10 % of the (sorted) train ids, 4 images, are carved off as ``val``, leaving 35 for
``train``. The unlabelled ``pool`` is the train + val images (39); ``include_eval_in_pool=True``
adds the test images (all 60), as the authors' code does with its pools.

Root: ``root`` argument, else ``$SMIR_DATA_DIR/cwfid``, else ``./data/cwfid`` (``smir
download cwfid`` puts it there).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from smir_lib.data.base import (
    SegmentationFiles,
    check_split,
    colors_to_index,
    open_image_array,
    resolve_root,
    warn_once,
)
from smir_lib.files import read_yaml

CLASS_NAMES = ["soil", "crop", "weed"]
CLASS_COLORS = [(120, 85, 50), (0, 200, 0), (230, 30, 30)]  # display colours, shared with `synthetic`
ANNOTATION_COLORS = {(0, 0, 0): 0, (0, 255, 0): 1, (255, 0, 0): 2}  # as stored in the files
DUPLICATE_POLICY = "test"  # where an id listed in both official splits goes
VAL_FRACTION = 0.1


def is_complete(folder: Path) -> bool:
    """Whether ``folder`` looks like a CWFID root (split file, images and annotations present)."""
    return ((folder / "train_test_split.yaml").is_file() and (folder / "images").is_dir()
            and (folder / "annotations").is_dir())


def find_root(root: str | os.PathLike | None = None) -> Path:
    """The CWFID folder (see the module docstring for the search order)."""
    return resolve_root("cwfid", root, is_complete)


def read_split_file(folder: Path) -> dict[str, list[int]]:
    """The official split: ``{"train": [...], "test": [...]}`` ids as in ``train_test_split.yaml``."""
    path = folder / "train_test_split.yaml"
    data = read_yaml(path, "CWFID split file")
    if not isinstance(data, dict) or not {"train", "test"} <= set(data):
        raise ValueError(f"{path} must map 'train' and 'test' to lists of ids; got {data!r}")
    return {k: [int(i) for i in data[k]] for k in ("train", "test")}


def split_ids(folder: Path, include_eval_in_pool: bool = False) -> dict[str, list[int]]:
    """Ids of every split: train / val (last 10 % of train) / test / pool, duplicates resolved."""
    official = read_split_file(folder)
    both = sorted(set(official["train"]) & set(official["test"]))
    if both:
        warn_once(f"CWFID: id(s) {both} are listed in both the official train and test splits of "
                  f"{folder / 'train_test_split.yaml'}; they are kept in '{DUPLICATE_POLICY}' only.")
    train_all = sorted(set(official["train"]) - (set(both) if DUPLICATE_POLICY == "test" else set()))
    test = sorted(set(official["test"]) - (set(both) if DUPLICATE_POLICY == "train" else set()))
    n_val = max(1, round(VAL_FRACTION * len(train_all)))
    ids = {"train": train_all[:-n_val], "val": train_all[-n_val:], "test": test}
    ids["pool"] = sorted(train_all + (test if include_eval_in_pool else []))
    return ids


def decode_annotation(path: Path) -> np.ndarray:
    """An annotation PNG -> class indices ``(H, W)``; an unknown colour names the file and colour."""
    return colors_to_index(open_image_array(path, "RGB"), ANNOTATION_COLORS, path)


def build(split: str, root: str | os.PathLike | None = None, *, include_eval_in_pool: bool = False,
          transform: Callable | None = None) -> SegmentationFiles:
    """Registry entry: ``get_dataset("cwfid", split, root, include_eval_in_pool=False)``."""
    check_split("cwfid", split)
    folder = find_root(root)
    ids = split_ids(folder, include_eval_in_pool)[split]
    images = [folder / "images" / f"{i:03d}_image.png" for i in ids]
    labels = None if split == "pool" else [folder / "annotations" / f"{i:03d}_annotation.png" for i in ids]
    return SegmentationFiles("cwfid", split, images, labels, decode_annotation, CLASS_NAMES, CLASS_COLORS,
                             transform=transform, ids=[f"{i:03d}" for i in ids], root=folder)
