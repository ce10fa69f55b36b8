"""Large photographs (issue 30 item 2): a folder's photos larger than any training crop uses are
decoded and shrunk once; the items stay within a stated tolerance of the full-size ones."""

from __future__ import annotations

import math

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
