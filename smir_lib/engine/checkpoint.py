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
one process at a time work in a run folder (``fcntl.lockf``: a killed process releases it). A
truncated or corrupt file raises :class:`RunFileError`, one line naming the file and what to do.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import json
import os
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from smir_lib.engine.config import config_diff
from smir_lib.files import TEMPORARY_SUFFIX, RunFileError, atomic_write_text, fix_for, load_checkpoint, read_json, write_error

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


def from_run_relative(summary: Mapping, run_dir: str | Path, source: Path | None = None) -> dict:
    """``summary`` as read from ``run_dir``, its relative file paths made absolute again. A path
    that is not text (``"checkpoint": 5``) is a :class:`RunFileError` naming the file ``source``."""
    run_dir = Path(os.path.abspath(run_dir))
    out = dict(summary)
    bad = [key for key in (*PATH_KEYS, "stage") if out.get(key) is not None and not isinstance(out[key], str)]
    if bad:
        raise RunFileError(f"{source or run_dir}: {bad[0]} is {out[bad[0]]!r}, not a name in the run folder: "
                           f"not a file this kit wrote; {fix_for(source) if source else f'delete {run_dir}'}")
    for key in PATH_KEYS:
        if out.get(key) is not None:
            out[key] = str(run_dir / out[key])  # an absolute path (older folders) stays as it is
    return out


def read_done(stage_dir: str | Path) -> dict | None:
    """The summary of a finished stage (paths absolute), or None while it is unfinished."""
    path = Path(stage_dir) / "done.json"
    if not path.is_file():
        return None
    return from_run_relative(read_json(path, expect=dict), Path(stage_dir).parent, source=path)


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


def _open_lock_file(path: Path) -> int:
    """Open ``RUN/.lock`` for reading and writing without following a link; refuse anything but a
    plain file of its own (a link, a FIFO, a file hard-linked elsewhere) in one line."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    refuse = (f"run folder {path.parent}: {path.name} is {{what}}, not the kit's lock file: refusing to "
              f"write through it; delete {path} (it holds nothing) and run again")
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ValueError(refuse.format(what="a symbolic link")) from None
        raise write_error(path, err) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        os.close(fd)
        raise ValueError(refuse.format(what="a file linked elsewhere" if stat.S_ISREG(info.st_mode)
                                       else "not a plain file"))
    return fd


def refuse_linked_folders(run_dir: Path) -> None:
    """Refuse a run folder holding a link where a stage folder goes (``finetune -> ~/thesis``): the
    run would write its checkpoints into the link's target and delete ``.*.tmp`` files there. A link
    at a file's name is harmless (``os.replace`` replaces the link), so only folders are refused."""
    linked = sorted(p.name for p in run_dir.iterdir() if p.is_symlink() and (p.is_dir() or not p.exists()))
    if linked:
        raise ValueError(f"run folder {run_dir}: {linked[0]} is a symbolic link, not a folder of this run: "
                         f"refusing to write through it; delete the link {run_dir / linked[0]} (its target "
                         f"is kept) and run again")


def _remove_stale_temporaries(run_dir: Path) -> None:
    """Delete the temporary files of writes a killed process left (``.NAME.<random>.tmp``, see
    ``smir_lib.files``); only called while holding the run folder's lock."""
    for tmp in [*run_dir.glob(f".*{TEMPORARY_SUFFIX}"), *run_dir.glob(f"*/.*{TEMPORARY_SUFFIX}")]:
        if tmp.is_file() and not tmp.is_symlink():
            tmp.unlink(missing_ok=True)


