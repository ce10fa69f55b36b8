"""``smir`` (``python -m smir_lib``): one entry point for every job; config files, overrides,
errors, and pretrain -> finetune -> evaluate."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from smir_lib.notebook import zoo
from smir_lib.tools.cli import JOBS, build_parser, main

REPO = Path(__file__).resolve().parent.parent
EXPECTED_JOBS = {"pretrain", "finetune", "evaluate", "predict", "export", "check-data", "download", "models",
                 "demo", "study", "reproduce"}
STUDY_COMMANDS = ("plan", "run", "report", "readme", "rerun")

TINY = ["model=tiny", "synthetic_size=72", "image_size=64", "msssim_win=3", "n_patches=64", "k=2",
        "partitions=2", "pool_size=10", "pretrain_epochs=1", "pretrain_batch=4", "warmup_epochs=0",
        "workers=0", "score_batch=4", "train_size=4", "val_size=2", "test_size=2",
        "finetune_epochs=1", "finetune_batch=2"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _run(command: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's smir_lib, whatever is installed
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.unit
@pytest.mark.parametrize("entry", ["smir", "python -m smir_lib"])
def test_help_lists_every_job_with_a_description(entry):
    """The console script and ``python -m smir_lib`` are the same command and list every job."""
    if entry == "smir":
        script = Path(sys.executable).with_name("smir")
        assert script.is_file(), f"{script} missing: install the kit (pip install -e .) to get the smir command"
        command = [str(script)]
    else:
        command = [sys.executable, "-m", "smir_lib"]
    done = _run([*command, "--help"])
    assert done.returncode == 0, done.stderr
    assert set(JOBS) == EXPECTED_JOBS
    for job, (description, _, _) in JOBS.items():
        assert job in done.stdout and description.split()[0] in done.stdout, job
        assert description and "\n" not in description and len(description) <= 60, job  # one line


@pytest.mark.unit
@pytest.mark.parametrize("job", [*sorted(EXPECTED_JOBS), *(f"study {c}" for c in STUDY_COMMANDS)])
def test_every_job_has_help(job, capsys):
    with pytest.raises(SystemExit) as done:
        main([*job.split(), "--help"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: smir {job}")


@pytest.mark.unit
def test_study_plan_runs_and_a_bad_protocol_is_one_line(capsys):
    assert main(["study", "plan", "--protocol", "toy"]) == 0
    assert "18 units: 8 pretraining, 10 fine-tuning" in capsys.readouterr().out
    assert main(["study", "plan", "--protocol", "nonexist"]) == 2
    assert "'nonexist' is neither a file nor one of the packaged protocols" in capsys.readouterr().err


@pytest.mark.unit
def test_models_records_the_smir_command_line(monkeypatch, tmp_path, capsys):
    """A job that records its command (a manifest, a report) records the ``smir`` line it ran."""
    seen = {}

    def build(dataset, out, work, overrides, command):
        seen.update(dataset=dataset, out=out, overrides=overrides, command=command)
        return {"quality_on_test_images": {k: {"gain_db": 1.0} for k in ("random", "selective")},
                "test_miou": {}}

    monkeypatch.setattr(zoo, "build", build)
    assert main(["models", "--dataset", "synthetic", "--out", str(tmp_path), "seed=3"]) == 0
    assert seen == {"dataset": "synthetic", "out": tmp_path / "synthetic", "overrides": {"seed": "3"},
                    "command": f"smir models --dataset synthetic --out {tmp_path} seed=3"}
    assert main(["models", "seed", "--dataset", "synthetic"]) == 2
    assert "overrides must be key=value" in capsys.readouterr().err


@pytest.mark.unit
def test_old_entry_points_are_gone_or_one_line_wrappers(monkeypatch, capsys):
    """``data_download.py`` stays (the kit's brief names it) and runs ``smir download``; the
    scripts in notebooks/results/ and the ``python -m smir_lib.<module>`` mains are gone."""
    monkeypatch.setenv("COLUMNS", "100")  # the same help width here and in the subprocess
    wrapper = _run([sys.executable, "data_download.py", "--help"])
    with pytest.raises(SystemExit):
        main(["download", "--help"])
    assert wrapper.returncode == 0
    assert wrapper.stdout == capsys.readouterr().out and wrapper.stdout.startswith("usage: smir download")
    assert not (REPO / "notebooks/results/study.py").exists() and not (REPO / "notebooks/results/reproduce.py").exists()
    mains = [str(p.relative_to(REPO)) for p in (REPO / "smir_lib").rglob("*.py")
             if '__name__ == "__main__"' in p.read_text()]
    assert mains == ["smir_lib/__main__.py"]


@pytest.mark.unit
def test_parser_and_bad_overrides(capsys, tmp_path):
    args = build_parser().parse_args(["pretrain", "--method", "random", "--out", "x", "seed=2"])
    assert (args.command, args.method, args.overrides) == ("pretrain", "random", ["seed=2"])
    assert main(["pretrain", "--method", "random", "--out", str(tmp_path), "epochz=3"]) == 2
    assert "valid keys are" in capsys.readouterr().err
    assert main(["finetune", "--out", str(tmp_path), "seed"]) == 2
    with pytest.raises(SystemExit):
        main(["pretrain", "--method", "mae", "--out", str(tmp_path)])


@pytest.mark.slow
def test_pretrain_finetune_evaluate_from_a_config_file(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text("preset: fast\n" + "".join(f"{o.replace('=', ': ', 1)}\n" for o in TINY))
    pre = tmp_path / "pre"
    assert main(["pretrain", "--method", "selective", "--config", str(config), "--out", str(pre), "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["best_checkpoint"].endswith("pretrained.pt")
    assert (pre / "history.csv").is_file() and (pre / "step_1" / "masks.pt").is_file()
    ft = tmp_path / "ft"
    assert main(["finetune", "--config", str(config), "--init", str(pre / "pretrained.pt"),
                 "--out", str(ft), "--quiet", "seed=0"]) == 0
    assert "test_miou" in json.loads(capsys.readouterr().out)
    metrics = tmp_path / "metrics.json"
    assert main(["evaluate", "--config", str(config), "--checkpoint", str(ft / "finetune" / "best.pt"),
                 "--out", str(metrics), "--quiet"]) == 0
    assert set(json.loads(metrics.read_text())) >= {"miou", "per_class_iou", "confusion", "lowest_classes"}
    folder_metrics = tmp_path / "folder_metrics.json"  # the run folder names the same checkpoint (as for predict)
    assert main(["evaluate", "--config", str(config), "--checkpoint", str(ft), "--out", str(folder_metrics),
                 "--quiet"]) == 0
    assert json.loads(folder_metrics.read_text())["miou"] == json.loads(metrics.read_text())["miou"]


@pytest.mark.unit
def test_the_command_line_page_shows_every_job_and_its_examples_parse():
    """docs/command-line.md has a section per job, and every ``smir ...`` line in it is a valid call."""
    text = (REPO / "docs" / "command-line.md").read_text()
    assert {line[4:].strip() for line in text.splitlines() if line.startswith("### ")} == set(JOBS)
    examples = [line for line in text.splitlines() if line.startswith("smir ") and "--help" not in line]
    assert len(examples) >= len(JOBS)
    for line in examples:
        args = build_parser().parse_args(shlex.split(line.split("  #")[0])[1:])
        assert args.command in JOBS, line
