"""The nbval tier: `pytest --nbval-lax` over the notebooks that keep checked outputs.

Only cells tagged ``keep_output`` whose first line is ``# NBVAL_CHECK_OUTPUT`` are compared
with their committed output. Notebooks without such cells have nothing to check, so they are not
executed again here (the notebooks tier already runs every notebook once with papermill).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.nbval

ROOT = Path(__file__).resolve().parent.parent


def notebooks_with_checked_outputs() -> list[Path]:
    paths = []
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        if any("keep_output" in c.get("metadata", {}).get("tags", []) for c in cells):
            paths.append(path)
    return paths


def test_checked_outputs_match(tmp_path: Path):
    paths = notebooks_with_checked_outputs()
    if not paths:
        pytest.fail("no notebook has a keep_output cell: the nbval tier would check nothing")
    env = {**os.environ, "SMIR_PROFILE": "fast", "SMIR_RUN_DIR": str(tmp_path / "run"), "MPLBACKEND": "Agg"}
    cmd = [sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider",
           "--rootdir", str(tmp_path), *map(str, paths)]
    proc = subprocess.run(cmd, cwd=ROOT / "notebooks", env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"nbval failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    assert " passed" in proc.stdout
