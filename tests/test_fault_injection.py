"""Fault injection: a selective pretraining SIGKILLed at random moments ends like an uninterrupted one.

The run is a subprocess killed after seeded random delays, wherever it happens to be: loading,
scoring a partition, training an epoch, or writing a checkpoint, a mask file, a history or
``done.json``; two more kills aim at the scoring of partitions 1 and 2 (the run folder shows when
it starts: the previous step's ``done.json`` is there and the step's ``masks.pt`` is not). Each kill is followed by a restart on the same folder. After the last restart
the weights, every step's masks and the whole history must equal those of a run never killed.
Nothing in the library knows about the test (no hook, no environment variable).
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
TINY = ["model=tiny", "synthetic_size=72", "image_size=64", "msssim_win=3", "n_patches=64", "k=2",
        "partitions=3", "pool_size=15", "pretrain_epochs=3", "pretrain_batch=4", "warmup_epochs=1",
        "workers=0", "score_batch=2", "deterministic=true"]
KILLS = 8


def command(out: Path) -> list[str]:
    return [sys.executable, "-m", "smir_lib", "pretrain", "--method", "selective", "--config", "fast",
            "--out", str(out), "--quiet", *TINY]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def start(out: Path) -> tuple[subprocess.Popen, float]:
    """Start the run; return it once it has begun its work (it rewrites config.json then), with
    the seconds that start-up took."""
    before = (out / "config.json").stat().st_mtime_ns if (out / "config.json").is_file() else 0
    tic = time.perf_counter()
    proc = subprocess.Popen(command(out), cwd=REPO, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    config = out / "config.json"
    while not (config.is_file() and config.stat().st_mtime_ns != before) and proc.poll() is None:
        time.sleep(0.01)
    return proc, time.perf_counter() - tic


def run_to_end(out: Path) -> tuple[float, float]:
    """Run until it ends; the seconds of start-up and of work."""
    proc, startup = start(out)
    tic = time.perf_counter()
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-3000:]
    proc.stderr.close()
    return startup, time.perf_counter() - tic


def phase(out: Path) -> str:
    """Where a killed run stood, from what it left: a checkpoint being written, a partition being
    scored (previous step done, no masks yet), an epoch being trained, or already finished."""
    if (out / "result.json").is_file():
        return "finished"
    if any(out.rglob("*.tmp")):
        return "writing"
    steps = sorted(out.glob("step_*/done.json"))
    nxt = out / f"step_{len(steps)}"
    if steps and not (nxt / "masks.pt").is_file():
        return "scoring"
    return "training" if (out / "config.json").is_file() else "starting"


def run_killed_after(out: Path, delay: float) -> str:
    """Start the run and SIGKILL it ``delay`` seconds into its work; where it stood then."""
    proc, _ = start(out)
    try:
        proc.wait(timeout=delay)
        assert proc.returncode == 0, proc.stderr.read().decode()[-3000:]
        return "finished"
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return phase(out)
    finally:
        proc.stderr.close()


def run_killed_while_scoring(out: Path, step: int) -> str:
    """Start the run and SIGKILL it as soon as step ``step - 1`` is done and step ``step``'s masks
    are not written yet: the moment it scores partition ``step``. Where it stood then."""
    proc, _ = start(out)
    done, masks = out / f"step_{step - 1}" / "done.json", out / f"step_{step}" / "masks.pt"
    try:
        while proc.poll() is None and not (done.is_file() and not masks.is_file()):
            time.sleep(0.001)
        if proc.poll() is not None:
            return "finished"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return phase(out)
    finally:
        proc.stderr.close()


def comparable(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")} for row in history]


def test_random_kills_end_like_an_uninterrupted_run(tmp_path):
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    startup, work = run_to_end(reference)
    rng = random.Random(18)
    # Each restart resumes, so on average each kill lets a 1/KILLS share of the work be done.
    phases = [run_killed_after(interrupted, rng.uniform(0.0, 2.0 * work / KILLS)) for _ in range(KILLS // 2)]
    # Scoring takes a fraction of a second here, so random moments rarely hit it: aim at it.
    phases += [run_killed_while_scoring(interrupted, step) for step in (1, 2)]
    phases += [run_killed_after(interrupted, rng.uniform(0.0, 2.0 * work / KILLS)) for _ in range(KILLS // 2)]
    print(f"reference: start-up {startup:.1f} s, work {work:.1f} s; kills landed while {phases}")
    assert sum(p not in ("finished", "starting") for p in phases) >= 3, phases
    assert "scoring" in phases, phases
    run_to_end(interrupted)

    a = torch.load(interrupted / "pretrained.pt", weights_only=True)["model"]
    b = torch.load(reference / "pretrained.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for step in (1, 2):
        ma = torch.load(interrupted / f"step_{step}" / "masks.pt", weights_only=True)
        mb = torch.load(reference / f"step_{step}" / "masks.pt", weights_only=True)
        assert torch.equal(ma["masks"], mb["masks"]) and torch.equal(ma["indices"], mb["indices"])
    ha = json.loads((interrupted / "history.json").read_text())
    hb = json.loads((reference / "history.json").read_text())
    assert comparable(ha) == comparable(hb) and len(ha) == 9
