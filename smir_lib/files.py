"""Files that are never half-written and never read blindly: the kit's two rules for disk.

* Every file is written to a temporary name and moved into place with ``os.replace``, which is
  atomic: a process killed while writing leaves the previous complete file, never a half-written
  one (:func:`atomic_save`, :func:`atomic_write_text`, :func:`atomic_write_bytes`). The temporary
  file is a new one (``tempfile.mkstemp``: ``O_CREAT | O_EXCL``, which never follows a link), so a
  link planted in a shared or downloaded folder (``config.json.tmp -> ~/.bashrc``) is never
  written through; ``os.replace`` replaces a link at the final name, it never writes into its
  target. A full disk is one line naming the file (:class:`FileWriteError`), no temporary left.
* Every torch or JSON file is read with a check: a truncated, corrupt or foreign file raises
  :class:`RunFileError`, one line naming the file and what to do; a torch file holding pickled
  objects other than tensors and plain values is refused (unpickling them could run code).

A foundation of the method and the engine alike (``models`` reads weight files with it), so it
imports nothing from the rest of the kit.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import torch
import yaml

__all__ = ["RunFileError", "FileWriteError", "read_torch_file", "atomic_save", "atomic_write_text",
           "atomic_write_bytes", "atomic_write", "atomic_copy", "write_error", "fix_for", "load_checkpoint", "read_json", "read_yaml",
           "TEMPORARY_SUFFIX"]

TEMPORARY_SUFFIX = ".tmp"
"""Temporary files of the atomic writers are ``.NAME.<random>.tmp`` beside ``NAME``."""


class RunFileError(ValueError):
    """A checkpoint, state, mask or summary file cannot be read (truncated, corrupt, not ours)."""


class FileWriteError(RunFileError):
    """A file could not be written (full disk, quota, read-only or missing folder): one line
    naming the file and what to do; no temporary file is left behind."""


def fix_for(path: Path) -> str:
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
    fix = fix or fix_for(path)
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


@functools.cache
def _file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file (0o666 less the umask); ``mkstemp`` gives 0o600."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


_WRITE_FIXES = {errno.ENOSPC: "free space on that disk or write somewhere else (another --out folder)",
                errno.EDQUOT: "free space within your disk quota or write somewhere else",
                errno.EROFS: "the folder is read-only: copy it to a writable place, or pass another --out folder",
                errno.EACCES: "you may not write there: pass a folder you own (another --out)"}


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(handle)`` on a new temporary file beside ``path``, then move it to ``path``.

    Never writes through a link (see the module docstring). Raises :class:`FileWriteError` naming
    ``path`` when the disk is full or the folder is not writable; the temporary file is removed first.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
    except OSError as err:
        raise write_error(path, err) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), _file_mode())
            write(handle)
        os.replace(tmp, path)
    except BaseException as err:  # a full disk, or a KeyboardInterrupt: never leave the temporary behind
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise write_error(path, err) from None
        raise
    return path


def write_error(path: Path, err: OSError) -> FileWriteError:
    """The one-line :class:`FileWriteError` for ``err`` raised while writing ``path``."""
    reason = os.strerror(err.errno) if err.errno else str(err)
    fix = _WRITE_FIXES.get(err.errno, "check the folder and the disk, then run the same command again")
    return FileWriteError(f"cannot write {path}: {reason} (errno {err.errno}); {fix}")


def atomic_write_bytes(data: bytes, path: str | Path) -> Path:
    """Write ``data`` to ``path`` atomically, never through a link (see :func:`atomic_write`)."""
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_copy(source: str | Path, path: str | Path) -> Path:
    """Copy the file ``source`` to ``path`` atomically, never through a link (see :func:`atomic_write`)."""
    with open(source, "rb") as handle:
        return atomic_write(path, lambda out: shutil.copyfileobj(handle, out))


def atomic_save(obj, path: str | Path) -> Path:
    """``torch.save`` to ``path`` atomically, never through a link (see :func:`atomic_write`)."""
    return atomic_write(path, lambda handle: torch.save(obj, handle))


def atomic_write_text(text: str, path: str | Path) -> Path:
    """Write a text file (JSON, CSV, YAML, Markdown) atomically, never through a link."""
    return atomic_write_bytes(text.encode(), path)


def load_checkpoint(path: str | Path, fix: str | None = None, keys: tuple[str, ...] = ()) -> dict:
    """Read a checkpoint written by this engine (tensors and plain Python values only).

    A file that is not one (truncated, corrupt, another format, not a dict, a dict without the
    ``keys`` its reader needs) raises :class:`RunFileError`.
    """
    path = Path(path)
    data = read_torch_file(path, fix)
    if not isinstance(data, dict):
        raise RunFileError(f"{path} holds a {type(data).__name__}, not a checkpoint dict; {fix or fix_for(path)}")
    missing = [key for key in keys if key not in data]
    if missing:
        raise RunFileError(f"{path} lacks {', '.join(missing)}: not a file this kit wrote there; "
                           f"{fix or fix_for(path)}")
    return data


def read_json(path: str | Path, fix: str | None = None, expect: type | None = None):
    """A JSON file of a run folder; a truncated or corrupt one, or (with ``expect``, e.g. ``dict``)
    one holding another kind of value, raises :class:`RunFileError`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunFileError(f"{path} is truncated or corrupt (line {getattr(err, 'lineno', '?')}: "
                           f"{getattr(err, 'msg', err)}); {fix or fix_for(path)}") from None
    if expect is not None and not isinstance(data, expect):
        raise RunFileError(f"{path} holds a JSON {type(data).__name__}, expected a "
                           f"{'mapping' if expect is dict else expect.__name__}; {fix or fix_for(path)}")
    return data


class _PlainLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without aliases: ``*name`` (and merge keys ``<<: *name``) are refused, so
    a few hundred bytes of nested aliases cannot expand into gigabytes (a "billion laughs")."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not accepted: write the "
                                              "values out", self.peek_event().start_mark)
        return super().compose_node(parent, index)


def read_yaml(path: str | Path, what: str = "file"):
    """The value of a YAML file: plain types only (``safe_load``: a ``!!python`` tag runs nothing),
    no aliases; a syntax error, tag or alias is one ``ValueError`` naming ``what``, the file and the line."""
    path = Path(path)
    try:
        return yaml.load(path.read_text(), Loader=_PlainLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(f"{what} {path}{where}: invalid YAML ({problem})") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{what} {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
