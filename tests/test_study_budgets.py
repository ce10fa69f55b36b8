"""The budget study end to end at toy size (two shards, resume, report, study block), and the
committed study block of notebooks/results/README.md checked against the committed JSON it was
generated from."""

import json
import re
import shutil

import pytest

from smir_lib.study.plan import load_protocol, work_units
from smir_lib.study.rerun import rerun_cell, rerun_lines
from smir_lib.study.run import run_units, unit_done
from smir_lib.study.tables import (README_BEGIN, README_END, RESULTS_README, readme_section, write_readme_section,
                                   write_report)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_toy_study_in_two_shards_resumes_and_reports(tmp_path):
    protocol = load_protocol("toy")  # 2 seeds, budgets 5 / 10 image-steps, a pool of 6 in 2 partitions
    root = tmp_path / "study"
    first = run_units(protocol, root, 0, 2, steal=False, poll_s=0.1, wait_s=1)
    assert not first["failed"] and first["left"]  # shard 0 alone leaves shard 1's units
    second = run_units(protocol, root, 1, 2, steal=False, poll_s=0.1, wait_s=1)
    assert not second["failed"] and second["left"] == []
    assert all(unit_done(root, u) for u in work_units(protocol))
    assert run_units(protocol, root, 0, 1, poll_s=0.1, wait_s=1)["ran"] == []  # finished units are not redone
    logged = [json.loads(line) for line in (root / "units.jsonl").read_text().splitlines()]
    assert sorted(r["folder"] for r in logged) == sorted(u.folder for u in work_units(protocol))

    summary = write_report(protocol, root, tmp_path / "out" / "toy", "python test")  # toy units: too small to time
    assert summary["units"] == {"total": 2 * 4 + 2 * 5, "done": 18, "missing": []}  # per seed: 4 + 5
    # pool 6: random trains 5 (1 validates), selective 2 partitions of 3 keep 2 each = 4 per epoch
    spent = summary["pretraining"]["synthetic"]
    assert spent["5"]["random"]["0"]["images"] == 5 and spent["10"]["random"]["0"]["images"] == 10
    assert spent["5"]["selective"]["0"]["images"] == 4 and spent["10"]["selective"]["0"]["images"] == 8
    cell = summary["datasets"]["synthetic"]["labels"]["2"]
    assert set(cell["inits"]) == {"scratch", "random_5", "selective_5", "random_10", "selective_10"}
    assert len(cell["differences"]) == 6 and all(d["n_seeds"] == 2 for d in cell["differences"])
    assert cell["finetune"]["iterations"] == 2 and len(cell["curves"]["scratch"]) == 2
    for suffix in (".json", ".md", "_synthetic_budget.png", "_synthetic_curves.png"):
        assert (tmp_path / "out" / f"toy{suffix}").is_file(), suffix
    assert "estimate" not in summary
    with pytest.raises(ValueError, match="has finished under"):  # a fresh clone has no runs
        write_report(protocol, tmp_path / "no_runs", tmp_path / "out" / "toy", "python test")
    shutil.copytree(root, tmp_path / "partial")
    (tmp_path / "partial" / work_units(protocol)[-1].folder / "results.json").unlink()
    with pytest.raises(ValueError, match="reports 18 finished units"):  # nor replace a fuller report
        write_report(protocol, tmp_path / "partial", tmp_path / "out" / "toy", "python test")
    readme = tmp_path / "README.md"  # the block's page, as notebooks/results/README.md holds it
    readme.write_text(f"# x\n\n{README_BEGIN}\nPREVIOUS TEXT\n{README_END}\n\nafter\n")
    block = write_readme_section(tmp_path / "out" / "toy.json", readme)
    assert readme.read_text() == f"# x\n\n{block}\n\nafter\n" and "PREVIOUS TEXT" not in block
    cell = "finetune/synthetic/seed_0/train_2/selective_10"
    assert f"smir study rerun {tmp_path / 'out' / 'toy'}.json {cell}" in block  # the block names one command
    assert "](toy.md)" in block and "](toy_synthetic_budget.png)" in block  # links relative to the reports' folder

    # Rerunning one cell: that unit and its pretraining only, in a fresh folder, beside the committed seed.
    rerun = rerun_cell(tmp_path / "out" / "toy.json", cell, tmp_path / "rerun", log=lambda m: None)
    ran = sorted(r["folder"] for r in map(json.loads, (tmp_path / "rerun" / "units.jsonl").read_text().splitlines()))
    assert ran == ["finetune/synthetic/seed_0/train_2/selective_10", "pretrain/synthetic/seed_0/selective_10"]
    assert rerun["committed"] == cell_values(summary, cell) and len(rerun["rerun"]) == len(rerun["metrics"])
    assert rerun["rerun"][0] == pytest.approx(rerun["committed"][0], abs=0.05)  # same code, same seed
    assert "difference" in rerun_lines(rerun)[1]
    edited = json.loads((tmp_path / "out" / "toy.json").read_text())
    edited["datasets"]["synthetic"]["labels"]["2"]["finetune"]["epochs"] = 7
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    with pytest.raises(ValueError, match="fine-tuned for 7 epochs, protocol 'toy' now asks 2"):
        rerun_cell(tmp_path / "edited.json", cell, tmp_path / "rerun")
    with pytest.raises(ValueError, match="names 2 unit"):
        rerun_cell(tmp_path / "out" / "toy.json", "finetune/synthetic/*/train_2/scratch", tmp_path / "rerun")
    with pytest.raises(ValueError, match="no unit of the protocol matches"):
        run_units(protocol, tmp_path / "rerun", only=["finetune/cwfid/*"])

    # A protocol edited after its units ran: finished units of the old one are refused, never mixed in.
    longer = load_protocol("toy", {"label_budgets": [{**protocol.label_budgets[0], "finetune_epochs": 3}]})
    out = run_units(longer, root, 0, 1, poll_s=0.1, wait_s=1)
    assert out["ran"] == [] and len(out["failed"]) == 2 * 5  # every fine-tuning unit, none rerun silently
    assert "finetune_epochs': (2, 3)" in next(iter(out["failed"].values()))
    with pytest.raises(ValueError, match="do not match protocol 'toy'.*move that folder away"):
        write_report(longer, root, tmp_path / "out" / "longer", "python test")


