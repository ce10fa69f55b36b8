"""Can the data pipeline keep the model fed? Images/s of decode + augment, against training.

For each dataset (``synthetic``: images rendered on demand; ``cwfid``: 1296x966 PNGs decoded
from ``../shared/data/cwfid``) we time the *pretraining* input pipeline: the ``pool`` split with
:class:`smir_lib.data.transforms.TrainAugment` (random resized crop 256, flip, colour jitter)
as its transform, read through a ``torch.utils.data.DataLoader``:

* ``one process``: ``num_workers=0``, what one CPU core delivers;
* ``loader (workers=N)``: the loader with the default number of workers (``workers`` of the
  engine's default config, 4; the ``fast`` preset uses 0), as training runs it.

The loader is not the bottleneck when its images/s exceed the training step's images/s (from
``benchmarks/training_step.py`` in the same run). With ``--clock cpu`` (training timed in CPU
seconds on one thread) the comparison is per CPU second: the one-process pipeline against the
training step, since the workers' time cannot be read from this process's CPU clock. On a CPU-only machine the loader's workers and
the training step share the same cores, so the comparison there is optimistic for both; on a GPU
machine the training step runs on the GPU and the comparison is the real one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader

from .harness import BenchResult, Timing, compare, ratio

__all__ = ["default_num_workers", "bench_data_pipeline"]


def default_num_workers() -> tuple[int, str]:
    """The loader workers training uses by default (the engine's default config), and where from."""
    try:
        from smir_lib.engine.config import load_config

        return int(load_config().workers), "smir_lib.engine.config default (paper preset) workers"
    except Exception:  # the engine's config is missing or has no worker count
        return min(4, os.cpu_count() or 1), "min(4, cores): no engine config found"


def _pool_dataset(name: str, n_images: int, size: int):
    from smir_lib.data import get_dataset
    from smir_lib.data.transforms import TrainAugment

    augment = TrainAugment(size=size)
    if name == "synthetic":
        return get_dataset("synthetic", "pool", n_images=n_images, size=size * 5 // 4,
                           transform=augment)
    return get_dataset(name, "pool", transform=augment)


def _images_of(batch: Any) -> torch.Tensor:
    return batch[0] if isinstance(batch, (list, tuple)) else batch


def _time_loader(dataset, *, batch: int, workers: int, n_batches: int, repeats: int,
                 clock: str = "wall") -> Timing:
    """Median seconds per ``n_batches`` batches; worker start-up and the first batch excluded.

    With workers the work happens in other processes, so only the wall clock can time it.
    """
    clock = clock if workers == 0 else "wall"
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0, drop_last=True,
                        generator=torch.Generator().manual_seed(0))
    timing = Timing(f"loader (workers={workers})" if workers else "one process (workers=0)",
                    items=batch * n_batches, clock=clock)
    iterator = iter(loader)
    next(iterator)  # warm-up: worker start-up, first decode
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(n_batches):
            try:
                images = _images_of(next(iterator))
            except StopIteration:
                iterator = iter(loader)
                images = _images_of(next(iterator))
            assert images.shape[0] == batch
        timing.wall_seconds.append(time.perf_counter() - start)
        timing.cpu_seconds.append(time.process_time() - cpu_start)
        timing.seconds.append(timing.cpu_seconds[-1] if clock == "cpu" else timing.wall_seconds[-1])
    del iterator
    return timing


