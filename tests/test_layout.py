"""The library's floor plan: the method at the root, a folder per role, no import cycle.

Read from the source with ``ast`` (nothing is imported), so a cycle hidden behind an import
inside a function is found as well as one at module top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parent.parent / "smir_lib"
METHOD = {"patches", "losses", "selective", "models", "metrics"}
FOUNDATIONS = {"runtime", "files"}
FOLDERS = {"engine", "data", "notebook", "study", "tools"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """The ``smir_lib`` modules that ``path`` imports: (module, line, whether at module top)."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            raise AssertionError(f"{path}:{node.lineno}: relative import; write it as from smir_lib....")
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            if name in modules:
                found.append((name, node.lineno, id(node) in top))
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {target for target, _, _ in _imports(path, modules) if target != name}
            for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_a_cycle_and_only_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_inside_smir_lib():
    cycle = find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_imports_sit_at_module_top():
    modules = _modules()
    inside = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}"
              for path in modules.values() for name, line, at_top in _imports(path, modules) if not at_top]
    assert not inside, "imports inside functions: " + "; ".join(inside)


def test_the_method_imports_nothing_from_the_folders():
    graph = _graph()
    for name in METHOD | FOUNDATIONS:
        module = f"smir_lib.{name}"
        outside = {t for t in graph[module] if t.split(".")[1] not in METHOD | FOUNDATIONS}
        assert not outside, f"{module} imports {sorted(outside)}: the method may use only its foundations"
    for name in FOUNDATIONS:
        assert not graph[f"smir_lib.{name}"], f"smir_lib.{name} is a foundation and imports the kit"


def test_the_root_holds_the_method_and_a_folder_per_role():
    root_modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert root_modules == METHOD | FOUNDATIONS | {"__init__", "__main__"}
    assert len(root_modules) <= 10
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert folders == FOLDERS
    doc = ast.get_docstring(ast.parse((PACKAGE / "__init__.py").read_text()))
    for name in sorted(METHOD | FOUNDATIONS | FOLDERS):
        assert f"``{name}" in doc, f"smir_lib/__init__.py's map does not name {name}"
