"""One training loop for every stage: a pretraining step, the random baseline, a fine-tuning run.

A *stage* trains one network for ``epochs`` epochs with a fresh Adam optimiser and the warm-up +
cosine schedule, validates after every epoch and keeps the weights of the best validation epoch.
What differs between pretraining and fine-tuning is passed in as two functions:

* ``batch_loss(model, batch, generator) -> (loss, n_images)``: one batch to one scalar loss
  (mask and reconstruct, or segment); ``generator`` is this epoch's seeded random stream;
* ``validate(model) -> dict``: the validation metrics, one of which (``monitor``) picks the best.

Everything a killed run needs (``state.pt``, see ``checkpoint``, and the best epoch's weights,
``best.pt``, written just before it) is written after the first epoch, the last one, and in
between whenever :data:`STATE_EVERY_S` seconds have passed since the last write (and at least 20
times as long as that write took): a kill loses at most about that much work, while a
fine-tuning run whose epochs take a tenth of a second no longer spends a third of its time
rewriting an 11 MB file (nor 5 % of it writing ``best.pt`` at every improvement). Every random
number of an epoch derives from ``(seed, stage, epoch)``: a resumed run replays exactly what an
uninterrupted run computes, from whichever epoch it resumes. The loop runs under the one mixed-precision policy
(``runtime.amp_dtype``: bf16, or fp16 with a gradient scaler), with channels-last memory, and on
CUDA pinned host memory and non-blocking copies.

Data loading never waits for worker start-up after the first batch: with ``cfg.workers > 0`` the
loader's workers persist for the whole stage (seeded from the loader's own generator, never from
the global random stream, so ``workers`` does not change a single number), and the epoch travels with every item key
(``(epoch, n)``, :class:`EpochSampler` and :class:`EpochItems`) instead of through
``set_epoch`` on the dataset, which a persistent worker's copy would never see.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from smir_lib.engine.config import Config
from smir_lib.engine.distributed import DistContext, all_reduce_sum, barrier
from smir_lib.engine.schedule import build_optimizer, build_scheduler
from smir_lib.files import RunFileError, atomic_save, atomic_write_text, fix_for, load_checkpoint
from smir_lib.runtime import amp_dtype, autocast, derive_seed, forked_rng, loader_workers, seeded_generator

__all__ = ["StageResult", "TrainingDiverged", "train_stage", "write_history", "EpochSampler", "EpochItems", "STATE_EVERY_S",
           "STATE_COST_FACTOR"]

STATE_EVERY_S = 10.0
"""Seconds of training between two writes of a stage's resume state (``state.pt``)."""
STATE_COST_FACTOR = 20.0
"""... and at least this many times as long as the last write took (a large model's state, slow disks)."""


class TrainingDiverged(ValueError):
    """The loss (or the validation value) became NaN or infinite: the run stops, one line naming
    the stage and epoch; the files of the last good epoch are kept, none of this epoch is written."""

    def __init__(self, stage: str, epoch: int, epochs: int, row: dict, monitor: str, best_path: Path,
                 lr: float):
        kept = (f"the last good checkpoint {best_path} is kept" if best_path.is_file()
                else "no epoch finished with a finite loss, so no checkpoint was written")
        super().__init__(f"{stage} epoch {epoch + 1}/{epochs}: train_loss={row['train_loss']}, "
                         f"{monitor}={row[monitor]} (not finite), so training stopped; {kept}; start again with "
                         f"a lower lr (now {lr:g}) or amp=off in a new --out folder")


@dataclass
class StageResult:
    """What one stage produced: its best checkpoint, the best monitored value, per-epoch history."""

    best_checkpoint: Path
    best_value: float
    history: list[dict] = field(default_factory=list)


def write_history(history: list[dict], folder: str | Path, name: str = "history") -> None:
    """Write per-epoch rows as ``<name>.json`` and ``<name>.csv`` in ``folder``."""
    folder = Path(folder)
    atomic_write_text(json.dumps(history, indent=1), folder / f"{name}.json")
    keys = list(dict.fromkeys(k for row in history for k in row))
    lines = [",".join(keys)] + [",".join(str(row.get(k, "")) for k in keys) for row in history]
    atomic_write_text("\n".join(lines) + "\n", folder / f"{name}.csv")


