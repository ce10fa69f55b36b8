"""Reconstruction pretraining: the random-masking baseline and partitioned selective masking.

``pretrain_random(cfg, run_dir)``: one stage on the whole pool (minus a validation tenth). Each
batch is augmented, normalised, and masked with fresh random patch masks drawn from a generator
seeded by ``(seed, epoch)``; the network reconstructs the whole normalised image
(``L1 + 1 - MS-SSIM`` over every pixel).

``pretrain_selective(cfg, run_dir)``: the paper's partitioned loop, with the authors' hand-off;
``cfg.mask_strategy`` chooses how a step's masks are picked (``selective``, the paper, by default;
see ``smir_lib.selective`` and docs/strategies.md).

1. The pool is cut into ``cfg.partitions`` interleaved partitions ``pool[i::P]``, 90/10 train/val.
2. Step 0 trains from scratch on partition 0 with random masks, like the baseline, and validates
   on fixed random masks (there is no model yet to select with).
3. Step k scores partition k (its training *and* validation images) with step k-1's hand-off
   checkpoint (``score_partition``), stores the masks as patch grids in ``step_k/masks.pt``, then
   trains on (selectively masked image -> image) pairs, starting from the same checkpoint with a
   new optimiser and schedule. ``cfg.handoff="last"`` (the authors): the weights at the end of
   step k-1 (``step_{k-1}/state.pt``, so a resumed run hands off the same weights);
   ``"best"``: step k-1's best-validation ``best.pt``.
4. Step k validates on its validation images masked selectively the same way
   (``cfg.val_masking="selective"``, the authors), or on fixed random masks (``"random"``: every
   step's validation loss then measures the same task and is comparable across steps).
5. The last step's best-validation checkpoint goes downstream (``pretrained.pt``).

Both functions resume a killed run (see ``checkpoint``) and run under ``torchrun``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from smir_lib.data.transforms import normalize
from smir_lib.engine.checkpoint import (
    check_run_config,
    from_run_relative,
    locked_run,
    read_done,
    to_run_relative,
    write_done,
)
from smir_lib.engine.config import Config, save_config
from smir_lib.engine.distributed import DistContext, all_reduce_sum, barrier, init_distributed
from smir_lib.engine.pretrain_data import (
    FixedMaskValSet,
    MaskedPoolSet,
    SelectiveValSet,
    eval_items,
    load_masks,
    load_split,
    partition_indices,
    pool_label_reader,
    save_masks,
    score_partition,
    scoring_pool,
    training_source,
)
from smir_lib.engine.train_loop import train_stage, write_history
from smir_lib.files import RunFileError, atomic_copy, atomic_write_text, load_checkpoint, read_json
from smir_lib.losses import reconstruction_loss
from smir_lib.models import build_model, load_pretrained
from smir_lib.patches import apply_pixel_mask, mask_images, patch_grid, random_patch_mask
from smir_lib.runtime import autocast, loader_workers, prepare_model, seeded_generator, setup_determinism, to_device

__all__ = ["PretrainResult", "pretrain_random", "pretrain_selective", "handoff_checkpoint",
           "load_pretrain_result"]


@dataclass
class PretrainResult:
    """What a pretraining run leaves behind.

    ``best_checkpoint`` is the file to fine-tune from; ``history`` has one dict per epoch
    (``stage, epoch, train_loss, val_loss, lr, images_per_s, seconds``); ``steps`` one dict per
    stage (``step, masking, n_train, n_val, epochs, best_val_loss, checkpoint, masks, val_masking,
    warm_start``: ``masks`` is the ``masks.pt`` path of a selective step, else None, read it with
    ``load_masks``; ``warm_start`` the hand-off checkpoint relative to the run folder, or None).
    """

    method: str
    run_dir: Path
    best_checkpoint: Path
    history: list[dict] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)

    def step_histories(self) -> list[dict[str, list[float]]]:
        """Per stage, ``{"train_loss": [...], "val_loss": [...]}`` (for ``plots.loss_curves``)."""
        out = []
        for s in self.steps:
            rows = [r for r in self.history if r["stage"] == s["stage"]]
            out.append({k: [r[k] for r in rows] for k in ("train_loss", "val_loss")})
        return out


def _start(cfg: Config, run_dir, method: str) -> tuple[DistContext, Path]:
    ctx = init_distributed(cfg.device)
    setup_determinism(cfg.deterministic)
    run_dir = Path(run_dir)
    check_run_config(run_dir, cfg.to_dict(), method)
    if ctx.is_main:
        save_config(cfg, run_dir, method)
    barrier(ctx)
    return ctx, run_dir


def _recon_validator(val_set: Dataset, cfg: Config, ctx: DistContext):
    """``validate(model) -> {"val_loss"}`` over ``(image, pixel mask)`` items, sharded over ranks."""
    shard = torch.utils.data.Subset(val_set, range(ctx.rank, len(val_set), ctx.world_size))
    loader = DataLoader(shard, batch_size=cfg.batch_for_pretraining, num_workers=loader_workers(cfg.workers),
                        pin_memory=ctx.device.type == "cuda", persistent_workers=cfg.workers > 0,
                        generator=seeded_generator(cfg.seed, "validation workers"))  # never the global stream

    @torch.no_grad()
    def validate(model: nn.Module) -> dict:
        model.eval()
        totals = torch.zeros(2, dtype=torch.float64)
        for images, pixel_masks in loader:
            target = normalize(to_device(images, ctx.device, cfg.channels_last))  # (B, 3, S, S)
            with autocast(cfg.amp, ctx.device):
                pred = model(apply_pixel_mask(target, pixel_masks.to(ctx.device)))
            loss = reconstruction_loss(pred, target, win_size=cfg.msssim_win)
            totals += torch.tensor([float(loss) * len(images), len(images)], dtype=torch.float64)
        all_reduce_sum(totals, ctx)
        return {"val_loss": totals[0].item() / max(totals[1].item(), 1)}

    return validate


def _random_mask_loss(cfg: Config, ctx: DistContext):
    """``batch_loss`` of random masking: fresh masks per batch from the epoch's generator."""
    grid = patch_grid(cfg.image_size, cfg.image_size, cfg.n_patches)

    def batch_loss(model, images, generator):
        target = normalize(to_device(images, ctx.device, cfg.channels_last))  # (B, 3, S, S)
        masks = random_patch_mask(len(images), grid, cfg.mask_ratio, generator=generator)
        pred = model(mask_images(target, masks.to(ctx.device, non_blocking=True), grid))
        return reconstruction_loss(pred, target, win_size=cfg.msssim_win), len(images)

    return batch_loss


