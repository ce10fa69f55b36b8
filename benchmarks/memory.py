"""How much memory scoring a partition takes, and how little its masks take to store.

Scoring a pretraining partition (SPEC: each of the 10 steps scores a tenth of the pool) streams
the images through :func:`smir_lib.selective.selective_mask` a chunk at a time and keeps only the
grid masks: one bit of information per patch, never a masked copy of the image. So the peak
memory should not grow with the partition size, and the stored result should be tiny:

* a grid mask as ``torch.bool`` is 1 byte per patch: 441 B per 256x256 image;
* packed with ``numpy.packbits`` it is 1 bit per patch: ``ceil(441 / 8) = 56`` B per image;
* a float32 masked copy of the image would be ``3 * 256 * 256 * 4 = 786,432`` B.

The peak resident set size (RSS) is measured in a fresh child process (``resource.getrusage``'s
``ru_maxrss``), so nothing the parent allocated earlier hides in the figure; on a GPU the peak
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
    """This process's peak RSS so far (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


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
    """Score ``n_images`` synthetic pool images, streamed, keeping only their grid masks.

    Runs in the calling process; :func:`bench_memory` calls it in a child. Returns RSS before
    scoring (after imports and model set-up), peak RSS, and the stored masks' sizes.
    """
    from smir_lib.data import get_dataset
    from smir_lib.data.transforms import normalize
    from smir_lib.models import build_unet
    from smir_lib.patches import patch_grid
    from smir_lib.selective import selective_mask

    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    grid = patch_grid(size, size)
    model = build_unet(preset).to(dev).eval()
    pool = get_dataset("synthetic", "pool", n_images=n_images, size=size, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    masks = torch.empty(n_images, *grid.shape, dtype=torch.bool)  # (N, gh, gw): the whole result
    # Warm up on one image so lazy allocations (oneDNN, allocator) count in the baseline.
    selective_mask(model, normalize(pool[0][None]).to(dev), grid, k=k, generator=gen)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    baseline = _peak_rss_bytes()
    start = time.perf_counter()
    for first in range(0, n_images, images_per_call):
        batch = torch.stack([pool[i] for i in range(first, min(first + images_per_call, n_images))])
        result = selective_mask(model, normalize(batch).to(dev), grid, k=k, generator=gen)
        masks[first:first + len(batch)] = result.mask.cpu()  # only the bits are kept
    seconds = time.perf_counter() - start
    packed = np.packbits(masks.numpy().reshape(n_images, -1), axis=1)  # (N, ceil(441 / 8)) uint8
    out = {"n_images": n_images, "preset": preset, "size": size, "k": k,
           "images_per_call": images_per_call, "device": device, "threads": torch.get_num_threads(),
           "rss_after_setup_bytes": baseline, "peak_rss_bytes": _peak_rss_bytes(),
           "seconds": round(seconds, 3), "images_per_s": round(n_images / seconds, 3),
           "stored_bool_bytes": masks.numel() * masks.element_size(),
           "stored_packed_bytes": int(packed.nbytes)}
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
        "measured_in": "a child process per partition size (resource.getrusage ru_maxrss)"})
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
