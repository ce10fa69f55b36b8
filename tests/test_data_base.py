"""Bad input everywhere: missing roots, unknown label colours/values, size mismatches, odd image modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from smir_lib.data import DATASET_NAMES, get_dataset
from smir_lib.data.base import (
    DatasetNotFoundError,
    ImageLoadError,
    LabelError,
    SegmentationFiles,
    colors_to_index,
    load_image,
    values_to_index,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", [n for n in DATASET_NAMES if n != "synthetic"])
def test_missing_root_prints_exact_download_command(name, tmp_path, monkeypatch):
    monkeypatch.delenv("SMIR_DATA_DIR", raising=False)
    with pytest.raises(DatasetNotFoundError) as info:  # cwfid skips ../shared/data/cwfid when a root is given
        get_dataset(name, "train", root=tmp_path)
    assert f"smir download {name} --root {tmp_path}" in str(info.value)


def test_env_var_is_the_default_root(tmp_path, monkeypatch):
    monkeypatch.setenv("SMIR_DATA_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(DatasetNotFoundError, match="elsewhere"):
        get_dataset("voc", "train")


def test_unknown_names_and_splits():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        get_dataset("mnist", "train")
    with pytest.raises(ValueError, match="unknown split 'training'"):
        get_dataset("synthetic", "training")


def test_unknown_colour_names_file_and_colour(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[1, 2] = (10, 20, 30)
    with pytest.raises(LabelError, match=r"lab\.png contains unknown colour\(s\) \(10, 20, 30\)"):
        colors_to_index(rgb, {(0, 0, 0): 0, (0, 255, 0): 1}, tmp_path / "lab.png")
    rgb[1, 2] = (0, 255, 0)
    out = colors_to_index(rgb, {(0, 0, 0): 0, (0, 255, 0): 1}, "x")
    assert out[1, 2] == 1 and out.sum() == 1


def test_unknown_value_names_file_and_value():
    values = np.array([[0, 10000], [20005, 12345]])
    with pytest.raises(LabelError, match=r"f\.png contains unknown label value\(s\) 12345"):
        values_to_index(values, {0: 0, 10000: 1, 20005: 2}, "f.png")


def _write_pair(tmp_path, image: Image.Image, label: np.ndarray):
    image.save(tmp_path / "img.png")
    Image.fromarray(label).save(tmp_path / "lab.png")
    return SegmentationFiles("toy", "train", [tmp_path / "img.png"], [tmp_path / "lab.png"],
                             lambda p: np.array(Image.open(p)), ["a", "b"], [(0, 0, 0), (255, 255, 255)])


def test_size_mismatch_names_the_files(tmp_path):
    ds = _write_pair(tmp_path, Image.new("RGB", (8, 6)), np.zeros((5, 8), np.uint8))
    with pytest.raises(LabelError, match=r"lab\.png is 8x5 .*img\.png is 8x6"):
        ds[0]


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "LA"])
def test_grayscale_palette_and_rgba_become_rgb(tmp_path, mode):
    img = Image.new(mode, (7, 5), 200 if mode != "RGBA" else (200, 100, 50, 128))
    path = tmp_path / "x.png"
    img.save(path)
    out = load_image(path)
    assert out.shape == (3, 5, 7) and out.dtype == torch.float32
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_corrupt_image_raises_with_path(tmp_path):
    path = tmp_path / "broken.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(path)
    path.write_bytes(path.read_bytes()[:40])  # truncated
    with pytest.raises(ImageLoadError, match="broken.png"):
        load_image(path)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ImageLoadError, match="text.png"):
        load_image(tmp_path / "text.png")


def test_pool_items_are_images_only(tmp_path):
    Image.new("RGB", (4, 3)).save(tmp_path / "a.png")
    ds = SegmentationFiles("toy", "pool", [tmp_path / "a.png"], None, None, ["a"], [(0, 0, 0)])
    assert not ds.labelled and ds[0].shape == (3, 3, 4)
