"""What pretraining reads: the pool, its partitions, and the stored selective masks.

* :func:`load_split` builds a dataset of ``cfg`` (pool or labelled split), trimmed to the sizes
  the config asks for, optionally kept in memory (``cache_images``), the pool optionally cut
  into tiles (``pool_tile_size``); :func:`scoring_pool` is the pool resized to the short side
  where selective masks live.
* :func:`partition_indices` cuts the pool into interleaved partitions ``pool[i::P]`` and each
  partition into train / validation (the last ``val_fraction`` of it).
* :func:`score_partition` runs the selective recipe (``smir_lib.selective``; or another
  ``cfg.mask_strategy``) over one partition, in batches, sharded over ranks; each image's K random
  masks come from a generator seeded by ``(seed, step, image index)``, so the result does not depend on batching or on the number of
  processes. Masks are stored as patch grids, one bit per patch (:func:`save_masks`), never as
  masked image copies; an image's grid lives on the image resized to short side ``image_size``.
* :class:`MaskedPoolSet` is the training set; :class:`FixedMaskValSet` (fixed random masks) and
  :class:`SelectiveValSet` (the step's stored selective masks, the authors' rule) validate.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from smir_lib.data import get_dataset
from smir_lib.data.tiles import TiledPool
from smir_lib.data.transforms import EvalTransform, TrainAugment, normalize, resize_nearest, resize_short_side
from smir_lib.data.views import (
    CachedItems,
    FirstItems,
    ResizedImages,
    ShrunkItems,
    crop_source_side,
    item_image,
    read_item,
    shrunk_for_training,
)
from smir_lib.engine.config import Config
from smir_lib.engine.distributed import DistContext, gather_objects
from smir_lib.files import RunFileError, atomic_save, load_checkpoint
from smir_lib.patches import mask_to_pixels, patch_grid, random_patch_mask
from smir_lib.runtime import seeded_generator
from smir_lib.selective import foreground_share, ramp_share, strategy_mask, strategy_scores

__all__ = ["load_split", "training_source", "eval_items", "partition_indices", "score_partition", "pool_label_reader", "save_masks", "load_masks",
           "MaskedPoolSet", "FixedMaskValSet", "SelectiveValSet"]

DATA_SEED = 0
"""Seed of the synthetic images: the data stay the same when ``cfg.seed`` (training) changes."""


def load_split(cfg: Config, split: str, name: str | None = None, announce: bool = False) -> Dataset:
    """Dataset ``name`` (default ``cfg.dataset``; the pool: ``cfg.pool_name``) for ``split``.

    Trimmed to the first ``cfg.<split>_size`` items (``pool_size`` for the pool) and, with
    ``cfg.cache_images``, decoded once and kept in memory (:class:`~smir_lib.data.views.CachedItems`:
    the same items, without decoding a file per item); with ``pool_tile_size`` the pool is then
    a :class:`~smir_lib.data.tiles.TiledPool` of those images' tiles. ``announce``: print (to
    stderr) which folder the split is read from (runs do, at their start).
    """
    name = name or (cfg.pool_name if split == "pool" else cfg.dataset)
    limit = {"pool": cfg.pool_size, "train": cfg.train_size, "val": cfg.val_size,
             "test": cfg.test_size}[split]
    ds = _limited(cfg, split, name, limit)
    if split == "pool" and cfg.pool_tile_size:  # tiles of the (limited) source images, read lazily
        ds = TiledPool(ds, cfg.pool_tile_size, cfg.pool_tile_stride)
    if announce and os.environ.get("RANK", "0") == "0":
        print(f"data: {split} of {name}, {len(ds)} images, "
              f"{data_origin(ds)}", file=sys.stderr, flush=True)  # stdout stays the CLI's JSON
    return ds


def data_origin(ds: Dataset) -> str:
    """Where a dataset's images come from: ``read from <folder>``, or generated in memory."""
    root = getattr(ds, "root", None)  # views forward it from the dataset they wrap
    if root is not None:
        return f"read from {Path(root).resolve()}"
    return f"generated in memory (seed {DATA_SEED}; nothing read from disk)"


