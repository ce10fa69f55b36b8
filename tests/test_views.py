"""Dataset views: first-n, in-memory caching (``cache_images``) and the resized scoring pool.

Caching is an execution option: a cached dataset yields exactly the items of the uncached one,
and a pretraining run with it trains the same weights on the same masks.
"""

import numpy as np
import pytest
import torch
from PIL import Image

from smir_lib.data import get_dataset, views
from smir_lib.data.base import SegmentationFiles
from smir_lib.data.tiles import TiledPool
from smir_lib.data.transforms import resize_short_side
from smir_lib.data.views import CachedItems, FirstItems, ResizedImages, item_key, read_item
from smir_lib.engine.config import load_config
from smir_lib.engine.pretrain import pretrain_selective
from smir_lib.engine.pretrain_data import load_masks

pytestmark = pytest.mark.usefixtures("one_thread")


def _read_png(path):
    return np.array(Image.open(path))


def _png_dataset(tmp_path, n=3, decode=None):
    """Labelled PNG files of odd sizes: 8-bit images as they come from disk."""
    rng = np.random.default_rng(0)
    images, labels = [], []
    for i in range(n):
        h, w = 40 + 3 * i, 57
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 3, (h, w), dtype=np.uint8)).save(tmp_path / f"{i}_label.png")
        images.append(tmp_path / f"{i}.png")
        labels.append(tmp_path / f"{i}_label.png")
    return SegmentationFiles("pngs", "train", images, labels, decode or (lambda p: np.array(Image.open(p))),
                             ["a", "b", "c"], [(0, 0, 0), (0, 255, 0), (255, 0, 0)])


@pytest.mark.unit
def test_cached_items_equal_the_files_and_are_stored_as_bytes(tmp_path):
    files = _png_dataset(tmp_path)
    cached = CachedItems(files)
    for i in range(len(files)):
        (image, label), (c_image, c_label) = files[i], cached[i]
        assert torch.equal(image, c_image) and torch.equal(label, c_label)
    assert cached.items[0][0].dtype == torch.uint8  # 4x smaller than float32, exactly the same floats
    cached[0][0].zero_()  # a caller writing into an item leaves the cache as it was
    assert torch.equal(cached[0][0], files[0][0])
    assert cached.class_names == ["a", "b", "c"] and cached.images == files.images  # metadata forwarded


@pytest.mark.unit
def test_read_item_hands_out_the_kept_item_only_from_the_cache_itself(tmp_path):
    files = _png_dataset(tmp_path)
    cached = CachedItems(files)
    image, label = read_item(cached, 1)  # no copy: the augmentation only reads it
    assert image is cached.items[1][0] and label is cached.items[1][1] and image.dtype == torch.uint8
    first = FirstItems(cached, 2)  # a view forwards ``stored``; read_item must not take it from there
    for ds in (first, files):
        item = read_item(ds, 1)
        assert item[0].is_floating_point() and torch.equal(item[0], files[1][0])
    tiles = TiledPool(cached, 32, 16)  # a tile of the kept uint8 frame: floats, only the tile copied
    for n in (0, len(tiles) - 1):
        source, top, left, h, w = tiles.boxes[n].tolist()
        assert torch.equal(tiles[n], files[source][0][:, top:top + h, left:left + w])
        assert tiles[n].is_contiguous() and tiles[n].dtype == torch.float32


class _Counting(FirstItems):
    """The items of ``base``, counting how many are read."""

    def __init__(self, base):
        super().__init__(base, len(base))
        self.reads = 0

    def __getitem__(self, index):
        self.reads += 1
        return super().__getitem__(index)


