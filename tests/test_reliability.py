"""Issue 18: no silent wrong run, nothing lost, run folders that survive being moved or damaged.

Each test reproduces a fault of commit 2a67cec: a config value that meant something else, an
explicit data folder that fell back to another copy, an ``evaluate --out`` that overwrote a
checkpoint, absolute paths inside run folders, two processes on one run folder, and tracebacks
(or torch's advice to disable ``weights_only``) for files a killed or careless run left broken.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from smir_lib.data import base, get_dataset
from smir_lib.data.base import DatasetNotFoundError, resolve_root
from smir_lib.data.transforms import EvalTransform, TrainAugment
from smir_lib.engine.config import load_config
from smir_lib.files import RunFileError, read_torch_file
from smir_lib.models import build_model
from smir_lib.tools.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parent.parent
TINY = ["model=tiny", "synthetic_size=72", "image_size=64", "msssim_win=3", "n_patches=64", "k=2",
        "partitions=2", "pool_size=10", "pretrain_epochs=1", "pretrain_batch=4", "warmup_epochs=0",
        "workers=0", "score_batch=4", "train_size=4", "val_size=2", "test_size=2",
        "finetune_epochs=1", "finetune_batch=2"]


def pretrain(out: Path, *extra: str) -> int:
    return main(["pretrain", "--method", "selective", "--out", str(out), "--quiet", *TINY, *extra])


def error_line(capsys) -> str:
    """The one line a failing command printed (its stderr starts with ``error: ``)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


# --------------------------------------------------------------------------------------------
# 4. No silent wrong run
# --------------------------------------------------------------------------------------------

@pytest.mark.unit
@pytest.mark.parametrize("key,value", [("pretrain_batch", 0), ("pretrain_epochs", 0), ("finetune_epochs", 0),
                                       ("score_batch", 0), ("mask_ratio", 0.001)])
def test_values_that_meant_something_else_are_refused_at_config_time(key, value):
    with pytest.raises(ValueError, match=rf"config {key}={value}"):
        load_config("fast", {key: value})


@pytest.mark.unit
def test_mask_ratio_is_checked_against_the_actual_patch_count():
    """512 nominal patches are 441 on a 256 px crop: 0.002 * 512 = 1.02 but 0.002 * 441 = 0.88."""
    with pytest.raises(ValueError, match=r"hides no patch: the 256 px crop has 441 patches \(21x21\)"):
        load_config("paper", {"mask_ratio": 0.002})
    assert load_config("paper", {"mask_ratio": 0.003}).mask_ratio == 0.003  # floor(1.32) = 1 patch


@pytest.mark.unit
def test_evaluating_a_pretraining_checkpoint_is_refused(tmp_path):
    """Synthetic fields have 3 classes, so the 3-channel reconstruction head would load and
    score an mIoU near 0; the checkpoint's stage says what it is."""
    from smir_lib.engine.finetune import evaluate

    cfg = load_config("fast", TINY)
    path = tmp_path / "pretrained.pt"
    torch.save({"model": build_model(cfg).state_dict(), "stage": "step_1", "epoch": 0}, path)
    with pytest.raises(ValueError, match=r"pretrained\.pt is a pretraining checkpoint .*fine-tune it first"):
        evaluate(cfg, path, split="test")


@pytest.mark.unit
def test_images_smaller_than_the_crop_warn_about_the_upscaling(monkeypatch):
    monkeypatch.setattr(base, "_WARNED", set())
    with pytest.warns(UserWarning, match=r"a 50x40 image is enlarged x1\.60 to a short side of 64 px"):
        EvalTransform(64)(torch.rand(3, 40, 50))
    monkeypatch.setattr(base, "_WARNED", set())
    with pytest.warns(UserWarning, match="upscaled"):
        TrainAugment(64)(torch.rand(3, 40, 50), generator=torch.Generator().manual_seed(0))


@pytest.mark.unit
def test_an_explicit_data_folder_without_the_dataset_never_falls_back(tmp_path, monkeypatch):
    """SMIR_DATA_DIR names a folder without the dataset: the error names it and the download
    command, even though a complete copy exists in the default ./data."""
    copy = tmp_path / "data" / "cwfid"
    (copy / "images").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("SMIR_DATA_DIR", str(empty))
    with pytest.raises(DatasetNotFoundError, match=rf"not found in {empty} \(SMIR_DATA_DIR=") as info:
        resolve_root("cwfid", None, lambda f: (f / "images").is_dir())
    assert f"smir download cwfid --root {empty}" in str(info.value)
    with pytest.raises(DatasetNotFoundError, match=str(empty)):
        get_dataset("cwfid", "train")  # the real dataset's own fallbacks are not used either
    monkeypatch.delenv("SMIR_DATA_DIR")
    assert resolve_root("cwfid", None, lambda f: (f / "images").is_dir()) == copy.resolve()


