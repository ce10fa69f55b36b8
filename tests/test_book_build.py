"""book/build.py without Sphinx or a browser: which run the book takes, and how a notebook is staged."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

from book.build import book_notebook, find_run, run_state

pytestmark = pytest.mark.unit


def committed_notebook() -> nbformat.NotebookNode:
    """A small notebook in the committed notebooks' format: nbformat 4.4, so no cell ids."""
    nb = nbformat.v4.new_notebook(nbformat_minor=4)
    nb.cells = [nbformat.v4.new_markdown_cell("# 09 · Test\nRun time: none."),
                nbformat.v4.new_code_cell("PROFILE = 'fast'"),
                nbformat.v4.new_code_cell("ctx = setup_notebook('09_test')"),
                nbformat.v4.new_markdown_cell("## The idea"),
                nbformat.v4.new_code_cell("draw()"),
                nbformat.v4.new_markdown_cell("## Exercises\n1. Why?\n\n<details><summary>Answer</summary>\n\n"
                                              "Because.\n\n</details>")]
    nb.cells[1].metadata["tags"] = ["parameters"]
    nb.cells[4].metadata["tags"] = ["paper-figure"]
    for cell in nb.cells:
        cell.pop("id")
    return nb


def executed_copy(nb: nbformat.NotebookNode, *, finished: bool = True, error: bool = False) -> nbformat.NotebookNode:
    """What papermill writes: the injected-parameters cell, outputs, and its metadata."""
    ran = nbformat.from_dict(nb)
    ran.nbformat_minor = 5
    for i, cell in enumerate(ran.cells):
        cell.id = f"cell-{i}"
    injected = nbformat.v4.new_code_cell("PROFILE = \"fast\"\nRUN_DIR = \"/runs/x\"")
    injected.metadata["tags"] = ["injected-parameters"]
    ran.cells.insert(2, injected)
    for i, cell in enumerate(c for c in ran.cells if c.cell_type == "code"):
        cell.execution_count = i + 1
        cell.outputs = [nbformat.v4.new_output("stream", text=f"output {i}\n")]
    if error:
        ran.cells[-2].outputs = [nbformat.v4.new_output("error", ename="ValueError", evalue="bad", traceback=[])]
    ran.metadata["papermill"] = {"end_time": "2026-12-03T13:00:00" if finished else None, "exception": error,
                                 "parameters": {"PROFILE": "fast"}}
    return ran


def write_run(runs: Path, name: str, source: Path, mtime: float, **kwargs) -> Path:
    executed = runs / name / "executed"
    executed.mkdir(parents=True)
    nbformat.write(executed_copy(nbformat.read(source, as_version=4), **kwargs), executed / source.name)
    os.utime(executed, (mtime, mtime))
    return runs / name


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "notebooks" / "09_test.ipynb"
    path.parent.mkdir()
    nbformat.write(committed_notebook(), path)
    return path


def test_a_finished_run_of_todays_code_is_current(tmp_path: Path, source: Path):
    run = write_run(tmp_path / "runs", "a", source, 1000)
    assert run_state(run / "executed", [source]) is None


@pytest.mark.parametrize("change, reason", [
    ("code", "ran other code than today's 09_test.ipynb"),
    ("missing", "lacks 09_test.ipynb"),
    ("unfinished", "is still running 09_test.ipynb, or was stopped in it"),
    ("error", "has an error in 09_test.ipynb"),
])
def test_a_run_that_cannot_be_shown_says_why(tmp_path: Path, source: Path, change: str, reason: str):
    run = write_run(tmp_path / "runs", "a", source, 1000, finished=change != "unfinished", error=change == "error")
    if change == "code":
        nb = nbformat.read(source, as_version=4)
        nb.cells[4].source = "draw(other=True)"
        nbformat.write(nb, source)
    if change == "missing":
        (run / "executed" / source.name).unlink()
    assert run_state(run / "executed", [source]) == reason


def test_prose_and_tags_may_change_without_a_new_run(tmp_path: Path, source: Path):
    run = write_run(tmp_path / "runs", "a", source, 1000)
    nb = nbformat.read(source, as_version=4)
    nb.cells[3].source = "## The idea, said better"
    nb.cells[2].metadata["tags"] = ["hide-input"]
    nbformat.write(nb, source)
    assert run_state(run / "executed", [source]) is None


def test_find_run_takes_the_newest_current_run(tmp_path: Path, source: Path, capsys):
    runs = tmp_path / "runs"
    write_run(runs, "old", source, 1000)
    newer = write_run(runs, "newer", source, 2000)
    write_run(runs, "newest_broken", source, 3000, error=True)
    assert find_run(runs, [source]) == newer
    assert "skipping" in capsys.readouterr().out
    assert find_run(tmp_path / "nothing", [source]) is None


def test_book_notebook_has_the_committed_cells_the_run_outputs_and_collapsed_setup(tmp_path: Path, source: Path):
    run = write_run(tmp_path / "runs", "a", source, 1000)
    nb = nbformat.read(source, as_version=4)
    nb.cells[3].source = "## The idea, said better"
    nbformat.write(nb, source)
    staged = book_notebook(source, run / "executed" / source.name, run, "fast")
    nbformat.validate(staged)
    kinds = [(c.cell_type, c.source.splitlines()[0]) for c in staged.cells]
    assert kinds[:5] == [("markdown", "# 09 · Test"), ("markdown", ":::{admonition} Run this notebook yourself"),
                         ("code", "PROFILE = 'fast'"), ("code", 'PROFILE = "fast"'),
                         ("code", "ctx = setup_notebook('09_test')")]
    assert staged.cells[5].source == "## The idea, said better"
    note = staged.cells[1].source
    assert "{download}`09_test.ipynb </_download/09_test.ipynb>`" in note and "jupyter lab notebooks/09_test.ipynb" in note
    code = [c for c in staged.cells if c.cell_type == "code"]
    assert [c.outputs[0].text for c in code] == ["output 0\n", "output 1\n", "output 2\n", "output 3\n"]
    assert [c.metadata["tags"] for c in code] == [["parameters", "hide-cell"], ["injected-parameters", "hide-cell"],
                                                 ["hide-cell"], ["paper-figure"]]
