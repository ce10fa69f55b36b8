"""How fast the engine trains, against an older engine and against the bare step it is made of.

Three figures, measured in one session:

* **engine against a reference commit** (default ``2a67cec``, the engine before issue 13): the
  reference is checked out once with ``git worktree add`` into ``runs/bench/engine-<commit>``
  (git ignores ``runs/``), and each engine runs random-masking pretraining and scratch
  fine-tuning in its own subprocess (``benchmarks/engine_child.py`` with ``PYTHONPATH`` set to
  its tree), for each budget (``fast`` on synthetic fields, ``cwfid_fast``, ``study_cpu``).
  Runs alternate (old, new, new, old, ...) so that a neighbour's load falls on both. The figure
  is the engine's own per-epoch training images/s (wall clock; median over the epochs after the
  first, which pays for start-up), with images per CPU second of whole epochs (training,
  validation, checkpoints: the difference of a 4-epoch and a 1-epoch run) alongside; the ratio
  new / old is the result, not the absolute rate;
* **the bare step**, the limit: forward, backward and Adam of the same network and loss on a
  batch already in memory (no data loading, masking or bookkeeping), in the engine's precision
  and memory layout; the same step with pytorch-msssim's MS-SSIM, without channels-last and
  under bf16 autocast give the before / after ratio of each adopted change, and the same step with
  another thread count (all cores when the suite runs one thread) shows the thread setting;
* **FLOP/s of a training step** (``torch.utils.flop_counter``, forward and backward) as a fraction
  of this CPU's measured matrix-multiply peak in the same precision (a 1024^3 ``matmul``).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .harness import BenchResult, compare

__all__ = ["BUDGETS", "reference_tree", "bench_engine", "bench_bare_step", "matmul_peak"]

REPO = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).resolve().parent / "engine_child.py"

BUDGETS: dict[str, tuple[str, list[str]]] = {
    "fast (synthetic)": ("fast", []),
    "fast (cwfid)": ("cwfid_fast", []),
    "study (cwfid)": ("study_cpu", []),
}
"""Budget name -> (config, overrides). ``cwfid_fast`` is the ``fast`` preset on CWFID."""


def reference_tree(commit: str, folder: Path) -> Path:
    """A checkout of ``commit`` at ``folder`` (``git worktree add --detach``), made once."""
    if not (folder / "smir_lib").is_dir():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--force", "--detach",
                        str(folder), commit], check=True, capture_output=True, text=True)
    return folder


def _data_dir() -> str | None:
    """``$SMIR_DATA_DIR``, else the folder above the CWFID copy this tree finds (None: none)."""
    if os.environ.get("SMIR_DATA_DIR"):
        return os.environ["SMIR_DATA_DIR"]
    try:
        from smir_lib.data import get_dataset

        return str(Path(get_dataset("cwfid", "pool").root).parent)
    except Exception:  # no CWFID here: the CWFID budgets report it
        return None


def _run_child(tree: Path, kind: str, config: str, overrides: list[str], epochs: list[int],
               threads: int, data_dir: str | None) -> dict:
    """One engine run in a subprocess; its JSON line plus the CPU seconds of it and its workers."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(threads)}
    if data_dir:
        env["SMIR_DATA_DIR"] = data_dir
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as run_dir:
        done = subprocess.run([sys.executable, str(CHILD), "--kind", kind, "--config", config,
                               "--epochs", *map(str, epochs), "--threads", str(threads), "--run-dir",
                               run_dir, *overrides], cwd=run_dir, env=env, capture_output=True,
                              text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{tree} {kind} {config} failed: {done.stderr.strip()[-800:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    if not Path(out["smir_lib"]).resolve().is_relative_to(tree.resolve()):
        raise RuntimeError(f"the child imported {out['smir_lib']}, not the engine of {tree}")
    out["process_tree_cpu_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return out


def _wall_rate(child: dict) -> float:
    """The engine's training images/s (wall): median over the longest run's epochs after the first."""
    rates = child["runs"][-1]["images_per_s"]
    return statistics.median(rates[1:] if len(rates) > 1 else rates)


def _cpu_rate(child: dict) -> float:
    """Images per CPU second of the epochs the longest run has over the shorter warm one."""
    short, long = child["runs"][-2], child["runs"][-1]
    extra_epochs = long["epochs"] - short["epochs"]
    return extra_epochs * long["images_per_epoch"] / (long["cpu_s"] - short["cpu_s"])


def bench_engine(*, reference: str = "2a67cec", budgets: dict[str, tuple[str, list[str]]] | None = None,
                 kinds: tuple[str, ...] = ("pretrain", "finetune"), epochs: tuple[int, int] = (1, 4),
                 repeats: int = 2, threads: int = 1, log: Callable[[str], None] = print,
                 workdir: Path | None = None) -> BenchResult:
    """Engine images/s of this tree against ``reference``'s, per budget and kind (see module doc).

    Each child runs 1 epoch (warm-up: imports, lazy initialisation), then ``epochs[0]`` and
    ``epochs[1]`` epochs. Two figures per engine: the engine's own training images/s (wall
    clock, median over the long run's epochs after the first), on which the targets are judged,
    as the issue asks for images/s of training steps; and images per CPU second of whole epochs
    (the long run's extra epochs over the short one: training, validation and checkpoints),
    which a neighbour's load does not move (with ``workers=0``, as the presets have).
    """
    budgets = BUDGETS if budgets is None else budgets
    result = BenchResult("engine", params={"reference": reference, "epochs": list(epochs),
                                           "repeats": repeats, "threads": threads,
                                           "clock": "wall (targets); CPU seconds of whole epochs (info)"})
    workdir = Path(workdir or REPO / "runs" / "bench")  # git ignores runs/; the checkout is reused
    try:
        old = reference_tree(reference, workdir / f"engine-{reference}")
    except subprocess.CalledProcessError as err:
        result.notes.append(f"skipped: cannot check out {reference}: {err.stderr.strip()[:200]}")
        return result
    trees = {"reference": old, "this": REPO}
    data_dir = _data_dir()
    for budget, (config, overrides) in budgets.items():
        for kind in kinds:
            runs: dict[str, list[dict]] = {"reference": [], "this": []}
            try:
                for r in range(repeats):  # old new, new old, ...
                    for side in (("reference", "this") if r % 2 == 0 else ("this", "reference")):
                        log(f"[bench]   engine {budget} {kind}: {side} ({r + 1}/{repeats})")
                        runs[side].append(_run_child(trees[side], kind, config, overrides,
                                                     [1, *epochs], threads, data_dir))
            except (RuntimeError, json.JSONDecodeError) as err:
                result.notes.append(f"{budget} {kind}: skipped: {str(err).splitlines()[-1][:300]}")
                continue
            key = f"{budget} {kind}"
            for what, rate in (("training, wall clock", _wall_rate),
                               ("whole epochs, CPU clock", _cpu_rate)):
                rates = {side: statistics.median(rate(x) for x in rs) for side, rs in runs.items()}
                result.values[f"{key}: images/s ({what}), {reference}"] = round(rates["reference"], 1)
                result.values[f"{key}: images/s ({what}), this engine"] = round(rates["this"], 1)
                name = f"{key}: this / {reference} images/s ({what})"
                result.ratios[name] = speedup = rates["this"] / rates["reference"]
                if budget.startswith("fast") and what.startswith("training"):
                    bound = 5.0 if "cwfid" in budget else 3.0
                    result.add_target(name, speedup, at_least=bound,
                                      description=f"the fast budget trains >= {bound:g}x faster than {reference}")
            result.params[f"{key} config"] = runs["this"][0]["config"]
            result.params[f"{key} runs"] = {side: [{"wall_images_per_s": round(_wall_rate(x), 2),
                                                    "cpu_images_per_s": round(_cpu_rate(x), 2),
                                                    "cpu_s": [round(y["cpu_s"], 2) for y in x["runs"]]}
                                                   for x in rs] for side, rs in runs.items()}
    return result


def _step_sides(cfg, batch: int, *, device: torch.device) -> dict[str, tuple[Callable[[], None], Callable[[], None]]]:
    """Bare training steps of ``cfg``'s network and loss: name -> (step, one forward+backward)."""
    from pytorch_msssim import ms_ssim as reference_ms_ssim

    from smir_lib.engine.schedule import build_optimizer
    from smir_lib.losses import reconstruction_loss
    from smir_lib.models import build_model
    from smir_lib.patches import mask_images, patch_grid, random_patch_mask
    from smir_lib.runtime import autocast, prepare_model, to_device

    gen = torch.Generator().manual_seed(0)
    size = cfg.image_size
    grid = patch_grid(size, size, cfg.n_patches)
    target = torch.randn(batch, 3, size, size, generator=gen)  # (B, 3, S, S), normalised
    masked = mask_images(target, random_patch_mask(batch, grid, cfg.mask_ratio, generator=gen), grid)

    def pytorch_msssim_loss(pred: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        pred = pred.float()
        return (pred - tgt).abs().mean() + 1.0 - reference_ms_ssim(pred, tgt, data_range=1.0,
                                                                   win_size=cfg.msssim_win)

    def engine_loss(pred: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        return reconstruction_loss(pred, tgt, win_size=cfg.msssim_win)

    def make(variant, loss_fn) -> tuple[Callable[[], None], Callable[[], None]]:
        model = prepare_model(build_model(variant), device, variant.channels_last).train()
        optimizer = build_optimizer(model, variant.lr)
        x, y = to_device(masked, device, variant.channels_last), to_device(target, device, variant.channels_last)

        def forward_backward() -> None:
            with autocast(variant.amp, device):
                pred = model(x)
            loss_fn(pred, y).backward()

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            forward_backward()
            optimizer.step()

        return step, forward_backward

    bf16 = "bf16" if cfg.amp != "bf16" else "off"
    return {
        "bare step (engine defaults)": make(cfg, engine_loss),
        "bare step, pytorch-msssim loss": make(cfg, pytorch_msssim_loss),
        "bare step, no channels-last": make(cfg.replace(channels_last=False), engine_loss),
        f"bare step, amp={bf16}": make(cfg.replace(amp=bf16), engine_loss),
    }


def _with_threads(step: Callable[[], None], threads: int) -> Callable[[], None]:
    """``step`` run with ``threads`` torch threads, the previous setting restored after it."""

    def run() -> None:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            step()
        finally:
            torch.set_num_threads(before)

    return run


def matmul_peak(dtype: torch.dtype, *, n: int = 1024, repeats: int = 5, clock: str = "wall") -> float:
    """This CPU's ``n^3`` matrix-multiply FLOP/s in ``dtype`` (best of ``repeats``, after warm-up)."""
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=gen).to(dtype) for _ in range(2))
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time() if clock == "cpu" else time.perf_counter()
        a @ b
        best = min(best, (time.process_time() if clock == "cpu" else time.perf_counter()) - start)
    return 2 * n**3 / best


def _step_flops(forward_backward: Callable[[], None]) -> int:
    """Floating-point operations of one forward + backward (matmuls and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        forward_backward()
    return counter.get_total_flops()


def bench_bare_step(*, config: str = "fast", batch: int | None = None, device: torch.device,
                    warmup: int = 1, repeats: int = 3, clock: str = "wall",
                    engine_images_per_s: float | None = None) -> BenchResult:
    """The limit (bare step) of ``config``, the adopted changes' ratios, and FLOP/s against peak."""
    from smir_lib.engine.config import load_config
    from smir_lib.runtime import amp_dtype

    cfg = load_config(config, {"progress": False})
    batch = batch or cfg.batch_for_pretraining
    sides = _step_sides(cfg, batch, device=device)
    timed = {name: (step, batch) for name, (step, _) in sides.items()}
    threads, cores = torch.get_num_threads(), os.cpu_count() or 1
    other_threads = cores if threads == 1 else 1
    if device.type == "cpu" and cores > 1:  # thread settings: the default step with other threads
        timed[f"bare step, {other_threads} threads (wall clock)"] = (
            _with_threads(sides[next(iter(sides))][0], other_threads), batch)
    timings = compare(timed, device=device, warmup=warmup, repeats=repeats, clock=clock)
    dtype = amp_dtype(cfg.amp, device)
    result = BenchResult(f"bare_step[{config}]", params={
        "config": config, "model": cfg.model, "batch": batch, "size": cfg.image_size,
        "msssim_win": cfg.msssim_win, "amp": cfg.amp, "precision": str(dtype or torch.float32),
        "channels_last": cfg.channels_last, "device": str(device), "warmup": warmup,
        "repeats": repeats, "clock": clock})
    result.add_timings(timings)
    names = list(sides)
    base = timings[names[0]]
    for name in names[1:]:
        result.ratios[f"{name} / engine defaults (time per image)"] = timings[name].per_item / base.per_item
    for name in list(timed)[len(names):]:  # threads: CPU seconds add up over threads, so wall
        wall = statistics.median(timings[name].wall_seconds) / statistics.median(base.wall_seconds)
        result.ratios[f"{name} / {threads} thread(s) (wall time per image)"] = wall
    result.values["bare step images/s"] = base.items_per_second
    flops = _step_flops(sides[names[0]][1])
    peak_dtype = dtype or torch.float32
    if device.type == "cpu":
        peak = matmul_peak(peak_dtype, clock=clock)
        achieved = flops / base.median
        result.values["step GFLOP (forward + backward)"] = flops / 1e9
        result.values[f"matmul peak GFLOP/s ({str(peak_dtype).replace('torch.', '')})"] = peak / 1e9
        result.values["achieved GFLOP/s"] = achieved / 1e9
        result.ratios["achieved / matmul peak FLOP/s"] = achieved / peak
    if engine_images_per_s is not None:  # in the suite's clock (CPU: the engine's whole epochs)
        name = f"engine pretraining / bare step images/s ({clock} clock)"
        result.ratios[name] = frac = engine_images_per_s / base.items_per_second
        result.add_target(name, frac, at_least=0.5, description="the engine reaches half of its bare step")
    return result
