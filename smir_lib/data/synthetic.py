"""Synthetic crop/weed field images: the kit's built-in dataset, no download needed.

Each image is a top-down view of a field, drawn procedurally with exact per-pixel labels:

- **soil** (class 0): brown ground textured with multi-scale value noise (moist/dry patches,
  mid-scale clods, pale stones, pixel grain) under a gentle illumination gradient;
- **crop** (class 1): rosette plants in two to four parallel rows with irregular spacing and gaps,
  leaves of unequal length, lighter along each leaf's axis and darker at the tips, each plant
  casting a dark halo on the soil;
- **weed** (class 2): small plants scattered anywhere, some on top of crop leaves, in three
  shapes (broad-leaved rosettes, thin grass blades, round blobs) and colours that overlap the
  crop's, so shape and context matter, not only colour. Weeds cover about 3 % of the pixels,
  crops about 11 %.

Image ``i`` of a split depends only on ``(seed, split, i)``: its generator is
``numpy.random.default_rng([seed, split code, i])``, so any item can be generated on its own, in
any order, in any worker process, and the splits come from disjoint random streams. The
``pool`` split (unlabelled pretraining images) can be as long as you like.

Rendering is vectorised: per plant, about twenty numpy operations over its bounding box; per
image, a few whole-image operations. The soil noise (the costly part) is made once per split as
a small bank of textures (:func:`soil_bank`), from which each image takes a random, randomly
flipped window. One core renders 256x256 images at roughly 300 per second (CPU time, measured on
a busy 2-core machine; ``tests/test_synthetic.py`` asserts at least 200).

:func:`example_figure` draws a grid of examples with their labels.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from smir_lib.data.base import IGNORE_INDEX, check_split

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
    brightness, stones = _upsample(raw, height, width)  # (H, W) each
    brightness = 1.0 + 0.30 * brightness
    stones = np.clip((stones - 0.38) * 6.0, 0.0, 1.0)  # thresholded after upsampling: round, soft-edged stones
    return np.stack([brightness, stones])  # (2, H, W)


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
    Everything is compared squared (``r**2 < R**2``), which saves square roots.

    Returns ``(rows, cols, inside, shade, halo)``: the box slices, the plant's pixels, a shading
    factor per pixel (darker towards the leaf tips and edges, lighter along each leaf's axis) and
    a slightly larger outline for the shadow it casts; or ``None`` when the plant lies outside.
    """
    r_box = radius * (1.2 + abs(wobble)) + 2
    y0, y1 = max(int(cy - r_box), 0), min(int(cy + r_box) + 1, height)
    x0, x1 = max(int(cx - r_box), 0), min(int(cx + r_box) + 1, width)
    if y0 >= y1 or x0 >= x1:
        return None
    dy = (np.arange(y0, y1, dtype=np.float32) - np.float32(cy))[:, None]  # (h, 1)
    dx = (np.arange(x0, x1, dtype=np.float32) - np.float32(cx))[None, :]  # (1, w)
    r2 = dy * dy + dx * dx  # (h, w) squared distance to the centre
    phi = np.arctan2(dy, dx)  # (h, w)
    edge = np.cos(phi + np.float32(wobble_phase))
    edge *= np.float32(radius * wobble)
    edge += np.float32(radius)  # R without lobes: a wobbly circle
    if n_lobes > 0:
        axis = np.cos(phi * np.float32(0.5 * n_lobes) + np.float32(0.5 * n_lobes * phase))
        axis *= axis  # cos^2: 1 along a leaf's axis, 0 between leaves
        edge *= _power(axis, 0.5 * thinness)
    else:
        axis = np.float32(1.0)
    edge *= edge
    edge += np.float32(1e-6)
    t2 = r2 / edge  # squared radial position: 0 at the centre, 1 on the outline
    inside = t2 < 1.0
    shade = (np.float32(0.8) + np.float32(0.2) * axis) - np.float32(0.4) * t2
    return slice(y0, y1), slice(x0, x1), inside, shade, t2 < 1.5


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
    step = rng.uniform(38, 58) * s  # spacing of plants along a row
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
    n = n_crops + n_weeds
    crop = np.arange(n) < n_crops  # (n,) crops first, then weeds
    kind = np.where(crop, 0, 1 + rng.integers(0, 3, n))  # 0 crop; weeds: 1 broad rosette, 2 grass, 3 blob
    u = rng.random((n, 7))  # all uniform draws at once, one column per property
    z = rng.standard_normal((n, 4))  # wobble and colour noise
    lobes_low, lobes_span = np.array([4, 3, 2, 0])[kind], np.array([4, 6, 3, 0])[kind]  # crops 4-7 leaves
    thin_choices = np.array([[1.0, 1.5, 2.0], [0.5, 1.0, 1.5], [6.0, 8.0, 8.0], [1.0, 1.0, 1.0]])
    base_rgb = np.where(crop[:, None], [0.22, 0.52, 0.14], [0.30, 0.55, 0.16])  # weeds: yellower, more varied
    plants = {
        "cls": np.where(crop, 1, 2),
        "cy": np.where(crop, np.concatenate([xy[keep, 1], np.zeros(n_weeds)]), u[:, 0] * height),
        "cx": np.where(crop, np.concatenate([xy[keep, 0], np.zeros(n_weeds)]), u[:, 1] * width),
        "radius": np.where(crop, 14 + 12 * u[:, 2], (4 + 7 * u[:, 2]) * np.where(kind == 2, 1.6, 1.0)) * s,
        "n_lobes": lobes_low + (u[:, 3] * lobes_span).astype(int),
        "thinness": thin_choices[kind, (u[:, 4] * 3).astype(int)],
        "phase": u[:, 5] * 2 * math.pi,
        "wobble": 0.12 * z[:, 0],
        "wobble_phase": u[:, 6] * 2 * math.pi,
        "rgb": (base_rgb + np.where(crop, 0.03, 0.06)[:, None] * z[:, 1:]).astype(np.float32),
    }
    order = rng.permutation(n)  # later plants are drawn on top: weeds can cover crop leaves and vice versa
    return {k: v[order] for k, v in plants.items()}


