"""Run the notebook series with papermill, as ``make demo`` and the notebooks test tier do.

Every notebook in ``notebooks/`` named ``NN_topic.ipynb`` is executed in order into one run
folder. Each receives two parameters, ``PROFILE`` (``"fast"`` or ``"paper"``) and ``RUN_DIR``,
so later notebooks find the artefacts earlier ones wrote there. The executed copies land in
``RUN_DIR/executed/``, the wall time of each in ``RUN_DIR/timings.json``, and, when
``smir_lib.notebook.report`` is available, a summary report beside them.

Usage (``smir demo`` runs :func:`run`, its options are :func:`add_arguments`)::

    smir demo --profile fast --out runs/20261124-120000
    smir demo --only 01 03      # a subset, by number prefix
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from smir_lib.files import atomic_write_text
from smir_lib.notebook.report import build_report

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"


@dataclass
class SeriesResult:
    """What a series run left behind."""

    run_dir: Path
    executed: list[Path] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    report: Path | None = None


def notebook_paths(notebook_dir: Path = NOTEBOOK_DIR, only: list[str] | None = None) -> list[Path]:
    """The series in order: ``NN_*.ipynb`` sorted by name, optionally only some prefixes."""
    paths = sorted(Path(notebook_dir).glob("[0-9][0-9]_*.ipynb"))
    if only:
        paths = [p for p in paths if any(p.name.startswith(prefix) for prefix in only)]
        if not paths:
            raise ValueError(f"no notebook in {notebook_dir} starts with any of {only}")
    return paths


def refuse_links(out: Path) -> None:
    """papermill writes the executed copy in place, following links: refuse a link planted at
    ``RUN/executed`` or at the notebook's name there (``01_x.ipynb -> ~/.bashrc``), in one line."""
    for path in (out.parent, out):
        if path.is_symlink():
            raise ValueError(f"{path} is a symbolic link: refusing to write the executed notebook through it; "
                             f"delete the link (its target is kept) and run again")


def run_notebook(path: Path, run_dir: Path, parameters: dict, *, kernel_name: str = "python3",
                 progress: bool = True) -> Path:
    """Execute one notebook with papermill into ``run_dir/executed/`` and return that path.

    The notebook runs with its own folder as working directory, like a user's JupyterLab.
    A failing cell raises ``papermill.PapermillExecutionError``; the executed copy, with the
    traceback in place, is still written for inspection.
    """
    import papermill as pm

    out = Path(run_dir) / "executed" / path.name
    refuse_links(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(str(path), str(out), parameters=parameters, kernel_name=kernel_name,
                        cwd=str(path.parent), progress_bar=progress, log_output=False)
    return out


def run_series(run_dir: Path | str, profile: str = "fast", *, notebooks: list[Path] | None = None,
               extra_parameters: dict | None = None, progress: bool = True) -> SeriesResult:
    """Execute the notebooks in order into ``run_dir`` and gather their timings and report."""
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    notebooks = notebook_paths() if notebooks is None else notebooks
    if not notebooks:
        raise FileNotFoundError(f"no notebooks named NN_*.ipynb in {NOTEBOOK_DIR}")
    result = SeriesResult(run_dir=run_dir)
    # Progress bars in an executed copy are widgets frozen at their first frame: the kernels
    # inherit this environment, and every engine config then defaults to progress=False.
    os.environ.setdefault("SMIR_PROGRESS", "0")
    os.environ.setdefault("MPLBACKEND", "Agg")
    parameters = {"PROFILE": profile, "RUN_DIR": str(run_dir), **(extra_parameters or {})}
    for path in notebooks:
        print(f"[{path.stem}] running ({profile} profile)", flush=True)
        start = time.perf_counter()
        result.executed.append(run_notebook(path, run_dir, parameters, progress=progress))
        result.seconds[path.stem] = round(time.perf_counter() - start, 1)
        print(f"[{path.stem}] done in {result.seconds[path.stem]:.0f} s", flush=True)
        atomic_write_text(json.dumps(result.seconds, indent=2), run_dir / "timings.json")
    result.report = build_report(run_dir)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``smir demo``."""
    parser.add_argument("--profile", default="fast", choices=["fast", "paper"],
                        help="fast: minutes on a CPU with synthetic data; paper: the paper's recipe")
    parser.add_argument("--out", default=None, help="run folder (default runs/<timestamp>)")
    parser.add_argument("--only", nargs="*", default=None,
                        help="run only notebooks whose names start with these prefixes, e.g. 01 03")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """``smir demo``: run the series into ``args.out`` and print where the results are."""
    run_dir = Path(args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
    result = run_series(run_dir, args.profile, notebooks=notebook_paths(only=args.only),
                        progress=not args.quiet)
    total = sum(result.seconds.values())
    print(f"\nexecuted notebooks: {result.run_dir / 'executed'}  ({len(result.executed)} notebooks, {total:.0f} s)")
    if result.report is not None:
        print(f"summary report:     {result.report}")
    return 0
