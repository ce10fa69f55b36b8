"""The run-folder report: figures linked relatively, timings and results gathered, partial runs fine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smir_lib.notebook.report import build_report
from smir_lib.notebook.setup import setup_notebook, to_jsonable

pytestmark = pytest.mark.unit


def _fake_run(run_dir: Path) -> None:
    (run_dir / "01_random_masking").mkdir(parents=True)
    (run_dir / "01_random_masking" / "mask_ratios.png").write_bytes(b"\x89PNG")
    (run_dir / "01_random_masking" / "extra.png").write_bytes(b"\x89PNG")
    (run_dir / "01_random_masking" / "metrics.json").write_text(json.dumps({"profile": "fast"}))
    (run_dir / "06_segmentation_evaluation").mkdir()
    (run_dir / "06_segmentation_evaluation" / "metrics.json").write_text(
        json.dumps({"profile": "fast", "verdict": "selective masking did NOT beat random masking"}))
    (run_dir / "06_segmentation_evaluation" / "results.md").write_text("| init | mIoU |\n|---|---|\n| scratch | 0.4 |")
    (run_dir / "timings.json").write_text(json.dumps({"01_random_masking": 3.2, "06_segmentation_evaluation": 40.0}))


def test_report_links_figures_and_tables(tmp_path: Path):
    _fake_run(tmp_path)
    text = build_report(tmp_path).read_text()
    assert "](./01_random_masking/mask_ratios.png)" in text
    assert "extra.png" in text
    assert "| scratch | 0.4 |" in text
    assert "did NOT beat" in text
    assert "**43**" in text  # total seconds
    assert "Not run" in text  # notebooks absent from a partial run are listed


def _full_run(run_dir: Path, source: str = "synthetic teaching model") -> None:
    _fake_run(run_dir)
    (run_dir / "04_selective_masks").mkdir()
    (run_dir / "04_selective_masks" / "metrics.json").write_text(json.dumps(
        {"profile": "fast", "model_source": f"Found ({source}), loading it", "verdict": "Masks DOES concentrate."}))
    (run_dir / "06_segmentation_evaluation" / "metrics.json").write_text(json.dumps(
        {"profile": "fast", "verdict": "Selective beat random.", "verdict_vs_scratch": "Selective beat scratch.",
         "model_sources": {"scratch": f"Found ({source})", "selective": f"Found ({source})"}}))
    study = run_dir / "07_reproduction_study"
    study.mkdir()
    (study / "study_answer.png").write_bytes(b"\x89PNG")
    (study / "results.md").write_text("| init | mIoU |\n|---|---|\n| scratch | 0.191 ± 0.266 |")
    (study / "metrics.json").write_text(json.dumps({"profile": "fast", "verdict": "Smoke test, not evidence.",
        "committed_study": {"source": "notebooks/results/study_cpu.json", "answer": "No measurable gain."}}))


def test_report_leads_with_the_models_and_the_committed_study_not_the_smoke_run(tmp_path: Path):
    _full_run(tmp_path)
    text = build_report(tmp_path).read_text()
    order = [text.index(s) for s in ("## What the teaching models show", "Masks DOES concentrate.",
                                     "Selective beat random. Selective beat scratch.", "## What the committed study shows",
                                     "No measurable gain.", "](./07_reproduction_study/study_answer.png)",
                                     "## Smoke test", "**Not evidence.**", "0.191 ± 0.266")]
    assert order == sorted(order), text  # the smoke run's numbers come last, labelled
    assert "![07_reproduction_study study_answer]" not in text  # drawn once, in the lead (linked below)


def test_report_names_models_trained_in_the_run_as_such(tmp_path: Path):
    _full_run(tmp_path, source="this run folder")
    text = build_report(tmp_path).read_text()
    assert "## What this run's models show" in text and "teaching models show" not in text


def test_report_without_notebook_07_points_to_the_committed_study(tmp_path: Path):
    _fake_run(tmp_path)
    text = build_report(tmp_path).read_text()
    assert "Notebook 07 did not run here" in text and "notebooks/results/study_cpu.md" in text


def test_report_on_an_empty_folder_and_a_missing_one(tmp_path: Path):
    assert build_report(tmp_path).is_file()
    with pytest.raises(FileNotFoundError, match="run the notebooks first"):
        build_report(tmp_path / "nope")


def test_setup_derives_run_folder_and_env_override(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SMIR_PROFILE", "fast")
    monkeypatch.setenv("SMIR_RUN_DIR", str(tmp_path / "env_run"))
    ctx = setup_notebook("01_random_masking", profile="paper", run_dir="")
    assert ctx.profile == "fast" and ctx.out_dir == (tmp_path / "env_run" / "01_random_masking").resolve()
    assert ctx.out_dir.is_dir()
    monkeypatch.setenv("SMIR_PROFILE", "huge")
    with pytest.raises(ValueError, match="expected one of"):
        setup_notebook("x", run_dir=tmp_path)


def test_metrics_and_figures_are_written(tmp_path: Path):
    import torch
    from matplotlib.figure import Figure

    ctx = setup_notebook("02_reconstruction", run_dir=tmp_path)
    fig = Figure()
    fig.subplots().plot([0, 1])
    ctx.save_figure(fig, "curve")
    path = ctx.write_metrics({"loss": torch.tensor(0.5), "per_class": torch.tensor([0.1, 0.2])})
    data = json.loads(path.read_text())
    assert data["loss"] == 0.5 and data["figures"] == ["curve.png"] and data["notebook"] == "02_reconstruction"
    assert to_jsonable({"nan": float("nan")}) == {"nan": None}
