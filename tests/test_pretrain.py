"""Pretraining on tiny synthetic data: partitions, selective scoring, loss falling, stored masks."""

import json

import pytest
import torch

from benchmarks.reference import patch_loss_map_loop
from smir_lib.data import get_dataset
from smir_lib.data.transforms import normalize, resize_short_side
from smir_lib.engine.config import load_config
from smir_lib.engine.pretrain import load_pretrain_result, pretrain_random, pretrain_selective
from smir_lib.engine.pretrain_data import (
    FixedMaskValSet,
    MaskedPoolSet,
    SelectiveValSet,
    eval_items,
    load_masks,
    partition_indices,
    score_partition,
)
from smir_lib.models import build_model
from smir_lib.patches import n_hidden, patch_grid, random_patch_mask
from smir_lib.runtime import seeded_generator
from tests.test_handoff import expected_val_loss

TINY = dict(model="tiny", synthetic_size=72, image_size=64, msssim_win=3, n_patches=64, k=2,
            partitions=2, pool_size=12, pretrain_epochs=2, pretrain_batch=4, warmup_epochs=0,
            workers=0, score_batch=4, progress=False)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**changes):
    return load_config("fast", {**TINY, **changes})


@pytest.mark.unit
def test_partitions_interleave_and_split():
    parts = partition_indices(40, 4, 0.1)
    assert parts[1] == ([1, 5, 9, 13, 17, 21, 25, 29, 33], [37])
    assert sorted(i for tr, va in parts for i in tr + va) == list(range(40))
    with pytest.raises(ValueError, match="larger pool_size or fewer partitions"):
        partition_indices(5, 4)


@pytest.mark.unit
def test_selective_masks_hide_high_error_and_differ_from_random():
    cfg = tiny(k=3)
    pool = get_dataset("synthetic", "pool", n_images=6, size=72)
    model = build_model(cfg)
    out = score_partition(model, pool, [0, 2, 4, 5], cfg, step=1)
    grid = patch_grid(64, 64, cfg.n_patches)
    assert out["masks"].dtype == torch.bool and out["masks"].shape == (4, *grid.shape)
    assert out["indices"].tolist() == [0, 2, 4, 5]
    assert (out["masks"].flatten(1).sum(1) == n_hidden(grid, cfg.mask_ratio)).all()
    scores, masks = out["scores"], out["masks"]
    for s, m in zip(scores, masks):  # every hidden patch scores at least as high as every shown one
        assert s[m].min() >= s[~m].max()
    random = random_patch_mask(4, grid, cfg.mask_ratio, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(random, masks)
    assert scores[masks].mean() > scores[random].mean()
    # Per-image seeds: scoring a subset or another order gives the same masks per image.
    again = score_partition(model, pool, [5, 2], cfg, step=1)
    assert torch.equal(again["masks"][0], masks[3]) and torch.equal(again["masks"][1], masks[1])


@pytest.mark.unit
def test_scoring_retries_smaller_chunks_on_out_of_memory():
    cfg = tiny(score_chunk=8)
    pool = get_dataset("synthetic", "pool", n_images=4, size=72)
    model = build_model(cfg)
    reference = score_partition(model, pool, [0, 1, 2, 3], cfg, step=1)
    sizes = []

    class Flaky(torch.nn.Module):  # runs out of "memory" above 2 copies per forward pass
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x):
            sizes.append(len(x))
            if len(x) > 2:
                raise torch.cuda.OutOfMemoryError("fake OOM")
            return self.inner(x)

    out = score_partition(Flaky(), pool, [0, 1, 2, 3], cfg, step=1)
    assert max(sizes) == 8 and sizes[-1] <= 2
    assert torch.equal(out["masks"], reference["masks"])


C_HIDDEN, C_SHOWN = torch.tensor([0.8, 0.3, 0.2]), torch.tensor([0.1, 0.5, 0.7])
"""Two colours: an image painted with its own mask (hidden patches C_HIDDEN) shows where the mask is."""


