"""Datasets derived from other datasets: the first ``n`` items, items kept in memory, resized images.

A view forwards every attribute it does not define (``class_names``, ``class_colors``,
``ignore_index``, ``images``, ``load_label``...) to the dataset it wraps, so code that reads a
dataset's metadata works the same on a view.

* :class:`FirstItems`: the first ``n`` items (``pool_size=``, ``train_size=``...).
* :class:`CachedItems`: every item decoded once, up front, and kept in memory
  (``cache_images=true``). Images decoded from 8-bit files are kept as ``uint8`` (a 1296x966
  frame: 3.8 MB instead of 15 MB) and turned back into exactly the same floats on access. The
  cache is filled in the calling process, before any ``DataLoader`` worker starts, so workers
  inherit it instead of each decoding the files again.
* :class:`ResizedImages`: images resized to short side ``size`` without augmentation, where the
  patch grid of a selective mask lives (scoring and the selective steps read these).
* :class:`ShrunkItems`: items larger than any training crop can use, shrunk to the largest scale
  the augmentation asks for (:func:`crop_source_side`); wrapped in :class:`CachedItems` by
  :func:`shrunk_for_training`, so an 8 MP photo is decoded and resized once per run, not per item.

Every view returns new tensors, so a caller may modify an item without touching the cache;
:func:`read_item` skips that copy for readers that only read (the training augmentation).

**One decode per process.** A study runs hundreds of units in one process, each of which would
decode and resize the same files again (a CWFID fine-tuning: 29 full-resolution frames decoded
and 25 resized, about 11 s of a 57 s unit). A dataset that knows where its items come from says so
with ``item_key(index)`` (files with their size and modification time, plus every view and
transform on the way: :func:`item_key`), and :class:`CachedItems` then keeps the stored item in a
process-wide memo (:data:`MEMO_BYTES`, least recently used out first) that the next unit reads
instead of the files. Items without a key (generated or augmented ones) are simply not shared.
"""

from __future__ import annotations

import math
import sys
from collections import OrderedDict

import torch
from torch.utils.data import Dataset, Subset

from smir_lib.data.transforms import resize_short_side, short_side_shape, unit_float

__all__ = ["DatasetView", "FirstItems", "CachedItems", "ResizedImages", "ShrunkItems", "item_image", "item_key",
           "read_item", "read_near", "fresh_image", "compact_image", "crop_source_side", "shrunk_for_training", "MEMO_BYTES", "SHRUNK_BYTES",
           "clear_memo"]

MEMO_BYTES = 2 * 2**30
"""Most bytes of stored items the process-wide memo of :class:`CachedItems` keeps (2 GiB)."""
SHRUNK_BYTES = 4 * 2**30
"""Most bytes :func:`shrunk_for_training` keeps in memory; a larger dataset is read as it is."""

_memo: OrderedDict[tuple, object] = OrderedDict()
_memo_bytes = 0


def clear_memo() -> None:
    """Forget every item shared between :class:`CachedItems` of this process."""
    global _memo_bytes
    _memo.clear()
    _memo_bytes = 0


def item_image(item) -> torch.Tensor:
    """The image of a dataset item: a labelled item ``(image, label)`` or a pool image alone."""
    return item[0] if isinstance(item, (tuple, list)) else item


def read_item(ds: Dataset, index: int):
    """Item ``index`` of ``ds`` for a reader that never modifies it, such as the augmentation.

    From :class:`CachedItems` that is the kept item itself, without the copy ``ds[index]`` makes
    (images may be ``uint8``: :func:`~smir_lib.data.transforms.unit_float` reads them); a
    1296x966 frame's copy alone was a quarter of its augmented item's time. Any other dataset
    (views included, which would forward ``stored`` to the dataset they wrap): ``ds[index]``.
    """
    return ds.stored(index) if isinstance(ds, CachedItems) else ds[index]


def read_near(ds: Dataset, index: int, short_side: int):
    """Item ``index`` of ``ds`` for a reader that resizes it to ``short_side`` next: a dataset of
    files that may decode a large photo smaller does so (``SegmentationFiles.read_near``), through
    :class:`FirstItems` and ``Subset``; any other dataset (a cache, a transform) gives ``ds[index]``."""
    if isinstance(ds, FirstItems):
        return read_near(ds.base, index, short_side)
    if isinstance(ds, Subset):
        return read_near(ds.dataset, int(ds.indices[index]), short_side)
    method = None if isinstance(ds, DatasetView) else getattr(ds, "read_near", None)  # a view would forward it
    return method(index, short_side) if callable(method) else ds[index]


