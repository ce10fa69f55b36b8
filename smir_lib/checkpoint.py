"""Resumable runs: atomic checkpoint files and the per-stage state a killed run continues from.

A run folder holds one sub-folder per *stage* (``random``, ``step_0`` ... ``step_9``,
``finetune``). While a stage trains, ``state.pt`` is rewritten after every epoch with the model,
optimiser, schedule, epoch, best validation value and history; ``best.pt`` holds the weights of
the best validation epoch. A finished stage writes ``done.json``. A run started again:

* skips finished stages (their ``best.pt`` and ``masks.pt`` are reused, nothing is recomputed);
* continues the current stage from the epoch after the last completed one;
* refuses to continue when the configuration changed (``config.json`` differs).

Every file is written to a temporary name and moved into place with ``os.replace``, which is
atomic: a run killed while writing leaves the previous complete file, never a half-written one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch

__all__ = ["atomic_save", "atomic_write_text", "load_checkpoint", "read_done", "write_done",
           "check_run_config"]


def atomic_save(obj, path: str | Path) -> Path:
    """``torch.save`` to ``path`` via a temporary file and ``os.replace`` (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def atomic_write_text(text: str, path: str | Path) -> Path:
    """Write a text file atomically (JSON, CSV)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint written by this engine (tensors and plain Python values only)."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def read_done(stage_dir: str | Path) -> dict | None:
    """The summary of a finished stage, or None while it is unfinished."""
    path = Path(stage_dir) / "done.json"
    return json.loads(path.read_text()) if path.is_file() else None


def write_done(stage_dir: str | Path, summary: Mapping) -> Path:
    """Mark a stage finished (written last, after its checkpoints)."""
    return atomic_write_text(json.dumps(dict(summary), indent=2, default=str),
                             Path(stage_dir) / "done.json")


def check_run_config(run_dir: str | Path, cfg_dict: Mapping, method: str) -> None:
    """Refuse to resume a run folder made with another configuration or method.

    Execution-only keys (``progress``, ``workers``, ``device``, ...) may change between runs.
    """
    from .config import config_diff

    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return
    saved = json.loads(path.read_text())
    saved_method = saved.pop("method", method)
    diff = config_diff(saved, cfg_dict)
    if diff or saved_method != method:
        changes = {**diff, **({"method": (saved_method, method)} if saved_method != method else {})}
        raise ValueError(f"run folder {run_dir} holds a run with another configuration "
                         f"(saved vs now: {changes}); use a new --out folder, or delete {run_dir}")
