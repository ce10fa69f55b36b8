"""Files that are never half-written and never read blindly: the kit's two rules for disk.

* Every file is written to a temporary name and moved into place with ``os.replace``, which is
  atomic: a process killed while writing leaves the previous complete file, never a half-written
  one (:func:`atomic_save`, :func:`atomic_write_text`).
* Every torch or JSON file is read with a check: a truncated, corrupt or foreign file raises
  :class:`RunFileError`, one line naming the file and what to do; a torch file holding pickled
  objects other than tensors and plain values is refused (unpickling them could run code).

A foundation of the method and the engine alike (``models`` reads weight files with it), so it
imports nothing from the rest of the kit.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import torch

__all__ = ["RunFileError", "read_torch_file", "atomic_save", "atomic_write_text", "load_checkpoint", "read_json"]


class RunFileError(ValueError):
    """A checkpoint, state, mask or summary file cannot be read (truncated, corrupt, not ours)."""


def _fix_for(path: Path) -> str:
    """What a user does about an unreadable ``path``, from where it lives in a run folder."""
    if path.name in ("best.pt", "state.pt", "masks.pt", "done.json", "history.json"):
        return f"delete the folder {path.parent} to redo that step (the rest of the run is kept)"
    if path.name in ("pretrained.pt", "result.json", "results.json"):
        return f"delete {path} and run the same command on {path.parent} again to rewrite it"
    return ("pass a checkpoint written by this kit (a pretraining run's pretrained.pt or a "
            "fine-tuning run's finetune/best.pt)")


def read_torch_file(path: str | Path, fix: str | None = None) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU; an unreadable file is one clear line.

    Raises :class:`RunFileError` naming the file and ``fix`` (default: what to delete, from the
    file's place in a run folder) when the file is truncated, corrupt, not a torch file, or holds
    pickled objects other than tensors and plain values (refused: unpickling them could run code).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    fix = fix or _fix_for(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" in str(err):
            raise RunFileError(f"{path} holds pickled Python objects, not only tensors: refused, since "
                               f"loading it could run code; {fix}") from None
        raise RunFileError(f"{path} is not a torch checkpoint or is corrupt; {fix}") from None
    except Exception as err:  # noqa: BLE001 - unpickling arbitrary bytes raises anything (IndexError, KeyError, ...)
        kind = "empty" if path.stat().st_size == 0 else "truncated or corrupt"
        raise RunFileError(f"{path} is {kind} ({type(err).__name__}); {fix}") from None


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


def load_checkpoint(path: str | Path, fix: str | None = None) -> dict:
    """Read a checkpoint written by this engine (tensors and plain Python values only).

    A file that is not one (truncated, corrupt, another format) raises :class:`RunFileError`.
    """
    path = Path(path)
    data = read_torch_file(path, fix)
    if not isinstance(data, dict):
        raise RunFileError(f"{path} holds a {type(data).__name__}, not a checkpoint dict; {fix or _fix_for(path)}")
    return data


def read_json(path: str | Path, fix: str | None = None):
    """A JSON file of a run folder; a truncated or corrupt one raises :class:`RunFileError`."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunFileError(f"{path} is truncated or corrupt (line {getattr(err, 'lineno', '?')}: "
                           f"{getattr(err, 'msg', err)}); {fix or _fix_for(path)}") from None