def _limited(cfg: Config, split: str, name: str, limit: int | None) -> Dataset:
    """The first ``limit`` images of dataset ``name``/``split`` (all when ``limit`` is None).

    An own folder's pool photos (not tiled) are read shrunk to the largest size any pretraining
    reads (:func:`~smir_lib.data.views.crop_source_side`) and decoded no larger than twice that
    (``SegmentationFiles.read_near``): a 10000 x 10000 pool photo costs 0.3 GB, not 6 GB.
    """
    if name == "synthetic":
        if split == "pool" and limit is None:
            raise ValueError("config pool_size is None but the synthetic pool is endless: "
                             "set pool_size, e.g. pool_size=1000")
        ds = get_dataset(name, split, cfg.data_root, n_images=limit, seed=DATA_SEED,
                         size=cfg.synthetic_size)
    else:
        options = {"include_eval_in_pool": cfg.include_eval_in_pool} if split == "pool" else {}
        ds = get_dataset(name, split, cfg.data_root, **options)
        if limit is not None and limit < len(ds):
            ds = FirstItems(ds, limit)
        if split == "pool" and getattr(ds, "decode_small", False) and not cfg.pool_tile_size:
            ds = ShrunkItems(ds, crop_source_side(cfg.image_size))  # own photos, decoded no larger than read
    if cfg.cache_images:
        ds = CachedItems(ds, progress=cfg.progress, desc=f"caching {name}/{split}")
    return ds


def training_source(ds: Dataset, cfg: Config, name: str) -> Dataset:
    """What a RandomResizedCrop stage (fine-tuning, random-mask pretraining) reads from dataset ``name``.

    Your own folder's photos larger than a crop can use are decoded and shrunk once and kept in
    memory (:func:`~smir_lib.data.views.shrunk_for_training`): an 8 MP photo costs 0.27 s per item at
    full size. The built-in datasets keep the paper's full-resolution pipeline, bit for bit.
    """
    if name != "folder":
        return ds
    return shrunk_for_training(ds, cfg.image_size, progress=cfg.progress)


def eval_items(items: Dataset, cfg: Config, name: str) -> Dataset:
    """Validation or test items (``name``), computed once and kept with ``cfg.cache_images``.

    Their transforms and masks are deterministic, so the kept items are the same tensors; without
    them every validation epoch resized each image again (0.23 s per 1296x966 CWFID image on one
    CPU thread, more than a 4-image fine-tuning epoch trains; a 512 px pool tile, 13 ms on a busy core).
    """
    if not cfg.cache_images:
        return items
    return CachedItems(items, progress=cfg.progress, desc=f"caching {name} items")


def scoring_pool(pool: Dataset, cfg: Config) -> Dataset:
    """The pool as the selective steps see it: resized to short side ``cfg.image_size``.

    Scoring and training both read these images (kept in memory with ``cfg.cache_images``, so a
    step neither decodes nor resizes a file per item).
    """
    resized = ResizedImages(pool, cfg.image_size)
    return CachedItems(resized, progress=cfg.progress, desc="caching resized pool") \
        if cfg.cache_images else resized


