"""Sugarbeets 2016 (Chebrolu et al., IJRR 2017): BoniRob field images, soil / crop / weed.

Layout after ``smir download sugarbeets`` (the 11 ``ijrr_sugarbeets_2016_annotations``
RAR parts, extracted)::

    sugarbeets/ijrr_sugarbeets_2016_annotations/<day>/images/rgb/<frame>.png
    sugarbeets/ijrr_sugarbeets_2016_annotations/<day>/annotations/dlp/iMapCleaned/<frame>.png

Labels use the dataset's official values: crop 10000, 10001, 10002; weed 2, 20000..20011
(dicot) and 20100..20105 (grass); soil 0, 1, 97. Any other value raises an error naming the
file and the value. (The authors' code mapped only 10000 to crop, every value above 10000 to
weed, and left weed value 2 as soil; we do not copy that.)

Splits (the paper's recipe): the labelled frames that contain weed, in sorted file order, split 70/10/20.
Which frames contain weed is found once by reading every label (a few minutes, with a
progress bar) and cached in ``sugarbeets/smir_weed_frames.txt``. Our weed test uses the
official mapping, so the list can differ from the authors' 757 frames.

Pool: all labelled frames (RGB only), minus the val and test frames unless
``include_eval_in_pool=True``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from smir_lib.data.base import SegmentationFiles, check_split, open_image_array, resolve_root, values_to_index
from smir_lib.files import atomic_write_text

CLASS_NAMES = ["soil", "crop", "weed"]
CLASS_COLORS = [(120, 85, 50), (0, 200, 0), (230, 30, 30)]
SOIL_VALUES = (0, 1, 97)
CROP_VALUES = (10000, 10001, 10002)
WEED_VALUES = (2, *range(20000, 20012), *range(20100, 20106))
VALUE_TABLE = {**{v: 0 for v in SOIL_VALUES}, **{v: 1 for v in CROP_VALUES}, **{v: 2 for v in WEED_VALUES}}
ARCHIVE_DIR = "ijrr_sugarbeets_2016_annotations"
LABEL_SUBDIR = Path("annotations") / "dlp" / "iMapCleaned"
WEED_LIST = "smir_weed_frames.txt"
SPLIT_FRACTIONS = (0.7, 0.8)  # train up to 70 %, val up to 80 %, test the rest


def is_complete(folder: Path) -> bool:
    return (folder / ARCHIVE_DIR).is_dir()


def decode_label(path: Path) -> np.ndarray:
    """An iMapCleaned PNG (official label values) -> class indices 0 soil, 1 crop, 2 weed."""
    return values_to_index(open_image_array(path, mode=None), VALUE_TABLE, path)


def rgb_path(label: Path) -> Path:
    """``<day>/annotations/dlp/iMapCleaned/x.png`` -> ``<day>/images/rgb/x.png``."""
    day = label.parents[len(LABEL_SUBDIR.parts)]
    return day / "images" / "rgb" / label.name


def labelled_frames(folder: Path) -> list[Path]:
    """Every label file that has an RGB image, sorted by path (the 'file order')."""
    labels = sorted((folder / ARCHIVE_DIR).glob(f"*/{LABEL_SUBDIR.as_posix()}/*.png"))
    return [p for p in labels if rgb_path(p).is_file()]


def weed_frames(folder: Path, progress: bool = True) -> list[Path]:
    """Labelled frames with at least one weed pixel (official mapping), cached in ``WEED_LIST``."""
    cache = folder / WEED_LIST
    if cache.is_file():
        return [folder / line for line in cache.read_text().splitlines() if line.strip()]
    from tqdm.auto import tqdm

    weedy = [p for p in tqdm(labelled_frames(folder), desc="finding frames with weed", disable=not progress)
             if (decode_label(p) == 2).any()]
    atomic_write_text("".join(f"{p.relative_to(folder).as_posix()}\n" for p in weedy), cache)
    return weedy


def split_frames(folder: Path, progress: bool = True) -> dict[str, list[Path]]:
    weedy = weed_frames(folder, progress)
    a, b = (int(f * len(weedy)) for f in SPLIT_FRACTIONS)
    return {"train": weedy[:a], "val": weedy[a:b], "test": weedy[b:]}


def build(split: str, root: str | os.PathLike | None = None, *, include_eval_in_pool: bool = False,
          progress: bool = True, transform: Callable | None = None) -> SegmentationFiles:
    """Registry entry: ``get_dataset("sugarbeets", split, root, include_eval_in_pool=False)``."""
    check_split("sugarbeets", split)
    folder = resolve_root("sugarbeets", root, is_complete)
    if split == "pool":
        labels = labelled_frames(folder)
        if not include_eval_in_pool:
            splits = split_frames(folder, progress)
            held_out = set(splits["val"]) | set(splits["test"])
            labels = [p for p in labels if p not in held_out]
        return SegmentationFiles("sugarbeets", split, [rgb_path(p) for p in labels], None, None, CLASS_NAMES,
                                 CLASS_COLORS, transform=transform, root=folder)
    labels = split_frames(folder, progress)[split]
    return SegmentationFiles("sugarbeets", split, [rgb_path(p) for p in labels], labels, decode_label,
                             CLASS_NAMES, CLASS_COLORS, transform=transform, ids=[p.stem for p in labels],
                             root=folder)
