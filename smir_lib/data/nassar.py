"""Nassar 2020: UAV field tiles (256x256) with colour masks: background, crop, weed.

Layout after ``smir download nassar`` (Kaggle dataset ``yueminwang/nassar-2020``,
extracted under ``nassar/``; the folder holding ``data_list`` is found at any depth)::

    nassar/.../train/data/<name>.png            RGB tiles
    nassar/.../train/mask/<name>.png            colour masks: (0,0,0) background, (0,128,0) crop, (128,0,0) weed
    nassar/.../train/data_list/{train,val,test}.txt
    nassar/ortho_tiles/*.png                    optional: 256x256 tiles of the orthomosaic (the pool)

Splits (the paper's recipe): the first fifth of ``train.txt`` (356) / first fifth of ``val.txt`` (33) / all of
``test.txt`` (266); ``first_fifth=False`` uses the whole lists.

Pool: ``pool_source="ortho"`` (default) is the 40,710 orthomosaic tiles in ``ortho_tiles/``
(make them with :func:`tile_orthomosaic` if you have ``RGB_reference_png.png``): exactly the
authors' pool (their ``datalist.txt`` lists these tiles and nothing else). Whether the labelled
val/test tiles were cut from the same orthomosaic is not documented, so they cannot be excluded
by name. ``include_eval_in_pool=True`` does *not* reproduce the authors here: it adds the 434
labelled val and test tiles (whole lists), which the authors never put in their pool, to
measure what pretraining on the evaluation images does.
``pool_source="labelled"`` uses all labelled train tiles (images only): a pool that certainly
holds no evaluation image.
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
    pixel_limit,
    resolve_root,
    save_image_file,
)

CLASS_NAMES = ["background", "crop", "weed"]
CLASS_COLORS = [(0, 0, 0), (0, 128, 0), (128, 0, 0)]
MASK_COLORS = {(0, 0, 0): 0, (0, 128, 0): 1, (128, 0, 0): 2}
SUBSET_FRACTION = 0.2


def find_tiles(folder: Path, max_depth: int = 4) -> Path | None:
    """The folder holding ``data/``, ``mask/`` and ``data_list/train.txt`` under ``folder`` (breadth first)."""
    level = [folder]
    for _ in range(max_depth + 1):
        for d in level:
            if (d / "data_list" / "train.txt").is_file() and (d / "data").is_dir() and (d / "mask").is_dir():
                return d
        level = [c for d in level if d.is_dir() for c in sorted(d.iterdir()) if c.is_dir()]
    return None


def is_complete(folder: Path) -> bool:
    return folder.is_dir() and find_tiles(folder) is not None


def read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"Nassar split list missing: {path}; run: smir download nassar")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def decode_mask(path: Path) -> np.ndarray:
    """A Nassar colour mask -> class indices; an unknown colour names the file and colour."""
    return colors_to_index(open_image_array(path, "RGB"), MASK_COLORS, path)


def tile_orthomosaic(source: str | os.PathLike, out_dir: str | os.PathLike, tile: int = 256,
                     progress: bool = True) -> int:
    """Cut the orthomosaic into ``tile x tile`` PNGs (the last row/column shifted inwards, as the
    authors' ``tile_nassar.py``), named ``nassar_NNNNN.png`` in row-major order. Needs RAM for the
    whole mosaic (about 8 GB for the 90,599 x 29,395 RGB reference). Returns the number of tiles."""
    from tqdm.auto import tqdm

    with pixel_limit(None):  # the reference mosaic is 2.7 G pixels; every other image keeps the limits
        mosaic = open_image_array(source, "RGB")  # (H, W, 3)
    h, w = mosaic.shape[:2]
    rows = np.minimum(np.arange(0, h, tile), h - tile)
    cols = np.minimum(np.arange(0, w, tile), w - tile)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    for y in tqdm(rows, desc="tiling", disable=not progress):
        for x in cols:
            save_image_file(mosaic[y:y + tile, x:x + tile], out / f"nassar_{count:05d}.png")
            count += 1
    return count


def build(split: str, root: str | os.PathLike | None = None, *, first_fifth: bool = True,
          include_eval_in_pool: bool = False, pool_source: str = "ortho",
          transform: Callable | None = None) -> SegmentationFiles:
    """Registry entry: ``get_dataset("nassar", split, root, first_fifth=True, pool_source="ortho")``."""
    check_split("nassar", split)
    folder = resolve_root("nassar", root, is_complete)
    tiles = find_tiles(folder)
    assert tiles is not None

    def names(which: str, subset: bool) -> list[str]:
        listed = read_list(tiles / "data_list" / f"{which}.txt")
        return listed[:int(len(listed) * SUBSET_FRACTION)] if subset else listed

    if split == "pool":
        if pool_source == "labelled":
            images = [tiles / "data" / f"{n}.png" for n in names("train", False)]
        elif pool_source == "ortho":
            ortho = folder / "ortho_tiles"
            images = sorted(ortho.glob("*.png"))
            if not images:
                raise FileNotFoundError(
                    f"Nassar pool: no orthomosaic tiles in {ortho}. Make them with smir_lib.data.nassar."
                    f"tile_orthomosaic('<path>/RGB_reference_png.png', '{ortho}'), or use "
                    f"pool_source='labelled' (the labelled train tiles, images only)")
        else:
            raise ValueError(f"unknown pool_source '{pool_source}': expected 'ortho' or 'labelled'")
        if include_eval_in_pool:
            images += [tiles / "data" / f"{n}.png" for n in names("val", False) + names("test", False)]
        return SegmentationFiles("nassar", split, images, None, None, CLASS_NAMES, CLASS_COLORS,
                                 transform=transform, root=folder)
    listed = names(split, first_fifth and split != "test")
    return SegmentationFiles("nassar", split, [tiles / "data" / f"{n}.png" for n in listed],
                             [tiles / "mask" / f"{n}.png" for n in listed], decode_mask, CLASS_NAMES, CLASS_COLORS,
                             transform=transform, ids=listed, root=folder)
