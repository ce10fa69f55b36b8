"""Patch grid, random masks and pixel masking (smir_lib.patches)."""

import math

import pytest
import torch

from smir_lib.patches import (
    PatchGrid,
    apply_pixel_mask,
    mask_images,
    mask_to_pixels,
    n_hidden,
    patch_grid,
    random_patch_mask,
)

pytestmark = pytest.mark.unit


def reference_edges(size: int, n_patches: int) -> list[int]:
    """The authors' RecRandomMask.get_patch_loc for one side, restated with plain Python."""
    nominal = size / math.sqrt(n_patches)
    starts = list(range(0, size, math.ceil(nominal)))
    if size - starts[-1] < nominal / 2:
        starts[-1] = size
    else:
        starts.append(size)
    return starts


def test_256_square_is_21x21_with_16px_last_row_and_column():
    grid = patch_grid(256, 256)
    assert grid.shape == (21, 21) and grid.n_patches == 441
    assert grid.row_heights == (12,) * 20 + (16,)
    assert grid.col_widths == (12,) * 20 + (16,)
    assert n_hidden(grid) == 220


def test_256x341_gives_12x16_px_patches():
    grid = patch_grid(256, 341)
    assert grid.shape == (21, 21)
    assert set(grid.row_heights[:-1]) == {12} and set(grid.col_widths[:-1]) == {16}
    assert grid.col_edges[-1] == 341 and grid.col_widths[-1] == 21  # 5 px leftover merged


@pytest.mark.parametrize("height,width,n", [(255, 511, 512), (17, 17, 512), (256, 341, 512),
                                            (966, 1296, 512), (64, 48, 100), (31, 7, 9)])
def test_grid_matches_authors_recipe_on_odd_sizes(height, width, n):
    grid = patch_grid(height, width, n)
    assert list(grid.row_edges) == reference_edges(height, n)
    assert list(grid.col_edges) == reference_edges(width, n)
    assert grid.row_edges[0] == 0 and grid.row_edges[-1] == height
    assert grid.col_edges[0] == 0 and grid.col_edges[-1] == width
    assert sum(grid.row_heights) == height and min(grid.row_heights) >= 1
    assert grid.pixel_rows().shape == (height,) and grid.pixel_cols().shape == (width,)
    assert grid.pixel_rows()[-1].item() == grid.gh - 1


def test_255x511_and_17x17_shapes():
    assert patch_grid(255, 511).shape == (21, 22)  # step 23; the 5 px left over are merged
    assert patch_grid(255, 511).col_widths[-1] == 28 and patch_grid(255, 511).row_heights[-1] == 15
    assert patch_grid(17, 17).shape == (17, 17)  # step 1 px: every pixel is a patch


def test_pixel_rows_map_each_pixel_to_its_patch_row():
    grid = patch_grid(256, 256)
    rows = grid.pixel_rows()
    assert rows[:12].eq(0).all() and rows[12] == 1 and rows[-16:].eq(20).all()


@pytest.mark.parametrize("height,width,n", [(1, 1, 512), (0, 10, 512), (10, 10, 1)])
def test_too_small_for_a_grid_raises_clear_error(height, width, n):
    with pytest.raises(ValueError, match=r"n_patches|image is"):
        patch_grid(height, width, n)


def test_too_small_error_names_size_and_fix():
    with pytest.raises(ValueError, match=r"image is 1x1.*larger image"):
        patch_grid(1, 1)


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_random_mask_hides_exactly_floor_ratio(ratio):
    grid = patch_grid(255, 511)
    masks = random_patch_mask(7, grid, ratio, generator=torch.Generator().manual_seed(0))
    assert masks.shape == (7, *grid.shape) and masks.dtype == torch.bool
    assert masks.flatten(1).sum(1).tolist() == [math.floor(ratio * grid.n_patches)] * 7


def test_random_masks_are_reproducible_and_independent():
    grid = patch_grid(256, 256)
    a = random_patch_mask(4, grid, generator=torch.Generator().manual_seed(3))
    b = random_patch_mask(4, grid, generator=torch.Generator().manual_seed(3))
    c = random_patch_mask(4, grid, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # the B masks of one call differ


def test_bad_ratio_raises():
    with pytest.raises(ValueError, match="ratio is 1.5"):
        n_hidden(patch_grid(64, 64), 1.5)


def test_mask_to_pixels_expands_each_patch():
    grid = patch_grid(40, 30, 12)
    mask = random_patch_mask(3, grid, generator=torch.Generator().manual_seed(1))
    pixels = mask_to_pixels(mask, grid)
    assert pixels.shape == (3, 40, 30)
    for i in range(grid.gh):  # reference: fill every patch rectangle
        for j in range(grid.gw):
            rows, cols = grid.patch_slices(i, j)
            assert pixels[:, rows, cols].eq(mask[:, i, j, None, None]).all()


def test_mask_images_fills_hidden_pixels_only():
    grid = patch_grid(64, 64)
    images = torch.rand(2, 3, 64, 64) + 1.0  # never equal to the fill
    mask = random_patch_mask(2, grid, generator=torch.Generator().manual_seed(0))
    out = mask_images(images, mask, grid, fill=0.0)
    hidden = mask_to_pixels(mask, grid)[:, None].expand_as(images)
    assert out[hidden].eq(0).all() and torch.equal(out[~hidden], images[~hidden])
    assert images.min() >= 1.0  # input untouched


def test_apply_pixel_mask_broadcasts_and_checks_shape():
    images = torch.ones(3, 8, 8)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[0, 0] = True
    assert apply_pixel_mask(images, mask, fill=-1.0)[:, 0, 0].eq(-1).all()
    with pytest.raises(ValueError, match="pixel mask"):
        apply_pixel_mask(images, torch.zeros(4, 4, dtype=torch.bool))


def test_grid_is_hashable_and_frozen():
    grid = patch_grid(256, 256)
    assert isinstance(grid, PatchGrid) and hash(grid) == hash(patch_grid(256, 256))
    with pytest.raises(AttributeError):
        grid.height = 3
