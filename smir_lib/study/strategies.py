"""The strategies study's answer (issue 28): each masking strategy's downstream effect beside its mechanism.

:func:`strategy_rows` joins a strategies report (``smir study report --protocol cpu_strategies``)
with the mechanism measured on the same pool (``smir study mechanism``): per strategy, the share
of each class it hides, its reconstruction gain and forward passes, and per label budget its test
mIoU and rarest class's IoU with the paired differences against random and against selective IR
(named only when the 95 % interval excludes 0 over enough seeds, the study's rule).
:func:`strategies_values` are the numbers the results page and notebook 07 quote;
:func:`strategies_figure` draws each strategy's difference from random IR against the share of
plant pixels it hides; :func:`beside_budgets` adds an earlier report's pretraining budgets to
a budget figure (the CPU study's 1k-9k beside the long budget curve's 72k).
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from smir_lib.selective import STRATEGIES
from smir_lib.study.answer import prose_block
from smir_lib.study.inits import INIT_COLORS, init_method
from smir_lib.study.stats import named

__all__ = ["strategy_rows", "strategies_values", "strategies_markdown", "strategies_figure", "beside_budgets",
           "plants_hidden", "strategies_block", "STRATEGIES_BEGIN", "STRATEGIES_END"]


def plants_hidden(mechanism: Mapping) -> dict[str, float]:
    """Per strategy, the share of the pixels of every class but the first (the background: soil)
    that it hides, pooled by each class's pixel share."""
    share = mechanism["class_pixel_share"]
    plants = mechanism["class_names"][1:]
    total = sum(share[c] for c in plants)
    return {s: sum(m["hidden_share"][c] * share[c] for c in plants) / total for s, m in mechanism["strategies"].items()}


def _difference(cell: Mapping, a: str, b: str, metrics: Sequence[str]) -> dict | None:
    for d in cell["differences"]:
        if (d["a"], d["b"]) == (a, b):
            return {m: {**d["metrics"][m], "named": named(d, m)} for m in metrics}
    return None


def strategy_rows(summary: Mapping, mechanism: Mapping, dataset: str = "cwfid") -> list[dict]:
    """One row per strategy of ``summary`` at its largest pretraining budget (see the module docstring).

    ``row["labels"][label]``: ``n_train``, ``n_seeds``, ``miou`` and ``rare`` (means) and
    ``vs_random`` / ``vs_selective`` / ``vs_scratch``: ``{metric: {mean, low, high, named}}`` or None.
    """
    data, mech = summary["datasets"][dataset], mechanism["datasets"][dataset]
    rare, budget = data["rarest_class"], max(summary["pretrain_budgets"])
    metrics = ("mIoU", rare)
    plants = plants_hidden(mech)
    rows = []
    for strategy in (s for s in STRATEGIES if s in summary["strategies"]):
        m, init = mech["strategies"][strategy], f"{strategy}_{budget}"
        row = {"strategy": strategy, "passes": m["forward_passes"], "hidden": m["hidden_share"],
               "plants_hidden": plants[strategy], "gain_db": m["gain_db"], "labels": {}}
        for label, cell in sorted(data["labels"].items(), key=lambda kv: int(kv[0])):
            if init not in cell["inits"]:
                continue
            r = cell["inits"][init]
            row["labels"][label] = {
                "n_train": cell["finetune"]["n_train"], "n_seeds": r["n_seeds"], "miou": r["mean"][0],
                "rare": r["mean"][data["metrics"].index(rare)],
                **{f"vs_{b}": _difference(cell, init, b if b == "scratch" else f"{b}_{budget}", metrics)
                   for b in ("random", "selective", "scratch")}}
        rows.append(row)
    return rows


def _spearman(x: Sequence[float], y: Sequence[float]) -> float:
    rx, ry = (torch.tensor(v, dtype=torch.float64).argsort().argsort().double() for v in (x, y))
    return float(torch.corrcoef(torch.stack([rx, ry]))[0, 1])


