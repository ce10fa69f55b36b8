"""Build the book: the executed notebooks of the newest current demo run, rendered with Sphinx.

``make book`` runs this script. It finds the newest run folder ``runs/<name>/executed/`` holding
every notebook of ``notebooks/NN_*.ipynb``, run to the end without an error, with today's code
cells (papermill's injected parameters aside; ``make demo`` writes such folders), or runs the demo
when there is none.
It then stages, in ``<out>/src/``, the book's own pages (``book/``), the executed notebooks, the
README, ``docs/``, the committed study results and ``benchmarks/RESULTS.md``, in the repository's
layout so the links between them resolve, and builds the HTML site in ``<out>/html/``.

Each staged notebook is the committed one (its prose and cell tags) with the run's outputs; its
setup cells (the code before its first ``##`` section) are collapsed, and a note after the title links the clean notebook to download and says how to
open it in JupyterLab. The committed notebooks are not changed.

Usage::

    python book/build.py                      # -> build/book/html
    python book/build.py --run runs/20261203-130900 --out /tmp/book
    python -m http.server -d build/book/html  # preview on http://localhost:8000
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import nbformat
from sphinx.cmd.build import build_main

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
SERIES = "[0-9][0-9]_*.ipynb"
# Repository files the book renders beside the notebooks (globs, relative to the root).
PAGES = ["README.md", "docs/**/*", "notebooks/images/*", "notebooks/results/*.md", "notebooks/results/*.png",
         "benchmarks/RESULTS.md"]
COLLAPSED = {"hide-cell", "hide-input", "hide-output", "remove-cell", "remove-input", "remove-output"}
OPEN_NOTE = """:::{{admonition}} Run this notebook yourself
:class: tip

Download {{download}}`{name} </_download/{name}>` (the notebook as committed, without outputs).
It imports the kit's library `smir_lib`, so open it from a clone of the kit, where it sits in
`notebooks/`: `make venv && .venv/bin/jupyter lab notebooks/{name}`. The outputs below are those of
the demo run `{run}` ({profile} profile).
:::
"""


def code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    """A notebook's code cells, papermill's injected-parameters cell left out."""
    return [cell for cell in nb.cells
            if cell.cell_type == "code" and "injected-parameters" not in cell.metadata.get("tags", [])]


def run_state(executed: Path, sources: list[Path]) -> str | None:
    """Why ``executed`` cannot be the book's run (missing, stale or failed notebook), or None if it can."""
    for source in sources:
        path = executed / source.name
        if not path.is_file():
            return f"lacks {source.name}"
        nb = nbformat.read(path, as_version=4)
        committed = [cell.source for cell in code_cells(nbformat.read(source, as_version=4))]
        if [cell.source for cell in code_cells(nb)] != committed:
            return f"ran other code than today's {source.name}"
        papermill = nb.metadata.get("papermill", {})
        if not papermill.get("end_time"):
            return f"is still running {source.name}, or was stopped in it"
        if papermill.get("exception") or any(
                out.get("output_type") == "error" for cell in nb.cells for out in cell.get("outputs", [])):
            return f"has an error in {source.name}"
    return None


def find_run(runs: Path, sources: list[Path]) -> Path | None:
    """The newest run folder under ``runs`` whose executed notebooks are the committed ones, all run."""
    candidates = sorted((p.parent for p in runs.glob("*/executed")), key=lambda p: (p / "executed").stat().st_mtime,
                        reverse=True)
    for run in candidates:
        reason = run_state(run / "executed", sources)
        if reason is None:
            return run
        print(f"book: skipping {run} (it {reason})", flush=True)
    return None


def run_demo(runs: Path) -> Path:
    """Run the notebook series (`smir demo`, fast profile) into ``runs/<timestamp>`` and return it."""
    run = runs / time.strftime("%Y%m%d-%H%M%S")
    print(f"book: no current demo run in {runs}; running the demo into {run}", flush=True)
    subprocess.run([sys.executable, "-m", "smir_lib", "demo", "--profile", "fast", "--out", str(run),
                    "--quiet"], cwd=ROOT, check=True)
    return run


