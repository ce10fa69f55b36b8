"""Project hygiene: pins agree everywhere, notebooks are committed clean and follow the skeleton."""

from __future__ import annotations

import ast
import json
import re
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _constraint_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[_canonical(name)] = version
    return pins


def _direct_dependencies() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + [d for group in project["optional-dependencies"].values() for d in group]
    return [_canonical(re.split(r"[<>=!~ \[;]", d)[0]) for d in deps]


def _environment_pins() -> dict[str, str]:
    import yaml

    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    pins = {}
    for entry in pip_section:
        if entry.startswith("-e"):
            continue
        name, version = entry.split("==")
        pins[_canonical(name)] = version
    return pins


def test_no_torchvision_anywhere():
    text = "\n".join(p.read_text() for p in [ROOT / "pyproject.toml", ROOT / "constraints.txt", ROOT / "environment.yml"])
    assert "torchvision" not in re.sub(r"#.*", "", text)


def test_torch_pinned_to_2_13_0():
    assert _constraint_pins()["torch"] == "2.13.0"
    assert _environment_pins()["torch"] == "2.13.0"


def test_every_direct_dependency_is_pinned_in_constraints():
    pins = _constraint_pins()
    missing = [d for d in _direct_dependencies() if d not in pins]
    assert not missing, f"add exact pins for {missing} to constraints.txt"


def test_environment_yml_matches_pip_files():
    """environment.yml lists exactly the direct dependencies, each at its constraints.txt pin."""
    env, pins = _environment_pins(), _constraint_pins()
    assert set(env) == set(_direct_dependencies()), "environment.yml and pyproject.toml list different packages"
    drift = {name: (version, pins[name]) for name, version in env.items() if pins[name] != version}
    assert not drift, f"environment.yml pins differ from constraints.txt: {drift}"
    assert "python=3.11" in (ROOT / "environment.yml").read_text()


def test_generated_folders_are_ignored():
    ignored = (ROOT / ".gitignore").read_text().split()
    for entry in [".venv/", "runs/", "/data/", "*.pt"]:
        assert entry in ignored


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no NN_*.ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean(path: Path):
    nb = json.loads(path.read_text())
    assert nb["metadata"].get("kernelspec", {}).get("name") == "python3"
    assert "papermill" not in nb["metadata"], "an executed copy was committed: strip it"
    assert (nb["nbformat"], nb["nbformat_minor"]) == (4, 4), f"{path.name} is not nbformat 4.4 (the book stages 4.4)"
    for i, cell in enumerate(nb["cells"]):
        assert "id" not in cell, f"cell {i} of {path.name} has an id, which nbformat 4.4 has not: drop it"
        assert "papermill" not in cell.get("metadata", {}), f"cell {i} carries papermill metadata"
        if cell["cell_type"] != "code":
            continue
        tags = cell.get("metadata", {}).get("tags", [])
        if "keep_output" in tags:
            assert cell["source"] and "".join(cell["source"]).startswith("# NBVAL_CHECK_OUTPUT"), \
                f"cell {i} keeps its output: its first line must be '# NBVAL_CHECK_OUTPUT'"
            continue
        assert not cell.get("outputs"), f"cell {i} of {path.name} has outputs: run nbstripout"
        assert cell.get("execution_count") is None, f"cell {i} of {path.name} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_one_literal_parameters_cell(path: Path):
    cells = json.loads(path.read_text())["cells"]
    params = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, f"{path.name} has {len(params)} cells tagged 'parameters', expected 1"
    tree = ast.parse("".join(params[0]["source"]))
    for node in tree.body:
        assert isinstance(node, (ast.Assign, ast.AnnAssign)), \
            f"{path.name}: the parameters cell may hold only assignments, found {ast.dump(node)[:60]}"
        ast.literal_eval(node.value)  # papermill can override only literals
    names = {t.id for node in tree.body for t in (node.targets if isinstance(node, ast.Assign) else [node.target])}
    assert {"PROFILE", "RUN_DIR"} <= names, f"{path.name}: parameters lack {({'PROFILE', 'RUN_DIR'} - names)}"
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    explorers = [src for src in code if "INTERACTIVE" in src and "widgets." in src]
    assert ("INTERACTIVE" in names) == bool(explorers), (
        f"{path.name}: INTERACTIVE must switch an explorer on (a cell `if INTERACTIVE:` using smir_lib.notebook.widgets) "
        "or not be a parameter" if "INTERACTIVE" in names else
        f"{path.name}: an explorer cell uses INTERACTIVE, which the parameters cell does not set")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_follows_the_skeleton(path: Path):
    """STYLE.md: title `# NN · Topic`, run time, links to neighbours, widgets behind INTERACTIVE."""
    cells = json.loads(path.read_text())["cells"]
    first = "".join(cells[0]["source"])
    number = path.stem[:2]
    assert cells[0]["cell_type"] == "markdown" and first.startswith(f"# {number} · "), \
        f"{path.name} must open with a markdown title '# {number} · Topic'"
    assert re.search(r"run time", first, re.I), f"{path.name}: the opening cell states no expected run time"
    neighbours = [p.name for p in NOTEBOOKS if abs(int(p.stem[:2]) - int(number)) == 1]
    for name in neighbours:
        assert name in first, f"{path.name}: the opening cell does not link to {name}"
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    for src in code:
        if "widgets." in src and "import" not in src:
            assert "INTERACTIVE" in src, f"{path.name}: a widget cell is not behind INTERACTIVE:\n{src}"
    too_long = [src.splitlines()[0] for src in code if len([l for l in src.splitlines() if l.strip()]) > 15]
    assert not too_long, f"{path.name}: code cells over 15 lines belong in smir_lib: {too_long}"