@pytest.mark.unit
def test_a_second_cache_of_the_same_files_reads_the_memo_until_a_file_changes(tmp_path):
    views.clear_memo()
    files = _png_dataset(tmp_path, decode=_read_png)
    first, second = _Counting(files), _Counting(files)
    CachedItems(first)
    cached = CachedItems(second)
    assert (first.reads, second.reads) == (3, 0)  # one decode per process
    for i in range(3):
        assert all(torch.equal(a, b) for a, b in zip(cached[i], files[i]))
    cached[0][1].fill_(2)  # a caller writing into an item changes neither this cache nor the memo
    assert torch.equal(CachedItems(files)[0][1], files[0][1])
    Image.fromarray(np.zeros((40, 57, 3), np.uint8)).save(tmp_path / "0.png")  # a new file: new key
    third = _Counting(files)
    assert torch.equal(CachedItems(third)[0][0], torch.zeros(3, 40, 57)) and third.reads == 1
    views.clear_memo()


@pytest.mark.unit
def test_views_that_change_items_have_their_own_keys_or_none(tmp_path):
    files = _png_dataset(tmp_path, decode=_read_png)
    key = item_key(files, 0)
    assert key is not None and item_key(FirstItems(files, 2), 0) == key  # same item, same key
    assert item_key(ResizedImages(files, 20), 0) not in (None, key)
    assert item_key(ResizedImages(files, 20), 0) != item_key(ResizedImages(files, 30), 0)
    tiles = TiledPool(files, 32, 16)
    assert len({item_key(tiles, i) for i in range(len(tiles))}) == len(tiles)
    assert item_key(_png_dataset(tmp_path), 0) is None  # a lambda decoder: the key could not tell it apart
    from smir_lib.engine.finetune import LabelledSet

    cfg = load_config(overrides={"image_size": 36, "msssim_win": 3})
    assert item_key(LabelledSet(files, "train", cfg), 0) is None  # augmented anew every epoch
    assert item_key(LabelledSet(files, "val", cfg), 0) != item_key(LabelledSet(files, "test", cfg), 0)


@pytest.mark.unit
def test_the_memo_keeps_at_most_memo_bytes(tmp_path, monkeypatch):
    views.clear_memo()
    files = _png_dataset(tmp_path, decode=_read_png)
    sizes = [views._nbytes(item) for item in CachedItems(files).items]
    views.clear_memo()
    monkeypatch.setattr(views, "MEMO_BYTES", sizes[1] + sizes[2])
    CachedItems(files)
    assert len(views._memo) == 2 and views._memo_bytes <= views.MEMO_BYTES  # the oldest went first
    assert item_key(files, 0) not in views._memo
    views.clear_memo()


@pytest.mark.unit
def test_cached_synthetic_floats_are_kept_exactly_and_views_compose():
    pool = get_dataset("synthetic", "pool", n_images=5, size=72)
    view = CachedItems(ResizedImages(FirstItems(pool, 3), 40))
    assert len(view) == 3
    for i in range(3):
        assert torch.equal(view[i], resize_short_side(pool[i], 40))
    assert torch.equal(ResizedImages(view, 40)[1], view[1])  # resizing again to the same side: a no-op
    with pytest.raises(IndexError):
        FirstItems(pool, 3)[3]


@pytest.mark.slow
def test_cache_images_trains_the_same_run(tmp_path):
    cfg = load_config("fast", dict(model="tiny", synthetic_size=72, image_size=64, msssim_win=3,
                                   n_patches=64, k=2, partitions=2, pool_size=8, pretrain_epochs=1,
                                   pretrain_batch=4, warmup_epochs=0, workers=0, score_batch=4,
                                   progress=False))
    plain = pretrain_selective(cfg, tmp_path / "plain")
    cached = pretrain_selective(cfg.replace(cache_images=True), tmp_path / "cached")
    assert torch.equal(load_masks(plain.steps[1]["masks"])["masks"],
                       load_masks(cached.steps[1]["masks"])["masks"])
    a = torch.load(plain.best_checkpoint, weights_only=True)["model"]
    b = torch.load(cached.best_checkpoint, weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["train_loss"] for r in plain.history] == [r["train_loss"] for r in cached.history]
