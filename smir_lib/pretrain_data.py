"""What pretraining reads: the pool, its partitions, and the stored selective masks.

* :func:`load_split` builds a dataset of ``cfg`` (pool or labelled split), trimmed to the sizes
  the config asks for; with ``pool_tile_size`` the pool is made of tiles of its images.
* :func:`partition_indices` cuts the pool into interleaved partitions ``pool[i::P]`` and each
  partition into train / validation (the last ``val_fraction`` of it).
* :func:`score_partition` runs the selective recipe (``smir_lib.selective``) over one partition,
  in batches, sharded over ranks; each image's K random masks come from a generator seeded by
  ``(seed, step, image index)``, so the result does not depend on batching or on the number of
  processes. Masks are stored as patch grids, one bit per patch (:func:`save_masks`), never as
  masked image copies; an image's grid lives on the image resized to short side ``image_size``.
* :class:`MaskedPoolSet` and :class:`FixedMaskValSet` are the training and validation sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from .config import Config
from .data import get_dataset
from .data.tiles import TiledPool
from .data.transforms import EvalTransform, TrainAugment, normalize, resize_short_side
from .distributed import DistContext, gather_objects
from .patches import mask_to_pixels, patch_grid, random_patch_mask
from .runtime import seeded_generator
from .selective import selective_mask

__all__ = ["load_split", "partition_indices", "score_partition", "save_masks", "load_masks",
           "MaskedPoolSet", "FixedMaskValSet"]

DATA_SEED = 0
"""Seed of the synthetic images: the data stay the same when ``cfg.seed`` (training) changes."""


def load_split(cfg: Config, split: str, name: str | None = None) -> Dataset:
    """Dataset ``name`` (default ``cfg.dataset``; the pool: ``cfg.pool_name``) for ``split``.

    ``pool_size`` / ``train_size`` ... keep the first images; with ``pool_tile_size`` the pool is
    then a :class:`~smir_lib.data.tiles.TiledPool` of those images' tiles.
    """
    name = name or (cfg.pool_name if split == "pool" else cfg.dataset)
    limit = {"pool": cfg.pool_size, "train": cfg.train_size, "val": cfg.val_size,
             "test": cfg.test_size}[split]
    ds = _limited(cfg, split, name, limit)
    if split == "pool" and cfg.pool_tile_size:  # tiles of the (limited) source images, read lazily
        return TiledPool(ds, cfg.pool_tile_size, cfg.pool_tile_stride)
    return ds


def _limited(cfg: Config, split: str, name: str, limit: int | None) -> Dataset:
    """The first ``limit`` images of dataset ``name``/``split`` (all when ``limit`` is None)."""
    if name == "synthetic":
        if split == "pool" and limit is None:
            raise ValueError("config pool_size is None but the synthetic pool is endless: "
                             "set pool_size, e.g. pool_size=1000")
        return get_dataset(name, split, cfg.data_root, n_images=limit, seed=DATA_SEED,
                           size=cfg.synthetic_size)
    options = {"include_eval_in_pool": cfg.include_eval_in_pool} if split == "pool" else {}
    ds = get_dataset(name, split, cfg.data_root, **options)
    if limit is not None and limit < len(ds):
        subset = Subset(ds, range(limit))
        for attr in ("class_names", "class_colors", "ignore_index"):
            if hasattr(ds, attr):
                setattr(subset, attr, getattr(ds, attr))
        return subset
    return ds


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


def pool_image(pool: Dataset, index: int) -> torch.Tensor:
    """Image ``index`` of a pool, ``(3, H, W)`` in [0, 1]; a labelled dataset's label is dropped."""
    item = pool[index]
    return item[0] if isinstance(item, (tuple, list)) else item


def _scoring_image(pool: Dataset, index: int, size: int) -> torch.Tensor:
    """Pool image ``index`` resized to short side ``size``, no augmentation: ``(3, h, w)``."""
    return resize_short_side(pool_image(pool, index), size)


