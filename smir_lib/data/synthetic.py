"""Synthetic crop/weed field images: the kit's built-in dataset, no download needed.

Each image is a top-down view of a field, drawn procedurally with exact per-pixel labels:

- **soil** (class 0): brown ground textured with multi-scale value noise (large moist/dry
  patches, mid-scale clods, pale stones, pixel grain) under a smooth illumination gradient;
- **crop** (class 1): rosette plants in two to four parallel rows with irregular spacing and gaps,
  leaves of varying length with a lighter midrib and darker tips, each casting a dark halo;
- **weed** (class 2): small plants scattered anywhere, some on top of crop leaves, in three
  shapes (broad-leaved rosettes, thin grass blades, round blobs) and colours that overlap the
  crop's, so shape and context matter, not only colour. Weeds cover a few percent of the pixels.

Image ``i`` of a split depends only on ``(seed, split, i)``: the generator is
``numpy.random.default_rng([seed, split code, i])``, so any item can be generated on its own, in
any order, in any worker process, and the splits come from disjoint random streams. The
``pool`` split (unlabelled pretraining images) can be as long as you like.

Rendering is vectorised: per plant, a few numpy operations over its bounding box; per image, a
noise pyramid upsampled with ``torch.nn.functional.interpolate``. No loop runs over pixels.
One core renders about 300 images of 256x256 per second (see ``tests/test_synthetic.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .base import IGNORE_INDEX, check_split

CLASS_NAMES = ["soil", "crop", "weed"]
CLASS_COLORS = [(120, 85, 50), (0, 200, 0), (230, 30, 30)]  # display: brown, green, red
SPLIT_CODES = {"train": 1, "val": 2, "test": 3, "pool": 4}
DEFAULT_SIZES = {"train": 64, "val": 16, "test": 32, "pool": 10_000}


def _upsample(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear upsampling of ``(C, h, w)`` float32 fields to ``(C, height, width)``."""
    t = torch.from_numpy(grid)[:, None]  # (C, 1, h, w): channels as a batch is the fast path on CPU
    return F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)[:, 0].numpy()