def cell_values(summary, folder):
    _, dataset, seed, train, init = folder.split("/")
    return summary["datasets"][dataset]["labels"][train.split("_")[1]]["inits"][init]["per_seed"][seed.split("_")[1]]


@pytest.mark.unit
def test_results_page_study_block_is_generated_from_the_committed_json(repo_root):
    """Every number in the study block of notebooks/results/README.md comes from
    notebooks/results/study_cpu.json and its checks' JSON: the block is exactly what
    ``readme_section`` makes of them (regenerate with ``smir study readme
    notebooks/results/study_cpu.json --checks notebooks/results/study_cpu_check_2x.json
    notebooks/results/study_cpu_check_35.json``)."""
    assert RESULTS_README == repo_root / "notebooks/results/README.md"
    summary = json.loads((repo_root / "notebooks/results/study_cpu.json").read_text())
    text = RESULTS_README.read_text()
    start, end = text.index(README_BEGIN), text.index(README_END) + len(README_END)
    block = text[start:end]
    names = re.findall(r"^Fine-tuning length check `[^`]+` \(\[(\w+)\.md\]", block, flags=re.M)
    checks = [json.loads((repo_root / f"notebooks/results/{n}.json").read_text()) for n in names]
    assert block == readme_section(summary, checks)
    numbers = re.findall(r"[+-]?\d+\.\d+", block)
    assert numbers, "the study section quotes no measured number"
    figures = re.findall(r"\]\(([^)/]+\.png)\)", block)
    assert len(figures) == len(summary["datasets"]), figures
    for figure in figures:
        assert (repo_root / "notebooks/results" / figure).is_file(), figure


def _reported_results(summary: dict) -> set[str]:
    """The results a study report states, written as the results page writes them (3 or 4 decimals, no
    sign): every initialisation's mean and interval, every paired difference's, and the numbers of
    its computed verdicts (headline: plateau rises and the like). Per-seed values and curves are left
    out: among their thousands of numbers nearly any 3-decimal value would be found."""
    from smir_lib.study.tables import headline

    values = []
    for dataset in summary["datasets"].values():
        for cell in dataset["labels"].values():
            values += [v for row in cell["inits"].values() for k in ("mean", "low", "high") for v in row[k]]
            values += [m[k] for d in cell["differences"] for m in d["metrics"].values() for k in ("mean", "low", "high")]
    out = {f"{abs(v):.{n}f}" for v in values if v == v for n in (3, 4)}
    return out | set(re.findall(r"\d\.\d{3,4}", "\n".join(headline(summary))))


@pytest.mark.unit
def test_every_result_the_study_text_quotes_is_in_a_committed_report(repo_root):
    """The hand-written text around the generated block of notebooks/results/README.md quotes
    results (numbers with 3 or 4 decimals: means, differences, bounds) only as the committed
    reports state them: the study's and its checks' JSON (notebooks/results/study_cpu*.json), so no
    number drifts from the runs. (Today it quotes none: the numbers are in the generated block.)
    The README's own findings are checked in tests/test_docs.py."""
    text = RESULTS_README.read_text()
    start = text.index("## Does selective masking pay off")
    section = text[start:text.index("\n## ", start + 1)]
    prose = section[:section.index(README_BEGIN)] + section[section.index(README_END):]
    known = set().union(*(_reported_results(json.loads(p.read_text()))
                          for p in (repo_root / "notebooks/results").glob("study_cpu*.json")))
    quoted = re.findall(r"(?<![\d.])[+-]?(\d\.\d{3,4})(?![\d])", prose)
    unknown = [q for q in quoted if q not in known]
    assert not unknown, f"{RESULTS_README} study text quotes {unknown}, which no committed report states"


@pytest.mark.unit
@pytest.mark.parametrize("args,names", [
    (["plan", "--protocol", "nonexist"], "'nonexist' is neither a file nor one of the packaged protocols"),
    (["rerun", "notebooks/results/study_cpu.json", "finetune/cwfid/seed_9/train_4/scratch"],
     "no unit of the protocol matches ['finetune/cwfid/seed_9/train_4/scratch']"),
])
def test_study_script_errors_are_one_line(repo_root, args, names):
    """A mistyped protocol or unit is one line naming it (exit 2), not a traceback."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "smir_lib", "study", *args], cwd=repo_root,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and names in done.stderr and "Traceback" not in done.stderr