def fake_cwfid(root: Path, corrupt: int | None = None) -> Path:
    """A CWFID-shaped folder of 8 small images (ids 1-6 train, 7-8 test); ``corrupt``: an id
    whose image file holds garbage."""
    folder = root / "cwfid"
    (folder / "images").mkdir(parents=True)
    (folder / "annotations").mkdir()
    (folder / "train_test_split.yaml").write_text("train: [1, 2, 3, 4, 5, 6]\ntest: [7, 8]\n")
    rng = np.random.default_rng(0)
    for i in range(1, 9):
        Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(folder / "images" / f"{i:03d}_image.png")
        label = np.zeros((80, 96, 3), np.uint8)
        label[10:30, 10:30] = (0, 255, 0)
        label[40:60, 50:70] = (255, 0, 0)
        Image.fromarray(label).save(folder / "annotations" / f"{i:03d}_annotation.png")
    if corrupt is not None:
        (folder / "images" / f"{corrupt:03d}_image.png").write_bytes(b"\x89PNG garbage")
    return folder


@pytest.mark.unit
def test_every_run_prints_the_data_folder_it_reads(tmp_path, capsys):
    from smir_lib.engine.pretrain_data import load_split

    folder = fake_cwfid(tmp_path)
    load_split(load_config("fast", {"dataset": "cwfid", "data_root": str(tmp_path)}), "train", announce=True)
    assert f"data: train of cwfid, 5 images, read from {folder.resolve()}" in capsys.readouterr().err
    assert pretrain(tmp_path / "run") == 0
    assert "data: pool of synthetic, 10 images, generated in memory" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# 3. evaluate --out
# --------------------------------------------------------------------------------------------

@pytest.mark.unit
def test_evaluate_out_refuses_a_foreign_file_and_bad_paths_before_any_work(tmp_path, capsys):
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"precious weights")
    evaluate = ["evaluate", "--checkpoint", str(tmp_path / "missing.pt"), "--quiet", *TINY]
    assert main([*evaluate, "--out", str(checkpoint)]) == 2
    assert "refusing to overwrite" in error_line(capsys) and checkpoint.read_bytes() == b"precious weights"
    assert main([*evaluate, "--out", str(tmp_path)]) == 2
    assert f"--out {tmp_path} is a folder" in error_line(capsys)
    assert main([*evaluate, "--out", str(checkpoint / "metrics.json")]) == 2
    assert f"{checkpoint} is a file, not a folder" in error_line(capsys)
    assert main(["pretrain", "--method", "random", "--out", str(checkpoint / "run"), *TINY]) == 2
    assert "is a file, not a folder" in error_line(capsys)


@pytest.mark.unit
def test_evaluate_out_overwrites_its_own_earlier_output(tmp_path, capsys):
    cfg = load_config("fast", TINY)
    checkpoint = tmp_path / "best.pt"
    torch.save({"model": build_model(cfg, 3).state_dict(), "stage": "finetune"}, checkpoint)
    out = tmp_path / "metrics" / "test.json"
    for _ in range(2):
        assert main(["evaluate", "--checkpoint", str(checkpoint), "--out", str(out), "--quiet", *TINY]) == 0
    assert json.loads(out.read_text())["written_by"] == "smir evaluate"


