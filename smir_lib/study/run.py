"""Running the budget study's work units: resumable, and splittable over processes and sessions.

:func:`run_units` runs one process's share (``study_plan.shard``) of a protocol's units under a
study root. Every unit is an engine run in its own folder, so it resumes where it stopped, and the
engine's run lock keeps two processes out of one folder. The scheduler:

1. skips a unit whose folder holds a finished result (:func:`unit_done`; nothing is reloaded);
2. for a fine-tuning unit whose pretraining has not finished, runs that pretraining first,
   unless another process holds it (then it comes back to the unit later);
3. skips a unit whose folder another process holds (``RunFolderBusy``) and comes back to it;
4. with ``steal=True`` (the default) then helps with the other shares, so ``n`` processes finish
   the study together however uneven the units are, and a process that died leaves no hole;
5. waits (``poll_s``) while only units held by others remain, and gives up after ``wait_s``.

Each finished unit appends ``{"folder", "kind", "seconds", "cpu_seconds", "load_average",
"image_steps", "pid"}`` to ``<root>/units.jsonl``: the times the estimate reads
(``study_tables.time_estimate``; with one thread, CPU seconds are what a free core would take).
"""

from __future__ import annotations

import fnmatch
import json
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from smir_lib.engine.checkpoint import RunFolderBusy
from smir_lib.engine.config import RUN_METADATA, Config, config_diff
from smir_lib.engine.finetune import finetune
from smir_lib.engine.pretrain import pretrain_random, pretrain_selective
from smir_lib.engine.pretrain_data import load_split
from smir_lib.files import read_json
from smir_lib.study.plan import Protocol, WorkUnit, shard, stage_train_sizes, unit_config, work_units

__all__ = ["unit_done", "run_unit", "run_units", "select_units", "stale_config", "stale_message", "unit_image_steps", "UNIT_LOG"]

UNIT_LOG = "units.jsonl"


def unit_done(root: Path | str, unit: WorkUnit) -> bool:
    """Whether ``unit``'s folder holds a finished run (the engine writes these files last)."""
    folder = Path(root) / unit.folder
    if unit.kind == "pretrain":
        return (folder / "result.json").is_file() and (folder / "pretrained.pt").is_file()
    return (folder / "results.json").is_file()


def stale_config(protocol: Protocol, root: Path | str, unit: WorkUnit) -> dict[str, tuple]:
    """Keys whose values in ``unit``'s saved ``config.json`` differ from what ``protocol`` asks
    now, as ``{key: (saved, now)}`` (``config.config_diff``: execution-only keys may differ);
    ``{}`` when they agree or the folder has no config yet; a key the saved config lacks (added
    to ``Config`` since) counts as its default. A finished unit is never run again,
    so a protocol edited after its units ran (say, more fine-tuning epochs) would otherwise mix
    old results into the new study without a word."""

    path = Path(root) / unit.folder / "config.json"
    if not path.is_file():
        return {}
    saved = read_json(path, expect=dict)
    for key in RUN_METADATA:  # the engine's metadata, not settings
        saved.pop(key, None)
    # A key added to Config after the unit ran (say mask_strategy, issue 28) reads as its default:
    # a new key's default keeps the behaviour the unit ran with (faithful defaults, options named).
    saved = {**{k: v for k, v in Config().to_dict().items() if k not in saved}, **saved}
    return config_diff(saved, unit_config(protocol, unit).to_dict())


def stale_message(folder: str, diff: dict) -> str:
    return (f"{folder} finished with another configuration than the protocol asks now (saved vs now: {diff}): "
            "move that folder away (to keep it as a record) so the unit runs again, or use a new --root")


def unit_image_steps(cfg, unit: WorkUnit) -> int:
    """Training images the unit processes (images x epochs over its stages), from its config."""
    if unit.kind == "pretrain":
        sizes = stage_train_sizes(cfg, unit.method)
        return sum(sizes) * (cfg.epochs_for_random if unit.method == "random" else cfg.pretrain_epochs)

    return len(load_split(cfg.replace(cache_images=False), "train")) * cfg.finetune_epochs