def _selective_mask_loss(cfg: Config, ctx: DistContext):
    """``batch_loss`` of a selective step: the stored masks, already cropped with the image."""

    def batch_loss(model, batch, generator):
        inputs, targets, pixel_masks = (to_device(t, ctx.device, cfg.channels_last) for t in batch)
        target = normalize(targets)  # (B, 3, S, S)
        pred = model(apply_pixel_mask(normalize(inputs), pixel_masks))
        return reconstruction_loss(pred, target, win_size=cfg.msssim_win), len(targets)

    return batch_loss


def _run_stage(model, pool, train_idx, val_idx, cfg, ctx, run_dir, stage, epochs, masks=None,
               warm_start: str | None = None, steps_pool=None):
    """Train one stage (resuming it if needed) and mark it done; returns its summary.

    A selective stage (``masks`` given) trains and validates on ``steps_pool``, the pool
    resized where its masks were scored (``scoring_pool``).
    """
    stage_dir = run_dir / stage
    train_set = MaskedPoolSet(pool if masks is None else steps_pool, train_idx, cfg, stage, masks)
    batch_loss = _random_mask_loss(cfg, ctx) if masks is None else _selective_mask_loss(cfg, ctx)
    selective_val = masks is not None and cfg.val_masking == "selective"
    val_set = eval_items(SelectiveValSet(steps_pool, val_idx, cfg, masks) if selective_val
                         else FixedMaskValSet(pool, val_idx, cfg), cfg, f"{stage} validation")
    result = train_stage(model, train_set, batch_loss, _recon_validator(val_set, cfg, ctx), cfg=cfg,
                         ctx=ctx, stage_dir=stage_dir, stage=stage, epochs=epochs,
                         batch_size=cfg.batch_for_pretraining, monitor="val_loss", mode="min")
    summary = {"stage": stage, "masking": "random" if masks is None else "selective",
               "n_train": len(train_idx), "n_val": len(val_idx), "epochs": epochs,
               "best_val_loss": result.best_value, "checkpoint": str(result.best_checkpoint),
               "masks": str(stage_dir / "masks.pt") if masks is not None else None,
               "val_masking": "selective" if selective_val else "random", "warm_start": warm_start}
    if ctx.is_main:
        write_done(stage_dir, summary)
    barrier(ctx)
    return summary


