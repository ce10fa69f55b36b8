"""Rerun one cell of a committed budget study and set its numbers beside the committed ones.

A cell is one fine-tuning unit: a dataset, a seed, a label budget and an initialisation, e.g.
``finetune/cwfid/seed_0/train_4/selective_9000``. :func:`rerun_cell` reads the protocol from the
report's JSON, runs that unit (and the pretraining it starts from) in a fresh study root with the
same code path as the study (``study_run.run_units``), and returns the rerun's test mIoU and
per-class IoU next to the committed seed's. On the same kind of machine and library versions the
two agree closely; floating-point reductions that run in another order (other thread counts,
another CPU, a GPU) move them by a little, and a difference far outside the seed spread means the
code or the data changed.
"""

from __future__ import annotations

import json
from pathlib import Path

from smir_lib.study.plan import WorkUnit, load_protocol, unit_config, work_units
from smir_lib.study.run import UNIT_LOG, run_units, select_units

__all__ = ["committed_values", "rerun_cell", "rerun_lines", "example_cell"]


def example_cell(summary: dict) -> str | None:
    """A cell of the report worth rerunning: seed 0 (or the first seed), the smallest label budget,
    selective IR at the largest pretraining budget, on the first dataset; None if nothing finished."""
    for dataset, data in summary["datasets"].items():
        label = min(data["labels"], key=int)
        inits = data["labels"][label]["inits"]
        wanted = f"selective_{max(summary['pretrain_budgets'])}"
        init = wanted if wanted in inits else next(iter(inits))
        seed = min(inits[init]["per_seed"], key=int)
        return f"finetune/{dataset}/seed_{seed}/train_{label}/{init}"
    return None


def _cell(summary: dict, unit: WorkUnit) -> dict:
    """The report's cell (dataset, label budget) of fine-tuning ``unit``; ``{}`` if it has none."""
    return summary["datasets"].get(unit.dataset, {}).get("labels", {}).get(str(unit.train_size), {})


def committed_values(summary: dict, unit: WorkUnit) -> list[float] | None:
    """The committed ``[mIoU, IoU per class...]`` of fine-tuning ``unit``, or None if it did not finish."""
    return _cell(summary, unit).get("inits", {}).get(unit.init, {}).get("per_seed", {}).get(str(unit.seed))


def rerun_cell(json_path: Path | str, folder: str, root: Path | str, log=print) -> dict:
    """Rerun fine-tuning unit ``folder`` of the study reported in ``json_path`` under ``root``.

    Returns ``{"folder", "metrics", "committed", "rerun", "seconds"}`` (``committed`` is None
    when the committed report lacks the unit). A unit already finished under ``root`` is read,
    not run again: pass a fresh ``root`` to rerun it.
    """
    summary = json.loads(Path(json_path).read_text())
    protocol = load_protocol(summary["protocol"])
    units = select_units(work_units(protocol), [folder])
    if len(units) != 1 or units[0].kind != "finetune":
        raise ValueError(f"{folder!r} names {len(units)} unit(s) of protocol {protocol.name!r}; name one "
                         f"fine-tuning unit, e.g. {example_cell(summary)}")
    unit = units[0]
    cell = _cell(summary, unit)
    asked = unit_config(protocol, unit).finetune_epochs
    if cell and int(cell["finetune"]["epochs"]) != int(asked):
        raise ValueError(f"{unit.folder}: the report's cell fine-tuned for {cell['finetune']['epochs']} epochs, "
                         f"protocol {protocol.name!r} now asks {asked}; the rerun would not be "
                         f"comparable: check out the report's commit ({summary.get('commit')}) to rerun it")
    out = run_units(protocol, root, only=[unit.folder], log=log)
    if out["failed"]:
        raise RuntimeError(f"the rerun of {unit.folder} failed: {out['failed']}")
    test = json.loads((Path(root) / unit.folder / "results.json").read_text())["test"]
    logged = [json.loads(line) for line in (Path(root) / UNIT_LOG).read_text().splitlines()]
    seconds = sum(r["seconds"] for r in logged if r["folder"] in {unit.folder, getattr(unit.dependency, "folder", None)})
    return {"folder": unit.folder, "metrics": ["mIoU", *test["class_names"]],
            "committed": committed_values(summary, unit), "rerun": [test["miou"], *test["per_class_iou"]],
            "seconds": seconds}


def rerun_lines(result: dict) -> list[str]:
    """The rerun beside the committed numbers, one line per metric."""
    lines = [f"{result['folder']}: rerun in {result['seconds']:.0f} s"]
    committed = result["committed"]
    if committed is None:
        lines.append("  (the committed report has no result for this unit: nothing to compare)")
    for i, name in enumerate(result["metrics"]):
        line = f"  {name:>10}: rerun {result['rerun'][i]:.3f}"
        if committed is not None:
            line += f"   committed {committed[i]:.3f}   difference {result['rerun'][i] - committed[i]:+.3f}"
        lines.append(line)
    return lines
