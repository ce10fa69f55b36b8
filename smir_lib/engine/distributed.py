"""Running the same entry points on several processes with DistributedDataParallel.

``torchrun --nproc_per_node N -m smir_lib pretrain ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`init_distributed` reads them and joins the process group (NCCL on GPUs,
gloo on CPU), even a group of one (``--nproc_per_node 1``: the same code path as N processes,
which is how ``make gpu-check`` tests NCCL on a one-GPU machine). Without them everything runs
in one process and these helpers do nothing.

* Training: the model is wrapped in ``DistributedDataParallel`` and every rank reads its own
  share of each epoch through a ``DistributedSampler``.
* Scoring a partition: rank ``r`` scores the images ``r, r + N, r + 2N, ...``; the results are
  gathered and put back in the original order. Every image's random masks come from its own
  generator, seeded by (seed, step, image index), so the masks do not depend on ``N``.
* Evaluation: ranks evaluate disjoint shares and their sums (confusion matrices, loss totals)
  are added with ``all_reduce``.
* Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from smir_lib.runtime import resolve_device

__all__ = ["DistContext", "init_distributed", "all_reduce_sum", "gather_objects",
           "barrier"]


@dataclass
class DistContext:
    """Where this process stands: its rank, the world size and its device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    joined: bool = False  # in a process group (started by torchrun), even one of size 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Whether collectives and DistributedDataParallel are in use (under torchrun)."""
        return self.joined


def init_distributed(device: str = "auto") -> DistContext:
    """Join the process group when started by ``torchrun``; a 1-process context otherwise."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if "WORLD_SIZE" not in os.environ or "MASTER_ADDR" not in os.environ:  # not under torchrun
        return DistContext(0, 1, dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), dev, joined=True)


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``tensor`` over ranks (in place; returned for chaining)."""
    if ctx.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_objects(obj, ctx: DistContext) -> list:
    """Every rank's ``obj`` as a list indexed by rank (``[obj]`` in one process)."""
    if not ctx.enabled:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (e.g. until rank 0 has written a file the others read)."""
    if ctx.enabled:
        dist.barrier()
