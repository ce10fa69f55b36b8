"""Cityscapes (fine annotations): 19 training classes, everything else ignored.

Layout after ``smir download cityscapes`` (the official zips, extracted)::

    cityscapes/leftImg8bit/{train,val,test,train_extra}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    cityscapes/gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

Splits (the paper's recipe): ``train`` = first 80 % of the official train images in sorted file order (2380),
``val`` = the last 20 % (595), ``test`` = the official val set (500). Labels: the labelIds
images are mapped to the 19 trainIds of cityscapesscripts' label table; the other labelIds
(void, license plate, ...) become 255 (ignored); a value outside 0..33 raises an error.

Pool: ``leftImg8bit/train_extra`` (19,998 images) plus the downstream ``train`` images; the
downstream val and test images are left out unless ``include_eval_in_pool=True``.
``use_extra=False`` builds the pool without train_extra (it is a 44 GB download).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from smir_lib.data.base import (
    IGNORE_INDEX,
    SegmentationFiles,
    check_split,
    open_image_array,
    resolve_root,
    values_to_index,
)

# (name, labelId, trainId, display colour) for the 19 evaluated classes, as in cityscapesscripts/helpers/labels.py
TRAIN_CLASSES = [
    ("road", 7, 0, (128, 64, 128)), ("sidewalk", 8, 1, (244, 35, 232)), ("building", 11, 2, (70, 70, 70)),
    ("wall", 12, 3, (102, 102, 156)), ("fence", 13, 4, (190, 153, 153)), ("pole", 17, 5, (153, 153, 153)),
    ("traffic light", 19, 6, (250, 170, 30)), ("traffic sign", 20, 7, (220, 220, 0)),
    ("vegetation", 21, 8, (107, 142, 35)), ("terrain", 22, 9, (152, 251, 152)), ("sky", 23, 10, (70, 130, 180)),
    ("person", 24, 11, (220, 20, 60)), ("rider", 25, 12, (255, 0, 0)), ("car", 26, 13, (0, 0, 142)),
    ("truck", 27, 14, (0, 0, 70)), ("bus", 28, 15, (0, 60, 100)), ("train", 31, 16, (0, 80, 100)),
    ("motorcycle", 32, 17, (0, 0, 230)), ("bicycle", 33, 18, (119, 11, 32)),
]
CLASS_NAMES = [c[0] for c in TRAIN_CLASSES]
CLASS_COLORS = [c[3] for c in TRAIN_CLASSES]
LABEL_TO_TRAIN = {**{i: IGNORE_INDEX for i in range(34)}, **{c[1]: c[2] for c in TRAIN_CLASSES}}  # labelIds 0..33
TRAIN_FRACTION = 0.8


def is_complete(folder: Path) -> bool:
    return (folder / "leftImg8bit" / "train").is_dir() and (folder / "gtFine" / "train").is_dir()


def label_path(image: Path, folder: Path) -> Path:
    """The gtFine labelIds file belonging to a leftImg8bit image."""
    rel = image.relative_to(folder / "leftImg8bit")
    name = image.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png")
    return folder / "gtFine" / rel.parent / name


def list_images(folder: Path, official_split: str) -> list[Path]:
    """Sorted leftImg8bit images of an official split (``train``, ``val``, ``train_extra``)."""
    directory = folder / "leftImg8bit" / official_split
    if not directory.is_dir():
        raise FileNotFoundError(f"Cityscapes folder missing: {directory}; run: smir download cityscapes")
    return sorted(directory.glob("*/*_leftImg8bit.png"))


def decode_label(path: Path) -> np.ndarray:
    """A gtFine labelIds PNG -> trainIds (255 = ignored)."""
    return values_to_index(open_image_array(path, mode=None), LABEL_TO_TRAIN, path)


def split_images(folder: Path) -> dict[str, list[Path]]:
    train_all = list_images(folder, "train")
    n_train = int(TRAIN_FRACTION * len(train_all))
    return {"train": train_all[:n_train], "val": train_all[n_train:], "test": list_images(folder, "val")}


def build(split: str, root: str | os.PathLike | None = None, *, include_eval_in_pool: bool = False,
          use_extra: bool = True, transform: Callable | None = None) -> SegmentationFiles:
    """Registry entry: ``get_dataset("cityscapes", split, root, include_eval_in_pool=False, use_extra=True)``."""
    check_split("cityscapes", split)
    folder = resolve_root("cityscapes", root, is_complete)
    splits = split_images(folder)
    if split == "pool":
        images = list(splits["train"])
        if include_eval_in_pool:
            images += splits["val"] + splits["test"]
        if use_extra:
            if not (folder / "leftImg8bit" / "train_extra").is_dir():
                raise FileNotFoundError(
                    f"the Cityscapes pool uses leftImg8bit/train_extra, missing under {folder}: run "
                    f"smir download cityscapes (downloads leftImg8bit_trainextra.zip), or pass use_extra=False")
            images = list_images(folder, "train_extra") + images
        return SegmentationFiles("cityscapes", split, images, None, None, CLASS_NAMES, CLASS_COLORS,
                                 transform=transform, root=folder)
    images = splits[split]
    return SegmentationFiles("cityscapes", split, images, [label_path(p, folder) for p in images], decode_label,
                             CLASS_NAMES, CLASS_COLORS, transform=transform,
                             ids=[p.name.replace("_leftImg8bit.png", "") for p in images], root=folder)