class EpochSampler(DistributedSampler):
    """A ``DistributedSampler`` whose indices carry their epoch: it yields ``(epoch, n)``."""

    def __iter__(self):
        return ((self.epoch, n) for n in super().__iter__())


class EpochItems(Dataset):
    """``dataset`` read by ``(epoch, n)`` keys: item ``n`` as the dataset gives it in ``epoch``.

    The epoch is set on this process's copy of the dataset (``set_epoch``, if it has one) right
    before the item is read, so persistent loader workers augment with the right epoch's seeds.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, n = key
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return self.dataset[n]


def _loader(dataset: Dataset, batch_size: int, cfg: Config, ctx: DistContext, seed: int) -> DataLoader:
    sampler = EpochSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                           seed=seed % 2**31)
    return DataLoader(EpochItems(dataset), batch_size=batch_size, sampler=sampler,
                      num_workers=loader_workers(cfg.workers), pin_memory=ctx.device.type == "cuda",
                      persistent_workers=cfg.workers > 0, generator=seeded_generator(seed, "workers"))


def _skip_loader_draw() -> None:
    """Draw the one number a DataLoader without a generator of its own drew from the global stream.

    Before issue 29 the training loader seeded its workers from the global random stream, inside
    the epoch's dropout stream: one draw at the start of every epoch with ``workers=0`` (a new
    iterator), but only of the first epoch with persistent workers, so ``workers`` changed the
    dropout masks. The loader now has its own generator, and this draw keeps every epoch's
    dropout stream exactly what it was with ``workers=0`` (runs from before replay bit for bit).
    """
    torch.empty((), dtype=torch.int64).random_()


STATE_KEYS = ("model", "optimizer", "scheduler", "scaler", "epoch", "best", "history")
"""What a stage's ``state.pt`` holds (see :func:`train_stage`)."""


def resume_state(state_path: Path, epochs: int, model: nn.Module, optimizer, scheduler, scaler) -> tuple:
    """Load a killed stage's ``state.pt`` into ``model``, ``optimizer``, ``scheduler`` and ``scaler``;
    return ``(first epoch to run, best value, history)``. A file holding anything else (weights of
    another network, an epoch past ``epochs`` or not a number, a history that is no list of rows)
    is one :class:`~smir_lib.files.RunFileError` naming it, never a traceback or a silent resume."""
    state = load_checkpoint(state_path, keys=STATE_KEYS)
    epoch, best, history = state["epoch"], state["best"], state["history"]
    fits = (type(epoch) is int and 0 <= epoch < epochs and (best is None or type(best) in (int, float))
            and isinstance(history, list) and all(isinstance(row, dict) for row in history))
    try:
        if fits:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError):
        fits = False  # torch's loaders raise any of these on foreign content
    if not fits:
        raise RunFileError(f"{state_path} does not hold this stage's training state (epoch {epoch!r} of "
                           f"{epochs}, or weights and optimiser of another run): not a file this kit wrote "
                           f"there; {fix_for(state_path)}")
    return epoch + 1, best, history