_HELD: set[str] = set()
"""Run folders this process holds the lock of."""


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold ``run_dir/.lock`` while the block runs; a second process on the folder is refused.

    The lock is ``fcntl.lockf`` on an open file: the kernel releases it when the process ends,
    however it ends, so a killed run never leaves the folder locked (a POSIX lock belongs to the
    process: the DataLoader workers it forked do not keep holding it, as they would a ``flock``;
    within the process a set of held folders refuses a second run). The file records the pid of
    the holder for the message; it is opened without following a link (``O_NOFOLLOW``), so a
    ``.lock`` planted as a link to another file is refused, never written through. Where
    ``fcntl`` is missing (Windows) no lock is taken.
    """
    run_dir = check_run_folder(run_dir)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield run_dir
        return
    key = os.path.realpath(run_dir)
    if key in _HELD:  # POSIX locks do not exclude their own process; closing a second handle would free it
        raise RunFolderBusy(f"run folder {run_dir} is in use by this process (a run in it has not "
                            f"ended): pass another --out folder")
    path = run_dir / ".lock"
    with open(_open_lock_file(path), "r+", closefd=True) as handle:
        try:  # a POSIX lock (lockf), not flock: forked DataLoader workers of a killed run do not inherit it
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunFolderBusy(f"run folder {run_dir} is in use by {holder}: wait until it ends, or pass "
                             f"another --out folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} (started {time.strftime('%Y-%m-%d %H:%M:%S')})")
        handle.flush()
        refuse_linked_folders(run_dir)
        _remove_stale_temporaries(run_dir)
        _HELD.add(key)
        try:
            yield run_dir
        finally:
            _HELD.discard(key)
            fcntl.lockf(handle, fcntl.LOCK_UN)


def locked_run(read_finished: Callable[..., object] | None = None):
    """Decorator: run ``function(cfg, run_dir, ...)`` holding :func:`run_lock` on ``run_dir``.

    ``read_finished`` (same arguments) returns a finished run's result, or None: a finished run
    is read back without taking the lock or writing anything, so it can be read from a
    read-only or shared folder. Under ``torchrun`` only rank 0 takes the lock (all ranks share
    the folder by design).
    """

    def decorate(function):
        signature = inspect.signature(function)

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            arguments = signature.bind(*args, **kwargs)
            arguments.apply_defaults()
            if read_finished is not None:
                finished = read_finished(*arguments.args, **arguments.kwargs)
                if finished is not None:
                    return finished
            if os.environ.get("RANK", "0") != "0":
                return function(*args, **kwargs)
            with run_lock(arguments.arguments["run_dir"]):
                return function(*args, **kwargs)

        return wrapper

    return decorate


def check_run_config(run_dir: str | Path, cfg_dict: Mapping, method: str, init_sha256: str | None = None,
                     init_path: str | None = None) -> None:
    """Refuse to resume a run folder made with another configuration or method.

    Execution-only keys (``progress``, ``workers``, ``device``, ...) may change between runs. A
    fine-tuning run's initialisation (``init_path``, hashed as ``init_sha256``) is the same when
    the stored method names it, when its content hash matches (the file moved) or when both
    spellings resolve to one file (``./runs/x.pt`` and ``runs/x.pt``). A folder whose
    ``config.json`` is missing is checked against the configuration its checkpoints store.
    """
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not path.is_file():
        _check_stored_config(run_dir, cfg_dict)
        return
    saved = read_json(path, f"delete {run_dir} to start the run again", expect=dict)
    saved_method = saved.pop("method", method)
    saved_sha = saved.pop("init_sha256", None)
    diff = config_diff(saved, cfg_dict)
    same_method = saved_method == method or _same_init(run_dir, saved_method, saved_sha, method, init_sha256, init_path)
    if diff or not same_method:
        changes = {**diff, **({"method": (saved_method, method)} if not same_method else {})}
        raise ValueError(f"run folder {run_dir} holds a run with another configuration "
                         f"(saved vs now: {changes}); use a new --out folder, or delete {run_dir}")


def _same_init(run_dir: Path, saved_method: str, saved_sha: str | None, method: str, init_sha: str | None,
               init_path: str | None) -> bool:
    """Whether a fine-tuning run's stored init and the one given now are one file: the same content
    (moved or respelled), or, where a hash is missing (an older folder, or the init deleted since the
    run finished), the same path: stored relative to the run folder (older folders: as typed)."""
    if not (saved_method.startswith("finetune:") and method.startswith("finetune:")) or "scratch" in (
            saved_method.removeprefix("finetune:"), method.removeprefix("finetune:")):
        return False
    if saved_sha is not None and init_sha is not None:
        return saved_sha == init_sha
    saved_path = saved_method.removeprefix("finetune:").removeprefix("imagenet:")
    given = init_path or method.removeprefix("finetune:").removeprefix("imagenet:")
    return os.path.realpath(given) in {os.path.realpath(saved_path), os.path.realpath(run_dir / saved_path)}


def _check_stored_config(run_dir: Path, cfg_dict: Mapping) -> None:
    """Without ``config.json``, a stage's ``best.pt`` still records the configuration it trained with."""
    for best in sorted(run_dir.glob("*/best.pt")):
        stored = load_checkpoint(best).get("config")
        if isinstance(stored, Mapping):
            diff = config_diff(stored, cfg_dict)
            if diff:
                raise ValueError(f"run folder {run_dir} has no config.json, and {best} was trained with "
                                 f"another configuration (stored vs now: {diff}); use a new --out folder, "
                                 f"or delete {run_dir}")
            return


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
