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