def score_partition(model: nn.Module, pool: Dataset, indices: Sequence[int], cfg: Config,
                    step: int, ctx: DistContext = DistContext(), progress: bool = False) -> dict:
    """Selective masks and scores of pool images ``indices`` with ``model`` (the previous step's).

    Each image goes through :func:`smir_lib.selective.selective_mask`, the function notebooks 03
    and 04 teach, with its ``K`` random masks drawn from its own generator seeded by
    ``(seed, "score", step, image index)``: the masks do not depend on batching or on the number
    of processes. This rank scores ``indices[rank::world]`` in batches of ``cfg.score_batch``
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
        images = [_scoring_image(pool, i, cfg.image_size) for i in chunk]
        for shape in dict.fromkeys(tuple(im.shape[-2:]) for im in images):  # same-size groups
            group = [(i, im) for i, im in zip(chunk, images) if tuple(im.shape[-2:]) == shape]
            grid = patch_grid(*shape, cfg.n_patches)
            x = normalize(torch.stack([im for _, im in group])).to(ctx.device)  # (B, 3, h, w)
            random_masks = torch.stack([  # (B, K, gh, gw): each image's masks from its own seed
                random_patch_mask(cfg.k, grid, cfg.mask_ratio,
                                  generator=seeded_generator(cfg.seed, "score", step, i))
                for i, _ in group])
            found = selective_mask(model, x, grid, ratio=cfg.mask_ratio, random_masks=random_masks,
                                   chunk_size=cfg.score_chunk, amp=cfg.amp)
            results += [(i, m.cpu(), s.cpu(), shape) for (i, _), m, s in
                        zip(group, found.mask, found.scores)]
    gathered = {r[0]: r for part in gather_objects(results, ctx) for r in part}
    return _pack([gathered[i] for i in indices])


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
    from .checkpoint import atomic_save

    return atomic_save(masks, path)


def load_masks(path: str | Path) -> dict:
    """A step's stored masks, plus ``"grids"``: each image's mask cropped to its own grid shape."""
    data = torch.load(Path(path), map_location="cpu", weights_only=True)
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
        self.masks = None
        if masks is not None:
            position = {int(i): n for n, i in enumerate(masks["indices"].tolist())}
            missing = [i for i in self.indices if i not in position]
            if missing:
                raise ValueError(f"stored masks lack pool images {missing[:5]}: delete the step's "
                                 "masks.pt so that it is scored again")
            self.masks = {i: masks["masks"][position[i], :h, :w] for i in self.indices
                          for h, w in [masks["grid_shapes"][position[i]].tolist()]}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, n: int):
        index = self.indices[n]
        generator = seeded_generator(self.cfg.seed, self.stage, self.epoch, index)
        image = pool_image(self.pool, index)
        if self.masks is None:
            return self.augment(image, generator=generator)[0]
        image = resize_short_side(image, self.cfg.image_size)
        grid = patch_grid(*image.shape[-2:], self.cfg.n_patches)
        pixel_mask = mask_to_pixels(self.masks[index], grid)  # (h, w)
        out = self.augment(image, pixel_mask, generator=generator)
        if self.cfg.shared_augmentation:
            return out[0], out[0], out[1]
        return out[0], out[1], out[2]  # jittered input, un-jittered target, mask


class FixedMaskValSet(Dataset):
    """Validation images (short side + centre crop) with a fixed random grid mask each.

    Item = ``(image (3, S, S) in [0, 1], grid mask (gh, gw) bool)``; the mask of pool image
    ``index`` is drawn from ``(seed, "val", index)``, the same in every epoch and every step.
    """

    def __init__(self, pool: Dataset, indices: Sequence[int], cfg: Config):
        self.pool, self.indices, self.cfg = pool, list(indices), cfg
        self.transform = EvalTransform(cfg.image_size)
        self.grid = patch_grid(cfg.image_size, cfg.image_size, cfg.n_patches)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, n: int):
        index = self.indices[n]
        image = pool_image(self.pool, index)
        mask = random_patch_mask(1, self.grid, self.cfg.mask_ratio,
                                 generator=seeded_generator(self.cfg.seed, "val", index))[0]
        return self.transform(image)[0], mask