def run_unit(protocol: Protocol, root: Path | str, unit: WorkUnit) -> float:
    """Run (or resume) one unit in its folder; returns its wall seconds and logs it."""

    root = Path(root)
    cfg = unit_config(protocol, unit)
    tic, cpu = time.perf_counter(), time.process_time()
    if unit.kind == "pretrain":
        (pretrain_random if unit.method == "random" else pretrain_selective)(cfg, root / unit.folder)
    else:
        dep = unit.dependency
        init = "scratch" if dep is None else root / dep.folder / "pretrained.pt"
        finetune(cfg, root / unit.folder, init)
    seconds = time.perf_counter() - tic
    record = {"folder": unit.folder, "kind": unit.kind, "seconds": seconds, "cpu_seconds": time.process_time() - cpu,
              "load_average": os.getloadavg()[0], "image_steps": unit_image_steps(cfg, unit), "pid": os.getpid()}
    # one short line per unit: appends do not interleave; a link planted as the log is not followed
    with open(os.open(root / UNIT_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644), "a") as log:
        log.write(json.dumps(record) + "\n")
    return seconds


def select_units(units: list[WorkUnit], patterns: Sequence[str]) -> list[WorkUnit]:
    """The units whose folder matches one of the shell-style ``patterns`` (``fnmatch``), e.g.
    ``finetune/cwfid/seed_0/train_4/selective_9000`` or ``finetune/cwfid/*/train_4/*``."""
    chosen = [u for u in units if any(fnmatch.fnmatchcase(u.folder, p) for p in patterns)]
    if not chosen:
        examples = ", ".join(u.folder for u in units if u.kind == "finetune")[:300]
        raise ValueError(f"no unit of the protocol matches {list(patterns)}; unit folders look like: {examples} ...")
    return chosen


def run_units(protocol: Protocol, root: Path | str, index: int = 0, count: int = 1, *, steal: bool = True,
              poll_s: float = 20.0, wait_s: float = 3600.0, only: Sequence[str] | None = None, log=print) -> dict:
    """Run process ``index`` of ``count``'s share of ``protocol`` under ``root`` (see the module
    docstring). ``only``: run just the units matching these patterns (:func:`select_units`; a
    fine-tuning unit brings its pretraining). Returns ``{"ran": [...], "failed": {folder: error},
    "left": [...]}`` (folders; ``left`` counts the selected units only)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    units = work_units(protocol) if only is None else select_units(work_units(protocol), only)
    mine = shard(units, index, count)
    pending = mine + ([u for u in units if u not in set(mine)] if steal else [])
    ran, failed = [], {}
    idle_since = time.monotonic()

    checked: set[str] = set()

    def attempt(unit: WorkUnit) -> str:
        """``done``, ``busy`` (another process holds it) or ``failed``."""
        if unit.folder in failed:
            return "failed"
        if unit_done(root, unit):
            if unit.folder not in checked:  # once per process: reading a pool's size is not free
                checked.add(unit.folder)
                diff = stale_config(protocol, root, unit)
                if diff:
                    failed[unit.folder] = stale_message(unit.folder, diff)
                    return "failed"
            return "done"
        dep = unit.dependency
        if dep is not None and not unit_done(root, dep):
            state = attempt(dep)
            if state != "done":
                return state
        try:
            log(f"[{index}/{count}] running {unit.folder}")
            seconds = run_unit(protocol, root, unit)
        except RunFolderBusy:
            return "busy"
        except Exception as err:  # one broken unit must not stop a study of hours: record, go on
            failed[unit.folder] = f"{type(err).__name__}: {err}"
            traceback.print_exc(file=sys.stderr)
            return "failed"
        ran.append(unit.folder)
        log(f"[{index}/{count}] finished {unit.folder} in {seconds:.0f} s")
        return "done"

    while pending:
        states = {u: attempt(u) for u in pending}
        pending = [u for u, s in states.items() if s == "busy"]
        if not pending:
            break
        if any(s == "done" for s in states.values()):
            idle_since = time.monotonic()
        if time.monotonic() - idle_since > wait_s:
            log(f"[{index}/{count}] gave up waiting for {len(pending)} unit(s) held by other processes")
            break
        time.sleep(poll_s)
    left = [u.folder for u in units if not unit_done(root, u)]
    return {"ran": ran, "failed": failed, "left": left}
