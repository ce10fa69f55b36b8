"""Large photographs (issue 30 item 2): a folder's photos larger than any training crop uses are
decoded and shrunk once; the items stay within a stated tolerance of the full-size ones."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from smir_lib.data import get_dataset
from smir_lib.data.folder_example import write_example_folder
from smir_lib.data.transforms import TrainAugment
from smir_lib.data.views import CachedItems, crop_source_side
from smir_lib.engine.config import load_config
from smir_lib.engine.finetune import LabelledSet, finetune
from smir_lib.engine.pretrain_data import training_source

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_thread")]

TOLERANCE = {"mean_abs_pixel_diff": 0.02, "label_agreement": 0.95}
"""How far a training item of a shrunk photo may be from the full photo's (same seed), on average."""


def large_folder(root, size=(450, 600), n=6):
    """The example folder with its photos and masks enlarged to ``size`` (height, width)."""
    write_example_folder(root, n_images=n, n_pool=0)
    for p in (root / "images").iterdir():
        Image.open(p).resize(size[::-1], Image.BICUBIC).save(p, quality=95)
    for p in (root / "masks").iterdir():
        Image.open(p).resize(size[::-1], Image.NEAREST).save(p)
    return root


def test_no_crop_uses_more_than_the_crop_source_side():
    crop = TrainAugment(128).modules()[0]
    side = 1000
    params = crop.forward_parameters((2000, 3, side, side))
    src = params["src"]  # (B, 4, 2) corners
    widths = src[:, 1, 0] - src[:, 0, 0] + 1
    heights = src[:, 3, 1] - src[:, 0, 1] + 1
    smallest = float(torch.minimum(widths, heights).min())  # px of the 1000-px image shrunk to 128
    assert smallest * crop_source_side(128) / side >= 128 * 0.98  # at 296 px no crop is upscaled
    assert crop_source_side(128) == math.ceil(128 / math.sqrt(0.25 * 0.75)) == 296


def test_shrunk_items_stay_within_the_tolerance_of_full_photos(tmp_path, capsys):
    root = large_folder(tmp_path / "f")
    cfg = load_config("fast", {"dataset": "folder", "data_root": str(root), "image_size": 128, "progress": False})
    train = get_dataset("folder", "train", root=root)
    shrunk = training_source(train, cfg, "folder")
    assert isinstance(shrunk, CachedItems) and shrunk[0][0].shape[-2:] == (296, 395)
    assert "shrunk to it once" in capsys.readouterr().err
    full, small = LabelledSet(train, "train", cfg), LabelledSet(shrunk, "train", cfg)
    diffs, agree = [], []
    for epoch in range(2):
        full.set_epoch(epoch)
        small.set_epoch(epoch)
        for i in range(len(full)):
            (x1, l1), (x2, l2) = full[i], small[i]
            assert x1.shape == x2.shape == (3, 128, 128)
            diffs.append(float((x1 - x2).abs().mean()))
            agree.append(float((l1 == l2).float().mean()))
    assert np.mean(diffs) <= TOLERANCE["mean_abs_pixel_diff"] and np.mean(agree) >= TOLERANCE["label_agreement"]
    assert np.mean(diffs) > 0  # the items did change: this is a second resize, not the same pipeline


def test_builtin_datasets_and_small_photos_are_read_as_they_are(tmp_path):
    cfg = load_config("fast", {"image_size": 128})
    synthetic = get_dataset("synthetic", "train", n_images=4, size=256)
    assert training_source(synthetic, cfg, "synthetic") is synthetic  # the paper's pipeline, bit for bit
    small = write_example_folder(tmp_path / "small", n_images=4, n_pool=0, size=(200, 260))
    train = get_dataset("folder", "train", root=small)
    assert training_source(train, cfg, "folder") is train  # nothing larger than 296 px: nothing to shrink


def test_finetune_on_large_photos_runs_through_the_shrunk_items(tmp_path, capsys):
    root = large_folder(tmp_path / "f", size=(300, 400))
    cfg = load_config("fast", {"dataset": "folder", "data_root": str(root), "model": "tiny", "image_size": 64,
                               "msssim_win": 3, "finetune_epochs": 1, "finetune_batch": 2, "warmup_epochs": 0,
                               "workers": 0, "train_size": None, "val_size": None, "test_size": None,
                               "progress": False})
    result = finetune(cfg, tmp_path / "ft")
    assert 0 <= result["test"]["miou"] <= 1
    assert "larger than a short side of 148 px" in capsys.readouterr().err


# --- Very large pool photos (issue 29 item 5): decoded no larger than read, never whole as floats ---