def painted_pool(n: int, height: int = 64, width: int = 96, n_patches: int = 64, seed: int = 0):
    """``n`` non-square images, each painted with a random grid mask, and those stored masks."""
    grid = patch_grid(height, width, n_patches)
    masks = torch.rand(n, *grid.shape, generator=torch.Generator().manual_seed(seed)) < 0.5
    images = []
    for m in masks:  # paint patch by patch (the plain way, independent of mask_to_pixels)
        image = C_SHOWN[:, None, None].repeat(1, height, width)
        for i, j in m.nonzero().tolist():
            rows, cols = grid.patch_slices(i, j)
            image[:, rows, cols] = C_HIDDEN[:, None, None]
        images.append(image)
    stored = {"indices": torch.arange(n), "masks": masks, "grid_shapes": torch.tensor([grid.shape] * n)}
    return images, stored


def paint_share(image: torch.Tensor) -> torch.Tensor:
    """Per pixel, where ``image`` (3, H, W) lies between C_SHOWN (0) and C_HIDDEN (1); and the
    largest distance of any pixel from that segment (0 for any mix of the two colours)."""
    d = (C_HIDDEN - C_SHOWN)[:, None, None]
    t = ((image - C_SHOWN[:, None, None]) * d).sum(0) / (d * d).sum()  # (H, W)
    off = (image - (C_SHOWN[:, None, None] + t * d)).abs().amax()
    return t, off


@pytest.mark.unit
def test_selective_training_mask_follows_the_crop_and_flip():
    """The stored mask reaches the crop where the image's hidden patches went.

    The images are painted with their own masks. In the quirk mode the target is the un-jittered
    crop, so its colour says, per pixel, whether that pixel came from a hidden patch. Measured:
    mean agreement 0.997 (bilinear image edges against nearest mask edges); a mask shifted by
    one pixel before the crop agrees 0.96."""
    images, stored = painted_pool(8)
    data = MaskedPoolSet(images, list(range(8)), tiny(shared_augmentation=False), "step_1", stored)
    agreement = []
    for epoch in range(4):
        data.set_epoch(epoch)
        for n in range(8):
            _, target, mask = data[n]
            assert mask.shape == (64, 64) and mask.dtype == torch.bool
            share, off = paint_share(target)
            assert off < 1e-5  # the target is a pure crop: no jitter reached it
            agreement.append(((share > 0.5) == mask).float().mean().item())
    assert sum(agreement) / len(agreement) > 0.99, agreement
    assert min(agreement) > 0.98, agreement


@pytest.mark.unit
def test_colour_jitter_quirk_reaches_the_input_only():
    images, stored = painted_pool(8)
    quirk = MaskedPoolSet(images, list(range(8)), tiny(shared_augmentation=False), "step_1", stored)
    shared = MaskedPoolSet(images, list(range(8)), tiny(), "step_1", stored)
    jittered = 0
    for n in range(8):
        inputs, target, _ = quirk[n]
        jittered += paint_share(inputs)[1].item() > 1e-3  # jitter moved the colours off the segment
        assert paint_share(target)[1] < 1e-5
        inputs, target, _ = shared[n]
        assert torch.equal(inputs, target)  # shared: the one (possibly jittered) image is both
    assert 2 <= jittered <= 6  # jitter probability 0.5 over 8 images


@pytest.mark.unit
def test_selective_validation_crops_the_mask_with_the_image():
    images, stored = painted_pool(3)  # 64 x 96: the centre crop drops 16 px on each side
    data = SelectiveValSet(images, [0, 2], tiny(), stored)
    for n, index in enumerate([0, 2]):
        image, mask = data[n]
        assert torch.equal(image, images[index][:, :, 16:80])
        share, off = paint_share(image)
        assert off < 1e-5 and torch.equal(share > 0.5, mask)  # exact: no resampling here


@pytest.mark.unit
def test_validation_items_are_kept_once_and_equal_the_computed_ones():
    pool = get_dataset("synthetic", "pool", n_images=6, size=72)
    val = FixedMaskValSet(pool, [1, 4, 5], tiny())
    kept = eval_items(val, tiny(cache_images=True), "val")
    assert eval_items(val, tiny(cache_images=False), "val") is val
    for n in range(len(val)):
        for a, b in zip(kept[n], val[n]):
            assert a.dtype == b.dtype and torch.equal(a, b)
        kept[n][0].zero_()  # a reader's change never reaches the kept item
        assert torch.equal(kept[n][0], val[n][0])


