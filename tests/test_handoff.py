"""The hand-off between selective steps: which model scores and warm-starts step k, how it validates.

Step 0 is written by hand with two different networks, ``best.pt`` (weights A) and ``state.pt``
(weights B, "after the last epoch"), so that every rule leaves a different trace; only step 1
trains. With ``lr=1e-30`` (``lr=0`` is refused) Adam moves every weight by about 1e-30, far below
one float32 step of any weight here, so step 1's final convolution weights *are* its starting weights. Expected values are recomputed here from the
checkpoint files and stored masks with plain code (patch loops, slicing), not read from the loop.
"""

import json

import pytest
import torch

from smir_lib.data import get_dataset
from smir_lib.data.transforms import normalize, resize_short_side
from smir_lib.engine.config import load_config
from smir_lib.engine.pretrain import pretrain_selective
from smir_lib.engine.pretrain_data import load_masks, partition_indices, score_partition
from smir_lib.losses import reconstruction_loss
from smir_lib.models import build_model
from smir_lib.patches import patch_grid, random_patch_mask
from smir_lib.runtime import seeded_generator

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_thread")]

HANDOFF = dict(model="tiny", synthetic_size=72, image_size=64, msssim_win=3, n_patches=64, k=2,
               partitions=2, pool_size=16, val_fraction=0.25, pretrain_epochs=2, pretrain_batch=4,
               warmup_epochs=0, lr=1e-30, workers=0, score_batch=4, progress=False, amp="off")


def cfg_for(**changes):
    return load_config("fast", {**HANDOFF, **changes})


def fake_step_0(run_dir, cfg) -> tuple[dict, dict]:
    """A finished step 0 whose best and last weights differ; returns (A = best, B = last)."""
    best, last = build_model(cfg.replace(seed=11)).state_dict(), build_model(cfg.replace(seed=12)).state_dict()
    stage = run_dir / "step_0"
    stage.mkdir(parents=True)
    torch.save({"model": best, "epoch": 0}, stage / "best.pt")
    torch.save({"model": last, "epoch": 1}, stage / "state.pt")
    train, val = partition_indices(cfg.pool_size, cfg.partitions, cfg.val_fraction)[0]
    (stage / "done.json").write_text(json.dumps({
        "stage": "step_0", "masking": "random", "n_train": len(train), "n_val": len(val),
        "epochs": cfg.pretrain_epochs, "best_val_loss": 1.0, "checkpoint": str(stage / "best.pt"),
        "masks": None}))
    return best, last


def weights(state: dict) -> dict:
    """Convolution weights only (BatchNorm running statistics move even at lr 1e-30)."""
    return {k: v for k, v in state.items() if k.endswith("weight") and v.dim() == 4}


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in weights(a))


def pixel_mask(grid, grid_mask: torch.Tensor) -> torch.Tensor:
    """A grid mask expanded to pixels, one patch at a time (the plain way)."""
    out = torch.zeros(grid.height, grid.width, dtype=torch.bool)
    for i in range(grid.gh):
        for j in range(grid.gw):
            rows, cols = grid.patch_slices(i, j)
            out[rows, cols] = bool(grid_mask[i, j])
    return out


def expected_val_loss(model, pool, val_idx, cfg, masks: dict | None) -> float:
    """Mean reconstruction loss of the centre-cropped validation images under their masks."""
    model.eval()
    s, losses = cfg.image_size, []
    for index in val_idx:
        image = resize_short_side(pool[index], s)  # (3, h, w), where the step scored it
        h, w = image.shape[-2:]
        if masks is None:  # fixed random masks drawn on the crop's own grid
            grid = patch_grid(s, s, cfg.n_patches)
            hidden = pixel_mask(grid, random_patch_mask(
                1, grid, cfg.mask_ratio, generator=seeded_generator(cfg.seed, "val", index))[0])
        else:  # the stored selective mask, on the whole resized image, then centre-cropped
            row = masks["indices"].tolist().index(index)
            gh, gw = masks["grid_shapes"][row].tolist()
            full = pixel_mask(patch_grid(h, w, cfg.n_patches), masks["masks"][row, :gh, :gw])
            top, left = (h - s) // 2, (w - s) // 2
            hidden = full[top:top + s, left:left + s]
        top, left = (h - s) // 2, (w - s) // 2
        target = normalize(image[:, top:top + s, left:left + s])[None]  # (1, 3, S, S)
        with torch.no_grad():
            pred = model(target.masked_fill(hidden, 0.0))
        losses.append(float(reconstruction_loss(pred, target, win_size=cfg.msssim_win)))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("handoff,val_masking", [("last", "selective"), ("best", "random")])
def test_step_scores_warm_starts_and_validates_by_the_handoff_rule(tmp_path, handoff, val_masking):
    cfg = cfg_for(handoff=handoff, val_masking=val_masking)
    run = tmp_path / "run"
    best, last = fake_step_0(run, cfg)
    source, other = (last, best) if handoff == "last" else (best, last)
    result = pretrain_selective(cfg, run)

    # Warm start: at lr 1e-30 the trained step-1 weights are the weights it started from.
    trained = torch.load(run / "step_1" / "state.pt", weights_only=True)["model"]
    assert same(trained, source) and not same(trained, other)
    assert result.steps[1]["warm_start"] == f"step_0/{'state' if handoff == 'last' else 'best'}.pt"

    # Scoring: the stored masks (training and validation images) are those of the hand-off model.
    train_idx, val_idx = partition_indices(cfg.pool_size, cfg.partitions, cfg.val_fraction)[1]
    pool = get_dataset("synthetic", "pool", n_images=cfg.pool_size, size=cfg.synthetic_size)
    stored = load_masks(run / "step_1" / "masks.pt")
    assert stored["indices"].tolist() == train_idx + val_idx
    scorer = build_model(cfg)
    scorer.load_state_dict(source)
    again = score_partition(scorer, pool, train_idx + val_idx, cfg, step=1)
    assert torch.equal(stored["masks"], again["masks"])
    untrained = score_partition(build_model(cfg), pool, train_idx + val_idx, cfg, step=1)
    assert not torch.equal(stored["masks"], untrained["masks"])

    # Validation: the last epoch's loss, recomputed from the saved weights and the masks.
    final = build_model(cfg)
    final.load_state_dict(trained)
    val_masks = stored if val_masking == "selective" else None
    want = expected_val_loss(final, pool, val_idx, cfg, val_masks)
    assert result.history[-1]["val_loss"] == pytest.approx(want, rel=1e-5)
    assert result.steps[1]["val_masking"] == val_masking
    other_masks = None if val_masking == "selective" else stored
    assert abs(expected_val_loss(final, pool, val_idx, cfg, other_masks) - want) > 1e-4

    # Downstream: the last step's best-by-that-loss epoch.
    step_1 = [r for r in result.history if r["stage"] == "step_1"]
    best_epoch = min(step_1, key=lambda r: r["val_loss"])["epoch"]
    downstream = torch.load(result.best_checkpoint, weights_only=True)
    assert downstream["stage"] == "step_1" and downstream["epoch"] == best_epoch
