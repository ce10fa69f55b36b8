"""Selective mask generation (smir_lib.selective)."""

import math

import pytest
import torch
from torch import nn

from benchmarks.reference import patch_loss_map_loop
from smir_lib.losses import patch_loss_map
from smir_lib.models import build_unet
from smir_lib.patches import mask_images, n_hidden, patch_grid
from smir_lib.selective import SelectiveMasks, score_patches, selective_mask, top_patch_mask

pytestmark = pytest.mark.unit


class Blur(nn.Module):
    """A 'model' that reproduces flat regions exactly and fails on texture: a 3x3 box blur."""

    def __init__(self, max_batch: int | None = None):
        super().__init__()
        self.pool = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.max_batch = max_batch
        self.batches: list[int] = []
        self.seen_training: list[bool] = []
        self.seen_inference: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.max_batch is not None and x.shape[0] > self.max_batch:
            raise torch.cuda.OutOfMemoryError("simulated: batch too large")
        self.batches.append(x.shape[0])
        self.seen_training.append(self.training)
        self.seen_inference.append(torch.is_inference_mode_enabled())
        return self.pool(x)


def textured_corner_images(n: int, seed: int = 0) -> torch.Tensor:
    """64x64 images, flat 0.0 (the mean colour) except noise in the top-left 32x32 quarter."""
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 3, 64, 64)
    images[:, :, :32, :32] = torch.randn(n, 3, 32, 32, generator=g)
    return images


def test_top_patch_mask_picks_highest_scores():
    scores = torch.tensor([[[0.1, 0.9], [0.5, 0.3]]])
    assert top_patch_mask(scores, 2).tolist() == [[[False, True], [True, False]]]


def test_top_patch_mask_breaks_ties_by_lower_flat_index():
    scores = torch.zeros(2, 5, 7)
    mask = top_patch_mask(scores, 10)
    assert mask.flatten(1)[:, :10].all() and not mask.flatten(1)[:, 10:].any()
    scores[1, 4, 6] = 1.0  # a higher score still wins
    assert top_patch_mask(scores, 1)[1, 4, 6] and top_patch_mask(scores, 1)[0, 0, 0]


def test_top_patch_mask_rejects_bad_count():
    with pytest.raises(ValueError, match="n_hidden is 5"):
        top_patch_mask(torch.zeros(1, 2, 2), 5)


def test_selects_the_textured_region():
    """Flat patches are rebuilt perfectly, textured ones are not: the mask is the texture."""
    grid = patch_grid(64, 64, 64)  # 8x8 patches of 8 px
    images = textured_corner_images(3)
    result = selective_mask(Blur(), images, grid, k=3, ratio=0.25,
                            generator=torch.Generator().manual_seed(0))
    assert isinstance(result, SelectiveMasks)
    expected = torch.zeros(3, 8, 8, dtype=torch.bool)
    expected[:, :4, :4] = True  # the 16 = floor(0.25 * 64) patches of the textured quarter
    assert torch.equal(result.mask, expected)
    assert result.scores[:, :4, :4].min() > result.scores[:, 4:, 4:].max()


def test_shapes_counts_and_random_masks():
    grid = patch_grid(64, 48, 60)
    images = textured_corner_images(2)[..., :48]
    result = selective_mask(Blur(), images, grid, k=4, generator=torch.Generator().manual_seed(1),
                            return_all=True)
    assert result.mask.shape == result.scores.shape == (2, *grid.shape)
    assert result.mask.flatten(1).sum(1).tolist() == [n_hidden(grid, 0.5)] * 2
    assert result.random_masks.shape == result.k_scores.shape == (2, 4, *grid.shape)
    assert result.random_masks.flatten(2).sum(2).eq(n_hidden(grid, 0.5)).all()