def _finish(method, cfg, ctx, run_dir, steps) -> PretrainResult:
    history = []
    for s in steps:
        path = run_dir / s["stage"] / "history.json"
        history += read_json(path, expect=list) if path.is_file() else []
    best = Path(steps[-1]["checkpoint"])
    if ctx.is_main:
        write_history(history, run_dir)
        load_checkpoint(best, keys=("model",))  # a damaged best.pt is named (delete its step), never promoted
        atomic_copy(best, run_dir / "pretrained.pt")  # atomic, like every file of a run
        result = {"method": method, "best_checkpoint": "pretrained.pt",  # paths relative to run_dir
                  "steps": [to_run_relative(s, run_dir) for s in steps]}
        atomic_write_text(json.dumps(result, indent=2), run_dir / "result.json")
    barrier(ctx)
    return PretrainResult(method, run_dir, run_dir / "pretrained.pt", history, steps)


def _finished_run(method: str):
    """``read_finished`` for :func:`locked_run`: a finished pretraining run's result, read back
    without locking or writing (None while unfinished; another configuration is refused)."""

    def read(cfg: Config, run_dir: str | Path):
        run_dir = Path(run_dir)
        if not ((run_dir / "result.json").is_file() and (run_dir / "pretrained.pt").is_file()):
            return None
        check_run_config(run_dir, cfg.to_dict(), method)
        result = load_pretrain_result(run_dir)
        # a stage summary gone means a stage to redo; a damaged one is named, as when the run resumes
        finished = all(read_done(run_dir / step["stage"]) is not None for step in result.steps)
        return result if finished else None

    return read


@locked_run(_finished_run("random"))
def pretrain_random(cfg: Config, run_dir: str | Path) -> PretrainResult:
    """Random-masking pretraining on the whole pool for ``cfg.epochs_for_random`` epochs.

    Writes ``run_dir/{config.json, random/, history.csv, history.json, pretrained.pt,
    result.json}`` and returns a :class:`PretrainResult`.
    """
    ctx, run_dir = _start(cfg, run_dir, "random")
    pool = load_split(cfg, "pool", announce=True)
    (train_idx, val_idx), = partition_indices(len(pool), 1, cfg.val_fraction)
    summary = read_done(run_dir / "random")
    if summary is None:
        model = prepare_model(build_model(cfg), ctx.device, cfg.channels_last)
        summary = _run_stage(model, training_source(pool, cfg, cfg.pool_name), train_idx, val_idx, cfg, ctx,
                             run_dir, "random", cfg.epochs_for_random)
    return _finish("random", cfg, ctx, run_dir, [{"step": 0, **summary}])


