"""Issue 29, item 3: ``workers`` is an execution-only key, so it must not change a single number.

Before the fix the training loader drew its workers' base seed from the global random stream
inside the epoch's dropout stream (every epoch with ``workers=0``, only the first with persistent
workers): ``workers=1`` trained other weights than ``workers=0``, and a killed ``workers=1`` run
resumed differently from an uninterrupted one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from smir_lib.files import load_checkpoint
from smir_lib.tools.cli import main
from test_reliability import REPO, TINY, pretrain

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_thread")]

RUN = ["partitions=2", "pretrain_epochs=2", "deterministic=true"]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    worst = max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa if wa[k].is_floating_point())
    assert worst == 0.0, f"{a} and {b} differ by up to {worst}"


def test_workers_0_1_2_train_identical_weights(tmp_path):
    for workers in (0, 1, 2):
        assert pretrain(tmp_path / f"pre{workers}", *RUN, f"workers={workers}") == 0
        init = tmp_path / "pre0" / "pretrained.pt"
        assert main(["finetune", "--init", str(init), "--out", str(tmp_path / f"ft{workers}"), "--quiet",
                     *TINY, "finetune_epochs=2", "deterministic=true", f"workers={workers}"]) == 0
    for workers in (1, 2):
        for stage in ("step_0/best.pt", "step_1/masks.pt", "step_1/state.pt", "pretrained.pt"):
            if stage.endswith("masks.pt"):
                assert torch.equal(load_checkpoint(tmp_path / "pre0" / stage)["masks"],
                                   load_checkpoint(tmp_path / f"pre{workers}" / stage)["masks"])
            else:
                assert_same_weights(tmp_path / "pre0" / stage, tmp_path / f"pre{workers}" / stage)
        assert_same_weights(tmp_path / "ft0" / "finetune" / "best.pt", tmp_path / f"ft{workers}" / "finetune" / "best.pt")


def test_a_killed_workers_2_run_resumes_like_an_uninterrupted_one(tmp_path):
    """SIGKILLed as soon as step 1 saved its first epoch, then resumed: the same weights as a run
    never killed (with ``workers=0``, which the test above ties to ``workers=2``)."""
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    run = [*RUN, "pretrain_epochs=4"]
    assert pretrain(reference, *run, "workers=0") == 0
    command = [sys.executable, "-m", "smir_lib", "pretrain", "--method", "selective", "--out", str(killed),
               "--quiet", *TINY, *run, "workers=2"]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    state = killed / "step_1" / "state.pt"
    deadline = time.time() + 120
    while not state.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert load_checkpoint(state)["epoch"] < 3  # killed inside step 1
    assert pretrain(killed, *run, "workers=2") == 0
    assert_same_weights(reference / "pretrained.pt", killed / "pretrained.pt")
    assert_same_weights(reference / "step_1" / "state.pt", killed / "step_1" / "state.pt")
