"""How much memory scoring a partition takes, and how little its masks take to store.

Scoring a pretraining partition (the paper: each of the 10 steps scores a tenth of the pool) streams
the images through :func:`smir_lib.selective.selective_mask` a chunk at a time and keeps only the
grid masks: one bit of information per patch, never a masked copy of the image. So the peak
memory should not grow with the partition size, and the stored result should be tiny:

* a grid mask as ``torch.bool`` is 1 byte per patch: 441 B per 256x256 image;
* packed with ``numpy.packbits`` it is 1 bit per patch: ``ceil(441 / 8) = 56`` B per image;
* a float32 masked copy of the image would be ``3 * 256 * 256 * 4 = 786,432`` B.

The peak resident set size (RSS) is measured in a fresh child process (``VmHWM`` on Linux, reset
after the model is built and warmed up, so the growth while scoring is the scoring's own), so
nothing the parent allocated earlier hides in the figure; on a GPU the peak
CUDA memory (``torch.cuda.max_memory_allocated``) is reported too. We run two partition sizes:
if streaming works, the two peaks are about the same.
"""

from __future__ import annotations

import json
import math
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np
import torch

from .harness import BenchResult

__all__ = ["score_partition", "bench_memory", "mask_bytes_per_image"]


def _peak_rss_bytes() -> int:
    """This process's peak RSS so far.

    On Linux ``VmHWM`` from ``/proc/self/status``: unlike ``ru_maxrss`` it starts afresh in a new
    program (``ru_maxrss`` survives ``exec`` and would report the parent's peak), and
    :func:`_reset_peak_rss` can reset it. Elsewhere ``ru_maxrss`` (bytes on macOS).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _current_rss_bytes() -> int:
    """Resident set size now (``VmRSS``), or the peak where ``/proc`` is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return _peak_rss_bytes()