def strategies_values(summary: Mapping, mechanism: Mapping, dataset: str = "cwfid") -> dict:
    """The numbers the findings quote, every one read from ``summary`` and ``mechanism``.

    Over strategies x label budgets (mIoU, and the rarest class): how many differences against
    random and against selective IR are named either way (``ahead_of_random``, ``behind_random``,
    ``ahead_of_selective``, ``behind_selective``, ``rare_*`` alike) and which (``named``: one line
    each); per label budget the best strategy by mean mIoU and the rank correlation (Spearman, over
    the strategies other than random) between the share of plant pixels hidden and the difference
    from random IR, and ``unmasked``: selective_unmasked - selective IR in mIoU (one scoring pass
    against K); the plant share random, selective and objects_oracle hide; ``compared`` (mIoU
    differences counted) and ``chance`` (how many of them a 95 % interval names with no effect).
    """
    rows = strategy_rows(summary, mechanism, dataset)
    rare = summary["datasets"][dataset]["rarest_class"]
    v = {"dataset": dataset, "n_strategies": len(rows), "seeds": len(summary["seeds"]), "rare": rare,
         "budget": max(summary["pretrain_budgets"]), "named": [], "per_label": {}, "compared": 0}
    for key in ("ahead_of_random", "behind_random", "ahead_of_selective", "behind_selective"):
        v[key] = v[f"rare_{key}"] = 0
    for row in rows:
        for entry in row["labels"].values():
            for base in ("random", "selective"):
                d = entry[f"vs_{base}"]
                if d is None or row["strategy"] == base:
                    continue
                v["compared"] += 1
                for metric, prefix in (("mIoU", ""), (rare, "rare_")):
                    call = d[metric]["named"]
                    if call:
                        v[f"{prefix}{'ahead_of' if call > 0 else 'behind'}_{base}"] += 1
                        v["named"].append(f"{row['strategy']} - {base} IR at {entry['n_train']} labels, "
                                          f"{'IoU ' + rare if prefix else 'mIoU'}: {d[metric]['mean']:+.3f} "
                                          f"[{d[metric]['low']:+.3f}, {d[metric]['high']:+.3f}]")
    for label in sorted({lab for r in rows for lab in r["labels"]}, key=int):
        here = [r for r in rows if label in r["labels"]]
        best = max(here, key=lambda r: r["labels"][label]["miou"])
        others = [r for r in here if r["strategy"] != "random" and r["labels"][label]["vs_random"]]
        v["per_label"][label] = {
            "n_train": here[0]["labels"][label]["n_train"], "best": best["strategy"],
            "best_miou": best["labels"][label]["miou"],
            "spearman_plants_vs_gain": _spearman([r["plants_hidden"] for r in others],
                                                 [r["labels"][label]["vs_random"]["mIoU"]["mean"] for r in others]),
            "unmasked": next((r["labels"][label]["vs_selective"]["mIoU"] for r in here
                              if r["strategy"] == "selective_unmasked" and r["labels"][label]["vs_selective"]), None)}
    share = {r["strategy"]: r["plants_hidden"] for r in rows}
    v.update({f"plants_{s}": share.get(s) for s in ("random", "selective", "objects_oracle")})
    labels = sorted(v["per_label"], key=int)
    v["few"], v["many"] = v["per_label"][labels[0]], v["per_label"][labels[-1]]
    rhos = [p["spearman_plants_vs_gain"] for p in v["per_label"].values()]
    v["chance"] = 0.05 * v["compared"]
    v["named_text"] = "; ".join(v["named"]) or "none"
    v["verdict_random"] = ("no strategy is ahead of random masking more often than chance alone would name one"
                           if v["ahead_of_random"] + v["ahead_of_selective"] <= v["chance"] else
                           "some strategies are ahead of random masking by more than chance would name")
    v["verdict_plants"] = ("hiding more of the plants goes with a better result" if min(rhos) > 0.5 else
                           "hiding more of the plants goes with a worse result" if max(rhos) < -0.5 else
                           "how much of the plants a strategy hides does not order the results")
    return v


STRATEGIES_BEGIN = "<!-- strategies:begin (generated by smir study readme; do not edit) -->"
STRATEGIES_END = "<!-- strategies:end -->"


def strategies_block(summary: Mapping, json_name: str) -> str:
    """The results page's strategies block: notebook 07's ``strategies`` sentences filled from
    ``summary`` (a strategies report with its mechanism), and where the report is."""
    return prose_block((STRATEGIES_BEGIN, STRATEGIES_END), "strategies", strategies_values(summary, summary["mechanism"]),
                       summary, json_name, "every strategy against random and selective IR per label budget, "
                       "with its mechanism.")


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def _cell(d: Mapping | None) -> str:
    if d is None:
        return ""
    text = f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
    return f"**{text}**" if d["named"] else text


