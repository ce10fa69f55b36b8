"""Reconstruction loss and the vectorised patch-loss map (smir_lib.losses)."""

import pytest
import torch
from pytorch_msssim import ms_ssim as reference_ms_ssim

from benchmarks.reference import patch_loss_map_loop as loop_patch_loss_map
from smir_lib.losses import check_msssim_size, ms_ssim, patch_loss_map, patch_loss_terms, reconstruction_loss
from smir_lib.patches import patch_grid

pytestmark = pytest.mark.unit


def random_pair(n: int, height: int, width: int, seed: int = 0, noise: float = 0.5):
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(n, 3, height, width, generator=g)
    pred = target + noise * torch.randn(n, 3, height, width, generator=g)
    return pred, target


@pytest.mark.parametrize("n,height,width,n_patches", [
    (1, 256, 256, 512),  # 21x21, last row and column 16 px
    (1, 250, 255, 512),  # uneven: a narrower last row of its own (10 px), merged last column (15)
    (2, 40, 30, 150),  # 4x3 px patches: a band of exactly 3 px has a single window position
    (2, 20, 26, 200),  # 2 px patches: shorter than the window, pytorch-msssim skips the filter
])
def test_patch_loss_map_equals_per_patch_loop(n, height, width, n_patches):
    grid = patch_grid(height, width, n_patches)
    pred, target = random_pair(n, height, width)
    fast = patch_loss_map(pred, target, grid)
    assert fast.shape == (n, *grid.shape) and fast.dtype == torch.float32
    torch.testing.assert_close(fast.double(), loop_patch_loss_map(pred, target, grid),
                               rtol=0, atol=1e-5)


def test_blocks_give_the_same_map_as_one_pass():
    grid = patch_grid(64, 64)
    pred, target = random_pair(5, 64, 64, seed=3)
    whole = patch_loss_map(pred, target, grid, block_pixels=0)
    for block_pixels in (1, 2 * 64 * 64, 3 * 64 * 64):  # 1, 2 and 3 images per block
        torch.testing.assert_close(patch_loss_map(pred, target, grid, block_pixels=block_pixels),
                                   whole, rtol=0, atol=1e-6)


def test_patch_loss_map_float64_matches_loop_tightly():
    grid = patch_grid(48, 40, 60)
    pred, target = random_pair(1, 48, 40, seed=1)
    pred, target = pred.double(), target.double()
    torch.testing.assert_close(patch_loss_map(pred, target, grid),
                               loop_patch_loss_map(pred, target, grid), rtol=0, atol=1e-10)


def test_patch_loss_map_ignores_neighbouring_patches():
    """Changing pixels of one patch changes that patch's score only."""
    grid = patch_grid(64, 64, 64)
    pred, target = random_pair(1, 64, 64, seed=2)
    before = patch_loss_map(pred, target, grid)
    rows, cols = grid.patch_slices(3, 4)
    pred[:, :, rows, cols] += 1.0
    changed = (patch_loss_map(pred, target, grid) - before).abs() > 1e-6
    assert changed.sum() == 1 and changed[0, 3, 4]


def test_perfect_reconstruction_scores_zero():
    grid = patch_grid(64, 64)
    _, target = random_pair(2, 64, 64)
    assert patch_loss_map(target, target.clone(), grid).abs().max() < 1e-5


