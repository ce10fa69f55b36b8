"""Tiles for pools (smir_lib.data.tiles), sliding windows (smir_lib.engine.inference), and pool tiling from a config."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from smir_lib.data.folder_example import write_example_folder
from smir_lib.data.synthetic import SyntheticFields
from smir_lib.data.tiles import TiledPool, tile_boxes, tile_starts
from smir_lib.engine.config import load_config
from smir_lib.engine.inference import sliding_window_logits
from smir_lib.engine.pretrain_data import data_origin, load_split

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("length,tile,stride", [(966, 256, 256), (1296, 256, 128), (256, 256, 64), (100, 256, 64)])
def test_tiles_cover_every_pixel_and_stay_inside(length, tile, stride):
    starts = tile_starts(length, tile, stride)
    covered = torch.zeros(length, dtype=torch.long)
    for s in starts.tolist():  # a reference by brute force
        covered[s:s + min(tile, length)] += 1
    assert (covered > 0).all() and int(starts.max()) + min(tile, length) == length and int(starts.min()) == 0
    assert (starts.diff() <= stride).all() and (starts.diff() > 0).all()


def test_a_stride_longer_than_the_tile_is_refused():
    with pytest.raises(ValueError, match="stride must be 1..64 px"):
        tile_starts(300, 64, 100)


def test_tile_boxes_are_row_major_and_equal_sized():
    boxes = tile_boxes(96, 128, 64, 48)
    assert boxes.tolist() == [[0, 0, 64, 64], [0, 48, 64, 64], [0, 64, 64, 64],
                              [32, 0, 64, 64], [32, 48, 64, 64], [32, 64, 64, 64]]


def test_tiled_pool_items_are_crops_of_their_source():
    base = SyntheticFields("pool", n_images=3, seed=0, size=(96, 128))
    pool = TiledPool(base, 64, 48)
    assert len(pool) == 3 * 6 and pool.sources.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    assert torch.equal(pool[10], base[1][:, 32:96, 48:112])  # image 1, tile 4: second row, second column


def test_config_tiles_the_pool_of_synthetic_and_folder_data(tmp_path):
    cfg = load_config("fast", {"pool_size": 4, "synthetic_size": 96, "pool_tile_size": 64, "pool_tile_stride": 32})
    assert len(load_split(cfg, "pool")) == 4 * 2 * 2  # 96 px: starts 0, 32 on each side
    root = write_example_folder(tmp_path / "f", n_images=10, n_pool=2, size=(96, 128))
    cfg = load_config("fast", {"dataset": "folder", "data_root": str(root), "pool_size": None, "pool_tile_size": 64,
                               "pool_tile_stride": 48})
    pool = load_split(cfg, "pool")  # 7 train + 1 val + 2 pool images, 6 tiles each
    assert len(pool) == 10 * 6 and pool[0].shape == (3, 64, 64)
    assert data_origin(pool) == f"read from {root.resolve()}"  # a run's announcement names the folder
    assert load_config("fast").pool_tile_size is None  # off by default: the paper's recipe


def test_tiled_cwfid_pool_has_hundreds_of_tiles(cwfid_root):
    cfg = load_config("cwfid_fast", {"data_root": str(cwfid_root), "pool_tile_size": 256})
    pool = load_split(cfg, "pool")
    assert len(pool) == 39 * 6 * 4  # 1296 x 966: 6 columns, 4 rows of 256 px
    assert pool[len(pool) - 1].shape == (3, 256, 256)


def test_sliding_windows_equal_the_whole_image_for_a_pointwise_network():
    torch.manual_seed(0)
    net = nn.Conv2d(3, 4, 1)  # no spatial context: every window agrees with the whole image
    x = torch.randn(2, 3, 70, 150)
    got = sliding_window_logits(net, x, window=32, stride=20, batch=3)
    with torch.no_grad():
        assert torch.allclose(got, net(x), atol=1e-6)


def test_bad_eval_mode_is_named():
    with pytest.raises(ValueError, match="eval_mode='tiles' is invalid: expected 'resize' or 'sliding'"):
        load_config("fast", {"eval_mode": "tiles"})


def test_a_stride_that_lays_out_hours_of_windows_is_one_line_naming_eval_stride():
    from smir_lib.engine.inference import check_window_count

    check_window_count(966, 1296, 256, 128)  # the default: 7 x 10 windows
    check_window_count(10_000, 10_000, 256, 128)  # 6,084 windows, the default stride: allowed
    check_window_count(966, 1296, 256, 16)  # 46 x 66 windows: a fine stride, allowed
    with pytest.raises(ValueError, match=r"eval_stride=1 px slides 740,151 windows of 256 px over a 1296x966"):
        check_window_count(966, 1296, 256, 1)
    with pytest.raises(ValueError, match="eval_stride=1 px"):
        sliding_window_logits(nn.Conv2d(3, 2, 1), torch.rand(1, 3, 966, 1296), 256, 1)