# --------------------------------------------------------------------------------------------
# 5. Run folders: relative paths, a lock, damaged files, config files, DataLoader workers
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """One finished tiny selective run (2 steps), copied by the tests that damage or move it."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("finished") / "run"
    assert pretrain(out) == 0
    return out


def stored_texts(run: Path) -> str:
    return "\n".join(p.read_text() for p in run.rglob("*.json"))


@pytest.mark.unit
def test_a_moved_run_folder_resumes(finished_run, tmp_path, capsys):
    """Nothing in the folder names where it was; the moved folder finishes from its own files."""
    moved = tmp_path / "moved"
    shutil.copytree(finished_run, tmp_path / "original")
    (tmp_path / "original").rename(moved)
    assert str(tmp_path / "original") not in stored_texts(moved)
    (moved / "pretrained.pt").unlink()  # the moved run must rebuild it from its own steps
    assert pretrain(moved) == 0
    assert json.loads(capsys.readouterr().out)["best_checkpoint"] == str(moved / "pretrained.pt")
    assert json.loads((moved / "result.json").read_text())["steps"][1]["masks"] == "step_1/masks.pt"


@pytest.mark.unit
def test_a_copied_run_folder_never_reads_the_original(finished_run, tmp_path):
    original, copy = tmp_path / "original", tmp_path / "copy"
    shutil.copytree(finished_run, original)
    shutil.copytree(original, copy)
    shutil.rmtree(copy / "step_1")  # step 1 is redone from step 0 of the copy ...
    (original / "step_0" / "best.pt").unlink()  # ... which must not be the original's
    assert pretrain(copy) == 0
    from smir_lib.engine.pretrain import load_pretrain_result

    result = load_pretrain_result(copy)
    assert result.best_checkpoint == copy / "pretrained.pt"
    assert [Path(s["checkpoint"]) for s in result.steps] == [copy / "step_0" / "best.pt", copy / "step_1" / "best.pt"]


@pytest.mark.unit
@pytest.mark.parametrize("damage", ["step_1/done.json", "step_1/state.pt", "step_1/masks.pt", "step_0/state.pt"])
def test_a_damaged_run_file_is_one_line_naming_it(finished_run, tmp_path, capsys, damage):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    bad = run / damage
    if damage != "step_1/done.json":  # make the run reach the damaged file
        (run / "step_1" / "done.json").unlink()
        for later in {"step_1/state.pt": [], "step_1/masks.pt": ["state.pt", "best.pt"],
                      "step_0/state.pt": ["state.pt", "best.pt", "masks.pt"]}[damage]:  # the hand-off file
            (run / "step_1" / later).unlink()
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # truncated, as by a full disk
    assert pretrain(run) == 2
    line = error_line(capsys)
    assert f"{bad} is truncated or corrupt" in line and f"delete the folder {bad.parent}" in line


@pytest.mark.unit
def test_a_random_file_as_init_is_one_line_without_torchs_advice(tmp_path, capsys):
    init = tmp_path / "weights.pt"
    init.write_bytes(random.Random(2).randbytes(4096))  # the unpickler raises IndexError on these bytes
    assert main(["finetune", "--init", str(init), "--out", str(tmp_path / "ft"), "--quiet", *TINY]) == 2
    line = error_line(capsys)
    assert str(init) in line and "weights_only" not in line


@pytest.mark.unit
def test_any_random_bytes_are_a_run_file_error(tmp_path):
    """Unpickling random bytes fails in many ways (UnpicklingError, IndexError, KeyError,
    UnicodeDecodeError among 300 seeds): every one is the kit's one-line error naming the file."""
    path = tmp_path / "weights.pt"
    for seed in range(300):
        path.write_bytes(random.Random(seed).randbytes(4096))
        with pytest.raises(RunFileError, match=str(path)):
            read_torch_file(path)


@pytest.mark.unit
@pytest.mark.parametrize("name,text,where", [
    ("bad.yaml", "preset: fast\nseed: 1\nmodel: [tiny\n", "line 4"),
    ("bad.json", '{"preset": "fast",\n "seed": 1,\n "model": }\n', "line 3"),
    ("value.yaml", "preset: fast\nseed: 1\npretrain_batch: 0\n", "line 3"),
])
def test_config_file_errors_name_the_file_and_the_line(tmp_path, name, text, where):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"config file {path}, {where}: "):
        load_config(path)


@pytest.mark.unit
def test_a_dataloader_worker_failure_is_the_same_line_as_without_workers(tmp_path, capsys):
    fake_cwfid(tmp_path, corrupt=2)
    lines = []
    for workers in (0, 1):
        args = ["finetune", "--out", str(tmp_path / f"ft{workers}"), "--quiet", *TINY, "dataset=cwfid",
                f"data_root={tmp_path}", f"workers={workers}", "train_size=None", "finetune_batch=4"]
        assert main(args) == 2
        lines.append(error_line(capsys))
    assert lines[0] == lines[1] and "002_image.png" in lines[0]


@pytest.mark.unit
def test_a_second_process_on_the_same_run_folder_is_refused_until_the_first_ends(tmp_path, capsys):
    """The first run holds the folder's lock; once it is SIGKILLed, the lock is free again."""
    out = tmp_path / "run"
    slow = [*TINY, "pretrain_epochs=400"]  # minutes of work: it is still running when we knock
    first = subprocess.Popen([sys.executable, "-m", "smir_lib", "pretrain", "--method", "selective", "--out",
                              str(out), "--quiet", *slow], cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 60
        while not (out / "step_0" / "history.json").is_file():  # training, lock long taken
            assert first.poll() is None and time.time() < deadline, "the first run did not start training"
            time.sleep(0.05)
        assert main(["pretrain", "--method", "selective", "--out", str(out), "--quiet", *slow]) == 2
        assert f"run folder {out} is in use by process {first.pid}" in error_line(capsys)
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    from smir_lib.engine.checkpoint import run_lock

    with run_lock(out):  # a killed holder leaves no stuck lock
        pass
