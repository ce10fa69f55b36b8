"""Pascal VOC segmentation: VOC2012 train (1464) / VOC2012 val (1449) / VOC2007 test (210).

Layout after ``smir download voc`` (the two official tars, extracted)::

    voc/VOCdevkit/VOC2012/JPEGImages/*.jpg
    voc/VOCdevkit/VOC2012/SegmentationClass/*.png
    voc/VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val}.txt
    voc/VOCdevkit/VOC2007/JPEGImages/*.jpg
    voc/VOCdevkit/VOC2007/SegmentationClass/*.png
    voc/VOCdevkit/VOC2007/ImageSets/Segmentation/test.txt

Labels are palette PNGs whose indices are the classes 0..20; 255 marks object borders and
"difficult" regions and is ignored. A label saved as RGB (palette lost) is decoded through
the VOC colour map instead. Any other value raises an error naming the file.

Pool: every VOC2012 JPEG image except the segmentation val images (the VOC2007 test images are
not in VOC2012); ``include_eval_in_pool=True`` keeps all 17,125, as the authors did.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from smir_lib.data.base import (
    IGNORE_INDEX,
    LabelError,
    SegmentationFiles,
    check_split,
    colors_to_index,
    open_image_array,
    resolve_root,
    values_to_index,
)

CLASS_NAMES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor"]


def voc_colormap(n: int = 256) -> list[tuple[int, int, int]]:
    """The standard VOC palette: class ``i``'s colour from the bits of ``i`` (bit-interleaved)."""
    ids = np.arange(n)
    rgb = np.zeros((n, 3), np.int64)
    for shift in range(8):  # 8 rounds over the bits of the id, not over pixels
        for channel in range(3):
            rgb[:, channel] |= ((ids >> (3 * shift + channel)) & 1) << (7 - shift)
    return [tuple(int(v) for v in row) for row in rgb]


CLASS_COLORS = voc_colormap(21)
VALUE_TABLE = {**{i: i for i in range(21)}, 255: IGNORE_INDEX}
COLOR_TABLE = {**{c: i for i, c in enumerate(CLASS_COLORS)}, (224, 224, 192): IGNORE_INDEX}


def is_complete(folder: Path) -> bool:
    return (folder / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "train.txt").is_file()


def read_ids(path: Path) -> list[str]:
    """Image ids listed one per line in ``path``."""
    if not path.is_file():
        raise FileNotFoundError(f"split file missing: {path}; re-run: smir download voc")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def decode_label(path: Path) -> np.ndarray:
    """A VOC SegmentationClass PNG -> class indices (255 = ignore)."""
    arr = open_image_array(path, mode=None)
    if arr.ndim == 3:  # palette lost: decode the colours
        return colors_to_index(arr, COLOR_TABLE, path)
    if arr.ndim != 2:
        raise LabelError(f"label file {path} has shape {arr.shape}; expected a palette PNG")
    return values_to_index(arr, VALUE_TABLE, path)


def build(split: str, root: str | os.PathLike | None = None, *, include_eval_in_pool: bool = False,
          transform: Callable | None = None) -> SegmentationFiles:
    """Registry entry: ``get_dataset("voc", split, root, include_eval_in_pool=False)``."""
    check_split("voc", split)
    folder = resolve_root("voc", root, is_complete)
    devkit = folder / "VOCdevkit"
    year = "VOC2007" if split == "test" else "VOC2012"
    base = devkit / year
    if split == "pool":
        images = sorted((devkit / "VOC2012" / "JPEGImages").glob("*.jpg"))
        if not include_eval_in_pool:
            held_out = set(read_ids(devkit / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt"))
            images = [p for p in images if p.stem not in held_out]
        return SegmentationFiles("voc", split, images, None, None, CLASS_NAMES, CLASS_COLORS,
                                 transform=transform, root=folder)
    if split == "test" and not (base / "ImageSets" / "Segmentation" / "test.txt").is_file():
        raise FileNotFoundError(f"VOC2007 test set missing under {base}; run: smir download voc"
                                f"{'' if root is None else f' --root {root}'}")
    ids = read_ids(base / "ImageSets" / "Segmentation" / f"{'test' if split == 'test' else split}.txt")
    images = [base / "JPEGImages" / f"{i}.jpg" for i in ids]
    labels = [base / "SegmentationClass" / f"{i}.png" for i in ids]
    return SegmentationFiles("voc", split, images, labels, decode_label, CLASS_NAMES, CLASS_COLORS,
                             transform=transform, ids=ids, root=folder)
