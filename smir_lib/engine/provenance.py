"""Which commit produced a result: the git HEAD and whether the code it ran had uncommitted changes.

Results (a study report, a model manifest) record this so a reader can rebuild them. Only the
code paths count as changes: a report regenerated in place always modifies its own outputs.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["git_commit"]

REPO = Path(__file__).resolve().parents[2]
CODE = ("smir_lib",)
"""The code paths whose changes make a result dirty: the library (the command line is part of it)."""


def git_commit(short: bool = False, code: tuple[str, ...] = CODE, repo: Path = REPO) -> tuple[str, bool] | None:
    """``(HEAD, dirty)`` of ``repo``: the commit, and whether any tracked file under ``code`` differs
    from it; None outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", *(["--short"] if short else []), "HEAD"], cwd=repo,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *code], cwd=repo,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head, bool(dirty)