def bench_data_pipeline(*, dataset: str = "synthetic", batch: int = 8, n_batches: int = 4,
                        size: int = 256, workers: int | None = None, repeats: int = 3,
                        clock: str = "wall", training_images_per_s: Mapping[str, float] | None = None) -> BenchResult:
    """Images/s of the pretraining input pipeline of ``dataset``, in one process and in a loader."""
    workers_source = "--workers"
    if workers is None:
        workers, workers_source = default_num_workers()
    result = BenchResult(f"data_pipeline[{dataset}]", params={
        "dataset": dataset, "split": "pool", "batch": batch, "batches_per_run": n_batches,
        "crop": size, "workers": workers, "workers_from": workers_source, "repeats": repeats,
        "clock": clock,
        "augment": "TrainAugment(size=256): RandomResizedCrop(0.25..1), hflip 0.5, jitter 0.2 p 0.5"})
    try:
        ds = _pool_dataset(dataset, n_images=batch * (n_batches + 1) * 2, size=size)
    except FileNotFoundError as err:  # DatasetNotFoundError: say so instead of failing the run
        result.notes.append(f"skipped: {err}".splitlines()[0])
        return result
    if len(ds) < batch:
        result.notes.append(f"skipped: the {dataset} pool has {len(ds)} images, fewer than a batch")
        return result
    result.params["pool_images"] = len(ds)
    sides = {"one process (workers=0)": _time_loader(ds, batch=batch, workers=0, n_batches=n_batches,
                                                     repeats=repeats, clock=clock)}
    if workers > 0:
        sides[f"loader (workers={workers})"] = _time_loader(ds, batch=batch, workers=workers,
                                                            n_batches=n_batches, repeats=repeats)
    result.add_timings(sides)
    one, loader = sides["one process (workers=0)"], list(sides.values())[-1]
    result.values["loader images/s"] = loader.items_per_second
    # Compare like with like: with the CPU clock (training timed in CPU seconds), the target is
    # judged per CPU second (one process: images a core decodes and augments per second of its
    # time, against images a core trains on); with the wall clock, the loader with its workers.
    judged = one if clock == "cpu" else loader
    what = "one process, CPU clock" if clock == "cpu" else "loader, wall clock"
    for model_name, train_ips in (training_images_per_s or {}).items():
        key = f"data / training images/s [{model_name}] ({what})"
        r = judged.items_per_second / train_ips
        result.ratios[key] = r
        result.add_target(key, r, at_least=1.0,
                          description="the input pipeline delivers what the training step consumes")
        if clock == "cpu" and loader is not one:
            result.ratios[f"loader wall / training CPU images/s [{model_name}] (info)"] = (
                loader.items_per_second / train_ips)
    return result


AUGMENT_SHAPES: tuple[tuple[int, int], ...] = ((966, 1296), (512, 512), (256, 256))
"""Image sizes :func:`bench_augment` times: a CWFID frame, a pool tile, a synthetic field."""


def bench_augment(*, size: int = 128, shapes: tuple[tuple[int, int], ...] = AUGMENT_SHAPES,
                  items: int = 16, device: torch.device | None = None, warmup: int = 1,
                  repeats: int = 3, clock: str = "wall") -> BenchResult:
    """One training item's augmentation: ``TrainAugment`` (crop box first, labels gathered,
    undrawn jitter skipped) against ``benchmarks.reference.augment_whole_image`` (kornia's
    pipeline on the whole image, after the copy of the cached item it needed), on ``uint8``
    images with a long label, as the fine-tuning set reads them from the cache. The two give the
    same tensors bit for bit (checked here on the first item, and in the tests)."""
    from smir_lib.data.transforms import TrainAugment

    from .reference import augment_whole_image

    device = device or torch.device("cpu")
    result = BenchResult("augment_item", params={"size": size, "items": items, "repeats": repeats,
                                                 "clock": clock, "shapes": [list(s) for s in shapes]})
    aug = TrainAugment(size)
    gen = torch.Generator().manual_seed(0)
    for h, w in shapes:
        images = torch.randint(0, 256, (items, 3, h, w), dtype=torch.uint8, generator=gen)
        labels = torch.randint(0, 3, (items, h, w), generator=gen)

        def run(fn):
            return lambda: [fn(aug, images[i], labels[i], generator=torch.Generator().manual_seed(i))
                            for i in range(items)]

        boxed, whole = run(TrainAugment.__call__), run(augment_whole_image)
        same = all(torch.equal(x, y) for x, y in zip(boxed()[0], whole()[0]))
        names = f"TrainAugment [{h}x{w}]", f"whole image [{h}x{w}]"
        timings = compare({names[0]: (boxed, items), names[1]: (whole, items)}, device=device,
                          warmup=warmup, repeats=repeats, clock=clock)
        result.add_timings(timings)
        result.ratios[f"whole image / TrainAugment per item [{h}x{w}]"] = ratio(timings[names[1]], timings[names[0]])
        result.values[f"same tensors [{h}x{w}]"] = same
    return result
