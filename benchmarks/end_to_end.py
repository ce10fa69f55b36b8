"""End to end: how long each notebook of the fast profile takes, and how long ``make test`` takes.

Neither is run here: a whole notebook series or test suite inside ``make bench`` would take
longer than every other benchmark together and measure the same thing twice. Instead:

* notebooks: ``make demo`` (``smir demo --profile fast``) writes the wall time of
  every notebook to ``RUN_DIR/timings.json``; pass that run folder with ``--notebook-run``
  (default: the newest ``runs/*/timings.json``, if any). Several folders may be given (runs of
  parts of the series, ``--only 03 04``); a notebook timed in more than one keeps the last;
* ``make test``: pass the seconds with ``--make-test-seconds``, or a log of ``.ci/run`` (which
  prints ``make test took N s``) with ``--make-test-log``.

Whatever is missing is reported as "not measured", with the command that measures it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .harness import BenchResult

__all__ = ["find_notebook_run", "bench_end_to_end"]

_MAKE_TEST_LINE = re.compile(r"make test took (\d+(?:\.\d+)?) s")


def find_notebook_run(runs_dir: Path = Path("runs")) -> Path | None:
    """The newest run folder under ``runs_dir`` holding a ``timings.json``, or ``None``."""
    candidates = [p.parent for p in Path(runs_dir).glob("*/timings.json")]
    return max(candidates, key=lambda p: (p / "timings.json").stat().st_mtime, default=None)


def bench_end_to_end(*, notebook_run: Path | list[Path] | None = None,
                     make_test_seconds: float | None = None,
                     make_test_log: Path | None = None) -> BenchResult:
    """Read the notebook timings and the ``make test`` wall time; never runs either."""
    result = BenchResult("end_to_end")
    if isinstance(notebook_run, (str, Path)):
        notebook_run = [Path(notebook_run)]
    runs = [Path(r) for r in notebook_run] if notebook_run else [find_notebook_run()]
    found = [r for r in runs if r is not None and (r / "timings.json").is_file()]
    if found and len(found) == len(runs):
        timings: dict[str, float] = {}
        for folder in found:
            timings.update(json.loads((folder / "timings.json").read_text()))
        result.params["notebook_run"] = [str(f) for f in found]
        for name, seconds in sorted(timings.items()):
            result.values[f"notebook {name} (s)"] = float(seconds)
        result.values["notebooks total (s)"] = round(sum(float(s) for s in timings.values()), 1)
    else:
        missing = [str(r) for r in runs if r is not None and r not in found]
        where = f" ({', '.join(missing)}: no timings.json)" if missing else ""
        result.values["notebooks"] = "not measured: run `make demo` first, then --notebook-run runs/<timestamp>" + where

    if make_test_seconds is None and make_test_log is not None:
        match = _MAKE_TEST_LINE.findall(Path(make_test_log).read_text(errors="replace"))
        if match:
            make_test_seconds = float(match[-1])
            result.params["make_test_log"] = str(make_test_log)
    if make_test_seconds is not None:
        result.values["make test (s)"] = float(make_test_seconds)
    else:
        result.values["make test"] = ("not measured: pass --make-test-seconds N or "
                                      "--make-test-log <output of .ci/run>")
    return result