def item_key(ds: Dataset, index: int) -> tuple | None:
    """What item ``index`` of ``ds`` is made from, as a hashable key, or None when ``ds`` cannot
    say (it has no ``item_key``, or its items are generated or random)."""
    method = getattr(ds, "item_key", None)
    return method(index) if callable(method) else None


class DatasetView(Dataset):
    """A dataset over ``base``; attributes it lacks are read from ``base``.

    ``keeps_items``: a view whose items are its base's items unchanged (index for index) forwards
    their :func:`item_key`; any other view has none unless it defines its own.
    """

    keeps_items = False

    def __init__(self, base: Dataset):
        self.base = base

    def __getattr__(self, name: str):
        if name.startswith("__") or name == "base":  # unpickling: ``base`` is not set yet
            raise AttributeError(name)
        return getattr(self.base, name)

    def item_key(self, index: int) -> tuple | None:
        return item_key(self.base, index) if self.keeps_items else None

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        return self.base[index]


class FirstItems(DatasetView):
    """The first ``n`` items of ``base`` (all of them when it has fewer)."""

    keeps_items = True

    def __init__(self, base: Dataset, n: int):
        super().__init__(base)
        self.n = min(n, len(base))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for the first {self.n} items")
        return self.base[index]


def compact_image(t: torch.Tensor) -> torch.Tensor:
    """``t`` as ``uint8`` when that is lossless (images decoded from 8-bit files), else ``t``."""
    if t.is_floating_point():
        as_bytes = (t * 255.0).round_().clamp_(0, 255).to(torch.uint8)
        if torch.equal(as_bytes.float().div_(255.0), t):  # the exact floats load_image made
            return as_bytes
    return t


def fresh_image(t: torch.Tensor) -> torch.Tensor:
    """A new tensor from a kept one: ``uint8`` images as floats in [0, 1], anything else copied."""
    return unit_float(t).contiguous() if t.dtype == torch.uint8 else t.clone(memory_format=torch.contiguous_format)


def _nbytes(stored) -> int:
    return sum(t.numel() * t.element_size() for t in (stored if isinstance(stored, tuple) else (stored,)))


def _remember(key: tuple, stored) -> None:
    """Keep ``stored`` under ``key``, dropping the least recently used items beyond :data:`MEMO_BYTES`."""
    global _memo_bytes
    size = _nbytes(stored)
    if size > MEMO_BYTES:
        return
    _memo[key] = stored
    _memo_bytes += size
    while _memo_bytes > MEMO_BYTES:
        _, old = _memo.popitem(last=False)
        _memo_bytes -= _nbytes(old)


class CachedItems(DatasetView):
    """Every item of ``base`` read once now and kept in memory; items equal ``base[i]`` exactly.

    An item with an :func:`item_key` that another ``CachedItems`` of this process has already
    read is taken from the process-wide memo instead of ``base`` (see the module's docstring).
    ``progress`` shows a tqdm bar while the cache fills.
    """

    keeps_items = True

    def __init__(self, base: Dataset, progress: bool = False, desc: str = "caching images"):
        super().__init__(base)
        indices = range(len(base))
        if progress:
            from tqdm.auto import tqdm

            indices = tqdm(indices, desc=desc, leave=False)
        # Image tensors compacted to uint8 where lossless; labels (long) kept as they are.
        self.items = [self._read(i) for i in indices]

    def _read(self, index: int):
        key = item_key(self.base, index)
        if key is not None and key in _memo:
            _memo.move_to_end(key)
            return _memo[key]  # shared, never modified: __getitem__ hands out copies
        stored = self._store(self.base[index])
        if key is not None:
            _remember(key, stored)
        return stored

    @staticmethod
    def _store(item):
        if isinstance(item, (tuple, list)):
            return tuple(compact_image(t) if i == 0 else t for i, t in enumerate(item))
        return compact_image(item)

    def stored(self, index: int):
        """Item ``index`` as kept: shared with the cache (never modify it), images maybe ``uint8``."""
        return self.items[index]

    def __getitem__(self, index: int):
        item = self.items[index]
        if isinstance(item, tuple):
            return tuple(fresh_image(t) if i == 0 else t.clone() for i, t in enumerate(item))
        return fresh_image(item)


