"""VOC, Cityscapes, Nassar and Sugarbeets on tiny fake directory trees built by the tests.

The real datasets cannot be downloaded here; these trees have the real layouts and label
encodings, so splits, label mappings, pool exclusion and error messages are checked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from smir_lib.data import get_dataset
from smir_lib.data.base import LabelError

pytestmark = pytest.mark.unit


def save_rgb(path: Path, h: int = 6, w: int = 8, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)


def save_values(path: Path, values: np.ndarray, mode: str | None = None) -> None:
    """Write a value-coded label: 16-bit grayscale for uint16, a VOC-palette PNG for mode "P"."""
    from smir_lib.data.voc import voc_colormap

    path.parent.mkdir(parents=True, exist_ok=True)
    if values.dtype == np.uint16:
        Image.fromarray(values).save(path)  # 16-bit grayscale PNG (I;16)
        return
    img = Image.fromarray(values.astype(np.uint8), mode)
    if mode == "P":  # a full palette, as VOC's files have, so PIL keeps the indices as they are
        img.putpalette([c for rgb in voc_colormap(256) for c in rgb])
    img.save(path)


# ------------------------------------------------------------------------------------- VOC

@pytest.fixture
def voc_root(tmp_path):
    devkit = tmp_path / "voc" / "VOCdevkit"
    splits = {("VOC2012", "train"): ["2008_000001", "2008_000002", "2008_000003"],
              ("VOC2012", "val"): ["2008_000004", "2008_000005"], ("VOC2007", "test"): ["000001"]}
    for (year, split), ids in splits.items():
        (devkit / year / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
        (devkit / year / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
        for i in ids:
            save_rgb(devkit / year / "JPEGImages" / f"{i}.jpg")
            label = np.zeros((6, 8), np.uint8)
            label[1, 1], label[2, 2], label[0, 0] = 15, 20, 255
            save_values(devkit / year / "SegmentationClass" / f"{i}.png", label, "P")
    save_rgb(devkit / "VOC2012" / "JPEGImages" / "2011_000099.jpg")  # unlabelled extra image
    return tmp_path


def test_voc_splits_labels_and_pool(voc_root):
    sizes = {s: len(get_dataset("voc", s, voc_root)) for s in ("train", "val", "test")}
    assert sizes == {"train": 3, "val": 2, "test": 1}
    ds = get_dataset("voc", "val", voc_root)
    image, label = ds[0]
    assert image.shape == (3, 6, 8) and label.shape == (6, 8)
    assert label[1, 1] == 15 and label[2, 2] == 20 and label[0, 0] == 255
    assert len(ds.class_names) == 21 and ds.class_colors[15] == (192, 128, 128) and ds.ignore_index == 255
    assert len(get_dataset("voc", "pool", voc_root)) == 4  # 6 VOC2012 images minus the 2 val ones
    assert len(get_dataset("voc", "pool", voc_root, include_eval_in_pool=True)) == 6


def test_voc_unknown_value_and_rgb_label(voc_root):
    path = voc_root / "voc/VOCdevkit/VOC2012/SegmentationClass/2008_000001.png"
    bad = np.zeros((6, 8), np.uint8)
    bad[3, 3] = 42
    save_values(path, bad, "P")
    with pytest.raises(LabelError, match=r"2008_000001\.png contains unknown label value\(s\) 42"):
        get_dataset("voc", "train", voc_root)[0]
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[2, 3] = (192, 128, 128)  # person, palette lost
    Image.fromarray(rgb).save(path)
    assert get_dataset("voc", "train", voc_root)[0][1][2, 3] == 15


# ------------------------------------------------------------------------------ Cityscapes

@pytest.fixture
def cityscapes_root(tmp_path):
    root = tmp_path / "cityscapes"
    for split, n in (("train", 10), ("val", 3), ("train_extra", 4)):
        for i in range(n):
            stem = f"aachen_{i:06d}_000019"
            save_rgb(root / "leftImg8bit" / split / "aachen" / f"{stem}_leftImg8bit.png")
            if split != "train_extra":
                ids = np.zeros((6, 8), np.uint8)
                ids[0, :4] = [7, 26, 33, 1]  # road, car, bicycle, ego vehicle (ignored)
                ids[1, 0] = 4  # static -> ignored
                save_values(root / "gtFine" / split / "aachen" / f"{stem}_gtFine_labelIds.png", ids)
    return tmp_path


def test_cityscapes_splits_trainids_and_pool(cityscapes_root):
    sizes = {s: len(get_dataset("cityscapes", s, cityscapes_root)) for s in ("train", "val", "test")}
    assert sizes == {"train": 8, "val": 2, "test": 3}  # first 80 % / last 20 % of train / official val
    ds = get_dataset("cityscapes", "train", cityscapes_root)
    _, label = ds[0]
    assert label[0, :4].tolist() == [0, 13, 18, 255] and label[1, 0] == 255 and label[2, 2] == 255
    assert len(ds.class_names) == 19 and ds.class_names[13] == "car"
    assert len(get_dataset("cityscapes", "pool", cityscapes_root)) == 4 + 8
    assert len(get_dataset("cityscapes", "pool", cityscapes_root, include_eval_in_pool=True)) == 4 + 8 + 2 + 3
    assert len(get_dataset("cityscapes", "pool", cityscapes_root, use_extra=False)) == 8


def test_cityscapes_value_out_of_table(cityscapes_root):
    path = sorted((cityscapes_root / "cityscapes/gtFine/train/aachen").glob("*.png"))[0]
    bad = np.full((6, 8), 40, np.uint8)
    save_values(path, bad)
    with pytest.raises(LabelError, match="unknown label value\\(s\\) 40"):
        get_dataset("cityscapes", "train", cityscapes_root)[0]


# ---------------------------------------------------------------------------------- Nassar

@pytest.fixture
def nassar_root(tmp_path):
    tiles = tmp_path / "nassar" / "Nassar2020" / "train"
    lists = {"train": [f"sub5ConvertPNG{i:04d}" for i in range(10)], "val": ["v0", "v1", "v2", "v3", "v4"],
             "test": ["t0", "t1", "t2"]}
    (tiles / "data_list").mkdir(parents=True)
    for split, names in lists.items():
        (tiles / "data_list" / f"{split}.txt").write_text("\n".join(names) + "\n")
        for n in names:
            save_rgb(tiles / "data" / f"{n}.png")
            mask = np.zeros((6, 8, 3), np.uint8)
            mask[0, 0], mask[0, 1] = (0, 128, 0), (128, 0, 0)
            Image.fromarray(mask).save(tiles / "mask" / f"{n}.png") if (tiles / "mask").is_dir() else (
                (tiles / "mask").mkdir(), Image.fromarray(mask).save(tiles / "mask" / f"{n}.png"))
    for i in range(7):
        save_rgb(tmp_path / "nassar" / "ortho_tiles" / f"nassar_{i:05d}.png")
    return tmp_path


def test_nassar_first_fifth_colours_and_pools(nassar_root):
    sizes = {s: len(get_dataset("nassar", s, nassar_root)) for s in ("train", "val", "test")}
    assert sizes == {"train": 2, "val": 1, "test": 3}
    full = {s: len(get_dataset("nassar", s, nassar_root, first_fifth=False)) for s in ("train", "val", "test")}
    assert full == {"train": 10, "val": 5, "test": 3}
    ds = get_dataset("nassar", "train", nassar_root)
    assert ds.ids == ["sub5ConvertPNG0000", "sub5ConvertPNG0001"]
    _, label = ds[0]
    assert label[0, :3].tolist() == [1, 2, 0]
    assert ds.class_colors == [(0, 0, 0), (0, 128, 0), (128, 0, 0)]
    assert len(get_dataset("nassar", "pool", nassar_root)) == 7
    assert len(get_dataset("nassar", "pool", nassar_root, include_eval_in_pool=True)) == 7 + 5 + 3
    assert len(get_dataset("nassar", "pool", nassar_root, pool_source="labelled")) == 10


def test_nassar_unknown_colour(nassar_root):
    path = nassar_root / "nassar/Nassar2020/train/mask/sub5ConvertPNG0000.png"
    Image.fromarray(np.full((6, 8, 3), (0, 255, 0), np.uint8)).save(path)
    with pytest.raises(LabelError, match=r"sub5ConvertPNG0000\.png contains unknown colour\(s\) \(0, 255, 0\)"):
        get_dataset("nassar", "train", nassar_root)[0]


# ------------------------------------------------------------------------------ Sugarbeets

@pytest.fixture
def sugarbeets_root(tmp_path):
    base = tmp_path / "sugarbeets" / "ijrr_sugarbeets_2016_annotations"
    for day, n in (("CKA_160523", 12), ("CKA_weeds", 8)):
        for i in range(n):
            name = f"bonirob_{day}_frame{i:03d}.png"
            save_rgb(base / day / "images" / "rgb" / name)
            values = np.zeros((6, 8), np.uint16)
            values[0, :3] = [1, 97, 10000]
            values[1, 0] = 10002  # crop (the authors' code made this weed)
            if i % 2 == 0:  # every second frame holds weed
                values[2, :3] = [2, 20011, 20105]
            save_values(base / day / "annotations" / "dlp" / "iMapCleaned" / name, values)
    return tmp_path


def test_sugarbeets_official_mapping_weed_frames_and_pool(sugarbeets_root):
    sizes = {s: len(get_dataset("sugarbeets", s, sugarbeets_root, progress=False)) for s in ("train", "val", "test")}
    assert sizes == {"train": 7, "val": 1, "test": 2}  # 10 frames with weed, 70/10/20 in file order
    ds = get_dataset("sugarbeets", "train", sugarbeets_root, progress=False)
    _, label = ds[0]
    assert label[0, :3].tolist() == [0, 0, 1] and label[1, 0] == 1  # 10002 is crop
    assert label[2, :3].tolist() == [2, 2, 2]  # 2, 20011, 20105 are weed
    assert (sugarbeets_root / "sugarbeets" / "smir_weed_frames.txt").is_file()  # cached
    assert len(get_dataset("sugarbeets", "pool", sugarbeets_root, progress=False)) == 20 - 3
    assert len(get_dataset("sugarbeets", "pool", sugarbeets_root, include_eval_in_pool=True)) == 20


def test_sugarbeets_unknown_value_names_file(sugarbeets_root, tmp_path):
    from smir_lib.data.sugarbeets import decode_label

    path = tmp_path / "odd.png"
    save_values(path, np.array([[0, 10003]], np.uint16))
    with pytest.raises(LabelError, match=r"odd\.png contains unknown label value\(s\) 10003"):
        decode_label(path)