@pytest.mark.unit
def test_score_partition_matches_a_naive_reference():
    """K masked copies, per-patch loop scores, their mean, the top half: written out by hand."""
    cfg = tiny(k=3)
    pool = get_dataset("synthetic", "pool", n_images=4, size=72)
    model = build_model(cfg).eval()
    out = score_partition(model, pool, [1, 3], cfg, step=2)
    grid = patch_grid(64, 64, cfg.n_patches)
    for row, index in enumerate([1, 3]):
        image = normalize(resize_short_side(pool[index], 64))[None]  # (1, 3, 64, 64)
        random = random_patch_mask(cfg.k, grid, cfg.mask_ratio,
                                   generator=seeded_generator(cfg.seed, "score", 2, index))
        total = torch.zeros(grid.shape, dtype=torch.float64)
        for k in range(cfg.k):
            copy = image.clone()
            for i, j in random[k].nonzero().tolist():
                rows, cols = grid.patch_slices(i, j)
                copy[..., rows, cols] = 0.0  # the mean colour
            with torch.no_grad():
                total += patch_loss_map_loop(model(copy), image, grid)[0]
        mean = total / cfg.k  # (gh, gw)
        torch.testing.assert_close(out["scores"][row].double(), mean, atol=2e-5, rtol=0)
        hidden = mean.flatten().argsort(descending=True)[:n_hidden(grid, cfg.mask_ratio)]
        want = torch.zeros(grid.n_patches, dtype=torch.bool)
        want[hidden] = True
        assert torch.equal(out["masks"][row].flatten(), want)


@pytest.mark.slow
def test_random_pretraining_validates_on_fixed_masks_and_keeps_the_best_epoch(tmp_path):
    cfg = tiny(pool_size=16, random_epochs=4, lr=2e-3, amp="off")
    result = pretrain_random(cfg, tmp_path / "random")
    assert [r["epoch"] for r in result.history] == [0, 1, 2, 3]
    last = torch.load(tmp_path / "random" / "random" / "state.pt", weights_only=True)["model"]
    model = build_model(cfg)
    assert not torch.equal(model.state_dict()["encoder.conv1.weight"], last["encoder.conv1.weight"])
    model.load_state_dict(last)
    (_, val_idx), = partition_indices(16, 1, cfg.val_fraction)
    pool = get_dataset("synthetic", "pool", n_images=16, size=72)
    want = expected_val_loss(model, pool, val_idx, cfg, None)  # fixed random masks, by hand
    assert result.history[-1]["val_loss"] == pytest.approx(want, rel=1e-5)
    best_epoch = min(result.history, key=lambda r: r["val_loss"])["epoch"]
    assert torch.load(result.best_checkpoint, weights_only=True)["epoch"] == best_epoch
    assert (tmp_path / "random" / "history.csv").read_text().startswith("stage,epoch,train_loss")


@pytest.mark.slow
def test_selective_pretraining_writes_steps_masks_and_checkpoint(tmp_path):
    cfg = tiny()
    result = pretrain_selective(cfg, tmp_path / "sel")
    assert [s["masking"] for s in result.steps] == ["random", "selective"]
    assert result.steps[0]["masks"] is None
    masks = load_masks(result.steps[1]["masks"])
    train_idx, val_idx = partition_indices(12, 2, 0.1)[1]
    assert masks["masks"].dtype == torch.bool and masks["indices"].tolist() == train_idx + val_idx
    assert len(result.history) == 4 and len(result.step_histories()[1]["val_loss"]) == 2
    saved = torch.load(result.best_checkpoint, weights_only=True)
    assert saved["stage"] == "step_1"
    summary = json.loads((tmp_path / "sel" / "result.json").read_text())
    assert summary["steps"][1]["best_val_loss"] == result.steps[1]["best_val_loss"]
    loaded = load_pretrain_result(tmp_path / "sel")
    assert loaded.steps == result.steps and loaded.history == result.history
    again = pretrain_selective(tiny(progress=True), tmp_path / "sel")  # finished: nothing retrained
    assert again.history == result.history
    with pytest.raises(ValueError, match="another configuration"):
        pretrain_selective(tiny(seed=1), tmp_path / "sel")