class ResizedImages(DatasetView):
    """The images of ``base`` resized to short side ``size`` (bilinear, antialiased), labels dropped.

    Item ``i`` is ``(3, h, w)`` with ``min(h, w) == size``: the image a selective mask is scored
    on and expanded to pixels on. Resizing an item of this view again to ``size`` changes nothing.
    """

    def __init__(self, base: Dataset, size: int):
        super().__init__(base)
        self.size = size

    def __getitem__(self, index: int) -> torch.Tensor:
        return resize_short_side(item_image(read_near(self.base, index, self.size)), self.size)

    def item_key(self, index: int) -> tuple | None:
        key = item_key(self.base, index)
        return None if key is None else ("resized", self.size, key)


def crop_source_side(size: int, scale_min: float = 0.25, ratio_min: float = 3 / 4) -> int:
    """The largest short side a training crop can use: the smallest RandomResizedCrop box (area
    ``scale_min`` of the image, aspect ``ratio_min``) of a square image is shrunk to ``size`` from it.

    >>> crop_source_side(256)   # 256 / sqrt(0.25 * 3/4): an image stored larger only costs decode time
    592
    """
    return math.ceil(size / math.sqrt(scale_min * ratio_min))


class ShrunkItems(DatasetView):
    """Items of ``base`` with a short side above ``side`` resized to ``side`` (image bilinear with
    antialias, rounded to 8 bits; label nearest); smaller items unchanged.

    A training crop of a shrunk photo covers the same region as one of the original (kornia draws
    the box as fractions of the image) and is resized to the same output: the pixels differ by the
    second resize (``tests/test_large_photos.py`` bounds it), the work per item by the photo's size.
    """

    def __init__(self, base: Dataset, side: int):
        super().__init__(base)
        self.side = side

    def __getitem__(self, index: int):
        item = read_near(self.base, index, self.side)
        image, *label = item if isinstance(item, (tuple, list)) else (item,)
        if min(image.shape[-2:]) <= self.side:
            return item
        if label:
            image, shrunk = resize_short_side(image, self.side, label[0])
            return (image * 255).round_().clamp_(0, 255).div_(255), shrunk
        return (resize_short_side(image, self.side) * 255).round_().clamp_(0, 255).div_(255)

    def item_key(self, index: int) -> tuple | None:
        key = item_key(self.base, index)
        return None if key is None else ("shrunk", self.side, key)

    def image_shape(self, index: int) -> tuple[int, int]:
        """``(height, width)`` of item ``index`` as this view gives it (from the file's header)."""
        h, w = self.base.image_shape(index)
        return (h, w) if min(h, w) <= self.side else short_side_shape(h, w, self.side)


def shrunk_for_training(ds: Dataset, size: int, progress: bool = False) -> Dataset:
    """``ds`` for RandomResizedCrop training at ``size``: when some image (by its header) is larger
    than :func:`crop_source_side`, every item shrunk once and kept in memory (:class:`ShrunkItems`
    in :class:`CachedItems`), said in one line; else, or beyond :data:`SHRUNK_BYTES`, ``ds`` itself."""
    shape = getattr(ds, "image_shape", None)
    if shape is None:  # generated items, tiles: nothing to decode
        return ds
    side = crop_source_side(size)
    shapes = [shape(i) for i in range(len(ds))]  # (height, width) from the headers
    large = sum(min(h, w) > side for h, w in shapes)
    if not large:
        return ds
    kept = sum(3 * h * w * (min(1.0, side / min(h, w)) ** 2) for h, w in shapes)  # uint8 bytes once shrunk
    if kept > SHRUNK_BYTES:
        print(f"{large} training image(s) are larger than a short side of {side} px, but kept shrunk they would "
              f"need {kept / 2**30:.1f} GiB: reading them at full size every epoch", file=sys.stderr)
        return ds
    print(f"{large} training image(s) larger than a short side of {side} px (the most a {size}-px crop uses) are "
          f"decoded and shrunk to it once and kept in memory ({kept / 2**20:.0f} MB)", file=sys.stderr)
    return CachedItems(ShrunkItems(ds, side), progress=progress, desc="shrinking large photos")
