"""Markdown tables from a benchmark JSON, for ``benchmarks/RESULTS.md`` (no hand copying).

``python -m benchmarks.markdown runs/bench/<timestamp>.json [more.json ...]`` prints the machine
line, the timed sides (images/s, median) and the figures with their targets;
``--performance`` prints instead the engine's performance table (issue 13): the engine against
the reference commit, the bare step, each adopted change and the scoring overhead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["to_markdown", "performance_table"]


def _cell(text: str) -> str:
    """Table-safe text: a ``|`` inside a cell would end it."""
    return str(text).replace("|", "\\|")


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def to_markdown(report: dict[str, Any]) -> str:
    """The report of one ``python -m benchmarks`` run as Markdown."""
    m = report["machine"]
    lines = [f"Run of {m['date_utc']}, profile `{report['profile']}`: {m['cpu']}, "
             f"{m['logical_cores']} logical cores, torch {m['torch']}, {m['torch_threads']} torch "
             f"thread(s), device `{m['device']}`" + (f" ({m['gpu']})" if "gpu" in m else "")
             + f", {m.get('clock', 'wall')} clock, load average at start "
             f"{m.get('load_average_1_5_15')}, after {m.get('load_average_after')}; "
             f"{report['total_seconds']:.0f} s in all.", "",
             "| benchmark | side | images/s | median s | runs |", "|---|---|---:|---:|---:|"]
    for r in report["results"]:
        for side, t in r["timings"].items():
            lines.append(f"| {r['name']} | {_cell(side)} | {_num(t['items_per_s'])} | "
                         f"{t['median_s']:.4f} | {len(t['seconds'])} |")
    lines += ["", "| benchmark | figure | value | target | met |", "|---|---|---:|---|---|"]
    for r in report["results"]:
        for name, value in r["ratios"].items():
            t = r["targets"].get(name)
            bound = "" if not t else (f"<= {t['at_most']}" if t["at_most"] is not None
                                      else f">= {t['at_least']}")
            met = "" if not t else ("yes" if t["met"] else "**no**")
            lines.append(f"| {r['name']} | {_cell(name)} | {_num(value)} | {bound} | {met} |")
        for name, value in r["values"].items():
            if isinstance(value, (int, float, str)):
                lines.append(f"| {r['name']} | {_cell(name)} | {_cell(_num(value))} | | |")
    return "\n".join(lines)


def _target(r: dict[str, Any], name: str) -> str:
    t = r["targets"].get(name)
    if not t:
        return ""
    bound = f"<= {t['at_most']}" if t["at_most"] is not None else f">= {t['at_least']}"
    return f"{bound} ({'met' if t['met'] else '**missed**'})"


def performance_table(report: dict[str, Any]) -> str:
    """The performance table of benchmarks/RESULTS.md: every engine, bare-step and scoring ratio of one run."""
    m = report["machine"]
    lines = [f"Measured {m['date_utc']} on {m['cpu']} ({m['logical_cores']} cores, "
             f"{m['torch_threads']} torch thread(s), load average {m.get('load_average_1_5_15')}), "
             f"`python -m benchmarks` profile `{report['profile']}`, {m.get('clock', 'wall')} clock "
             "for the in-process timings.", "", "| figure | measured | target |", "|---|---:|---|"]
    for r in report["results"]:
        keep = r["name"] == "engine" or r["name"].startswith(("bare_step", "scoring.selective_mask"))
        if not keep:
            continue
        prefix = "" if r["name"] == "engine" else f"{r['name']}: "
        for name, value in r["ratios"].items():
            lines.append(f"| {_cell(prefix + name)} | {_num(value)} | {_target(r, name)} |")
        for name, value in r["values"].items():
            if isinstance(value, (int, float)):
                lines.append(f"| {_cell(prefix + name)} | {_num(value)} | |")
        for note in r["notes"]:
            lines.append(f"| {_cell(prefix + 'note')} | {_cell(note)} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    performance = "--performance" in args
    paths = [a for a in args if a != "--performance"]
    if not paths:
        print("usage: python -m benchmarks.markdown [--performance] RESULT.json [...]", file=sys.stderr)
        return 2
    for path in paths:
        report = json.loads(Path(path).read_text())
        print(performance_table(report) if performance else to_markdown(report))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