def test_patch_loss_terms_are_the_l1_and_the_ssim_parts_of_the_score():
    grid = patch_grid(64, 64, 16)  # 16 px patches
    pred, target = random_pair(2, 64, 64)
    l1, dissimilarity = patch_loss_terms(pred, target, grid)
    assert torch.allclose(l1 + dissimilarity, patch_loss_map(pred, target, grid))
    by_patch = torch.nn.functional.avg_pool2d((pred - target).abs().mean(1, keepdim=True), 16)[:, 0]
    assert torch.allclose(l1, by_patch, atol=1e-6)
    g = torch.Generator().manual_seed(1)
    smooth = 0.5 + 0.1 * torch.nn.functional.interpolate(torch.randn(1, 3, 4, 4, generator=g), size=64, mode="bilinear")
    grainy = smooth + 0.2 * (torch.rand(1, 3, 64, 64, generator=g) - 0.5)  # pixel grain
    l1, dissimilarity = patch_loss_terms(grainy + 0.1, grainy, grid)  # a wrong colour: L1 sees it
    assert torch.allclose(l1, torch.full_like(l1, 0.1), atol=1e-5) and dissimilarity.max() < 0.05
    l1, dissimilarity = patch_loss_terms(smooth, grainy, grid)  # the grain lost: SSIM sees it
    assert dissimilarity.min() > 5 * l1.max()


def test_patch_loss_map_rejects_wrong_size():
    with pytest.raises(ValueError, match="grid is for 64x64"):
        patch_loss_map(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32), patch_grid(64, 64))


@pytest.mark.parametrize("height,width,win_size", [
    (176, 192, 11),  # the paper's window
    (128, 128, 7),  # the fast preset's window and crop
    (161, 177, 11),  # odd sides: avg_pool pads at every scale
])
def test_ms_ssim_matches_pytorch_msssim(height, width, win_size):
    """The grouped-convolution MS-SSIM equals pytorch-msssim's, value and gradient, to 1e-4."""
    pred, target = random_pair(2, height, width, noise=0.2)
    ours_in = pred.clone().contiguous(memory_format=torch.channels_last).requires_grad_()
    theirs_in = pred.clone().requires_grad_()
    ours = ms_ssim(ours_in, target, data_range=1.0, win_size=win_size)
    theirs = reference_ms_ssim(theirs_in, target, data_range=1.0, win_size=win_size)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)
    ours.backward()
    theirs.backward()
    scale = theirs_in.grad.abs().max()
    torch.testing.assert_close(ours_in.grad / scale, theirs_in.grad / scale, rtol=0, atol=1e-4)


def test_reconstruction_loss_is_l1_plus_one_minus_msssim():
    pred, target = random_pair(2, 176, 176, noise=0.2)
    pred.requires_grad_(True)
    loss = reconstruction_loss(pred, target)
    expected = (pred - target).abs().mean() + 1 - reference_ms_ssim(pred, target, data_range=1.0)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()


def test_reconstruction_loss_weights_and_scales_are_parameters():
    pred, target = random_pair(1, 96, 96, noise=0.2)
    # 3 scales and a 7x7 window: the limit is (7 - 1) * 2 ** 2 = 24 px
    three = reconstruction_loss(pred, target, win_size=7, ms_weights=(0.2, 0.3, 0.5))
    l1_only = reconstruction_loss(pred, target, win_size=7, ms_weights=(0.2, 0.3, 0.5),
                                  msssim_weight=0.0)
    torch.testing.assert_close(l1_only, (pred - target).abs().mean())
    assert three > l1_only


def test_image_too_small_for_msssim_names_size_limit_and_fix():
    expected = r"image is 128x128.*11x11.*5 scales.*> 160 px.*larger crop"
    with pytest.raises(ValueError, match=expected):
        reconstruction_loss(torch.zeros(1, 3, 128, 128), torch.zeros(1, 3, 128, 128))
    check_msssim_size(161, 200)  # just large enough
    with pytest.raises(ValueError, match="> 24 px"):
        check_msssim_size(24, 100, win_size=7, levels=3)


def test_losses_stay_float32_under_autocast():
    grid = patch_grid(176, 176)
    pred, target = random_pair(1, 176, 176, noise=0.2)
    expected_map = patch_loss_map(pred, target, grid)
    expected_loss = reconstruction_loss(pred, target)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(patch_loss_map(pred, target, grid), expected_map)
        torch.testing.assert_close(reconstruction_loss(pred, target), expected_loss)
