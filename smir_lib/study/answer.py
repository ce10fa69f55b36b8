"""The committed budget study's answer in a few numbers: what notebook 07 and the run report say first.

:func:`answer_values` reads a study summary (the JSON ``smir study report`` writes, e.g.
``notebooks/results/study_cpu.json``) and counts, over every dataset, label budget and
pretraining budget, the paired differences the paper's claims are about: selective minus random
IR at equal image-steps (the question), pretrained minus scratch, in mIoU and in the rarest
class's IoU. A difference is *named* only when its 95 % interval excludes 0 over at least
``MIN_SEEDS`` seeds, the rule of the study's own report (``smir_lib.study.stats.named``).
:func:`answer_figure` draws the question's differences with their intervals, one panel per dataset.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from smir_lib.notebook.prose import fill, read_templates
from smir_lib.study.stats import MIN_SEEDS, named

__all__ = ["answer_values", "answer_figure", "named", "prose_block", "PROSE"]

PROSE = Path(__file__).resolve().parents[2] / "notebooks" / "prose" / "07_reproduction_study.md"
"""Notebook 07's sentences: the results page says each committed study's answer in the same words."""


def prose_block(marks: tuple[str, str], section: str, values: Mapping, summary: Mapping, json_name: str,
                contents: str) -> str:
    """A results-page block between ``marks``: notebook 07's ``section`` filled from ``values``, then
    one line saying whether the report at ``json_name`` is complete and what it holds (``contents``)."""
    done, total = summary["units"]["done"], summary["units"]["total"]
    status = "complete" if done == total else f"{done} of {total} units finished"
    name = Path(json_name).stem
    return "\n".join([marks[0], fill(read_templates(PROSE), section, values, source=PROSE), "",
                      f"Report ({status}): [{name}.md]({name}.md), numbers from [{name}.json]({name}.json); {contents}",
                      marks[1]])


def _differences(summary: Mapping) -> Iterator[tuple[str, Mapping, Mapping]]:
    """``(dataset, cell, difference)`` for every paired difference of the study."""
    for dataset, data in summary["datasets"].items():
        for _, cell in sorted(data["labels"].items(), key=lambda kv: int(kv[0])):
            for diff in cell["differences"]:
                yield dataset, cell, diff


def _is_question(diff: Mapping) -> bool:
    return diff["a"].startswith("selective") and diff["b"].startswith("random")


def _is_vs_scratch(diff: Mapping) -> bool:
    return diff["b"] == "scratch"


def answer_values(summary: Mapping) -> dict:
    """The counts behind the study's answer (every value read from ``summary``).

    ``pairs``: selective - random differences (datasets x label budgets x pretraining budgets);
    ``below``: how many of their mIoU means are below 0; ``low``/``high``: the smallest and largest
    mean; ``for_selective``/``for_random``: how many are named either way; ``rare_for_selective``
    / ``rare_for_random``: the same in the rarest class's IoU; ``vs_scratch``, ``pretrained_ahead``,
    ``scratch_ahead``: pretrained - scratch differences and those named; ``n_diffs``, ``n_named``,
    ``chance``: all differences, those named in mIoU, and how many 95 % intervals would exclude 0
    by chance alone; ``gain`` and ``pays``: what the counts say, in words; plus ``description``,
    ``datasets``, ``seeds``, ``units``.
    """
    diffs = list(_differences(summary))
    question = [(ds, d) for ds, _, d in diffs if _is_question(d)]
    if not question:
        raise ValueError(f"study summary {summary.get('protocol', '?')!r} holds no selective - random "
                         "difference: run its random and selective units first (smir study run)")
    means = [d["metrics"]["mIoU"]["mean"] for _, d in question]
    rare = [named(d, summary["datasets"][ds]["rarest_class"]) for ds, d in question]
    scratch = [named(d) for _, _, d in diffs if _is_vs_scratch(d)]
    v = {
        "description": summary.get("description", summary.get("protocol", "")),
        "datasets": " and ".join(summary["datasets"]), "seeds": len(summary.get("seeds", [])),
        "units": summary.get("units", {}).get("done", summary.get("units", {}).get("total")),
        "pairs": len(question), "below": sum(m < 0 for m in means), "low": min(means), "high": max(means),
        "for_selective": sum(named(d) == 1 for _, d in question), "for_random": sum(named(d) == -1 for _, d in question),
        "rare_for_selective": rare.count(1), "rare_for_random": rare.count(-1),
        "vs_scratch": len(scratch), "pretrained_ahead": scratch.count(1), "scratch_ahead": scratch.count(-1),
        "n_diffs": len(diffs), "n_named": sum(named(d) != 0 for _, _, d in diffs), "chance": 0.05 * len(diffs),
    }
    v["gain"] = ("shows no measurable gain from selective masking" if v["for_selective"] <= v["for_random"]
                 else "favours selective masking")
    v["pays"] = ("shows no measurable gain either" if v["pretrained_ahead"] <= v["scratch_ahead"]
                 else "pays more often than it costs")
    return v


def answer_figure(summary: Mapping, *, title: str | None = None) -> Figure:
    """Selective minus random IR (test mIoU) with its 95 % interval, per label and pretraining budget.

    One panel per dataset; a point per (label budget, pretraining budget), its bar the paired
    bootstrap interval over seeds; the zero line is "no difference". Named differences are filled.
    """
    datasets = list(summary["datasets"])
    fig = Figure(figsize=(4.2 * len(datasets) + 0.6, 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(datasets), sharey=True, squeeze=False)[0])
    for ax, dataset in zip(axes, datasets):
        rows = [(cell["finetune"]["n_train"], d) for ds, cell, d in _differences(summary)
                if ds == dataset and _is_question(d)]
        budgets = sorted({d["budget"] for _, d in rows})
        labels = sorted({n for n, _ in rows})
        for j, budget in enumerate(budgets):
            pts = [(labels.index(n) + (j - (len(budgets) - 1) / 2) * 0.22, d) for n, d in rows if d["budget"] == budget]
            x = [p for p, _ in pts]
            m = np.array([[d["metrics"]["mIoU"][k] for k in ("mean", "low", "high")] for _, d in pts])
            ax.errorbar(x, m[:, 0], yerr=[m[:, 0] - m[:, 1], m[:, 2] - m[:, 0]], fmt="none", ecolor=f"C{j}", capsize=3,
                        label=f"{budget:,} image-steps")
            ax.scatter(x, m[:, 0], color=f"C{j}", zorder=3,
                       facecolors=[f"C{j}" if named(d) else "white" for _, d in pts])
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(range(len(labels)), [f"{n} labels" for n in labels])
        ax.set_title(dataset)
    axes[0].set_ylabel("selective - random IR, test mIoU\n(95 % interval; filled: excludes 0)")
    axes[-1].legend(fontsize=8, title="pretraining", title_fontsize=8)
    fig.suptitle(title or f"the study's question: does selective masking beat random masking? "
                          f"({len(summary.get('seeds', []))} seeds)", fontsize=11)
    return fig
