"""Timing machinery shared by every benchmark: warm-up, interleaved repeats, medians, the machine.

A benchmark here is always a *comparison*: our code against a reference (a Python loop, the bare
forward passes, a simpler training step). Both sides are timed in the same process, on the same
inputs, interleaved (A B, B A, A B, ...), so that a neighbour starting a job on a shared machine
slows both sides alike instead of one of them. Each side runs ``warmup`` times untimed (lazy
initialisation, allocator growth, oneDNN kernel selection), then ``repeats`` times timed; we
report the median, which a single slow outlier cannot move.

On a GPU every timed call is wrapped in ``torch.cuda.synchronize()``: CUDA kernels run
asynchronously, and without a sync the clock would stop before the work is done.

Two clocks are recorded for every call: wall time (``time.perf_counter``) and this process's CPU
time (``time.process_time``). Figures use the wall clock unless ``clock="cpu"``: on a CPU shared
with other busy processes, and with ``torch.set_num_threads(1)``, CPU time counts only the work
this process did and not the time it waited for a core, so it is much steadier. It is wrong for
GPU work and for work done in other processes (data-loader workers), which use the wall clock.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

__all__ = ["Timing", "BenchResult", "synchronize", "compare", "ratio", "describe_machine",
           "format_table"]


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a wall clock measures it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Wall times of one side of a comparison: ``items`` images processed by every call."""

    name: str
    items: int
    seconds: list[float] = field(default_factory=list)  # the clock the figures use
    clock: str = "wall"
    wall_seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        """Median seconds per call."""
        return statistics.median(self.seconds)

    @property
    def per_item(self) -> float:
        """Median seconds per image."""
        return self.median / self.items

    @property
    def items_per_second(self) -> float:
        """Images per second at the median."""
        return self.items / self.median

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the raw times and the derived figures."""
        return {"items": self.items, "clock": self.clock,
                "seconds": [round(s, 6) for s in self.seconds],
                "wall_seconds": [round(s, 6) for s in self.wall_seconds],
                "cpu_seconds": [round(s, 6) for s in self.cpu_seconds],
                "median_s": round(self.median, 6), "per_item_s": round(self.per_item, 6),
                "items_per_s": round(self.items_per_second, 3),
                "min_s": round(min(self.seconds), 6), "max_s": round(max(self.seconds), 6)}


def compare(sides: Mapping[str, tuple[Callable[[], Any], int]], *, device: torch.device,
            warmup: int = 1, repeats: int = 3, clock: str = "wall") -> dict[str, Timing]:
    """Time every side, interleaved, and return a :class:`Timing` per side.

    ``sides`` maps a name to ``(fn, items)``: ``fn()`` does one unit of work on ``items`` images.
    Every side is warmed up ``warmup`` times, then the sides take turns ``repeats`` times; the
    order alternates each round (A B C, C B A, ...) so that a drift in machine load does not
    favour whichever side runs first. ``clock`` (``"wall"`` or ``"cpu"``) picks the figures'
    clock; both are recorded. On a GPU the wall clock is always used.
    """
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock is {clock!r}; expected 'wall' or 'cpu'")
    if device.type == "cuda":
        clock = "wall"
    if repeats < 1:
        raise ValueError(f"repeats is {repeats}; a median needs at least 1 timed run")
    names = list(sides)
    for name in names:
        for _ in range(warmup):
            sides[name][0]()
        synchronize(device)
    timings = {name: Timing(name, sides[name][1], clock=clock) for name in names}
    for round_ in range(repeats):
        for name in (names if round_ % 2 == 0 else names[::-1]):
            fn = sides[name][0]
            synchronize(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            fn()
            synchronize(device)
            t = timings[name]
            t.wall_seconds.append(time.perf_counter() - start)
            t.cpu_seconds.append(time.process_time() - cpu_start)
            t.seconds.append(t.cpu_seconds[-1] if clock == "cpu" else t.wall_seconds[-1])
    return timings


def ratio(numerator: Timing, denominator: Timing) -> float:
    """Per-image time of ``numerator`` over that of ``denominator`` (so 1.1 = 10 % slower)."""
    return numerator.per_item / denominator.per_item


@dataclass
class BenchResult:
    """One benchmark's outcome: its settings, timings, ratios and targets, ready for JSON."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, dict[str, Any]] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add_timings(self, timings: Mapping[str, Timing]) -> None:
        """Store every side's timing under its name."""
        for name, timing in timings.items():
            self.timings[name] = timing.as_dict()

    def add_target(self, name: str, value: float, *, at_most: float | None = None,
                   at_least: float | None = None, description: str = "") -> None:
        """Record ``value`` against a bound and whether it was met."""
        met = ((at_most is None or value <= at_most) and (at_least is None or value >= at_least))
        self.targets[name] = {"value": round(value, 4), "at_most": at_most, "at_least": at_least,
                              "met": bool(met), "description": description}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on: date, CPU, cores, threads, torch, GPU, load."""
    info: dict[str, Any] = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "cuda_available": torch.cuda.is_available(),
    }
    try:
        info["load_average_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    return info


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def format_table(results: list[BenchResult], machine: Mapping[str, Any]) -> str:
    """A plain-text table: one line per timed side (images/s, median), then ratios and targets."""
    lines = [f"SMIR benchmarks, {machine['date_utc']}: {machine['cpu']}, {machine['logical_cores']} "
             f"cores, torch {machine['torch']} ({machine['torch_threads']} threads), "
             f"device {machine['device']}" + (f" ({machine['gpu']})" if "gpu" in machine else "")
             + f", {machine.get('clock', 'wall')} clock, load average "
             f"{machine.get('load_average_1_5_15', '?')}",
             ""]
    header = f"{'benchmark':<34} {'side':<34} {'images/s':>10} {'median s':>10} {'runs':>5}"
    lines += [header, "-" * len(header)]
    for result in results:
        for side, t in result.timings.items():
            lines.append(f"{result.name:<34} {side:<34} {_fmt(t['items_per_s']):>10} "
                         f"{t['median_s']:>10.4f} {len(t['seconds']):>5}")
    lines += ["", f"{'benchmark':<34} {'figure':<44} {'value':>10}  target", "-" * 100]
    for result in results:
        for name, value in result.ratios.items():
            target = result.targets.get(name)
            bound = ""
            if target:
                bound = (f"<= {target['at_most']}" if target["at_most"] is not None
                         else f">= {target['at_least']}")
                bound += "  met" if target["met"] else "  MISSED"
            lines.append(f"{result.name:<34} {name:<44} {_fmt(value):>10}  {bound}")
        for name, value in result.values.items():
            if isinstance(value, (int, float, str)):
                lines.append(f"{result.name:<34} {name:<44} {_fmt(value):>10}")
        for note in result.notes:
            lines.append(f"{result.name:<34} note: {note}")
    return "\n".join(lines)
