"""Pretraining on tiny synthetic data: partitions, selective scoring, loss falling, stored masks."""

import json

import pytest
import torch

from smir_lib.config import load_config
from smir_lib.data import get_dataset
from smir_lib.data.transforms import normalize, resize_short_side
from smir_lib.patches import n_hidden, patch_grid, random_patch_mask
from smir_lib.models import build_model
from smir_lib.pretrain import load_pretrain_result, pretrain_random, pretrain_selective
from smir_lib.pretrain_data import MaskedPoolSet, load_masks, partition_indices, score_partition

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


@pytest.mark.unit
def test_selective_training_item_carries_the_cropped_mask():
    cfg = tiny()
    pool = get_dataset("synthetic", "pool", n_images=3, size=72)
    grid = patch_grid(64, 64, cfg.n_patches)
    stored = {"indices": torch.tensor([0, 1]), "masks": torch.ones(2, *grid.shape, dtype=torch.bool),
              "grid_shapes": torch.tensor([grid.shape, grid.shape])}
    stored["masks"][:, :, : grid.gw // 2] = False  # left half shown, right half hidden
    item = MaskedPoolSet(pool, [0, 1], cfg, "step_1", stored)[0]
    inputs, target, pixel_mask = item
    assert inputs.shape == target.shape == (3, 64, 64) and pixel_mask.shape == (64, 64)
    assert pixel_mask.dtype == torch.bool and 0 < pixel_mask.float().mean() < 1
    assert torch.equal(inputs, target)  # shared augmentation by default
    quirk = MaskedPoolSet(pool, [0, 1], tiny(shared_augmentation=False), "step_1", stored)
    assert len(quirk[1]) == 3


@pytest.mark.slow
def test_random_pretraining_loss_falls(tmp_path):
    cfg = tiny(pool_size=16, random_epochs=6, lr=2e-3)
    result = pretrain_random(cfg, tmp_path / "random")
    val = [r["val_loss"] for r in result.history]
    train = [r["train_loss"] for r in result.history]
    assert len(val) == 6
    assert min(val[-2:]) < val[0] and min(train[-2:]) < train[0]
    assert result.best_checkpoint.is_file()
    assert (tmp_path / "random" / "history.csv").read_text().startswith("stage,epoch,train_loss")


@pytest.mark.slow
def test_selective_pretraining_writes_steps_masks_and_checkpoint(tmp_path):
    cfg = tiny()
    result = pretrain_selective(cfg, tmp_path / "sel")
    assert [s["masking"] for s in result.steps] == ["random", "selective"]
    assert result.steps[0]["masks"] is None
    masks = load_masks(result.steps[1]["masks"])
    assert masks["masks"].dtype == torch.bool and len(masks["indices"]) == result.steps[1]["n_train"]
    assert masks["indices"].tolist() == partition_indices(12, 2, 0.1)[1][0]
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
