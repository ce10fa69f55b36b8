"""Shared fixtures: the repository root, the real CWFID data (skipped when absent), run folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
CWFID_ROOT = REPO_ROOT.parent / "shared" / "data" / "cwfid"

# Notebooks and subprocesses started by the tests never open windows or look for a display.
os.environ.setdefault("MPLBACKEND", "Agg")
# The development copy of the real data beside the project is the tests' data folder (the library
# itself knows nothing of this layout); an explicit $SMIR_DATA_DIR wins.
if CWFID_ROOT.is_dir():
    os.environ.setdefault("SMIR_DATA_DIR", str(CWFID_ROOT.parent))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def cwfid_root() -> Path:
    """The real CWFID dataset beside the project (../shared/data/cwfid), or a skip saying why."""
    if not (CWFID_ROOT / "train_test_split.yaml").is_file():
        pytest.skip(f"real CWFID data not found at {CWFID_ROOT}: get it with "
                    "`smir download cwfid` and set SMIR_DATA_DIR")
    return CWFID_ROOT


@pytest.fixture
def one_thread():
    """One intra-op thread for in-process training tests: tiny tensors gain nothing from two
    threads, and on a busy machine OpenMP spin-waiting makes two threads several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
