"""The engine under torchrun: 2 gloo processes on CPU score partitions exactly like 1 process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from smir_lib.engine.config import load_config
from smir_lib.engine.distributed import DistContext, init_distributed
from smir_lib.engine.pretrain import handoff_checkpoint
from smir_lib.engine.pretrain_data import load_split, partition_indices, score_partition
from smir_lib.models import build_model, load_pretrained

REPO = Path(__file__).resolve().parent.parent
TINY = ["model=tiny", "synthetic_size=72", "image_size=64", "msssim_win=3", "n_patches=64", "k=2",
        "partitions=2", "pool_size=14", "pretrain_epochs=2", "pretrain_batch=4", "warmup_epochs=0",
        "workers=0", "score_batch=2"]


@pytest.mark.unit
def test_single_process_context_without_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.enabled) == (0, 1, True, False)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            init_distributed("cuda")


@pytest.mark.slow
def test_two_gloo_processes_give_the_masks_of_one(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "smir_lib", "pretrain", "--method", "selective", "--config", "fast", "--out",
           str(out), "--quiet", *TINY]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert (out / "pretrained.pt").is_file()
    stored = torch.load(out / "step_1" / "masks.pt", weights_only=True)

    # One process, same scorer (step 0's hand-off checkpoint), same images (train and val).
    cfg = load_config("fast", TINY)
    pool = load_split(cfg, "pool")
    train_idx, val_idx = partition_indices(len(pool), cfg.partitions, cfg.val_fraction)[1]
    scorer = build_model(cfg)
    load_pretrained(scorer, handoff_checkpoint(out, 0, cfg), reinit_head=False)
    single = score_partition(scorer, pool, train_idx + val_idx, cfg, step=1, ctx=DistContext())
    assert stored["indices"].tolist() == train_idx + val_idx
    assert torch.equal(stored["masks"], single["masks"])
    assert torch.allclose(stored["scores"], single["scores"], atol=1e-5, equal_nan=True)
