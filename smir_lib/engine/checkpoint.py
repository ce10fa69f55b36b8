"""Resumable runs: atomic checkpoint files and the per-stage state a killed run continues from.

A run folder holds one sub-folder per *stage* (``random``, ``step_0`` ... ``step_9``,
``finetune``). While a stage trains, ``state.pt`` is rewritten with the model, optimiser,
schedule, epoch, best validation value and history (after the first and last epochs and about
every ``train_loop.STATE_EVERY_S`` seconds); ``best.pt`` holds the weights of the best validation
epoch. A finished stage writes ``done.json``. A run started again:

* skips finished stages (their ``best.pt`` and ``masks.pt`` are reused, nothing is recomputed);
* continues the current stage from the epoch after the last saved one (and replays the same
  numbers: every random draw derives from the seed, stage and epoch);
* refuses to continue when the configuration changed (``config.json`` differs).

Every file is written to a temporary name and moved into place with ``os.replace``, which is
atomic: a run killed while writing leaves the previous complete file, never a half-written one.

Issue 18 adds three guarantees. Paths stored in a run folder (``done.json``, ``result.json``,
``results.json``) are relative to it, so a moved folder resumes and a copy never reads the
original's files; in memory they are absolute again (:func:`read_done`). :func:`run_lock` lets
one process at a time work in a run folder (``fcntl.flock``: a killed process releases it). A
truncated or corrupt file raises :class:`RunFileError`, one line naming the file and what to do.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from smir_lib.engine.config import config_diff
from smir_lib.files import atomic_write_text, read_json

__all__ = ["RunFolderBusy", "read_done", "write_done", "check_run_config", "run_lock", "locked_run",
           "to_run_relative", "from_run_relative", "check_run_folder", "check_pretraining_checkpoint"]

PATH_KEYS = ("checkpoint", "masks", "best_checkpoint")
"""Summary keys holding a file of the run folder: stored relative to it, absolute in memory."""


def to_run_relative(summary: Mapping, run_dir: str | Path) -> dict:
    """``summary`` with its file paths (``PATH_KEYS``) relative to ``run_dir``, for writing."""
    run_dir = Path(os.path.abspath(run_dir))
    out = dict(summary)
    for key in PATH_KEYS:
        if out.get(key) is not None:
            path = Path(os.path.abspath(out[key]))
            out[key] = path.relative_to(run_dir).as_posix() if run_dir in path.parents else str(path)
    return out


def from_run_relative(summary: Mapping, run_dir: str | Path) -> dict:
    """``summary`` as read from ``run_dir``, its relative file paths made absolute again."""
    run_dir = Path(os.path.abspath(run_dir))
    out = dict(summary)
    for key in PATH_KEYS:
        if out.get(key) is not None:
            out[key] = str(run_dir / out[key])  # an absolute path (older folders) stays as it is
    return out


def read_done(stage_dir: str | Path) -> dict | None:
    """The summary of a finished stage (paths absolute), or None while it is unfinished."""
    path = Path(stage_dir) / "done.json"
    if not path.is_file():
        return None
    return from_run_relative(read_json(path), Path(stage_dir).parent)


def write_done(stage_dir: str | Path, summary: Mapping) -> Path:
    """Mark a stage finished (written last, after its checkpoints); paths relative to the run folder."""
    summary = to_run_relative(summary, Path(stage_dir).parent)
    return atomic_write_text(json.dumps(summary, indent=2, default=str), Path(stage_dir) / "done.json")


def check_run_folder(run_dir: str | Path) -> Path:
    """Create the run folder ``run_dir``; a path that is (or runs through) a file is a clear error."""
    run_dir = Path(run_dir)
    for parent in (run_dir, *run_dir.parents):
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"run folder {run_dir}: {parent} is a file, not a folder; pass a folder "
                             f"for --out (a new one, or a run folder to resume)")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


class RunFolderBusy(ValueError):
    """Another process holds the run folder's lock (issue 15: the study scheduler skips such a
    folder and comes back to it; everyone else sees the ``ValueError`` it always was)."""


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold ``run_dir/.lock`` while the block runs; a second process on the folder is refused.

    The lock is ``fcntl.flock`` on an open file: the kernel releases it when the process ends,
    however it ends, so a killed run never leaves the folder locked. The file records the pid of
    the holder for the message. Where ``fcntl`` is missing (Windows) no lock is taken.
    """
    run_dir = check_run_folder(run_dir)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield run_dir
        return
    path = run_dir / ".lock"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunFolderBusy(f"run folder {run_dir} is in use by {holder}: wait until it ends, or pass "
                             f"another --out folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} (started {time.strftime('%Y-%m-%d %H:%M:%S')})")
        handle.flush()
        try:
            yield run_dir
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def locked_run(function):
    """Decorator: run ``function(cfg, run_dir, ...)`` holding :func:`run_lock` on ``run_dir``.

    Under ``torchrun`` only rank 0 takes the lock (all ranks share the folder by design).
    """
    signature = inspect.signature(function)

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        run_dir = signature.bind(*args, **kwargs).arguments["run_dir"]
        if os.environ.get("RANK", "0") != "0":
            return function(*args, **kwargs)
        with run_lock(run_dir):
            return function(*args, **kwargs)

    return wrapper


def check_run_config(run_dir: str | Path, cfg_dict: Mapping, method: str) -> None:
    """Refuse to resume a run folder made with another configuration or method.

    Execution-only keys (``progress``, ``workers``, ``device``, ...) may change between runs.
    """

    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return
    saved = read_json(path, f"delete {run_dir} to start the run again")
    saved_method = saved.pop("method", method)
    diff = config_diff(saved, cfg_dict)
    if diff or saved_method != method:
        changes = {**diff, **({"method": (saved_method, method)} if saved_method != method else {})}
        raise ValueError(f"run folder {run_dir} holds a run with another configuration "
                         f"(saved vs now: {changes}); use a new --out folder, or delete {run_dir}")


def check_pretraining_checkpoint(state: Mapping, path: str | Path) -> None:
    """Refuse to evaluate a pretraining checkpoint (its head reconstructs images, it does not segment).

    Checkpoints of this engine record their ``stage``: ``finetune`` for a segmentation model,
    ``random`` / ``step_k`` for pretraining (``pretrained.pt`` is a copy of such a ``best.pt``).
    A 3-class dataset would otherwise load the 3-channel colour head and report an mIoU near 0.
    """
    stage = state.get("stage") if isinstance(state, Mapping) else None
    if stage is not None and stage != "finetune":
        raise ValueError(f"{path} is a pretraining checkpoint (stage {stage!r}, a 3-channel image "
                         f"reconstruction head), not a segmentation model: fine-tune it first "
                         f"(smir finetune --init {path} --out RUN) and evaluate RUN/finetune/best.pt")
