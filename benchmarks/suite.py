"""Run every benchmark, print one table, write one JSON file: ``python -m benchmarks``.

Three size profiles:

* ``--quick``: seconds; tiny model, small images, two repeats. A smoke test of the machinery
  (``tests/test_benchmarks.py`` runs it); its figures mean little.
* default: the sizes of the issue (256x256, K = 5, paper and tiny models) at batch sizes that
  finish in a few minutes on a 2-core CPU.
* ``--full``: larger batches, more repeats, and a 1000-image partition for the memory figure.

On a CUDA machine the batches are larger and the paper model runs with AMP (``--no-amp`` to
turn it off). Use ``--only scoring training engine data memory end_to_end`` to run a subset.
The ``engine`` section (``benchmarks/engine.py``) checks out ``--reference`` (default 2a67cec) in
a temporary git worktree and runs both engines in subprocesses; ``--quick`` runs only its bare
step.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from smir_lib.runtime import resolve_device

from .data_pipeline import AUGMENT_SHAPES
from .harness import BenchResult, describe_machine, format_table

__all__ = ["Profile", "PROFILES", "run_suite", "main"]

SECTIONS = ("scoring", "training", "engine", "data", "memory", "end_to_end")


@dataclass(frozen=True)
class Profile:
    """Every size the benchmarks use; see the module docstring for the three presets."""

    size: int = 256  # image side (a 21x21 grid at 256)
    k: int = 5  # random masks per image
    map_images: int = 2  # (a): images whose K reconstructions are scored
    loop_images: int = 2  # (a): reconstructions the per-patch loop scores
    mask_images: dict[str, int] = field(default_factory=lambda: {"tiny": 4, "resnet34": 2})  # (b)
    train_batch: dict[str, int] = field(default_factory=lambda: {"tiny": 8, "resnet34": 2})
    train_size: int = 256  # MS-SSIM with its 11x11 window needs > 160 px
    data_datasets: tuple[str, ...] = ("synthetic", "cwfid")
    data_batch: int = 8
    data_batches: int = 4
    data_workers: int | None = None  # None: the engine's default
    augment_shapes: tuple[tuple[int, int], ...] = AUGMENT_SHAPES
    augment_items: int = 16
    memory_sizes: tuple[int, ...] = (10, 50)
    memory_size: int = 256
    memory_images_per_call: int = 8
    warmup: int = 1
    repeats: int = 3
    # engine (issue 13): the engine against an older commit, each budget in subprocesses
    engine_budgets: tuple[str, ...] = ("fast (synthetic)", "fast (cwfid)", "study (cwfid)")
    engine_epochs: tuple[int, int] = (1, 4)  # after a 1-epoch warm-up run
    engine_repeats: int = 2
    bare_batch: int | None = None  # None: the config's pretraining batch


PROFILES: dict[str, Profile] = {
    "quick": Profile(size=96, k=2, map_images=1, loop_images=1, mask_images={"tiny": 1},
                     train_batch={"tiny": 2}, train_size=176, data_datasets=("synthetic",),
                     data_batch=2, data_batches=1, data_workers=0, augment_shapes=((200, 260),),
                     augment_items=2, memory_sizes=(2,),
                     memory_size=64, memory_images_per_call=1, warmup=1, repeats=2,
                     engine_budgets=(), bare_batch=2),
    "default": Profile(),
    "full": Profile(map_images=8, loop_images=4, mask_images={"tiny": 8, "resnet34": 8},
                    train_batch={"tiny": 16, "resnet34": 8}, data_batch=16, data_batches=8,
                    memory_sizes=(100, 1000), repeats=5),
}


def _for_gpu(profile: Profile) -> Profile:
    """A GPU takes bigger batches: 4x the images per call (the quick profile stays small)."""
    return replace(profile, map_images=profile.map_images * 4,
                   mask_images={m: n * 4 for m, n in profile.mask_images.items()},
                   train_batch={m: n * 4 for m, n in profile.train_batch.items()},
                   memory_images_per_call=profile.memory_images_per_call * 4)


def run_suite(profile: Profile, *, device: torch.device, sections: tuple[str, ...] = SECTIONS,
              amp: bool | None = None, clock: str = "wall", reference: str = "2a67cec",
              notebook_run: list[Path] | None = None,
              make_test_seconds: float | None = None, make_test_log: Path | None = None,
              log=print) -> list[BenchResult]:
    """Run the chosen sections in order and return their results."""
    from . import data_pipeline, end_to_end, engine, memory, scoring, training_step

    amp = (device.type == "cuda") if amp is None else (amp and device.type == "cuda")
    timing = dict(device=device, warmup=profile.warmup, repeats=profile.repeats, clock=clock)
    results: list[BenchResult] = []
    training_ips: dict[str, float] = {}

    def run(label: str, fn, **kwargs) -> BenchResult:
        log(f"[bench] {label} ...")
        start = time.perf_counter()
        result = fn(**kwargs)
        result.params["wall_s"] = round(time.perf_counter() - start, 1)
        log(f"[bench] {label} done in {result.params['wall_s']:.0f} s")
        results.append(result)
        return result

    if "scoring" in sections:
        run("scoring (a): patch-loss map vs per-patch loop", scoring.bench_patch_loss_map,
            images=profile.map_images, k=profile.k, size=profile.size,
            loop_images=profile.loop_images, **timing)
        for preset, n in profile.mask_images.items():
            run(f"scoring (b): selective_mask [{preset}] vs forward floor",
                scoring.bench_selective_mask, preset=preset, images=n, k=profile.k,
                size=profile.size, amp=amp and preset == "resnet34", **timing)
    if "training" in sections or "data" in sections:
        for preset, n in profile.train_batch.items():
            result = run(f"training step [{preset}]", training_step.bench_training_step,
                         preset=preset, batch=n, size=profile.train_size,
                         amp=amp and preset == "resnet34", inline_augment=preset == "tiny",
                         **timing)
            training_ips[preset] = result.values["training images/s (full step)"]
    if "engine" in sections:
        engine_ips = None
        if profile.engine_budgets and device.type == "cpu":
            result = run(f"engine against {reference} (subprocesses)", engine.bench_engine,
                         reference=reference, epochs=profile.engine_epochs,
                         repeats=profile.engine_repeats, threads=torch.get_num_threads(), log=log,
                         budgets={b: engine.BUDGETS[b] for b in profile.engine_budgets})
            what = "whole epochs, CPU clock" if clock == "cpu" else "training, wall clock"
            engine_ips = result.values.get(f"fast (synthetic) pretrain: images/s ({what}), this engine")
        for config in ("fast", "study_cpu") if profile.engine_budgets else ("fast",):
            run(f"bare step [{config}] and FLOP/s", engine.bench_bare_step, config=config,
                batch=profile.bare_batch, engine_images_per_s=engine_ips if config == "fast" else None,
                **timing)
    if "data" in sections:
        run("augmentation of one item: box first vs whole image", data_pipeline.bench_augment,
            shapes=profile.augment_shapes, items=profile.augment_items, **timing)
        for name in profile.data_datasets:
            run(f"data pipeline [{name}]", data_pipeline.bench_data_pipeline, dataset=name,
                batch=profile.data_batch, n_batches=profile.data_batches, size=profile.size,
                workers=profile.data_workers, repeats=profile.repeats, clock=clock,
                training_images_per_s=training_ips)
    if "memory" in sections:
        run("memory: scoring a partition (child processes)", memory.bench_memory,
            sizes=profile.memory_sizes, size=profile.memory_size,
            images_per_call=profile.memory_images_per_call, k=profile.k, device=device,
            threads=torch.get_num_threads())
    if "end_to_end" in sections:
        run("end to end: notebook and make test wall times", end_to_end.bench_end_to_end,
            notebook_run=notebook_run, make_test_seconds=make_test_seconds,
            make_test_log=make_test_log)
    return results


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="seconds: a smoke test of the machinery")
    size.add_argument("--full", action="store_true", help="larger batches, 1000-image partition")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=None, help="run only these")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: the machine's logical cores; on a "
                             "shared, busy machine --threads 1 gives steadier figures)")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                        help="autocast for the paper model on CUDA (default: on with CUDA)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="figures from wall time (default) or this process's CPU time: steadier "
                             "on a busy shared CPU with --threads 1 (data loader and GPU: always wall)")
    parser.add_argument("--reference", default="2a67cec",
                        help="commit whose engine the engine section compares against (git worktree)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON file to write (default runs/bench/<timestamp>.json)")
    parser.add_argument("--notebook-run", type=Path, nargs="+", default=None,
                        help="run folder(s) of `make demo` holding timings.json (default: newest runs/*)")
    parser.add_argument("--make-test-seconds", type=float, default=None, help="wall time of make test")
    parser.add_argument("--make-test-log", type=Path, default=None,
                        help="output of .ci/run, holding 'make test took N s'")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    name = "quick" if args.quick else "full" if args.full else "default"
    device = resolve_device(args.device)
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    profile = PROFILES[name]
    if device.type == "cuda" and name != "quick":
        profile = _for_gpu(profile)
    machine = describe_machine(device)
    machine["clock"] = args.clock if device.type == "cpu" else "wall"
    print(f"[bench] profile {name}, device {device}, {threads} torch threads, "
          f"{machine['clock']} clock", flush=True)
    load = machine.get("load_average_1_5_15", [0.0])[0]
    if device.type == "cpu" and threads > 1 and load > (os.cpu_count() or 1) - 0.5:
        print(f"[bench] warning: load average {load} on {os.cpu_count()} cores: other processes "
              f"share the CPU, and {threads} OpenMP threads then wait on each other (we measured "
              "10x slower steps this way); consider --threads 1", flush=True)
    start = time.perf_counter()
    results = run_suite(profile, device=device, sections=tuple(args.only or SECTIONS), amp=args.amp,
                        clock=args.clock, reference=args.reference,
                        notebook_run=args.notebook_run, make_test_seconds=args.make_test_seconds,
                        make_test_log=args.make_test_log, log=lambda m: print(m, flush=True))
    total = time.perf_counter() - start
    machine["load_average_after"] = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    report = {"profile": name, "profile_settings": profile.__dict__ | {}, "machine": machine,
              "total_seconds": round(total, 1), "results": [r.as_dict() for r in results]}
    out = args.out or Path("runs") / "bench" / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    print()
    print(format_table(results, machine))
    print(f"\n[bench] total {total:.0f} s; JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