def _reset_peak_rss() -> bool:
    """Reset the peak RSS to the current RSS (Linux >= 4.0: ``5`` into ``clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def mask_bytes_per_image(height: int = 256, width: int = 256) -> dict[str, int]:
    """Bytes per image of a stored grid mask (bool, packed bits) and of a float32 masked copy."""
    from smir_lib.patches import patch_grid

    grid = patch_grid(height, width)
    return {"patches": grid.n_patches, "bool_mask": grid.n_patches,
            "packed_bits": math.ceil(grid.n_patches / 8),
            "float32_image_copy": 3 * height * width * 4}


def score_partition(*, n_images: int, preset: str = "tiny", size: int = 256, images_per_call: int = 8,
                    k: int = 5, device: str = "cpu", threads: int | None = None,
                    seed: int = 0) -> dict[str, Any]:
    """Score a partition of ``n_images`` synthetic pool images as pretraining does.

    Uses the engine's :func:`smir_lib.engine.pretrain_data.score_partition` (batches of
    ``images_per_call``, K masks each, masks and scores kept per image) when it is installed,
    else the same loop over :func:`smir_lib.selective.selective_mask`. Runs in the calling
    process; :func:`bench_memory` calls it in a child. Returns the RSS after set-up (imports,
    model, one warm-up image), the peak RSS, and the sizes of what is stored.
    """
    from smir_lib.data import get_dataset
    from smir_lib.data.transforms import normalize
    from smir_lib.models import build_unet
    from smir_lib.patches import patch_grid

    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    grid = patch_grid(size, size)
    model = build_unet(preset).to(dev).eval()
    pool = get_dataset("synthetic", "pool", n_images=n_images, size=size, seed=seed)
    try:
        from smir_lib.engine.config import load_config
        from smir_lib.engine.distributed import DistContext
        from smir_lib.engine.pretrain_data import score_partition as engine_score_partition

        cfg = load_config("paper", {"model": preset, "dataset": "synthetic", "image_size": size,
                                    "k": k, "score_batch": images_per_call, "pool_size": n_images,
                                    "msssim_win": 11 if size > 160 else 3,  # unused when scoring
                                    "amp": "auto" if dev.type == "cuda" else "off"})
        ctx = DistContext(device=dev)

        def score(indices: list[int]) -> dict:
            return engine_score_partition(model, pool, indices, cfg, step=1, ctx=ctx)
        scorer = "smir_lib.engine.pretrain_data.score_partition"
    except ImportError:
        from smir_lib.selective import selective_mask

        gen = torch.Generator().manual_seed(seed)

        def score(indices: list[int]) -> dict:
            masks = torch.empty(len(indices), *grid.shape, dtype=torch.bool)  # (N, gh, gw)
            for first in range(0, len(indices), images_per_call):
                chunk = indices[first:first + images_per_call]
                batch = normalize(torch.stack([pool[i] for i in chunk])).to(dev)  # (b, 3, H, W)
                masks[first:first + len(chunk)] = selective_mask(model, batch, grid, k=k,
                                                                 generator=gen).mask.cpu()
            return {"masks": masks}
        scorer = "selective_mask loop (smir_lib.engine.pretrain_data not found)"

    score([0])  # warm-up: lazy allocations (oneDNN, allocator) belong to the set-up
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    reset = _reset_peak_rss()  # the peak from now on is the scoring's own
    baseline = _current_rss_bytes()
    start = time.perf_counter()
    stored = score(list(range(n_images)))
    seconds = time.perf_counter() - start
    masks = stored["masks"][:, :grid.gh, :grid.gw]  # (N, gh, gw) bool
    packed = np.packbits(masks.numpy().reshape(n_images, -1), axis=1)  # (N, ceil(441 / 8)) uint8
    tensor_bytes = {key: value.numel() * value.element_size() for key, value in stored.items()
                    if isinstance(value, torch.Tensor)}
    out = {"n_images": n_images, "preset": preset, "size": size, "k": k, "scorer": scorer,
           "images_per_call": images_per_call, "device": device, "threads": torch.get_num_threads(),
           "rss_after_setup_bytes": baseline, "peak_reset": reset, "peak_rss_bytes": _peak_rss_bytes(),
           "seconds": round(seconds, 3), "images_per_s": round(n_images / seconds, 3),
           "stored_bool_bytes": masks.numel() * masks.element_size(),
           "stored_packed_bytes": int(packed.nbytes), "stored_tensors_bytes": tensor_bytes}
    if dev.type == "cuda":
        out["cuda_peak_allocated_bytes"] = torch.cuda.max_memory_allocated(dev)
    return out


def _run_child(**kwargs: Any) -> dict[str, Any]:
    """:func:`score_partition` in a fresh interpreter, so its peak RSS is its own."""
    code = ("import json, sys; from benchmarks.memory import score_partition; "
            f"print('RESULT ' + json.dumps(score_partition(**{kwargs!r})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the memory child process failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-2000:]}")
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def bench_memory(*, sizes: tuple[int, ...] = (20, 100), preset: str = "tiny", size: int = 256,
                 images_per_call: int = 8, k: int = 5, device: torch.device,
                 threads: int | None = None) -> BenchResult:
    """Peak memory of scoring partitions of ``sizes`` images, and the bytes per stored mask."""
    result = BenchResult("memory.score_partition", params={
        "partition_sizes": list(sizes), "preset": preset, "size": size, "k": k,
        "images_per_call": images_per_call, "device": str(device),
        "measured_in": "a child process per partition size (VmHWM, reset after set-up)"})
    runs = [_run_child(n_images=n, preset=preset, size=size, images_per_call=images_per_call, k=k,
                       device=str(device), threads=threads) for n in sizes]
    mib = 2.0 ** 20
    for run in runs:
        n = run["n_images"]
        result.values[f"peak RSS, {n} images (MiB)"] = round(run["peak_rss_bytes"] / mib, 1)
        result.values[f"RSS growth while scoring {n} images (MiB)"] = round(
            (run["peak_rss_bytes"] - run["rss_after_setup_bytes"]) / mib, 1)
        if "cuda_peak_allocated_bytes" in run:
            result.values[f"CUDA peak allocated, {n} images (MiB)"] = round(
                run["cuda_peak_allocated_bytes"] / mib, 1)
    largest = runs[-1]
    result.params["scorer"] = largest["scorer"]
    result.values[f"what the scorer stores, {largest['n_images']} images (bytes)"] = sum(
        largest["stored_tensors_bytes"].values())
    result.values["what the scorer stores, bytes/image"] = round(
        sum(largest["stored_tensors_bytes"].values()) / largest["n_images"])
    result.values[f"stored masks, {largest['n_images']} images, bool (bytes)"] = largest["stored_bool_bytes"]
    result.values[f"stored masks, {largest['n_images']} images, packed (bytes)"] = largest["stored_packed_bytes"]
    per_image = mask_bytes_per_image(size, size)
    result.values["mask bytes/image, bool"] = per_image["bool_mask"]
    result.values["mask bytes/image, packed bits"] = per_image["packed_bits"]
    result.values["float32 masked image copy bytes/image"] = per_image["float32_image_copy"]
    if len(runs) >= 2:
        small, large = runs[0], runs[-1]
        growth = large["peak_rss_bytes"] / small["peak_rss_bytes"]
        result.ratios[f"peak RSS {large['n_images']} / {small['n_images']} images"] = growth
        result.add_target(f"peak RSS {large['n_images']} / {small['n_images']} images", growth,
                          at_most=1.1, description="streaming: the peak does not grow with the partition")
    result.values["runs"] = runs
    return result
