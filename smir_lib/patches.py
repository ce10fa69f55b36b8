"""Patch grids, random patch masks, and hiding pixels.

SMIR hides *patches*, not pixels. An image of height ``H`` and width ``W`` is cut into a grid of
about ``n_patches`` rectangles (512 by default), following the authors' recipe exactly:

* the nominal patch height is ``H / sqrt(n_patches)``; rows start every
  ``step = ceil(H / sqrt(n_patches))`` pixels: ``0, step, 2 * step, ...`` while ``< H``;
* if the last row would be narrower than *half the nominal height* it is merged into the row
  before it, otherwise it stays a (narrower) row of its own;
* columns are cut the same way from ``W``.

On a 256x256 image: ``256 / sqrt(512) = 11.31``, so ``step = 12``; rows start at
``0, 12, ..., 252``, the last one would be 4 px high (< 5.66) and is merged: 21 rows of 12 px and a
last row of 16 px, so a 21x21 grid of 441 patches.

A mask is a boolean tensor, ``True`` = hidden. We keep masks as compact *grid* masks
``(B, gh, gw)`` (one bit per patch) and expand them to pixels ``(B, H, W)`` only when an image is
actually masked. Hidden pixels are filled with the dataset mean colour, which is ``0.0`` on
normalised images.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

__all__ = [
    "PatchGrid",
    "patch_grid",
    "n_hidden",
    "random_patch_mask",
    "mask_to_pixels",
    "apply_pixel_mask",
    "mask_images",
]


@dataclass(frozen=True)
class PatchGrid:
    """The patches of an ``height x width`` image, as row and column edges.

    Patch ``(i, j)`` covers rows ``row_edges[i]:row_edges[i + 1]`` and columns
    ``col_edges[j]:col_edges[j + 1]``. Patches in one grid row share a height, patches in one
    grid column share a width; only the last row and column may differ from the others.
    """

    height: int
    width: int
    row_edges: tuple[int, ...]  # gh + 1 edges, first 0, last height
    col_edges: tuple[int, ...]  # gw + 1 edges, first 0, last width

    @property
    def gh(self) -> int:
        """Number of patch rows."""
        return len(self.row_edges) - 1

    @property
    def gw(self) -> int:
        """Number of patch columns."""
        return len(self.col_edges) - 1

    @property
    def shape(self) -> tuple[int, int]:
        """``(gh, gw)``: the shape of a single grid mask or score map."""
        return (self.gh, self.gw)

    @property
    def n_patches(self) -> int:
        """Total number of patches, ``gh * gw``."""
        return self.gh * self.gw

    @property
    def row_heights(self) -> tuple[int, ...]:
        """Height in pixels of each patch row."""
        return tuple(b - a for a, b in zip(self.row_edges[:-1], self.row_edges[1:]))

    @property
    def col_widths(self) -> tuple[int, ...]:
        """Width in pixels of each patch column."""
        return tuple(b - a for a, b in zip(self.col_edges[:-1], self.col_edges[1:]))

    def pixel_rows(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Patch row of every pixel row: ``(H,)`` long, e.g. ``[0]*12 + [1]*12 + ...``.

        Cached per device: treat it as read-only."""
        return _band_of_pixel(self.row_edges, torch.device(device or "cpu"))  # (H,)

    def pixel_cols(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Patch column of every pixel column: ``(W,)`` long."""
        return _band_of_pixel(self.col_edges, torch.device(device or "cpu"))  # (W,)

    def patch_slices(self, i: int, j: int) -> tuple[slice, slice]:
        """``(rows, cols)`` slices of patch ``(i, j)``, to crop it: ``image[..., rows, cols]``."""
        return (slice(self.row_edges[i], self.row_edges[i + 1]),
                slice(self.col_edges[j], self.col_edges[j + 1]))


@functools.lru_cache(maxsize=64)
def _band_of_pixel(edges: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Band index of every pixel along one side, cached per device (no copy on later calls)."""
    sizes = torch.tensor([b - a for a, b in zip(edges[:-1], edges[1:])])
    return torch.repeat_interleave(torch.arange(len(sizes)), sizes).to(device)  # (H,)


def _edges(size: int, n_patches: int) -> tuple[int, ...]:
    """Cut one side of ``size`` pixels into bands, as the authors do (see the module docstring)."""
    nominal = size / math.sqrt(n_patches)  # unrounded patch size, e.g. 11.31 px
    step = math.ceil(nominal)  # e.g. 12 px
    starts = list(range(0, size, step))  # 0, step, 2 * step, ... < size
    if len(starts) > 1 and size - starts[-1] < nominal / 2:
        starts.pop()  # the last band is too thin: merge it into the one before
    return tuple(starts) + (size,)


def patch_grid(height: int, width: int, n_patches: int = 512) -> PatchGrid:
    """The patch grid of an ``height x width`` image with about ``n_patches`` patches.

    >>> g = patch_grid(256, 256)
    >>> g.shape, g.row_heights[-2:]
    ((21, 21), (12, 16))

    Raises ``ValueError`` when the image or ``n_patches`` cannot give a grid of at least two
    patches (a mask needs something to hide and something to show).
    """
    if n_patches < 2:
        raise ValueError(f"n_patches is {n_patches}; a patch grid needs n_patches >= 2 "
                         "(the authors use 512)")
    if height < 1 or width < 1:
        raise ValueError(f"image is {height}x{width}; a patch grid needs at least 1x1 px: "
                         "pass the image's real height and width")
    grid = PatchGrid(height, width, _edges(height, n_patches), _edges(width, n_patches))
    if grid.n_patches < 2:
        raise ValueError(
            f"image is {height}x{width}; with n_patches={n_patches} its patch grid is "
            f"{grid.gh}x{grid.gw}, too small to mask: use a larger image or a larger n_patches")
    return grid


def n_hidden(grid: PatchGrid, ratio: float = 0.5) -> int:
    """How many patches a mask of ``ratio`` hides: ``floor(ratio * n_patches)`` (220 of 441)."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mask ratio is {ratio}; expected a fraction in [0, 1], e.g. 0.5")
    # A tiny tolerance so that e.g. 0.3 * 10 = 2.9999999999999996 still hides 3 patches.
    return int(math.floor(ratio * grid.n_patches + 1e-9))


def random_patch_mask(batch: int, grid: PatchGrid, ratio: float = 0.5, *,
                      generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> torch.Tensor:
    """``batch`` independent random grid masks, each hiding exactly ``n_hidden(grid, ratio)``.

    Every patch is equally likely to be hidden. The random numbers come from ``generator`` only
    (on the generator's device), so a seeded generator gives the same masks on every run; the
    masks are then moved to ``device``.

    Returns ``(batch, gh, gw)`` bool, ``True`` = hidden.
    """
    k = n_hidden(grid, ratio)
    gen_device = generator.device if generator is not None else device
    # A random permutation per mask: the k patches with the smallest keys are hidden.
    keys = torch.rand(batch, grid.n_patches, generator=generator, device=gen_device)  # (B, N)
    hidden = keys.argsort(dim=1)[:, :k]  # (B, k) flat patch indices
    mask = torch.zeros(batch, grid.n_patches, dtype=torch.bool, device=gen_device)
    mask.scatter_(1, hidden, True)
    return mask.view(batch, grid.gh, grid.gw).to(device if device is not None else gen_device)


def mask_to_pixels(mask: torch.Tensor, grid: PatchGrid) -> torch.Tensor:
    """Expand grid masks ``(..., gh, gw)`` to pixel masks ``(..., H, W)`` (a gather, no loop)."""
    if tuple(mask.shape[-2:]) != grid.shape:
        raise ValueError(f"mask has grid shape {tuple(mask.shape[-2:])}, the grid is {grid.shape}: "
                         "make the mask with the same PatchGrid")
    rows = grid.pixel_rows(mask.device)  # (H,)
    cols = grid.pixel_cols(mask.device)  # (W,)
    return mask.index_select(-2, rows).index_select(-1, cols)  # (..., H, gw) -> (..., H, W)


def apply_pixel_mask(images: torch.Tensor, pixel_mask: torch.Tensor,
                     fill: float = 0.0) -> torch.Tensor:
    """Return a copy of ``images (..., C, H, W)`` whose hidden pixels are set to ``fill``.

    ``pixel_mask`` is ``(..., H, W)`` bool and broadcasts over the channel axis. On normalised
    images ``fill = 0.0`` is the dataset mean colour, which is what the authors fill with.
    """
    if tuple(pixel_mask.shape[-2:]) != tuple(images.shape[-2:]):
        raise ValueError(f"pixel mask is {tuple(pixel_mask.shape[-2:])}, images are "
                         f"{tuple(images.shape[-2:])}: expand the grid mask with the image's grid")
    hidden = pixel_mask.unsqueeze(-3)  # (..., 1, H, W)
    return torch.where(hidden, torch.tensor(fill, dtype=images.dtype), images)


def mask_images(images: torch.Tensor, mask: torch.Tensor, grid: PatchGrid,
                fill: float = 0.0) -> torch.Tensor:
    """Hide the patches of grid masks ``(B, gh, gw)`` in ``images (B, C, H, W)``."""
    return apply_pixel_mask(images, mask_to_pixels(mask, grid), fill)