class Copy(nn.Module):
    """A 'model' that returns its input: a shown patch is rebuilt exactly, a hidden one is the fill."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


def test_scores_are_the_mean_over_k_computed_by_hand():
    """With a copying model, patch p of copy k scores s_p (fill against original) when copy k hid
    it and 0 otherwise, so the average is (copies that hid p) / K * s_p: hand-made masks below."""
    grid = patch_grid(64, 64, 64)  # 8 x 8 patches
    images = textured_corner_images(1) + 0.3  # no patch equals the fill colour
    masks = torch.zeros(1, 4, 8, 8, dtype=torch.bool)  # K = 4
    masks[0, :, 0, 0] = True  # hidden in all 4 copies
    masks[0, 0, 0, 1] = True  # hidden in 1 copy of 4
    masks[0, :2, 1, 0] = True  # hidden in 2 copies of 4
    result = selective_mask(Copy(), images, grid, ratio=3 / 64, random_masks=masks)
    s = patch_loss_map_loop(torch.zeros_like(images), images, grid)[0].float()  # (8, 8)
    want = torch.zeros(8, 8)
    want[0, 0], want[0, 1], want[1, 0] = s[0, 0], s[0, 1] / 4, s[1, 0] / 2
    torch.testing.assert_close(result.scores[0], want, atol=1e-5, rtol=1e-5)
    assert result.mask[0].nonzero().tolist() == [[0, 0], [0, 1], [1, 0]]


def test_scores_are_patch_loss_maps_of_the_masked_reconstructions():
    grid = patch_grid(64, 64, 64)
    images = textured_corner_images(2)
    model = Blur()
    result = selective_mask(model, images, grid, k=2, generator=torch.Generator().manual_seed(2),
                            return_all=True)
    copy = mask_images(images[1:2], result.random_masks[1, 1:2], grid)  # image 1, mask 1
    expected = patch_loss_map(model(copy), images[1:2], grid)[0]
    torch.testing.assert_close(result.k_scores[1, 1], expected)


def test_generator_determinism():
    grid = patch_grid(64, 64, 64)
    images = textured_corner_images(2) + 0.1 * torch.randn(2, 3, 64, 64)
    def run(seed: int):
        return selective_mask(Blur(), images, grid, generator=torch.Generator().manual_seed(seed))

    a, b, c = run(5), run(5), run(6)
    assert torch.equal(a.mask, b.mask) and torch.equal(a.scores, b.scores)
    assert not torch.equal(a.random_masks, c.random_masks)


def test_chunking_gives_the_same_result_in_fewer_passes():
    grid = patch_grid(64, 64, 64)
    images = textured_corner_images(3) + 0.1 * torch.randn(3, 3, 64, 64)
    whole, chunked = Blur(), Blur()
    a = selective_mask(whole, images, grid, k=5, generator=torch.Generator().manual_seed(0))
    b = selective_mask(chunked, images, grid, k=5, chunk_size=4,
                       generator=torch.Generator().manual_seed(0))
    assert whole.batches == [15] and chunked.batches == [4, 4, 4, 3]
    assert torch.equal(a.mask, b.mask)
    torch.testing.assert_close(a.scores, b.scores)


def test_out_of_memory_halves_the_chunk_and_retries():
    grid = patch_grid(64, 64, 64)
    model = Blur(max_batch=4)
    result = selective_mask(model, textured_corner_images(2), grid, k=5,
                            generator=torch.Generator().manual_seed(0))
    assert model.batches == [2, 2, 2, 2, 2]  # 10 failed, 5 failed, then chunks of 2
    assert result.mask.shape == (2, 8, 8)


def test_model_runs_in_eval_and_inference_mode_and_state_is_restored():
    grid = patch_grid(64, 64, 64)
    model = Blur().train()
    result = selective_mask(model, textured_corner_images(1), grid, k=2,
                            generator=torch.Generator().manual_seed(0))
    assert model.seen_training == [False] and model.seen_inference == [True]
    assert model.training  # restored
    assert not result.mask.is_inference() and not result.scores.is_inference()
    model.eval()
    selective_mask(model, textured_corner_images(1), grid, k=2)
    assert not model.training


def test_with_the_tiny_unet_and_amp_flag():
    """On the CPU ``auto`` is float32 (the same numbers as ``off``); bf16 autocast scores within
    bf16 rounding of them and selects nearly the same patches."""
    grid = patch_grid(64, 64)
    model = build_unet("tiny", out_channels=3)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))

    def run(amp):
        return selective_mask(model, images, grid, k=2, amp=amp,
                              generator=torch.Generator().manual_seed(0))

    off, auto, bf16 = run("off"), run("auto"), run("bf16")
    assert torch.equal(off.scores, auto.scores) and torch.equal(off.mask, auto.mask)
    torch.testing.assert_close(bf16.scores, off.scores, atol=0.05, rtol=0.05)
    assert not torch.equal(bf16.scores, off.scores)  # bf16 did run in lower precision
    overlap = (bf16.mask & off.mask).flatten(1).sum(1).float() / n_hidden(grid, 0.5)
    assert overlap.min() > 0.8, overlap
    assert bf16.mask.flatten(1).sum(1).tolist() == [math.floor(0.5 * grid.n_patches)] * 2


def test_score_patches_direct_call_shape():
    grid = patch_grid(64, 64, 64)
    masks = torch.zeros(2, 3, *grid.shape, dtype=torch.bool)
    with torch.inference_mode():
        scores = score_patches(Blur(), textured_corner_images(2), masks, grid)
    assert scores.shape == (2, 3, 8, 8)


def test_wrong_image_size_is_a_clear_error():
    with pytest.raises(ValueError, match=r"images are \(1, 3, 32, 32\); expected \(B, 3, 64, 64\)"):
        selective_mask(Blur(), torch.zeros(1, 3, 32, 32), patch_grid(64, 64))


def test_given_random_masks_are_the_ones_scored():
    """The engine passes each image's own random masks; hiding every patch in copy 0 and none in
    copy 1 gives scores equal to the average of the two hand-built copies' loss maps."""
    grid = patch_grid(64, 64, 64)
    images = textured_corner_images(2)
    given = torch.zeros(2, 2, *grid.shape, dtype=torch.bool)
    given[:, 0] = True  # copy 0: everything hidden (the whole image is the mean colour 0)
    result = selective_mask(Blur(), images, grid, random_masks=given, k=99)  # k is taken from the masks
    assert torch.equal(result.random_masks, given)
    hidden_all = patch_loss_map(torch.zeros_like(images), images, grid)  # the blur of a zero image is 0
    shown_all = patch_loss_map(Blur()(images), images, grid)
    torch.testing.assert_close(result.scores, (hidden_all + shown_all) / 2)
    with pytest.raises(ValueError, match=r"random_masks are \(2, 8, 8\)"):
        selective_mask(Blur(), images, grid, random_masks=given[:, 0])