@functools.lru_cache(maxsize=8)
def _ramps(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``(H, 1)`` and ``(1, W)`` coordinates from -0.5 to 0.5, for illumination gradients."""
    return (np.linspace(-0.5, 0.5, height, dtype=np.float32)[:, None],
            np.linspace(-0.5, 0.5, width, dtype=np.float32)[None, :])


@functools.lru_cache(maxsize=8)
def soil_bank(seed: int, split: str, height: int, width: int, n_textures: int = 6
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Soil textures shared by the images of one split: ``(n, 1.5 H, 1.5 W)`` float32 arrays each.

    Returns ``(soil, stone, grain)``: soil brightness with its pixel grain, already dimmed under
    stones; stone opacity; and the grain factor for leaves. Every image takes a random window of
    a random texture, randomly flipped, so the expensive noise is made once per split (about 0.1 s)
    instead of once per image. The bank is a pure function of ``(seed, split, size)``, drawn from
    its own stream ``[seed, 100 + split code, 0]``: items stay independent of the order they are
    asked for, and splits do not share soil.
    """
    rng = np.random.default_rng([seed, 100 + SPLIT_CODES[split], 0])
    bh, bw = height + height // 2, width + width // 2
    soil = np.empty((n_textures, bh, bw), np.float32)
    stone = np.empty_like(soil)
    grain = np.empty_like(soil)
    for k in range(n_textures):  # a handful of textures, not a loop over pixels
        brightness, stone[k] = _noise_fields(rng, bh, bw)
        g = rng.random((bh, bw), dtype=np.float32) - np.float32(0.5)  # uniform pixel grain
        soil[k] = (brightness + 0.10 * g) * (1.0 - stone[k])
        grain[k] = 1.0 + 0.08 * g
    for a in (soil, stone, grain):
        a.setflags(write=False)
    return soil, stone, grain


def render_field(rng: np.random.Generator, height: int = 256, width: int = 256,
                 bank: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Draw one field image and its labels.

    Args:
        rng: the image's random generator.
        height, width: image size.
        bank: soil textures from :func:`soil_bank` (default: the bank of seed 0, split ``train``).

    Returns ``image`` float32 ``(3, H, W)`` in ``[0, 1]`` and ``label`` uint8 ``(H, W)`` with
    0 = soil, 1 = crop, 2 = weed. Plants are painted into per-pixel layers (label, leaf colour,
    shadow) one bounding box at a time; the soil and the final composition are whole-image array
    operations.
    """
    soil_tex, stone_tex, grain_tex = bank if bank is not None else soil_bank(0, "train", height, width)
    texture = int(rng.integers(len(soil_tex)))
    oy = int(rng.integers(soil_tex.shape[1] - height + 1))
    ox = int(rng.integers(soil_tex.shape[2] - width + 1))
    fy, fx = rng.choice([-1, 1], 2)  # random flips of the window

    def window(tex: np.ndarray) -> np.ndarray:  # (H, W) view of the chosen texture
        return tex[texture, oy:oy + height, ox:ox + width][::fy, ::fx]

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
    gy, gx = rng.uniform(-0.25, 0.25, 2)  # a gentle illumination gradient across the image
    ramp_y, ramp_x = _ramps(height, width)
    light = (1.0 + np.float32(gy) * ramp_y) + np.float32(gx) * ramp_x  # (H, W)
    shadow = np.where(halo, np.float32(0.7), np.float32(1.0))  # plants darken the soil around them
    shadow *= label == 0  # (H, W), 0 on plants
    shadow *= light
    image = soil_rgb.astype(np.float32)[:, None, None] * (window(soil_tex) * shadow)  # (3, H, W)
    image += stone_grey * window(stone_tex) * shadow
    light *= window(grain_tex)
    leaf *= light
    image += leaf
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

    def image_shape(self, index: int) -> tuple[int, int]:
        """``(height, width)`` of image ``index`` (all images share one size), without drawing it."""
        return self.height, self.width

    def generate(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Item ``index`` as ``(image (3, H, W), label (H, W))`` regardless of split or transform."""
        rng = np.random.default_rng([self.seed, SPLIT_CODES[self.split], int(index)])
        bank = soil_bank(self.seed, self.split, self.height, self.width)
        image, label = render_field(rng, self.height, self.width, bank)
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
        if self.transform:  # e.g. TrainAugment / EvalTransform: (image, label) -> (image, label)
            return tuple(self.transform(image, label))
        return image, label

    def __repr__(self) -> str:
        return (f"SyntheticFields(split={self.split!r}, n={self.n_images}, seed={self.seed}, "
                f"size=({self.height}, {self.width}))")


def build(split: str, root=None, *, n_images: int | None = None, seed: int = 0,
          size: int | tuple[int, int] = 256, transform: Callable | None = None) -> SyntheticFields:
    """Registry entry: ``get_dataset("synthetic", split, n_images=..., seed=..., size=...)`` (``root`` unused)."""
    return SyntheticFields(split, n_images=n_images, seed=seed, size=size, transform=transform)


def example_figure(n: int = 4, seed: int = 0, split: str = "train", size: int = 256):
    """A ``matplotlib`` Figure: ``n`` synthetic images (top) and their labels (bottom)."""
    import matplotlib.pyplot as plt

    ds = SyntheticFields(split, n_images=n, seed=seed, size=size)
    palette = np.array(CLASS_COLORS, np.uint8)
    fig, axes = plt.subplots(2, n, figsize=(2.6 * n, 5.4), squeeze=False)
    for i in range(n):
        image, label = ds[i]
        axes[0, i].imshow(image.permute(1, 2, 0).numpy())
        axes[1, i].imshow(palette[label.numpy()])
        shares = np.bincount(label.numpy().ravel(), minlength=3) / label.numel()
        axes[1, i].set_title(f"crop {100 * shares[1]:.1f} %, weed {100 * shares[2]:.1f} %", fontsize=9)
        for ax in axes[:, i]:
            ax.set_axis_off()
    axes[0, 0].set_title("image", fontsize=9, loc="left")
    fig.suptitle("synthetic fields: soil (brown), crop (green), weed (red)", fontsize=10)
    fig.tight_layout()
    return fig