def partition_indices(n_images: int, partitions: int, val_fraction: float = 0.1
                      ) -> list[tuple[list[int], list[int]]]:
    """``(train, val)`` pool indices of each partition ``pool[i::partitions]``.

    The last ``ceil(val_fraction * n)`` images of a partition (at least 1) validate.
    """
    out = []
    for i in range(partitions):
        part = list(range(i, n_images, partitions))
        n_val = max(1, int(-(-val_fraction * len(part) // 1)))
        if len(part) < 2:
            raise ValueError(f"partition {i} holds {len(part)} image(s) of a pool of {n_images}: "
                             f"use a larger pool_size or fewer partitions (now {partitions})")
        out.append((part[:-n_val], part[-n_val:]))
    return out


def score_partition(model: nn.Module, pool: Dataset, indices: Sequence[int], cfg: Config,
                    step: int, ctx: DistContext = DistContext(), progress: bool = False,
                    pool_labels: Callable[[int], torch.Tensor] | None = None) -> dict:
    """Selective masks and scores of pool images ``indices`` with ``model`` (the previous step's).

    Each image goes through :func:`smir_lib.selective.selective_mask`, the function notebooks 03
    and 04 teach (through ``strategy_scores`` / ``strategy_mask``, which choose the masks of
    ``cfg.mask_strategy``), with its ``K`` random masks drawn from its own generator seeded by
    ``(seed, "score", step, image index)`` and any other draw of the strategy from
    ``(seed, "strategy", step, image index)``: the masks do not depend on batching or on the number
    of processes. ``objects_oracle`` reads each image's label from ``pool_labels`` (``index ->
    (H, W)`` at the pool image's own size, :func:`pool_label_reader`). This rank scores ``indices[rank::world]`` in batches of ``cfg.score_batch``
    images of equal size; results are gathered from every rank and returned in the order of
    ``indices``: ``{"indices" (N,), "masks" (N, GH, GW) bool, "scores" (N, GH, GW) float (NaN
    padding), "grid_shapes" (N, 2), "image_sizes" (N, 2)}``; an image's own grid is the top-left
    ``grid_shapes[i]`` corner (images of other sizes have other grids).
    """
    mine = list(indices)[ctx.rank::ctx.world_size]
    results = []
    batches = range(0, len(mine), cfg.score_batch)
    if progress and ctx.is_main:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=f"scoring step {step}", leave=False)
    for start in batches:
        chunk = mine[start:start + cfg.score_batch]
        # (3, h, w) each, short side image_size; a no-op resize on a scoring_pool
        images = [resize_short_side(item_image(pool[i]), cfg.image_size) for i in chunk]
        for shape in dict.fromkeys(tuple(im.shape[-2:]) for im in images):  # same-size groups
            group = [(i, im) for i, im in zip(chunk, images) if tuple(im.shape[-2:]) == shape]
            grid = patch_grid(*shape, cfg.n_patches)
            x = normalize(torch.stack([im for _, im in group])).to(ctx.device)  # (B, 3, h, w)
            random_masks = torch.stack([  # (B, K, gh, gw): each image's masks from its own seed
                random_patch_mask(cfg.k, grid, cfg.mask_ratio,
                                  generator=seeded_generator(cfg.seed, "score", step, i))
                for i, _ in group])
            share = ramp_share(step, cfg.partitions) if cfg.mask_strategy == "hard_ramp" else 1.0
            scores = strategy_scores(cfg.mask_strategy, model, x, grid, random_masks, ratio=cfg.mask_ratio,
                                     chunk_size=cfg.score_chunk, amp=cfg.amp)  # (B, gh, gw) or None
            for b, (i, _) in enumerate(group):  # the mask of each image from its own generator
                one = None if scores is None else scores[b:b + 1]
                foreground = None if pool_labels is None else \
                    foreground_share(resize_nearest(pool_labels(i), shape)[None], grid).to(x.device)  # (1, gh, gw)
                mask = strategy_mask(cfg.mask_strategy, random_masks[b:b + 1].to(x.device), one, grid,
                                     cfg.mask_ratio, share=share, foreground=foreground,
                                     generator=seeded_generator(cfg.seed, "strategy", step, i))[0]
                score = torch.full(grid.shape, float("nan")) if one is None else one[0].cpu()
                results.append((i, mask.cpu(), score, shape))
    gathered = {r[0]: r for part in gather_objects(results, ctx) for r in part}
    return _pack([gathered[i] for i in indices])


def pool_label_reader(cfg: Config) -> Callable[[int], torch.Tensor] | None:
    """``index -> label (H, W)`` of pool image ``index`` (a tile: its crop of the frame's label), or
    None when the pool's images are not all labelled images of the dataset's splits.

    Pools are unlabelled, but some are made of labelled frames (CWFID's pool is its train and
    validation frames): ``objects_oracle`` finds each pool file among the labelled splits.
    """
    pool = load_split(cfg.replace(cache_images=False), "pool")
    tiled = isinstance(pool, TiledPool)
    files = [str(p) for p in getattr(pool.base if tiled else pool, "images", [])]
    whole = cfg.replace(cache_images=False, train_size=None, val_size=None, test_size=None)
    labelled = {}  # image file -> (labelled split, index)
    for split in ("train", "val", "test"):
        ds = load_split(whole, split)
        labelled.update({str(p): (ds, i) for i, p in enumerate(getattr(ds, "images", []))})
    if not files or any(f not in labelled for f in files):
        return None

    def read(index: int) -> torch.Tensor:
        source, top, left, h, w = pool.boxes[index].tolist() if tiled else (index, 0, 0, None, None)
        ds, i = labelled[files[source]]
        label = ds.load_label(i)  # (H, W) of the whole frame
        return label if not tiled else label[top:top + h, left:left + w]

    return read


def _pack(rows: list[tuple]) -> dict:
    """Pad per-image grids into one tensor, with each image's grid shape alongside."""
    gh = max(r[1].shape[0] for r in rows)
    gw = max(r[1].shape[1] for r in rows)
    masks = torch.zeros(len(rows), gh, gw, dtype=torch.bool)
    scores = torch.full((len(rows), gh, gw), float("nan"))
    for n, (_, m, s, _) in enumerate(rows):  # per image, not per pixel
        masks[n, :m.shape[0], :m.shape[1]] = m
        scores[n, :s.shape[0], :s.shape[1]] = s
    return {"indices": torch.tensor([r[0] for r in rows]), "masks": masks, "scores": scores,
            "grid_shapes": torch.tensor([tuple(r[1].shape) for r in rows]),
            "image_sizes": torch.tensor([r[3] for r in rows])}


def save_masks(masks: dict, path: str | Path) -> Path:
    """Store a step's masks (see :func:`score_partition`) atomically."""

    return atomic_save(masks, path)


def load_masks(path: str | Path) -> dict:
    """A step's stored masks, plus ``"grids"``: each image's mask cropped to its own grid shape."""

    keys = ("masks", "grid_shapes", "indices")
    data = load_checkpoint(path, keys=keys)  # a truncated or foreign file: one line saying to delete the step
    if not all(isinstance(data[key], torch.Tensor) for key in keys):
        raise RunFileError(f"{path} holds {', '.join(keys)} that are not all tensors: not a file this kit "
                           f"wrote; delete the folder {Path(path).parent} to redo that step")
    data["grids"] = [m[:h, :w] for m, (h, w) in zip(data["masks"], data["grid_shapes"].tolist())]
    return data


class MaskedPoolSet(Dataset):
    """Training images of a pretraining stage, augmented per item with a seeded generator.

    Random masking (``masks=None``): item = the augmented image ``(3, S, S)`` in [0, 1]; the
    masks are drawn per batch by the training loop. Selective masking: the image is resized to
    short side ``image_size`` (where its mask was scored), its grid mask is expanded to pixels
    there and goes through the same crop and flip; item = ``(input (3, S, S), target (3, S, S),
    pixel_mask (S, S) bool)``, input = target unless ``shared_augmentation=False`` (jitter on the
    input only, the authors' quirk). Item ``i`` of epoch ``e`` draws from ``(seed, stage, e, index)``.
    """

    def __init__(self, pool: Dataset, indices: Sequence[int], cfg: Config, stage: str,
                 masks: dict | None = None):
        self.pool, self.indices, self.cfg, self.stage, self.epoch = pool, list(indices), cfg, stage, 0
        self.augment = TrainAugment(cfg.image_size, jitter_target=cfg.shared_augmentation)
        self.masks = None if masks is None else grid_masks_of(masks, self.indices)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, n: int):
        index = self.indices[n]
        generator = seeded_generator(self.cfg.seed, self.stage, self.epoch, index)
        image = item_image(read_item(self.pool, index))  # the augmentation only reads it
        if self.masks is None:
            return self.augment(image, generator=generator)[0]
        image, pixel_mask = scored_image_and_mask(image, self.masks[index], self.cfg)  # (3, h, w), (h, w)
        out = self.augment(image, pixel_mask, generator=generator)
        if self.cfg.shared_augmentation:
            return out[0], out[0], out[1]
        return out[0], out[1], out[2]  # jittered input, un-jittered target, mask


class FixedMaskValSet(Dataset):
    """Validation images (short side + centre crop) with a fixed random mask each.

    Item = ``(image (3, S, S) in [0, 1], pixel mask (S, S) bool)``; the grid mask of pool image
    ``index`` is drawn on the crop's grid from ``(seed, "val", index)``, the same in every epoch
    and every step. Step 0 validates with it, and every step under ``val_masking="random"``.
    """

    def __init__(self, pool: Dataset, indices: Sequence[int], cfg: Config):
        self.pool, self.indices, self.cfg = pool, list(indices), cfg
        self.transform = EvalTransform(cfg.image_size)
        self.grid = patch_grid(cfg.image_size, cfg.image_size, cfg.n_patches)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, n: int):
        index = self.indices[n]
        image = item_image(self.pool[index])
        mask = random_patch_mask(1, self.grid, self.cfg.mask_ratio,
                                 generator=seeded_generator(self.cfg.seed, "val", index))[0]
        return self.transform(image)[0], mask_to_pixels(mask, self.grid)


