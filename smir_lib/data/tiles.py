"""Tiles: cut large images into overlapping windows, for pretraining pools and sliding windows.

A 1296x966 field photo resized to a short side of 256 keeps little of a seedling; cut into
256-px tiles at full resolution it gives 24 training images instead of one. The same window
layout serves sliding-window inference (:mod:`smir_lib.engine.inference`).

* :func:`tile_starts` places windows of ``tile`` px every ``stride`` px along one side; the last
  window is shifted inwards so it ends at the border (every pixel is covered, no padding), as
  the authors' Nassar tiling does. A side shorter than ``tile`` gets one window of its length.
* :func:`tile_boxes` combines rows and columns into ``(top, left, height, width)`` boxes.
* :class:`TiledPool` is a pool of tiles over any dataset. It is lazy: building it reads only
  image sizes (file headers; nothing decoded), and item ``n`` loads its source image and crops the
  tile. It keeps the last source image it decoded (as 8-bit bytes where lossless), so reading the
  tiles in order (the cache, the scoring pass) decodes a 100 M pixel photo once instead of once a
  tile; memory holds one decoded image per worker, never a whole pool.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Subset

from smir_lib.data.views import compact_image, fresh_image, item_image, item_key, read_item

__all__ = ["tile_starts", "tile_boxes", "image_shapes", "TiledPool"]


def tile_starts(length: int, tile: int, stride: int) -> torch.Tensor:
    """Start offsets of windows of ``tile`` px every ``stride`` px over a side of ``length`` px.

    >>> tile_starts(966, 256, 256).tolist()   # 3 full steps, then one shifted in to end at 966
    [0, 256, 512, 710]
    >>> tile_starts(1296, 256, 256).tolist()  # CWFID's width: 6 tiles, the last overlapping by 240 px
    [0, 256, 512, 768, 1024, 1040]
    >>> tile_starts(200, 256, 128).tolist()   # shorter than a tile: one window of 200 px
    [0]
    """
    if tile < 1 or not 1 <= stride <= tile:
        raise ValueError(f"tile {tile} px with stride {stride} px: the stride must be 1..{tile} px "
                         "(a longer one leaves pixels between windows that no window sees)")
    if length <= tile:
        return torch.zeros(1, dtype=torch.long)
    inner = torch.arange(0, length - tile, stride)  # windows that end before the border
    return torch.cat([inner, torch.tensor([length - tile])])  # the last one ends at the border


def tile_boxes(height: int, width: int, tile: int, stride: int) -> torch.Tensor:
    """``(N, 4)`` boxes ``(top, left, h, w)`` covering a ``height x width`` image, row-major.

    Every box has the same size, ``min(tile, height) x min(tile, width)``.
    """
    rows, cols = tile_starts(height, tile, stride), tile_starts(width, tile, stride)
    top, left = torch.meshgrid(rows, cols, indexing="ij")  # (R, C) each
    sizes = torch.tensor([min(tile, height), min(tile, width)]).expand(top.numel(), 2)
    return torch.cat([top.reshape(-1, 1), left.reshape(-1, 1), sizes], dim=1)  # (R * C, 4)


def image_shapes(dataset: Dataset) -> list[tuple[int, int]]:
    """``(height, width)`` of every image of ``dataset``, from headers when the dataset can.

    Datasets with an ``image_shape(index)`` method (files, synthetic) answer without decoding;
    a ``Subset`` asks its parent; any other dataset has its items loaded once.
    """
    if isinstance(dataset, Subset):
        parent = image_shapes_of(dataset.dataset)
        return [parent(int(i)) for i in dataset.indices]
    return [image_shapes_of(dataset)(i) for i in range(len(dataset))]


def image_shapes_of(dataset: Dataset):
    """``index -> (height, width)`` for one dataset (header read, or load the item)."""
    if hasattr(dataset, "image_shape"):
        return dataset.image_shape

    def loaded(index: int) -> tuple[int, int]:
        item = dataset[index]
        image = item[0] if isinstance(item, (tuple, list)) else item
        return tuple(image.shape[-2:])

    return loaded


class TiledPool(Dataset):
    """An unlabelled pool whose items are ``tile x tile`` windows of the images of ``base``.

    Item ``n`` is ``(3, th, tw)`` in [0, 1], a crop of source image ``sources[n]`` (a labelled
    source's label is dropped: pools are unlabelled). ``th = min(tile, H)``, ``tw = min(tile, W)``.
    Tiles are ordered image by image, row-major inside an image, so the interleaved partitions
    ``pool[i::P]`` spread every image's tiles over all partitions.
    """

    def __init__(self, base: Dataset, tile: int, stride: int | None = None):
        self.base, self.tile, self.stride = base, int(tile), int(stride or tile)
        rows = []
        for i, (h, w) in enumerate(image_shapes(base)):
            boxes = tile_boxes(h, w, self.tile, self.stride)  # (N_i, 4)
            rows.append(torch.cat([torch.full((len(boxes), 1), i), boxes], dim=1))
        self.boxes = torch.cat(rows) if rows else torch.zeros(0, 5, dtype=torch.long)  # (N, 5): image, t, l, h, w
        for attr in ("class_names", "class_colors", "ignore_index", "name", "root"):
            if hasattr(base, attr):
                setattr(self, attr, getattr(base, attr))
        self.labelled = False
        self._last: tuple[int, torch.Tensor] | None = None  # (source index, its image)

    def __getstate__(self) -> dict:  # a DataLoader worker gets the layout, not the decoded image
        return {**self.__dict__, "_last": None}

    def source_image(self, source: int) -> torch.Tensor:
        """Source image ``source`` as stored (maybe ``uint8``; never modify it), kept until the next one."""
        if self._last is None or self._last[0] != source:
            self._last = None  # free the previous image before decoding the next
            self._last = (source, compact_image(item_image(read_item(self.base, source))))
        return self._last[1]

    @property
    def sources(self) -> torch.Tensor:
        """Source image index of every tile, ``(N,)``."""
        return self.boxes[:, 0]

    def __len__(self) -> int:
        return len(self.boxes)

    def image_shape(self, index: int) -> tuple[int, int]:
        return int(self.boxes[index, 3]), int(self.boxes[index, 4])

    def item_key(self, index: int) -> tuple | None:
        """The source image's key (``smir_lib.data.views.item_key``) and the tile's box."""
        source, top, left, h, w = self.boxes[index].tolist()
        key = item_key(self.base, source)
        return None if key is None else ("tile", top, left, h, w, key)

    def __getitem__(self, index: int) -> torch.Tensor:
        if not -len(self) <= index < len(self):
            raise IndexError(f"tile {index} out of range for a pool of {len(self)} tiles")
        source, top, left, h, w = self.boxes[index].tolist()
        image = self.source_image(source)  # (3, H, W), maybe uint8
        return fresh_image(image[:, top:top + h, left:left + w])  # (3, h, w) floats: only the tile copied

    def __repr__(self) -> str:
        return (f"TiledPool(n_tiles={len(self)}, tile={self.tile}, stride={self.stride}, "
                f"images={len(self.base)})")