def blocks_photo(path, side: int, blocks: int = 100, resample=Image.NEAREST):
    """A ``side`` x ``side`` photo of ``blocks`` x ``blocks`` random colours, flat (NEAREST: many
    pixels, a small file) or blended (BILINEAR: a smooth picture)."""
    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 255, (blocks, blocks, 3), dtype=np.uint8))
    small.resize((side, side), resample).save(path, quality=95)
    return path


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_decode_near_keeps_twice_the_short_side_and_the_picture(tmp_path, suffix):
    from smir_lib.data.base import load_image
    from smir_lib.data.transforms import resize_short_side

    path = blocks_photo(tmp_path / f"p{suffix}", 2000, blocks=30, resample=Image.BILINEAR)
    full, near = load_image(path), load_image(path, near=148)
    assert full.shape[-2:] == (2000, 2000)
    assert 2 * 148 <= near.shape[-1] < 4 * 148  # an integer factor, never below twice the side read
    a, b = resize_short_side(full, 148), resize_short_side(near, 148)
    assert float((a - b).abs().mean()) < TOLERANCE["mean_abs_pixel_diff"]  # the same picture, as read
    assert load_image(path, near=1000).shape == full.shape  # not more than twice as large: decoded as it is


def test_a_photo_between_pillows_limit_and_the_kits_is_read_without_a_warning(tmp_path):
    import struct
    import warnings
    import zlib

    from smir_lib.data.base import image_shape

    path = tmp_path / "big.png"
    Image.new("RGB", (8, 8)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = struct.pack(">II", 9600, 9600) + bytes(data[24:29])  # 92 M pixels: above Pillow's 89 M, below 100 M
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(bytes(data))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning would fail here
        assert image_shape(path) == (9600, 9600)


def test_a_labelled_photo_read_near_keeps_its_label_aligned(tmp_path):
    from smir_lib.data.views import ShrunkItems, read_near

    root = large_folder(tmp_path / "f", size=(1500, 2000), n=4)
    train = get_dataset("folder", "train", root=root)
    image, label = read_near(train, 0, 148)
    assert image.shape[-2:] == label.shape == (375, 500)  # decoded at a quarter: still twice 148
    full_image, full_label = train[0]
    assert float((label == full_label[::4, ::4]).float().mean()) > 0.98
    shrunk = ShrunkItems(train, 148)
    assert shrunk[0][0].shape[-2:] == shrunk[0][1].shape == (148, 197) == shrunk.image_shape(0)


MEASURE_POOL = """
import re, sys
from smir_lib.engine.config import load_config
from smir_lib.engine.pretrain_data import load_split, scoring_pool, training_source
cfg = load_config("fast", {"dataset": "folder", "data_root": sys.argv[1], "image_size": 64, "msssim_win": 3,
                           "progress": False, "cache_images": True})
pool = load_split(cfg, "pool")
for ds in (scoring_pool(pool, cfg), training_source(pool, cfg, "folder")):
    shapes = [tuple(ds[i].shape) for i in range(len(ds))]
peak = int(re.search(r"VmHWM:\\s*(\\d+) kB", open("/proc/self/status").read()).group(1))  # this process only
print(peak / 2**20, shapes)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak memory from Linux's /proc")
def test_a_very_large_pool_photo_costs_a_small_share_of_decoding_it_as_floats(tmp_path):
    import os
    import subprocess
    import sys

    root = write_example_folder(tmp_path / "f", n_images=4, n_pool=1)
    blocks_photo(root / "pool" / "huge.png", 8000)  # 64 M pixels: 0.77 GB as floats, 0.19 GB as bytes
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", MEASURE_POOL, str(root)], capture_output=True, text=True,
                         timeout=300, env=env, check=True).stdout.split(maxsplit=1)
    peak_gib, shapes = float(out[0]), out[1]
    assert "(3, 148, 148)" in shapes  # the huge photo, shrunk to what a 64-px pretraining reads
    assert peak_gib < 1.0, f"reading the pool peaked at {peak_gib:.2f} GiB"  # 0.50 GiB; 4.06 GiB before issue 29


class Counting(torch.utils.data.Dataset):
    """Two 100 x 130 photos that count how often they are decoded."""

    def __init__(self):
        self.reads = 0

    def __len__(self):
        return 2

    def image_shape(self, i):  # from a header: nothing decoded
        return 100, 130

    def __getitem__(self, i):
        self.reads += 1
        return torch.rand(3, 100, 130)


def test_tiles_read_in_order_decode_each_source_photo_once():
    import pickle

    from smir_lib.data.tiles import TiledPool

    base = Counting()
    pool = TiledPool(base, 32)
    tiles = [pool[n] for n in range(len(pool))]
    assert len(tiles) == 2 * 4 * 5 and base.reads == 2  # one decode per photo, not one per tile
    assert pickle.loads(pickle.dumps(pool))._last is None  # a worker gets the layout, not the photo