def book_notebook(source: Path, executed: Path, run: Path, profile: str) -> nbformat.NotebookNode:
    """The committed notebook with the outputs of its executed copy, as the book shows it.

    Markdown cells and cell tags come from the committed notebook (so prose and tags can change
    without a new demo run), outputs from the run, whose code cells are the committed ones.
    Setup cells are collapsed and a note on downloading and opening the notebook follows the title.
    """
    nb, ran = nbformat.read(source, as_version=4), nbformat.read(executed, as_version=4)
    for cell, done in zip(code_cells(nb), code_cells(ran), strict=True):
        cell.outputs, cell.execution_count = done.outputs, done.execution_count
    injected = [c for c in ran.cells if "injected-parameters" in c.metadata.get("tags", [])]
    at = next((i + 1 for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])), 1)
    nb.cells[at:at] = injected
    nb.metadata["papermill"] = ran.metadata.get("papermill", {})
    for cell in nb.cells[1:]:
        if cell.cell_type == "markdown" and cell.source.lstrip().startswith("## "):
            break
        tags = cell.metadata.setdefault("tags", [])
        if cell.cell_type == "code" and not COLLAPSED & set(tags):
            tags.append("hide-cell")
    note = OPEN_NOTE.format(name=source.name, run=run.name, profile=profile)
    nb.cells.insert(1, nbformat.v4.new_markdown_cell(note))
    if nb.nbformat_minor < 5:  # nbformat 4.4 has no cell ids; papermill's cells and the note carry them
        for cell in nb.cells:
            cell.pop("id", None)
    return nb


def stage(run: Path, src: Path, sources: list[Path]) -> None:
    """Lay out the Sphinx sources of the book in ``src`` (emptied first)."""
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(BOOK, src, ignore=shutil.ignore_patterns("build.py", "__pycache__"))
    for pattern in PAGES:
        for path in ROOT.glob(pattern):
            if path.is_file():
                (src / path.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, src / path.relative_to(ROOT))
    executed = run / "executed"
    profile = nbformat.read(executed / sources[0].name, as_version=4).metadata.get(
        "papermill", {}).get("parameters", {}).get("PROFILE", "fast")
    (src / "notebooks").mkdir(exist_ok=True)
    (src / "_download").mkdir()
    for source in sources:
        nbformat.write(book_notebook(source, executed / source.name, run, profile), src / "notebooks" / source.name)
        shutil.copy2(source, src / "_download" / source.name)
    date = datetime.fromtimestamp(executed.stat().st_mtime, timezone.utc).strftime("%Y-%m-%d")
    (src / "book_run.json").write_text(json.dumps({"name": run.name, "date": date, "profile": profile}))


def build(out: Path, run: Path | None = None, runs: Path = ROOT / "runs", jobs: str = "1") -> Path:
    """Stage and build the book into ``out/html``; return that folder."""
    sources = sorted((ROOT / "notebooks").glob(SERIES))
    if not sources:
        raise FileNotFoundError(f"no notebooks named NN_*.ipynb in {ROOT / 'notebooks'}")
    if run is not None:
        reason = run_state(Path(run) / "executed", sources)
        if reason:
            raise ValueError(f"run {run} {reason}: run `make demo` (smir demo) and build from its folder")
    run = Path(run) if run is not None else (find_run(runs, sources) or run_demo(runs))
    start = time.perf_counter()
    stage(run, out / "src", sources)
    html = out / "html"
    if html.exists():
        shutil.rmtree(html)
    rc = build_main(["-b", "html", "-q", "-j", jobs, "-d", str(out / "doctrees"), str(out / "src"), str(html)])
    if rc:
        raise RuntimeError(f"sphinx-build failed with exit status {rc} on {out / 'src'}: see the messages above")
    size = sum(p.stat().st_size for p in html.rglob("*") if p.is_file())
    print(f"book: {len(sources)} notebooks of {run} built in {time.perf_counter() - start:.1f} s "
          f"into {html} ({size / 2**20:.1f} MiB)", flush=True)
    return html


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the book of the executed notebooks (HTML).")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "book",
                        help="build folder: src/ (staged sources) and html/ (the site); default build/book")
    parser.add_argument("--run", type=Path, default=None,
                        help="the demo run folder to render (default: the newest current one under runs/)")
    parser.add_argument("--jobs", default="1", help="Sphinx worker processes (default 1; 'auto' for all cores)")
    args = parser.parse_args(argv)
    html = build(args.out.resolve(), args.run, jobs=args.jobs)
    print(f"preview: python -m http.server -d {html}  (then open http://localhost:8000)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
