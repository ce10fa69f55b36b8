"""Issue 29, item 1: no write through a planted link, and a finished run read without writing.

A shared or downloaded run folder may hold links planted where the kit writes: ``RUN/.lock``,
``RUN/config.json.tmp`` (the temporary name of the atomic writes before issue 29), a dangling
``splits.yaml``. Each test plants one, runs what a user runs, and checks that the link's target
(the "victim", a file outside the folder) is unchanged. A finished run is read back without
taking the lock or writing anything, so it reads from a read-only folder.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import pytest
import torch

from smir_lib.engine.checkpoint import run_lock
from smir_lib.engine.config import load_config
from smir_lib.engine.finetune import finetune
from smir_lib.engine.pretrain import pretrain_selective
from smir_lib.files import FileWriteError, atomic_save, atomic_write_text
from smir_lib.tools.cli import main
from test_reliability import REPO, TINY, error_line, pretrain

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_thread")]

VICTIM_TEXT = "precious user file\n"


def victim(tmp_path: Path) -> Path:
    path = tmp_path / "outside" / "victim.txt"
    path.parent.mkdir(exist_ok=True)
    path.write_text(VICTIM_TEXT)
    return path


@pytest.mark.parametrize("write", [lambda p: atomic_write_text("{}", p), lambda p: atomic_save({"a": 1}, p)])
def test_atomic_writes_never_follow_a_planted_temporary_or_final_link(tmp_path, write):
    folder = tmp_path / "run"
    folder.mkdir()
    target = victim(tmp_path)
    (folder / "config.json.tmp").symlink_to(target)  # the old fixed temporary name
    (folder / "config.json").symlink_to(target)  # and the final name itself
    write(folder / "config.json")
    assert target.read_text() == VICTIM_TEXT
    assert not (folder / "config.json").is_symlink()  # the link was replaced, not written through
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "config.json.tmp"]  # no temporary left


def test_a_linked_or_hard_linked_lock_is_refused_in_one_line(tmp_path):
    target = victim(tmp_path)
    for plant in (lambda lock: lock.symlink_to(target), lambda lock: os.link(target, lock)):
        run = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        run.mkdir()
        plant(run / ".lock")
        with pytest.raises(ValueError, match=rf"{run}: \.lock is .*refusing to write through it; delete"):
            with run_lock(run):
                pass
        assert target.read_text() == VICTIM_TEXT


def test_resuming_a_folder_with_planted_links_writes_nothing_through_them(tmp_path, capsys):
    """The whole command: a resumed pretraining run with ``.lock`` and ``config.json.tmp`` linked out."""
    run = tmp_path / "run"
    assert pretrain(run, "partitions=1") == 0
    (run / "result.json").unlink()  # unfinished: the run takes the lock and rewrites its files
    target = victim(tmp_path)
    (run / "config.json.tmp").symlink_to(target)
    (run / "history.json.tmp").symlink_to(target)
    assert pretrain(run, "partitions=1") == 0
    assert target.read_text() == VICTIM_TEXT
    (run / ".lock").unlink()
    (run / ".lock").symlink_to(target)
    (run / "result.json").unlink()
    assert pretrain(run, "partitions=1") == 2
    assert ".lock is a symbolic link" in error_line(capsys)
    assert target.read_text() == VICTIM_TEXT


@pytest.fixture
def read_only(monkeypatch):
    """Every write below ``folder`` fails with EROFS, as on a read-only mount (the tests run as
    root, whom ``chmod`` does not stop): opening a file for writing, creating a temporary file."""
    folders: list[Path] = []
    real_open, real_mkstemp = os.open, tempfile.mkstemp

    def inside(path) -> bool:
        return any(Path(os.path.abspath(path)).is_relative_to(f) for f in folders)

    def guarded_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    def guarded_mkstemp(*args, dir=None, **kwargs):
        if dir is not None and inside(dir):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(os, "open", guarded_open)
    monkeypatch.setattr(tempfile, "mkstemp", guarded_mkstemp)
    return lambda folder: folders.append(Path(os.path.abspath(folder)))


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*")}


def test_a_finished_run_reads_from_a_read_only_folder(tmp_path, read_only):
    """Notebook 06 reads its fine-tuning runs by calling ``finetune`` again: that must neither
    lock nor rewrite; the same holds for a finished pretraining run."""
    pre, ft = tmp_path / "pre", tmp_path / "ft"
    cfg = load_config("fast", TINY + ["partitions=1"])
    first_pre = pretrain_selective(cfg, pre)
    first_ft = finetune(cfg, ft, pre / "pretrained.pt")
    before = snapshot(tmp_path)
    read_only(tmp_path)
    again_pre = pretrain_selective(cfg, pre)
    again_ft = finetune(cfg, ft, pre / "pretrained.pt")
    assert snapshot(tmp_path) == before
    assert again_ft["test"]["miou"] == first_ft["test"]["miou"] and again_ft["history"] == first_ft["history"]
    assert again_pre.history == first_pre.history and again_pre.best_checkpoint.is_file()
    with pytest.raises(FileWriteError, match=rf"cannot write {ft}.*read-only"):  # an unfinished one needs writing
        (ft / "results.json").unlink()
        finetune(cfg, ft, pre / "pretrained.pt")


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_no_temporary(tmp_path, monkeypatch, capsys):
    """ENOSPC in the middle of writing a checkpoint (simulated by a file whose writes fail)."""
    class FullDisk:
        def __init__(self, fd, mode):
            self.handle = open(fd, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def fileno(self):
            return self.handle.fileno()

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def flush(self):
            pass

    monkeypatch.setattr(os, "fdopen", FullDisk)
    with pytest.raises(FileWriteError, match=r"cannot write .*best.pt: No space left on device .*free space"):
        atomic_save({"w": torch.zeros(3)}, tmp_path / "best.pt")
    run = tmp_path / "run"
    assert pretrain(run) == 2
    line = error_line(capsys)
    assert f"cannot write {run}" in line and "No space left on device" in line
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.parametrize("dangling", [True, False])
def test_write_splits_refuses_a_linked_splits_file(tmp_path, capsys, dangling):
    from smir_lib.data.folder_example import write_example_folder

    folder = write_example_folder(tmp_path / "own", n_images=6, n_pool=0)
    target = tmp_path / "outside" / "splits.yaml"
    target.parent.mkdir()
    if not dangling:  # a valid split file kept elsewhere (the check passes, then --write-splits writes)
        assert main(["check-data", str(folder), "--write-splits", "--quiet"]) == 0
        (folder / "splits.yaml").rename(target)
        target.write_text(target.read_text() + "# the user's own notes\n")
    before = target.read_text() if target.exists() else None
    (folder / "splits.yaml").symlink_to(target)
    capsys.readouterr()
    assert main(["check-data", str(folder), "--write-splits", "--quiet"]) == 2
    assert "splits.yaml is a symbolic link: refusing to write" in error_line(capsys)
    assert (target.read_text() if target.exists() else None) == before


def test_write_splits_writes_a_plain_file_atomically(tmp_path, capsys):
    from smir_lib.data.folder_example import write_example_folder

    folder = write_example_folder(tmp_path / "own", n_images=6, n_pool=0)
    assert main(["check-data", str(folder), "--write-splits", "--quiet"]) == 0
    assert (folder / "splits.yaml").is_file() and not (folder / "splits.yaml").is_symlink()
    assert [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] == []


def test_a_run_folder_held_by_this_process_is_refused_and_stays_locked(tmp_path):
    """The lock is a POSIX lock (forked DataLoader workers of a killed run do not inherit it),
    which does not exclude its own process: a second run in the same process is refused too, and
    refusing it does not free the first's lock."""
    import subprocess
    import sys

    from smir_lib.engine.checkpoint import RunFolderBusy

    run = tmp_path / "run"
    probe = ("import sys; from smir_lib.engine.checkpoint import run_lock\n"
             "try:\n    with run_lock(sys.argv[1]): print('free')\nexcept ValueError: print('busy')\n")
    with run_lock(run):
        with pytest.raises(RunFolderBusy, match="in use by this process"):
            with run_lock(run):
                pass
        other = subprocess.run([sys.executable, "-c", probe, str(run)], capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
        assert other.stdout.strip() == "busy"
    with run_lock(run):
        pass


# --------------------------------------------------------------------------------------------
# Round 3: linked stage folders, and writers that replace folders or reports
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stage,job", [("finetune", "finetune"), ("step_0", "pretrain"), ("random", "pretrain")])
def test_a_stage_folder_planted_as_a_link_is_refused_and_nothing_is_written_through_it(tmp_path, capsys, stage, job):
    """``RUN/finetune -> ~/thesis`` made the run write its checkpoints there, and the lock holder's
    clean-up delete the ``.*.tmp`` files of the linked folder."""
    run, target = tmp_path / "run", tmp_path / "outside"
    run.mkdir()
    target.mkdir()
    (target / ".notes.tmp").write_text(VICTIM_TEXT)
    (run / stage).symlink_to(target)
    method = ["--method", "random" if stage == "random" else "selective"] if job == "pretrain" else []
    assert main([job, *method, "--out", str(run), "--quiet", *TINY]) == 2
    assert f"{stage} is a symbolic link, not a folder of this run" in error_line(capsys)
    assert [p.name for p in target.iterdir()] == [".notes.tmp"]


def test_models_never_deletes_a_folder_it_did_not_write(tmp_path):
    """``smir models --out DIR`` replaced ``DIR/<dataset>/<run>`` with ``shutil.rmtree`` whatever it
    held (a user's folder of that name), and a link there was a traceback."""
    from smir_lib.notebook.zoo import _remove_previous_export

    own = tmp_path / "models" / "pretrain_random"
    (own / "step_0").mkdir(parents=True)
    (own / "result.json").write_text("{}")
    (own / "step_0" / "masks.pt").write_bytes(b"")
    _remove_previous_export(own)  # an earlier build's folder: replaced
    assert not own.exists()
    user = tmp_path / "models" / "finetune_scratch"
    user.mkdir()
    (user / "thesis.tex").write_text(VICTIM_TEXT)
    linked = tmp_path / "models" / "finetune_random"
    linked.symlink_to(victim(tmp_path).parent)
    for folder, named in ((user, user / "thesis.tex"), (linked, linked)):
        with pytest.raises(ValueError, match=rf"{named} was not written by `smir models`: refusing to delete"):
            _remove_previous_export(folder)
    assert (user / "thesis.tex").read_text() == VICTIM_TEXT and victim(tmp_path).is_file()


@pytest.mark.parametrize("existing", ["report.json", "report.md"])
def test_study_report_never_overwrites_a_file_it_did_not_write(tmp_path, monkeypatch, existing):
    """``smir study report --out DIR/report`` over a user's ``report.json`` was a KeyError traceback;
    over a lone ``report.md`` it overwrote the user's file."""
    from smir_lib.study import tables

    monkeypatch.setattr(tables, "collect", lambda protocol, root: {"units": {"done": 1}, "datasets": {}})
    (tmp_path / existing).write_text(VICTIM_TEXT)
    with pytest.raises(ValueError, match=rf"{tmp_path / existing} exists .*refusing to overwrite it"):
        tables.write_report(tables.load_protocol("toy"), tmp_path, tmp_path / "report", "smir study report")
    assert (tmp_path / existing).read_text() == VICTIM_TEXT


@pytest.mark.parametrize("job", ["predict", "export"])
def test_predict_and_export_into_a_read_only_folder_are_one_line(tmp_path, read_only, capsys, job):
    """``OutputFolder`` wrote its temporary files outside ``atomic_write``: a read-only or full
    ``--out`` was an OSError traceback."""
    from test_export_predict import _photos, fake_checkpoint

    from smir_lib.data.registry import class_entries

    checkpoint = fake_checkpoint(tmp_path, "tiny", len(class_entries("synthetic")))
    out = tmp_path / "out"
    out.mkdir()
    read_only(out)
    args = ["--images", str(_photos(tmp_path / "photos")), "--quiet"] if job == "predict" else ["--onnx", "no"]
    assert main([job, "--checkpoint", str(checkpoint), "--out", str(out), *args]) == 2
    assert f"cannot write {out}: Read-only file system" in error_line(capsys)
    assert [p.name for p in out.iterdir()] == []


@pytest.mark.parametrize("linked", ["executed", "executed/01_x.ipynb"])
def test_demo_never_writes_an_executed_notebook_through_a_link(tmp_path, monkeypatch, linked):
    """papermill writes ``RUN/executed/NN.ipynb`` in place: a planted link there was written through."""
    import sys
    import types

    from smir_lib.notebook.runner import run_notebook

    def execute_notebook(source, out, **options):  # what papermill does with the output path
        Path(out).write_text("{}")

    monkeypatch.setitem(sys.modules, "papermill", types.SimpleNamespace(execute_notebook=execute_notebook))
    target = victim(tmp_path)
    run = tmp_path / "run"
    (run / "executed").mkdir(parents=True)
    if linked == "executed":
        (run / "executed").rmdir()
        (run / "executed").symlink_to(target.parent)
        (target.parent / "01_x.ipynb").write_text(VICTIM_TEXT)
        target = target.parent / "01_x.ipynb"
    else:
        (run / linked).symlink_to(target)
    with pytest.raises(ValueError, match=r"is a symbolic link: refusing to write the executed notebook"):
        run_notebook(tmp_path / "01_x.ipynb", run, {})
    assert target.read_text() == VICTIM_TEXT
