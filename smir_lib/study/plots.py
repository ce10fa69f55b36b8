"""The budget study's figures: downstream mIoU against pretraining budget, and fine-tuning curves.

Both return a ``matplotlib.figure.Figure`` and use the colours of ``smir_lib.notebook.plots`` (one per
initialisation), so they read like the notebooks' charts.
"""

from __future__ import annotations

import textwrap
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullLocator

from smir_lib.selective import STRATEGIES
from smir_lib.study.inits import INIT_COLORS, init_label, init_method

__all__ = ["study_budget_curves", "finetune_curves"]


def _study_inits(inits: Mapping[str, Mapping], method: str) -> list[tuple[int, Mapping]]:
    """``[(budget, row)]`` of one method's initialisations (``random_<b>`` / ``selective_<b>``), by budget."""
    return sorted((int(name.rsplit("_", 1)[1]), row) for name, row in inits.items()
                  if init_method(name) == method)


def study_budget_curves(data: Mapping, pretraining: Mapping, *, title: str | None = None) -> Figure:
    """Downstream test mIoU against pretraining images seen, one panel per label budget (issue 15).

    ``data`` is one dataset of ``study_tables.collect`` (``pool``, ``labels -> inits -> mean/low/high``,
    index 0 = mIoU); ``pretraining`` its ``pretraining`` block (images and iterations as they ran). Random
    and selective IR (and any other masking strategy) are lines with 95 % bootstrap intervals, scratch a band, cross a square.
    """
    labels = sorted(data["labels"], key=int)
    fig = Figure(figsize=(max(5.5, 4.2 * len(labels)), 3.9), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(labels), sharey=True))

    def spent(pool, budget, method, key):
        runs = pretraining.get(pool, {}).get(str(budget), {}).get(method, {})
        return float(np.mean([r[key] for r in runs.values()])) if runs else float(budget)

    for ax, label in zip(axes, labels):
        cell = data["labels"][label]
        inits = cell["inits"]
        plotted = []
        for method in STRATEGIES:  # random, selective, then any other strategy the study ran
            rows = _study_inits(inits, method)
            if not rows:
                continue
            xs = [spent(data["pool"], b, method, "images") for b, _ in rows]
            plotted += xs
            ys = np.array([[r["mean"][0], r["low"][0], r["high"][0]] for _, r in rows])
            ax.errorbar(xs, ys[:, 0], yerr=[ys[:, 0] - ys[:, 1], ys[:, 2] - ys[:, 0]], marker="o", capsize=3,
                        label=f"{method} IR", color=INIT_COLORS.get(method))
        if "scratch" in inits:
            s = inits["scratch"]
            ax.axhline(s["mean"][0], color=INIT_COLORS["scratch"], label="scratch")
            ax.axhspan(s["low"][0], s["high"][0], color=INIT_COLORS["scratch"], alpha=0.2)
        for name, row in inits.items():
            if name.startswith("cross_"):
                _, cross_pool, budget = name.split("_")
                x = spent(cross_pool, budget, "selective", "images") * 1.06  # beside, not on, selective's point
                plotted.append(x)
                ax.errorbar([x], [row["mean"][0]], yerr=[[row["mean"][0] - row["low"][0]], [row["high"][0] - row["mean"][0]]],
                            marker="s", capsize=3, linestyle="none", color=INIT_COLORS["selective_cross"],
                            label=f"selective IR (cross: {cross_pool})")
        ax.set_xscale("log")
        if plotted:  # a fixed margin on the log axis: one budget alone would otherwise span the panel
            ax.set_xlim(min(plotted) / 1.4, max(plotted) * 1.4)
        ticks = [(spent(data["pool"], b, "random", "images"), spent(data["pool"], b, "random", "iterations"))
                 for b, _ in _study_inits(inits, "random")]
        ax.set_xticks([x for x, _ in ticks], [f"{x:.0f}\n{it:.0f} it." for x, it in ticks], fontsize=7)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("pretraining images (random IR's iterations)", fontsize=8)
        ax.set_title(f"{cell['finetune']['n_train']} labelled images, {cell['finetune']['iterations']} fine-tuning it.",
                     fontsize=9)
        ax.grid(alpha=0.3)
    return _label_panels(fig, axes, "test mIoU (mean, 95 % CI over seeds)", title, legend_size=7)


def finetune_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], *, title: str | None = None) -> Figure:
    """Validation mIoU per fine-tuning epoch, one panel per label budget, one line per
    initialisation (``{label: {init: curve}}``, e.g. means over seeds): has it plateaued?"""
    labels = sorted(curves, key=int)
    fig = Figure(figsize=(max(5.5, 4.2 * len(labels)), 3.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(labels), sharey=True))
    for ax, label in zip(axes, labels):
        for name, values in sorted(curves[label].items()):
            kind = init_method(name)
            faint = kind not in ("scratch", "selective_cross") and not name.endswith(max(
                (n.rsplit("_", 1)[1] for n in curves[label] if init_method(n) == kind), key=int))
            ax.plot(np.arange(1, len(values) + 1), values, label=init_label(name), color=INIT_COLORS.get(kind),
                    alpha=0.35 if faint else 1.0, linewidth=1)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
        ax.set_title(f"{label} labelled images", fontsize=9)
        ax.grid(alpha=0.3)
    return _label_panels(fig, axes, "validation mIoU", title, legend_size=6)


def _label_panels(fig: Figure, axes, ylabel: str, title: str | None, legend_size: int) -> Figure:
    """The y label on the first panel, the legend on the last, the title over all; returns ``fig``."""
    axes[0].set_ylabel(ylabel)
    axes[-1].legend(fontsize=legend_size, loc="lower right")
    if title:  # wrapped to the figure: a one-panel figure is narrower than a long title
        fig.suptitle(textwrap.fill(title, int(fig.get_figwidth() * 12)), fontsize=10)
    return fig