class SelectiveValSet(Dataset):
    """Validation images of a selective step with the step's stored selective masks (authors' rule).

    The previous step's model scored the validation images with the training images; each mask
    lives on the image resized to short side ``image_size`` and goes through the validation
    transform (centre crop) with it. Item = ``(image (3, S, S) in [0, 1], pixel mask (S, S) bool)``.
    """

    def __init__(self, pool: Dataset, indices: Sequence[int], cfg: Config, masks: dict):
        self.pool, self.indices, self.cfg = pool, list(indices), cfg
        self.masks = grid_masks_of(masks, self.indices)
        self.crop = EvalTransform(cfg.image_size)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, n: int):
        index = self.indices[n]
        image, pixel_mask = scored_image_and_mask(item_image(self.pool[index]), self.masks[index],
                                                  self.cfg)  # (3, h, w), (h, w) at short side S
        return self.crop(image, pixel_mask)  # centre crop of both: (3, S, S), (S, S)


def grid_masks_of(masks: dict, indices: Sequence[int]) -> dict[int, torch.Tensor]:
    """Each pool image's stored grid mask ``(gh, gw)`` (its own grid shape) from a step's masks."""
    position = {int(i): n for n, i in enumerate(masks["indices"].tolist())}
    missing = [i for i in indices if i not in position]
    if missing:
        raise ValueError(f"stored masks lack pool images {missing[:5]}: delete the step's "
                         "masks.pt so that it is scored again")
    return {i: masks["masks"][position[i], :h, :w] for i in indices
            for h, w in [masks["grid_shapes"][position[i]].tolist()]}


def scored_image_and_mask(image: torch.Tensor, grid_mask: torch.Tensor, cfg: Config):
    """The image at the size it was scored (short side ``image_size``) and its mask in pixels there."""
    image = resize_short_side(image, cfg.image_size)  # (3, h, w)
    grid = patch_grid(*image.shape[-2:], cfg.n_patches)
    return image, mask_to_pixels(grid_mask, grid)  # (3, h, w), (h, w)