@locked_run(_finished_run("selective"))
def pretrain_selective(cfg: Config, run_dir: str | Path) -> PretrainResult:
    """Partitioned selective pretraining (the paper's recipe): ``cfg.partitions`` steps of ``cfg.pretrain_epochs``.

    Writes ``run_dir/step_k/{masks.pt (k > 0), best.pt, state.pt, history.*, done.json}`` and the
    run-level ``history.*``, ``pretrained.pt`` (the last step's best checkpoint), ``result.json``.
    Step k > 0 starts from, and is scored by, ``handoff_checkpoint(run_dir, k - 1, cfg)``.
    """
    pool_labels = pool_label_reader(cfg) if cfg.mask_strategy == "objects_oracle" else None
    if cfg.mask_strategy == "objects_oracle" and pool_labels is None:  # refused before anything is written
        raise ValueError(f"mask_strategy objects_oracle needs pool labels; the pool of {cfg.pool_name} has none "
                         "(its images are not labelled images of the dataset): choose another mask_strategy")
    ctx, run_dir = _start(cfg, run_dir, "selective")
    pool = load_split(cfg, "pool", announce=True)
    parts = partition_indices(len(pool), cfg.partitions, cfg.val_fraction)
    steps_pool = scoring_pool(pool, cfg) if cfg.partitions > 1 else None
    model = prepare_model(build_model(cfg), ctx.device, cfg.channels_last)
    steps: list[dict] = []
    for step, (train_idx, val_idx) in enumerate(parts):
        stage_dir = run_dir / f"step_{step}"
        done = read_done(stage_dir)
        if done is not None:  # finished before a restart: nothing to recompute
            steps.append({"step": step, **done})
            continue
        masks, warm_start = None, None
        if step > 0:
            previous = handoff_checkpoint(run_dir, step - 1, cfg)
            warm_start = previous.relative_to(run_dir).as_posix()
            if not (stage_dir / "state.pt").is_file():  # warm start (a resumed step loads its state)
                load_pretrained(model, previous, reinit_head=False)
            masks = _step_masks(previous, steps_pool, train_idx + val_idx, cfg, ctx, step, stage_dir, pool_labels)
        summary = _run_stage(model, pool, train_idx, val_idx, cfg, ctx, run_dir, f"step_{step}",
                             cfg.pretrain_epochs, masks, warm_start, steps_pool)
        steps.append({"step": step, **summary})
    return _finish("selective", cfg, ctx, run_dir, steps)


def handoff_checkpoint(run_dir: str | Path, step: int, cfg: Config) -> Path:
    """The checkpoint of finished step ``step`` that scores and warm-starts step ``step + 1``.

    ``cfg.handoff="last"`` (the authors' ``last.ckpt``): ``state.pt``, the weights after the
    step's last epoch; ``"best"``: ``best.pt``, the step's best-validation weights.
    """
    return Path(run_dir) / f"step_{step}" / ("state.pt" if cfg.handoff == "last" else "best.pt")


def _step_masks(previous: Path, pool, indices, cfg, ctx, step, stage_dir, pool_labels=None) -> dict:
    """The step's stored masks, or score its images (train and val) with the hand-off model."""
    path = stage_dir / "masks.pt"
    if not path.is_file():
        scorer = prepare_model(build_model(cfg), ctx.device, cfg.channels_last)
        load_pretrained(scorer, previous, reinit_head=False)
        masks = score_partition(scorer, pool, indices, cfg, step, ctx, progress=cfg.progress, pool_labels=pool_labels)
        if ctx.is_main:
            save_masks(masks, path)
        barrier(ctx)
    return load_masks(path)


def load_pretrain_result(run_dir: str | Path) -> PretrainResult:
    """The :class:`PretrainResult` of a finished run folder, without training anything.

    Raises ``FileNotFoundError`` naming the folder when the run has not finished (no
    ``result.json`` or no ``pretrained.pt``); ``smir_lib.notebook.trained.find_pretrained`` turns that
    into None for notebooks that look for a trained model.
    """
    run_dir = Path(run_dir)
    path = run_dir / "result.json"
    if not path.is_file() or not (run_dir / "pretrained.pt").is_file():
        raise FileNotFoundError(f"no finished pretraining run in {run_dir} (result.json or "
                                "pretrained.pt missing): run pretrain_random / pretrain_selective "
                                "there first")
    summary = from_run_relative(read_json(path, expect=dict), run_dir, source=path)
    if not (isinstance(summary.get("method"), str) and isinstance(summary.get("steps"), list) and summary["steps"]
            and all(isinstance(s, dict) and "stage" in s and type(s.get("best_val_loss")) in (int, float, type(None))
                    for s in summary["steps"])):
        raise RunFileError(f"{path} lacks the run's method or steps: not a file this kit wrote; delete {path} "
                           f"and run the same command on {run_dir} again to rewrite it")
    history = read_json(run_dir / "history.json", expect=list)
    return PretrainResult(summary["method"], run_dir, Path(summary["best_checkpoint"]), history,
                          [from_run_relative(s, run_dir, source=path) for s in summary["steps"]])