def _noise_fields(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth noise fields ``(2, H, W)``: [soil brightness, stone opacity].

    Value noise: octaves of random grids (4 to 64 cells) are summed at 64x64 and the sum is
    upsampled once. Soil brightness mixes large moist/dry patches, mid-scale clods and a gentle
    illumination gradient; stones are the peaks of finer octaves.
    """
    raw = np.zeros((2, 4, 4), np.float32)
    for cells, weights in ((4, (1.0, 0.0)), (8, (0.7, 0.2)), (16, (0.6, 0.5)), (32, (0.5, 1.0)), (64, (0.2, 0.8))):
        if raw.shape[-1] < cells:
            raw = _upsample(raw, cells, cells)  # pyramid: the sum so far, twice as fine
        octave = rng.random((2, cells, cells), dtype=np.float32) - np.float32(0.5)  # uniform in [-0.5, 0.5)
        raw += np.asarray(weights, np.float32)[:, None, None] * octave  # (2, cells, cells)
    brightness = 1.0 + 0.30 * raw[0]
    stones = np.clip((raw[1] - 0.38) * 6.0, 0.0, 1.0)
    return _upsample(np.stack([brightness, stones]), height, width)  # (2, H, W)


def _power(c: np.ndarray, exponent: float) -> np.ndarray:
    """``c ** exponent`` for exponents that are multiples of 0.5, by square roots and products
    (several times faster than ``np.power``)."""
    halves = int(round(exponent * 2))
    out = np.sqrt(c) if halves % 2 else None
    whole = halves // 2
    base = c
    while whole:
        if whole & 1:
            out = base if out is None else out * base
        whole >>= 1
        if whole:
            base = base * base
    return np.ones_like(c) if out is None else out


def _rosette(cy: float, cx: float, radius: float, n_lobes: int, thinness: float, phase: float,
             wobble: float, wobble_phase: float, height: int, width: int):
    """Rasterise one plant inside its bounding box.

    A plant is the polar shape ``r < R(phi)`` with ``R(phi) = radius * (1 + wobble cos(phi +
    wobble_phase)) * |cos(n (phi + phase) / 2)| ** thinness``: ``n`` lobes (leaves), longer on one
    side than the other; a larger ``thinness`` gives narrower leaves; ``n = 0`` gives a round blob.

    Returns ``(rows, cols, inside, shade, halo)``: the box slices, the plant's pixels, a shading
    factor per pixel (darker towards the leaf tips, a light midrib) and a slightly larger outline
    for the shadow it casts; or ``None`` when the plant lies outside the image.
    """
    r_box = radius * (1.2 + abs(wobble)) + 2
    y0, y1 = max(int(cy - r_box), 0), min(int(cy + r_box) + 1, height)
    x0, x1 = max(int(cx - r_box), 0), min(int(cx + r_box) + 1, width)
    if y0 >= y1 or x0 >= x1:
        return None
    dy = (np.arange(y0, y1, dtype=np.float32) - np.float32(cy))[:, None]  # (h, 1)
    dx = (np.arange(x0, x1, dtype=np.float32) - np.float32(cx))[None, :]  # (1, w)
    r = np.sqrt(dy * dy + dx * dx)  # (h, w)
    phi = np.arctan2(dy, dx)  # (h, w)
    edge = np.float32(radius) * (1.0 + np.float32(wobble) * np.cos(phi + np.float32(wobble_phase)))
    midrib = 0.0
    if n_lobes > 0:
        c = np.abs(np.cos(np.float32(0.5 * n_lobes) * (phi + np.float32(phase))))  # 1 on a leaf's axis
        edge *= _power(c, thinness)
        midrib = np.float32(0.15) * (c > 0.995)
    np.maximum(edge, np.float32(1e-3), out=edge)
    t = r / edge  # radial position: 0 at the centre, 1 on the outline
    inside = t < 1.0
    shade = (1.0 - 0.40 * t * t) + midrib
    return slice(y0, y1), slice(x0, x1), inside, shade, t < 1.25


def _plant_layout(rng: np.random.Generator, height: int, width: int) -> dict[str, np.ndarray]:
    """Where and what plants grow, as arrays over plants in drawing order.

    Crops stand in two to four parallel rows (random direction, irregular spacing, gaps of
    missing plants); weeds are scattered uniformly. Keys: ``cls`` (1 crop, 2 weed), ``cy``, ``cx``,
    ``radius``, ``n_lobes``, ``thinness``, ``phase``, ``wobble``, ``wobble_phase``, ``rgb`` (n, 3).
    """
    s = min(height, width) / 256.0
    angle = rng.uniform(-0.35, 0.35)  # row direction, radians from vertical
    n_rows = int(rng.integers(2, 5))
    gap = width / n_rows  # distance between rows
    along = np.array([math.sin(angle), math.cos(angle)])  # (x, y) unit vector along a row
    across = np.array([math.cos(angle), -math.sin(angle)])
    half_diag = math.hypot(height, width) / 2
    step = rng.uniform(34, 56) * s  # spacing of plants along a row
    d = np.arange(-half_diag, half_diag, step) + rng.uniform(0, step)  # (m,) positions along a row
    offsets = (np.arange(-1, n_rows + 1) - n_rows / 2) * gap + rng.uniform(0, gap)  # (rows,) across
    d, o = np.meshgrid(d, offsets)  # (rows, m) each
    d = d.ravel() + rng.normal(0, 4 * s, d.size)
    o = o.ravel() + rng.normal(0, 3 * s, o.size)
    xy = np.array([width / 2, height / 2]) + d[:, None] * along + o[:, None] * across  # (n, 2)
    margin = 30 * s
    keep = (rng.random(d.size) > 0.15) & (xy[:, 0] > -margin) & (xy[:, 0] < width + margin) \
        & (xy[:, 1] > -margin) & (xy[:, 1] < height + margin)  # 15 % gaps in the rows
    n_crops = int(keep.sum())
    n_weeds = int(rng.poisson(rng.uniform(8, 26)) * height * width / 65536)
    weed_kind = rng.integers(0, 3, n_weeds)  # 0 broad-leaved rosette, 1 grass blades, 2 blob
    n = n_crops + n_weeds
    plants = {
        "cls": np.r_[np.ones(n_crops, int), np.full(n_weeds, 2)],
        "cy": np.r_[xy[keep, 1], rng.uniform(0, height, n_weeds)],
        "cx": np.r_[xy[keep, 0], rng.uniform(0, width, n_weeds)],
        "radius": np.r_[rng.uniform(13, 25, n_crops), rng.uniform(4, 11, n_weeds) * np.where(weed_kind == 1, 1.6, 1.0)] * s,
        "n_lobes": np.r_[rng.integers(4, 8, n_crops), np.choose(weed_kind, [rng.integers(3, 9, n_weeds),
                                                                           rng.integers(2, 5, n_weeds), 0])],
        "thinness": np.r_[rng.choice([1.0, 1.5, 2.0], n_crops), np.choose(weed_kind, [rng.choice([0.5, 1.0, 1.5], n_weeds),
                                                                                rng.choice([6.0, 8.0], n_weeds), 1.0])],
        "phase": rng.uniform(0, 2 * math.pi, n),
        "wobble": rng.normal(0, 0.12, n),
        "wobble_phase": rng.uniform(0, 2 * math.pi, n),
        "rgb": np.r_[np.array([0.22, 0.52, 0.14]) + rng.normal(0, 0.03, (n_crops, 3)),
                     np.array([0.30, 0.55, 0.16]) + rng.normal(0, 0.06, (n_weeds, 3))].astype(np.float32),
    }
    order = rng.permutation(n)  # later plants are drawn on top: weeds can cover crop leaves and vice versa
    return {k: v[order] for k, v in plants.items()}


def render_field(rng: np.random.Generator, height: int = 256, width: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Draw one field image and its labels.

    Returns ``image`` float32 ``(3, H, W)`` in ``[0, 1]`` and ``label`` uint8 ``(H, W)`` with
    0 = soil, 1 = crop, 2 = weed. Plants are painted into per-pixel layers (label, leaf colour,
    shadow) one bounding box at a time; the soil and the final composition are whole-image array
    operations.
    """
    brightness, stone = _noise_fields(rng, height, width)  # each (H, W)
    grain = np.frombuffer(rng.bytes(height * width), np.uint8).reshape(height, width)
    grain = grain.astype(np.float32) * np.float32(1 / 255) - np.float32(0.5)  # (H, W) uniform pixel grain
    plants = _plant_layout(rng, height, width)

    label = np.zeros((height, width), np.uint8)
    leaf = np.zeros((3, height, width), np.float32)  # leaf colour where a plant is, 0 elsewhere
    halo = np.zeros((height, width), bool)
    columns = [plants[k].tolist() for k in ("cls", "cy", "cx", "radius", "n_lobes", "thinness", "phase",
                                           "wobble", "wobble_phase")]
    for i, (cls, *shape) in enumerate(zip(*columns)):
        drawn = _rosette(*shape, height, width)
        if drawn is None:
            continue
        rows, cols, inside, shade, plant_halo = drawn
        np.copyto(label[rows, cols], cls, where=inside)
        np.copyto(leaf[:, rows, cols], plants["rgb"][i][:, None, None] * shade, where=inside)
        halo[rows, cols] |= plant_halo

    soil_rgb = (np.array([0.50, 0.38, 0.26]) * rng.uniform(0.75, 1.15) + rng.uniform(-0.04, 0.04, 3))
    stone_grey = np.float32(0.62 * rng.uniform(0.8, 1.1))
    soil = label == 0  # (H, W)
    shadow = np.where(halo, np.float32(0.7), np.float32(1.0))  # plants darken the soil around them
    soil_gain = (brightness + 0.10 * grain) * (1.0 - stone) * shadow * soil  # (H, W), 0 on plants
    image = soil_rgb.astype(np.float32)[:, None, None] * soil_gain  # (3, H, W)
    image += stone_grey * stone * shadow * soil
    image += leaf * (1.0 + 0.08 * grain)
    np.clip(image, 0.0, 1.0, out=image)
    return image, label


class SyntheticFields(Dataset):
    """The ``synthetic`` dataset: procedurally generated field images with exact labels.

    Args:
        split: ``train``, ``val``, ``test`` (labelled) or ``pool`` (images only).
        n_images: number of items; defaults 64 / 16 / 32 / 10,000. The pool can be made as long
            as you like: item ``i`` is generated on demand.
        seed: base seed; each split draws from its own stream of ``(seed, split, index)``.
        size: ``256`` or ``(height, width)``.
        transform: optional callable on ``(image, label)`` (or ``(image,)`` for the pool).

    Items: ``(image float (3, H, W) in [0, 1], label long (H, W))``; pool items are the image only.
    """

    def __init__(self, split: str = "train", n_images: int | None = None, seed: int = 0,
                 size: int | tuple[int, int] = 256, transform: Callable | None = None) -> None:
        check_split("synthetic", split)
        self.name, self.split, self.seed = "synthetic", split, int(seed)
        self.n_images = DEFAULT_SIZES[split] if n_images is None else int(n_images)
        if self.n_images < 0:
            raise ValueError(f"n_images must be >= 0, got {n_images}")
        self.height, self.width = (size, size) if isinstance(size, int) else tuple(size)
        if min(self.height, self.width) < 32:
            raise ValueError(f"size {size} is too small: synthetic fields need at least 32 px per side")
        self.class_names = list(CLASS_NAMES)
        self.class_colors = list(CLASS_COLORS)
        self.ignore_index = IGNORE_INDEX
        self.transform = transform

    @property
    def labelled(self) -> bool:
        return self.split != "pool"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return self.n_images

    def generate(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Item ``index`` as ``(image (3, H, W), label (H, W))`` regardless of split or transform."""
        rng = np.random.default_rng([self.seed, SPLIT_CODES[self.split], int(index)])
        image, label = render_field(rng, self.height, self.width)
        return torch.from_numpy(image), torch.from_numpy(label).long()  # (3, H, W), (H, W)

    def __getitem__(self, index: int):
        if not -self.n_images <= index < self.n_images:
            raise IndexError(f"index {index} out of range for synthetic/{self.split} with {self.n_images} items")
        image, label = self.generate(index % self.n_images)
        if not self.labelled:
            if self.transform:
                out = self.transform(image)
                return out[0] if len(out) == 1 else out
            return image
        if self.transform:
            image, label = self.transform(image, label)
        return image, label

    def __repr__(self) -> str:
        return (f"SyntheticFields(split={self.split!r}, n={self.n_images}, seed={self.seed}, "
                f"size=({self.height}, {self.width}))")


def build(split: str, root=None, *, n_images: int | None = None, seed: int = 0,
          size: int | tuple[int, int] = 256, transform: Callable | None = None) -> SyntheticFields:
    """Registry entry: ``get_dataset("synthetic", split, n_images=..., seed=..., size=...)`` (``root`` unused)."""
    return SyntheticFields(split, n_images=n_images, seed=seed, size=size, transform=transform)
