"""A run killed at any point and started again ends exactly like an uninterrupted run."""

import json
import os
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
        "partitions=2", "pool_size=12", "pretrain_epochs=3", "pretrain_batch=4", "warmup_epochs=1",
        "workers=0", "score_batch=4", "deterministic=true"]


def command(out: Path) -> list[str]:
    return [sys.executable, "-m", "smir_lib", "pretrain", "--method", "selective", "--config",
            "fast", "--out", str(out), "--quiet", *TINY]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def run_killed_when(out: Path, marker: Path, timeout: float = 240) -> None:
    """Start the run, SIGKILL it as soon as ``marker`` exists (an epoch checkpoint)."""
    proc = subprocess.Popen(command(out), cwd=REPO, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    start = time.time()
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"run ended before {marker} appeared: {proc.stderr.read().decode()[-2000:]}")
        if time.time() - start > timeout:
            proc.kill()
            raise AssertionError(f"{marker} did not appear within {timeout} s")
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def run_to_end(out: Path) -> None:
    done = subprocess.run(command(out), cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def comparable(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")} for row in history]


def test_killed_run_resumes_to_the_same_result(tmp_path):
    interrupted, reference = tmp_path / "interrupted", tmp_path / "reference"
    # Kill during step 0 (after its first epoch), then during step 1 (after its masks and an epoch).
    run_killed_when(interrupted, interrupted / "step_0" / "state.pt")
    state = torch.load(interrupted / "step_0" / "state.pt", weights_only=True)
    assert state["epoch"] < 2, "the kill came too late to test resuming inside a step"
    run_killed_when(interrupted, interrupted / "step_1" / "state.pt")
    masks_mtime = (interrupted / "step_1" / "masks.pt").stat().st_mtime_ns
    assert not (interrupted / "step_1" / "done.json").exists()
    run_to_end(interrupted)
    assert (interrupted / "step_1" / "masks.pt").stat().st_mtime_ns == masks_mtime  # not rescored
    run_to_end(reference)

    a = torch.load(interrupted / "pretrained.pt", weights_only=True)["model"]
    b = torch.load(reference / "pretrained.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma = torch.load(interrupted / "step_1" / "masks.pt", weights_only=True)
    mb = torch.load(reference / "step_1" / "masks.pt", weights_only=True)
    assert torch.equal(ma["masks"], mb["masks"])
    ha = json.loads((interrupted / "history.json").read_text())
    hb = json.loads((reference / "history.json").read_text())
    assert comparable(ha) == comparable(hb) and len(ha) == 6
