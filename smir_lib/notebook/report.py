"""The summary report of a run folder: ``RUN_DIR/report.md``.

After the notebook series ran (``make demo``, ``smir demo``), each notebook left
``RUN_DIR/<notebook stem>/`` with PNG figures and a ``metrics.json``. :func:`build_report`
gathers them. It leads with what the models on screen and the committed study show: the
sentences notebooks 04 and 06 computed from the teaching models (or from this run's own), and
the committed study's answer notebook 07 computed from ``notebooks/results/study_cpu.json``.
Then come the time each notebook took, notebook 07's smoke test (a few seeds at a toy budget,
labelled as such), and per notebook its key figures (relative links, so the folder can be moved
or zipped) and computed conclusions (``"verdict"`` in its metrics). Notebooks that did not run
are listed as such; a partial run still gives a report.

To rebuild it for a run folder: ``build_report("runs/20261124-120000")``.
"""

from __future__ import annotations

import json
from pathlib import Path

from smir_lib.files import atomic_write_text

#: Figures shown inline for each notebook, in order (others are linked below them).
KEY_FIGURES: dict[str, list[str]] = {
    "00_data": ["smir_loop", "images_and_labels", "class_shares"],
    "01_random_masking": ["mask_ratios"],
    "02_reconstruction": ["mae_panel", "pretrain_loss"],
    "03_patch_loss_maps": ["loss_maps"],
    "04_selective_masks": ["random_vs_selective", "hidden_share"],
    "05_partitioned_pretraining": ["partition_diagram", "loss_curves", "stored_masks", "reconstructions"],
    "06_segmentation_evaluation": ["iou_bars", "miou_bars", "predictions"],
    "07_reproduction_study": ["study_miou"],  # study_answer.png leads the report
    "08_appendix_own_data": ["own_folder"],
}
TITLES = {
    "00_data": "Data", "01_random_masking": "Random masking", "02_reconstruction": "Reconstruction",
    "03_patch_loss_maps": "Patch-loss maps", "04_selective_masks": "Selective masks",
    "05_partitioned_pretraining": "Partitioned pretraining",
    "06_segmentation_evaluation": "Segmentation evaluation", "07_reproduction_study": "Reproduction study",
    "08_appendix_own_data": "Appendix: your own images",
}


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _timings_table(timings: dict[str, float]) -> list[str]:
    lines = ["| notebook | seconds |", "|---|---:|"]
    lines += [f"| {name} | {sec:.0f} |" for name, sec in timings.items()]
    lines.append(f"| **total** | **{sum(timings.values()):.0f}** |")
    return lines


def _notebook_section(run_dir: Path, stem: str, seconds: float | None) -> list[str]:
    folder = run_dir / stem
    metrics = _read_json(folder / "metrics.json")
    title = TITLES.get(stem, stem)
    lines = [f"## {stem[:2]} · {title}", ""]
    if metrics is None:
        lines += ["*Not run (no metrics.json in this run folder).*", ""]
        return lines
    executed = run_dir / "executed" / f"{stem}.ipynb"
    where = f"[executed notebook](executed/{stem}.ipynb)" if executed.is_file() else "executed notebook absent"
    took = f"{seconds:.0f} s" if seconds is not None else "time not recorded"
    lines += [f"{took} · {where} · [metrics](./{stem}/metrics.json)", ""]
    if metrics.get("verdict"):
        lines += [f"> {metrics['verdict']}", ""]
    pngs = sorted(p.stem for p in folder.glob("*.png"))
    key = [f for f in KEY_FIGURES.get(stem, []) if f in pngs]
    for name in key:
        lines += [f"![{stem} {name}](./{stem}/{name}.png)", ""]
    others = [f for f in pngs if f not in key]
    if others:
        lines += ["Other figures: " + ", ".join(f"[{f}](./{stem}/{f}.png)" for f in others), ""]
    return lines


def _models_lead(run_dir: Path) -> list[str]:
    """What the fine-tuned and masking models of this run folder show (notebooks 04 and 06)."""
    masks = _read_json(run_dir / "04_selective_masks" / "metrics.json") or {}
    evaluation = _read_json(run_dir / "06_segmentation_evaluation" / "metrics.json") or {}
    lines = [f"- Masks (notebook 04): {masks['verdict']}"] if masks.get("verdict") else []
    if evaluation.get("verdict"):
        lines.append(f"- Segmentation, one seed (notebook 06): {evaluation['verdict']} "
                     f"{evaluation.get('verdict_vs_scratch', '')}".rstrip())
    if not lines:
        return []
    sources = [*evaluation.get("model_sources", {}).values(), masks.get("model_source", "")]
    teaching = all("teaching model" in s for s in sources if s)
    title = "What the teaching models show" if teaching else "What this run's models show"
    return [f"## {title}", "", *lines, ""]


def _study_lead(run_dir: Path) -> list[str]:
    """The committed study's answer, as notebook 07 computed it, with its figure."""
    metrics = _read_json(run_dir / "07_reproduction_study" / "metrics.json") or {}
    committed = metrics.get("committed_study")
    lines = ["## What the committed study shows", ""]
    if not committed:
        return lines + ["*Notebook 07 did not run here: the committed study is `notebooks/results/study_cpu.md`.*", ""]
    lines += [committed["answer"], ""]
    if (run_dir / "07_reproduction_study" / "study_answer.png").is_file():
        lines += ["![the study's question](./07_reproduction_study/study_answer.png)", ""]
    return lines + [f"Source: `{committed['source']}` (its report, commands and timings: `notebooks/results/`).", ""]


def _results_table(run_dir: Path, profile: str) -> list[str]:
    """Notebook 07's smoke test (its results.md) when present, else the evaluation notebook's table."""
    for path in (run_dir / "07_reproduction_study" / "results.md",
                 run_dir / "06_segmentation_evaluation" / "results.md"):
        if path.is_file():
            smoke = path.parent.name.startswith("07") and profile == "fast"
            lines = ["## Smoke test: the study's machinery at a toy budget" if smoke else "## This run's results", ""]
            if smoke:  # say it before the numbers: a reader may see only this table
                lines += ["> **Not evidence.** Two seeds, a few epochs, the tiny network: differences of "
                          "this size are noise, and the rare class is barely learned. The committed study "
                          "above is the comparison to read.", ""]
            return lines + [f"Source: [{path.relative_to(run_dir)}](./{path.relative_to(run_dir)})", "",
                            path.read_text().strip(), ""]
    return ["## Results", "", "*No results table in this run (notebooks 06/07 did not run).*", ""]


def build_report(run_dir: Path | str) -> Path:
    """Write ``run_dir/report.md`` from whatever the notebooks left there; return its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist: run the notebooks first "
                                f"(`make demo` or `smir demo --out {run_dir}`)")
    timings = _read_json(run_dir / "timings.json") or {}
    stems = sorted(set(KEY_FIGURES) | set(timings) | {p.parent.name for p in run_dir.glob("[0-9][0-9]_*/metrics.json")})
    profile = next((m.get("profile") for s in stems if (m := _read_json(run_dir / s / "metrics.json"))), "?")
    lines = ["# SMIR run report", "",
             f"Run folder `{run_dir.resolve()}`, profile **{profile}**.", ""]
    lines += _models_lead(run_dir) + _study_lead(run_dir)
    if timings:
        lines += ["## Time per notebook", "", *_timings_table(timings), ""]
    lines += _results_table(run_dir, profile)
    for stem in stems:
        lines += _notebook_section(run_dir, stem, timings.get(stem))
    out = run_dir / "report.md"
    atomic_write_text("\n".join(lines), out)
    return out