def strategies_markdown(summary: Mapping, mechanism: Mapping, dataset: str = "cwfid") -> list[str]:
    """The report's strategies section: per label budget a row per strategy with its mechanism
    (plants hidden, gain, passes) and its paired differences (bold: named)."""
    rows = strategy_rows(summary, mechanism, dataset)
    rare, k = summary["datasets"][dataset]["rarest_class"], mechanism["datasets"][dataset]["k"]
    out = [f"## Masking strategies: mechanism and downstream effect ({dataset})", "",
           "Mechanism from the mechanism report (one random-IR model, the same pool tiles for every strategy; "
           "plants hidden = the share of every class but the background that the strategy hides; passes = forward "
           "passes per image to choose a mask at the mechanism's K, the runs' own K may differ); downstream "
           "from this report's units. Differences a - b, mean [95 % bootstrap CI] over seeds; bold: named.", ""]
    for label in sorted({lab for r in rows for lab in r["labels"]}, key=int):
        n = next(r["labels"][label]["n_train"] for r in rows if label in r["labels"])
        out += [f"### {n} labelled images", "",
                f"| strategy | passes (K = {k}) | plants hidden | gain (dB) | test mIoU | - random IR | - selective IR | "
                f"IoU {rare} - random IR | IoU {rare} - selective IR |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in (r for r in rows if label in r["labels"]):
            e = r["labels"][label]
            vs = [_cell(None if e[f"vs_{b}"] is None else e[f"vs_{b}"][m]) for m in ("mIoU", rare)
                  for b in ("random", "selective")]
            out.append(f"| {r['strategy']} | {r['passes']} | {_pct(r['plants_hidden'])} | {r['gain_db']:+.2f} | "
                       f"{e['miou']:.3f} | " + " | ".join(vs) + " |")
        out.append("")
    return out


def strategies_figure(summary: Mapping, mechanism: Mapping, dataset: str = "cwfid", *,
                      title: str | None = None) -> Figure:
    """Each strategy's test mIoU minus random IR's (95 % interval) against the share of plant pixels
    it hides, one panel per label budget: does hiding the plants explain the downstream effect?"""
    rows = [r for r in strategy_rows(summary, mechanism, dataset) if r["strategy"] != "random"]
    labels = sorted({lab for r in rows for lab in r["labels"]}, key=int)
    fig = Figure(figsize=(4.4 * len(labels) + 0.6, 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(labels), sharey=True, squeeze=False)[0])
    for ax, label in zip(axes, labels):
        for r in rows:
            d = r["labels"].get(label, {}).get("vs_random")
            if d is None:
                continue
            m, color = d["mIoU"], INIT_COLORS.get(init_method(f"{r['strategy']}_0"))
            ax.errorbar([r["plants_hidden"]], [m["mean"]], yerr=[[m["mean"] - m["low"]], [m["high"] - m["mean"]]],
                        fmt="o", capsize=3, color=color, mfc=color if m["named"] else "white", label=r["strategy"])
        ax.axhline(0, color="black", lw=0.8)
        ax.axvline(plants_hidden(mechanism["datasets"][dataset])["random"], color=INIT_COLORS["random"], lw=0.8, ls=":")
        n = next(r["labels"][label]["n_train"] for r in rows if label in r["labels"])
        ax.set_title(f"{n} labelled images", fontsize=9)
        ax.set_xlabel("share of plant pixels hidden (dotted: random masks)", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test mIoU minus random IR\n(95 % interval; filled: excludes 0)")
    axes[-1].legend(fontsize=7, loc="best")
    title = title or (f"{dataset}: does hiding the plants explain the downstream effect? "
                      f"({len(summary['seeds'])} seeds, {max(summary['pretrain_budgets']):,} image-steps)")
    fig.suptitle(textwrap.fill(title, int(fig.get_figwidth() * 12)), fontsize=10)
    return fig


def beside_budgets(summary: Mapping, earlier: Mapping) -> tuple[dict, dict, dict]:
    """``(datasets, pretraining, reproduced)``: ``summary``'s datasets with ``earlier``'s
    initialisations at budgets ``summary`` lacks added to the label budgets both have (scratch and
    cross ones excluded), for one budget figure; the pretraining blocks merged; and per
    initialisation both reports ran, the largest per-seed difference in mIoU (0: reproduced exactly)."""
    datasets, reproduced = {}, {}
    for name, data in summary["datasets"].items():
        old = earlier["datasets"].get(name, {"labels": {}})
        labels = {}
        for label, cell in data["labels"].items():
            before = old["labels"].get(label, {"inits": {}})["inits"]
            inits = {k: r for k, r in before.items() if k not in cell["inits"] and init_method(k) in STRATEGIES}
            for k in set(before) & set(cell["inits"]):
                seeds = set(before[k]["per_seed"]) & set(cell["inits"][k]["per_seed"])
                if seeds:
                    old_new = [(before[k]["per_seed"][s][0], cell["inits"][k]["per_seed"][s][0]) for s in seeds]
                    reproduced[f"{name}/{label}/{k}"] = max(abs(a - b) for a, b in old_new)
            labels[label] = {**cell, "inits": {**inits, **cell["inits"]}}
        datasets[name] = {**data, "labels": labels}
    pretraining = {pool: {**earlier.get("pretraining", {}).get(pool, {}), **budgets}
                   for pool, budgets in summary["pretraining"].items()}
    return datasets, pretraining, reproduced