def train_stage(model: nn.Module, train_set: Dataset,
                batch_loss: Callable[[nn.Module, object, torch.Generator], tuple[torch.Tensor, int]],
                validate: Callable[[nn.Module], dict], *, cfg: Config, ctx: DistContext,
                stage_dir: str | Path, stage: str, epochs: int, batch_size: int,
                monitor: str = "val_loss", mode: str = "min") -> StageResult:
    """Train ``model`` (already on ``ctx.device``) for one stage; resume from ``stage_dir/state.pt``.

    Writes, on rank 0: ``best.pt`` (weights of the best ``monitor`` epoch), ``state.pt`` and
    ``history.json/csv``, together (after the first and last epochs and every :data:`STATE_EVERY_S` s).
    Returns a :class:`StageResult`. On return ``model`` holds the weights of the *last* epoch;
    load ``best.pt`` for the best ones.
    """
    stage_dir = Path(stage_dir)
    optimizer = build_optimizer(model, cfg.lr)
    scheduler = build_scheduler(optimizer, epochs, cfg.warmup_epochs, cfg.min_lr_factor)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype(cfg.amp, ctx.device) == torch.float16)
    start, best, history = 0, None, []
    state_path, best_path = stage_dir / "state.pt", stage_dir / "best.pt"
    if state_path.is_file():  # a killed run: continue after its last completed epoch
        start, best, history = resume_state(state_path, epochs, model, optimizer, scheduler, scaler)
    net = nn.parallel.DistributedDataParallel(model) if ctx.enabled else model
    loader = _loader(train_set, batch_size, cfg, ctx, derive_seed(cfg.seed, stage, "order"))
    better = (lambda a, b: a < b) if mode == "min" else (lambda a, b: a > b)
    rng_devices = [ctx.device] if ctx.device.type == "cuda" else []
    saved_at, save_seconds = time.perf_counter(), 0.0
    pending_best = None  # the best epoch's checkpoint, not yet written

    for epoch in range(start, epochs):
        loader.sampler.set_epoch(epoch)  # the item keys carry the epoch to the dataset
        generator = seeded_generator(cfg.seed, stage, epoch, ctx.rank)  # masks of this epoch
        lr = optimizer.param_groups[0]["lr"]
        totals = torch.zeros(2, dtype=torch.float64)  # loss * images, images
        tic = time.perf_counter()
        with forked_rng(derive_seed(cfg.seed, stage, epoch, ctx.rank, "dropout"), rng_devices):
            _skip_loader_draw()
            model.train()
            bar = _progress(loader, cfg, ctx, f"{stage} {epoch + 1}/{epochs}")
            for batch in bar:
                with autocast(cfg.amp, ctx.device):
                    loss, n = batch_loss(net, batch, generator)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                totals += torch.tensor([float(loss.detach()) * n, n], dtype=torch.float64)
                if hasattr(bar, "set_postfix"):
                    rate = totals[1].item() * ctx.world_size / (time.perf_counter() - tic)
                    bar.set_postfix(loss=f"{totals[0].item() / totals[1].item():.4f}",
                                    lr=f"{lr:.2e}", img_s=f"{rate:.1f}")
        seconds = time.perf_counter() - tic
        scheduler.step()
        all_reduce_sum(totals, ctx)
        row = {"stage": stage, "epoch": epoch, "train_loss": totals[0].item() / max(totals[1].item(), 1),
               "lr": lr, "images_per_s": totals[1].item() / seconds, "seconds": seconds}
        row.update(validate(model))
        if not (math.isfinite(row["train_loss"]) and math.isfinite(row[monitor])):
            if ctx.is_main and pending_best is not None:  # the last good epoch's weights are kept
                atomic_save(pending_best, best_path)
            raise TrainingDiverged(stage, epoch, epochs, row, monitor, best_path, cfg.lr)
        history.append(row)
        improved = best is None or better(row[monitor], best)
        if improved:
            best = row[monitor]
        if ctx.is_main:
            if improved:  # kept in memory, written with the next state: what a resume needs together
                pending_best = {"model": {k: v.detach().clone() for k, v in model.state_dict().items()},
                                "stage": stage, "epoch": epoch, monitor: best, "config": cfg.to_dict()}
            since = time.perf_counter() - saved_at
            if epoch in (start, epochs - 1) or since >= max(STATE_EVERY_S, STATE_COST_FACTOR * save_seconds):
                write_start = time.perf_counter()
                if pending_best is not None:
                    atomic_save(pending_best, best_path)
                    pending_best = None
                # history before state: a run killed between the two redoes this epoch and rewrites
                # both, while the other order could leave a finished stage with a stale history.json
                write_history(history, stage_dir)
                atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                             "epoch": epoch, "best": best, "history": history}, state_path)
                saved_at = time.perf_counter()
                save_seconds = saved_at - write_start
        barrier(ctx)
    return StageResult(best_path, best, history)


def _progress(loader, cfg: Config, ctx: DistContext, desc: str):
    if not (cfg.progress and ctx.is_main):
        return loader
    from tqdm.auto import tqdm

    return tqdm(loader, desc=desc, leave=False, dynamic_ncols=True)
