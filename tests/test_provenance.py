"""The commit a result records: a report regenerated in place is not "uncommitted code"."""

import subprocess

import pytest

from smir_lib.engine.provenance import git_commit


@pytest.mark.unit
def test_only_changed_code_makes_a_commit_dirty(tmp_path):
    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout.strip()

    assert git_commit(repo=tmp_path) is None  # not a checkout yet
    git("init", "-q")
    (tmp_path / "smir_lib").mkdir()
    (tmp_path / "smir_lib" / "x.py").write_text("a = 1\n")
    (tmp_path / "report.md").write_text("old\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    head = git("rev-parse", "HEAD")
    assert git_commit(code=("smir_lib",), repo=tmp_path) == (head, False)
    (tmp_path / "report.md").write_text("regenerated\n")  # an output: still clean
    assert git_commit(code=("smir_lib",), repo=tmp_path) == (head, False)
    (tmp_path / "smir_lib" / "x.py").write_text("a = 2\n")
    assert git_commit(short=True, code=("smir_lib",), repo=tmp_path) == (git("rev-parse", "--short", "HEAD"), True)
