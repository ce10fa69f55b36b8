"""The built-in synthetic field dataset: exact labels, determinism, class balance, difficulty, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from smir_lib.data import get_dataset
from smir_lib.data.synthetic import SyntheticFields

pytestmark = pytest.mark.unit


def test_items_shapes_ranges_and_metadata():
    ds = get_dataset("synthetic", "train", n_images=4)
    image, label = ds[0]
    assert image.shape == (3, 256, 256) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert label.shape == (256, 256) and label.dtype == torch.long
    assert set(label.unique().tolist()) <= {0, 1, 2}
    assert ds.class_names == ["soil", "crop", "weed"] and len(ds.class_colors) == 3 and ds.ignore_index == 255
    assert [len(get_dataset("synthetic", s)) for s in ("train", "val", "test")] == [64, 16, 32]


def test_deterministic_per_index_in_any_order():
    a = SyntheticFields("train", n_images=10, seed=3)
    b = SyntheticFields("train", n_images=10, seed=3)
    late = b[7]
    for i in (0, 7):
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1])
    assert torch.equal(late[0], a[7][0])
    assert not torch.equal(a[0][0], SyntheticFields("train", seed=4)[0][0])


def test_splits_are_different_streams():
    images = [get_dataset("synthetic", s, n_images=1)[0] for s in ("train", "val", "test")]
    images = [x[0] if isinstance(x, tuple) else x for x in images]
    pool = get_dataset("synthetic", "pool", n_images=1)[0]
    for i, x in enumerate(images):
        assert not torch.equal(x, pool)
        for y in images[i + 1:]:
            assert not torch.equal(x, y)


def test_pool_is_unlabelled_and_as_long_as_asked():
    pool = get_dataset("synthetic", "pool", n_images=1_000_000)
    assert len(pool) == 1_000_000 and not pool.labelled
    item = pool[999_999]
    assert isinstance(item, torch.Tensor) and item.shape == (3, 256, 256)
    with pytest.raises(IndexError):
        pool[1_000_000]


def test_non_square_size_and_transform_hook():
    from smir_lib.data.transforms import EvalTransform

    ds = get_dataset("synthetic", "test", n_images=2, size=(192, 320))
    image, label = ds[1]
    assert image.shape == (3, 192, 320) and label.shape == (192, 320)
    ds = get_dataset("synthetic", "val", n_images=2, size=(192, 320), transform=EvalTransform(128))
    image, label = ds[0]
    assert image.shape == (3, 128, 128) and label.shape == (128, 128)


def test_class_shares_weed_is_rare_but_present():
    ds = get_dataset("synthetic", "train", n_images=48)
    counts = np.zeros(3)
    with_weed = 0
    for i in range(len(ds)):
        label = ds[i][1].numpy()
        c = np.bincount(label.ravel(), minlength=3)
        counts += c
        with_weed += c[2] > 0
    shares = counts / counts.sum()
    assert 0.08 < shares[1] < 0.22, shares  # crop about 10-20 %
    assert 0.015 < shares[2] < 0.07, shares  # weed: a rare class of a few percent
    assert with_weed >= 0.9 * len(ds)


def test_images_have_fine_detail_to_reconstruct():
    """Not trivially smooth: a 4x down/up-sampled copy differs clearly from the image."""
    ds = get_dataset("synthetic", "pool", n_images=8)
    batch = torch.stack([ds[i] for i in range(8)])  # (8, 3, 256, 256)
    blurred = F.interpolate(F.avg_pool2d(batch, 4), scale_factor=4, mode="bilinear", align_corners=False)
    assert (batch - blurred).abs().mean() > 0.02
    assert batch.std(dim=(2, 3)).mean() > 0.05


def test_speed_at_least_150_images_per_second_on_one_core():
    """CPU time (not wall time), so other processes on a shared machine do not count.

    This machine renders 210-300 images/s (best of six runs of 60); a CI run on a busy machine
    measured 199. The bar is below that noise and still above half the usual speed, so losing the
    soil texture bank (which made rendering about 2x faster) fails here.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ds = SyntheticFields("pool", n_images=10_000, seed=11)
        ds[0]  # builds the split's soil texture bank once
        best = 0.0
        for attempt in range(8):  # best of several: a busy machine slows even CPU time (caches)
            start = time.process_time()
            for i in range(60):
                ds[1 + attempt * 60 + i]
            best = max(best, 60 / max(time.process_time() - start, 1e-9))
            if best >= 150:
                break
        assert best >= 150, f"{best:.0f} images/s"
    finally:
        torch.set_num_threads(threads)


def test_example_figure_is_a_figure():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from smir_lib.data.synthetic import example_figure

    fig = example_figure(n=2, size=64)
    assert isinstance(fig, Figure) and len(fig.axes) == 4
