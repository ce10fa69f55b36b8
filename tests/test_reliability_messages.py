"""Issue 29, items 6 and 7: one line instead of a traceback, and runs that move.

Item 6: run files that parse but hold the wrong thing, ``classes.yaml`` and ``splits.yaml``
mistakes (tags, aliases, non-integer values, empty or repeated names), a teaching set whose
manifest is cut or lacks a field (and files it does not list), bad ``device`` / ``preset``
values, notebook parameters out of range: each is one line naming the file, entry or parameter.
Item 7: a fine-tuning run whose ``--init`` moved or is spelled differently resumes; a missing
``config.json`` does not let another seed continue the run; a damaged ``best.pt`` is not promoted.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from smir_lib.data.folder import read_classes
from smir_lib.data.folder_example import write_example_folder
from smir_lib.engine.config import load_config
from smir_lib.tools.cli import main
from test_reliability import TINY, error_line, finished_run, pretrain  # noqa: F401 - a fixture

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_thread")]


# Each: the file, what it holds now, the files to remove so that the run reaches it.
WRONG_CONTENT = [
    ("config.json", [], []),
    ("result.json", [], []),
    ("result.json", {}, []),
    ("history.json", {}, []),
    ("step_1/done.json", [], []),
    ("step_1/done.json", "text", []),
    ("step_1/state.pt", {}, ["result.json", "step_1/done.json"]),
    ("step_1/state.pt", [1, 2], ["result.json", "step_1/done.json"]),
    ("step_1/masks.pt", {}, ["result.json", "step_1/done.json", "step_1/state.pt", "step_1/best.pt"]),
    ("step_1/masks.pt", {"masks": [0], "grid_shapes": [0], "indices": [0]},
     ["result.json", "step_1/done.json", "step_1/state.pt", "step_1/best.pt"]),
    ("step_0/state.pt", {}, ["result.json", "step_1"]),
    ("step_1/best.pt", {}, ["pretrained.pt"]),
    # round 3: paths that are not text were a TypeError traceback
    ("step_1/done.json", {"checkpoint": 5}, []),
    ("result.json", {"method": "selective", "best_checkpoint": "pretrained.pt", "steps": [{"stage": 3}]}, []),
    ("result.json", {"method": "selective", "best_checkpoint": "pretrained.pt", "steps": []}, []),
]


@pytest.mark.parametrize("name,content,remove", WRONG_CONTENT, ids=[f"{n}={c!r}" for n, c, _ in WRONG_CONTENT])
def test_a_run_file_with_the_wrong_content_is_one_line_naming_it(finished_run, tmp_path, capsys, name, content, remove):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    for gone in remove:
        shutil.rmtree(run / gone) if (run / gone).is_dir() else (run / gone).unlink()
    path = run / name
    if name.endswith(".pt"):
        torch.save(content, path)
    else:
        path.write_text(json.dumps(content))
    assert pretrain(run) == 2
    line = error_line(capsys)
    assert str(path) in line, line


CLASS_FILES = {
    "tag": ("classes:\n  - {name: soil, value: !!python/object/apply:os.system [echo]}\n  - {name: crop, value: 1}\n",
            "line 2: invalid YAML"),
    "alias": ("classes:\n  - &a {name: soil, value: 0}\n  - *a\n", "line 3: invalid YAML (aliases"),
    "text value": ("classes:\n  - {name: soil, value: zero}\n  - {name: crop, value: 1}\n",
                   "value of soil is 'zero': expected an integer"),
    "float value": ("classes:\n  - {name: soil, value: 0.5}\n  - {name: crop, value: 1}\n",
                    "value of soil is 0.5: expected an integer"),
    "bool value": ("classes:\n  - {name: soil, value: true}\n  - {name: crop, value: 1}\n",
                   "value of soil is True: expected an integer"),
    "empty name": ("classes:\n  - {name: '', value: 0}\n  - {name: crop, value: 1}\n", "class name '' is not a name"),
    "no name": ("classes:\n  - {name: null, value: 0}\n  - {name: crop, value: 1}\n", "class name None is not a name"),
    "repeated name": ("classes:\n  - {name: crop, value: 0}\n  - {name: crop, value: 1}\n",
                      "class name(s) ['crop'] appear more than once"),
    "ignore text": ("classes:\n  - {name: soil, value: 0}\n  - {name: crop, value: 1}\nignore: [white]\n",
                    "ignore entry is 'white'"),
}


@pytest.mark.parametrize("case", sorted(CLASS_FILES))
def test_classes_yaml_mistakes_are_one_line_naming_the_file_and_entry(tmp_path, capsys, case):
    text, expected = CLASS_FILES[case]
    folder = write_example_folder(tmp_path / "own", n_images=6, n_pool=0)
    (folder / "classes.yaml").write_text(text)
    with pytest.raises(ValueError, match=str(folder / "classes.yaml")) as err:
        read_classes(folder)
    assert expected in str(err.value)
    assert main(["check-data", str(folder), "--quiet"]) == 1
    out = capsys.readouterr()
    assert "Traceback" not in out.err and expected in out.out


@pytest.mark.parametrize("text,expected", [
    ("a: &a [x, x, x]\nb: &b [*a, *a, *a]\ntrain: [*b, *b]\n", "line 2: invalid YAML (aliases"),
    ("train: [1, 2]\nval: [field_004]\ntest: [field_005]\n", "train lists 1 (int), not a file stem"),
    ("train: field_000\nval: [field_004]\ntest: [field_005]\n", "train is str, not a list of stems"),
    ("train: [!!python/name:os.system x]\n", "line 1: invalid YAML"),
])
def test_splits_yaml_aliases_tags_and_non_strings_are_refused(tmp_path, capsys, text, expected):
    """A 395-byte file of nested aliases took 106 s and 5.9 GB to a MemoryError before."""
    folder = write_example_folder(tmp_path / "own", n_images=6, n_pool=0)
    (folder / "splits.yaml").write_text(text)
    assert main(["check-data", str(folder), "--quiet"]) == 1
    out = capsys.readouterr()
    assert "Traceback" not in out.err and expected in out.out and str(folder / "splits.yaml") in out.out


@pytest.mark.parametrize("text,expected", [
    ("preset: quick\nseed: 1\n", r"line 1: preset 'quick' is unknown: expected one of \['fast', 'paper'\]"),
    ("preset: fast\ndevice: gpu\n", r"line 2: config device='gpu' is invalid: expected 'auto', 'cpu', 'cuda'"),
    ("preset: fast\nmsssim_win: 4\n", r"line 2: config msssim_win=4 is invalid: expected an odd window"),
    ("preset: fast\nmodel: !!python/object/apply:os.system [echo]\n", r"line 2: invalid YAML"),
])
def test_bad_preset_device_and_window_in_a_config_file_are_one_line(tmp_path, capsys, text, expected):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"config file {path}, {expected}"):
        load_config(path)
    assert main(["pretrain", "--method", "random", "--config", str(path), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    error_line(capsys)


# --------------------------------------------------------------------------------------------
# 7. Runs that move or are spelled differently
# --------------------------------------------------------------------------------------------

def finetune_args(out: Path, init: str, *extra: str) -> list[str]:
    return ["finetune", "--init", init, "--out", str(out), "--quiet", *TINY, *extra]


def test_a_finetuning_run_resumes_after_its_init_moved_or_is_spelled_differently(finished_run, tmp_path, capsys,
                                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(finished_run, tmp_path / "runs" / "pre")
    assert main(finetune_args(Path("runs/ft"), "runs/pre/pretrained.pt")) == 0
    stored = json.loads((tmp_path / "runs/ft/config.json").read_text())
    assert stored["method"] == "finetune:../pre/pretrained.pt" and len(stored["init_sha256"]) == 64
    (tmp_path / "runs/ft/results.json").unlink()  # unfinished again: it must resume, not refuse
    assert main(finetune_args(Path("runs/ft"), "./runs/pre/pretrained.pt")) == 0
    (tmp_path / "runs/ft/results.json").unlink()
    shutil.move(tmp_path / "runs" / "pre", tmp_path / "elsewhere")
    assert main(finetune_args(Path("runs/ft"), str(tmp_path / "elsewhere" / "pretrained.pt"))) == 0
    capsys.readouterr()
    assert main(finetune_args(Path("runs/ft"), "scratch")) == 2  # another init is still another run
    assert "another configuration" in error_line(capsys)


def test_without_config_json_another_seed_cannot_continue_the_run(finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "config.json").unlink()
    (run / "result.json").unlink()
    assert pretrain(run, "seed=7") == 2
    line = error_line(capsys)
    assert "has no config.json" in line and "'seed': (0, 7)" in line
    assert pretrain(run) == 0  # the same configuration continues


def test_a_damaged_last_best_pt_is_named_not_promoted(finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "pretrained.pt").unlink()
    (run / "result.json").unlink()
    best = run / "step_1" / "best.pt"
    best.write_bytes(best.read_bytes()[:1000])
    assert pretrain(run) == 2
    line = error_line(capsys)
    assert f"{best} is truncated or corrupt" in line and f"delete the folder {run / 'step_1'}" in line
    assert not (run / "pretrained.pt").exists()
    shutil.rmtree(run / "step_1")  # the advice, followed, ends the run
    assert pretrain(run) == 0 and (run / "pretrained.pt").is_file()


@pytest.mark.parametrize("parameters,expected", [
    ({"N_IMAGES": 0}, "parameter N_IMAGES = 0: expected a whole number of at least 1"),
    ({"SEEDS": []}, "parameter SEEDS = []: expected a non-empty list"),
    ({"SEEDS": [0, 1.5]}, "parameter SEEDS = [0, 1.5]: expected a non-empty list"),
    ({"K": True}, "parameter K = True: expected a whole number"),
    ({"IMAGE_INDEX": -1}, "parameter IMAGE_INDEX = -1: expected a whole number of at least 0"),
])
def test_notebook_parameters_out_of_range_are_one_line_naming_the_parameter(tmp_path, parameters, expected):
    from smir_lib.notebook.setup import check_index, setup_notebook

    with pytest.raises(ValueError, match=re.escape(expected)):
        setup_notebook("04_selective_masks", run_dir=tmp_path, parameters=parameters)
    with pytest.raises(ValueError, match=r"parameter SEED = '1': expected a whole number"):
        setup_notebook("04_selective_masks", run_dir=tmp_path, seed="1")
    with pytest.raises(ValueError, match=r"parameter IMAGE_INDEX = 8 is past the data \(8 items, 0 to 7\)"):
        check_index("IMAGE_INDEX", 8, 8)
    assert check_index("IMAGE_INDEX", 7, 8) == 7


def test_a_damaged_teaching_manifest_is_one_line_and_unlisted_files_are_never_loaded(tmp_path):
    from smir_lib.notebook import zoo

    folder = tmp_path / "synthetic"
    (folder / "finetune_scratch").mkdir(parents=True)
    (folder / "finetune_scratch" / "results.json").write_text("{}")
    manifest = {"dataset": "synthetic", "command": "smir models", "commit": "0" * 40, "config": {},
                "files": {"finetune_scratch/results.json": zoo._sha256(folder / "finetune_scratch" / "results.json")}}
    path = folder / "manifest.json"
    path.write_text(json.dumps(manifest)[:40])
    with pytest.raises(zoo.ManifestError, match=rf"{path} is truncated or corrupt .*smir models --dataset synthetic"):
        zoo.verify(folder)
    for field in zoo.MANIFEST_FIELDS:
        path.write_text(json.dumps({k: v for k, v in manifest.items() if k != field}))
        with pytest.raises(zoo.ManifestError, match=rf"{path} lacks its '{field}' entry"):
            zoo.verify(folder)
    path.write_text(json.dumps(manifest))
    checked = zoo.verify(folder)
    zoo.require_listed(folder, checked, ["finetune_scratch/results.json"])
    with pytest.raises(zoo.ManifestError, match=r"finetune_scratch/best.pt is not listed in .*refusing to load it"):
        zoo.require_listed(folder, checked, ["finetune_scratch/best.pt"])


# --------------------------------------------------------------------------------------------
# Round 3: exported folders, stored configurations, credentials and logs; a deleted init
# --------------------------------------------------------------------------------------------

def _break_model_json_list(folder: Path) -> Path:
    (folder / "model.json").write_text("[]")
    return folder / "model.json"


def _cut_model_json(folder: Path) -> Path:
    (folder / "model.json").write_text((folder / "model.json").read_text()[:20])
    return folder / "model.json"


def _cut_safetensors(folder: Path) -> Path:
    path = folder / "unet.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    return path


def _metadata_not_json(folder: Path) -> Path:
    from safetensors.torch import load_file, save_file

    from smir_lib.tools.export import safetensors_metadata

    path = folder / "unet.safetensors"
    save_file(load_file(str(path)), str(path), {**safetensors_metadata(path), "deploy": "[1]", "config": "{"})
    return path


def _weights_of_another_preset(folder: Path) -> Path:
    from safetensors.torch import load_file, save_file

    from smir_lib.tools.export import safetensors_metadata

    path = folder / "unet.safetensors"
    save_file(load_file(str(path)), str(path), {**safetensors_metadata(path), "model": "resnet18"})
    return path


@pytest.mark.parametrize("damage", [_break_model_json_list, _cut_model_json, _cut_safetensors, _metadata_not_json,
                                    _weights_of_another_preset])
def test_a_damaged_export_is_one_line_naming_the_file(tmp_path, capsys, damage):
    """``model.json = []``, a cut ``unet.safetensors`` and metadata that is not the kit's record were
    AttributeError / SafetensorError tracebacks, or a JSON error naming no file."""
    from test_export_predict import _photos, fake_checkpoint

    from smir_lib.data.registry import class_entries
    from smir_lib.tools.export import export_run

    export = tmp_path / "export"
    export_run(fake_checkpoint(tmp_path, "tiny", len(class_entries("synthetic"))), export, onnx=False)
    damaged = damage(export)
    args = ["predict", "--checkpoint", str(export), "--images", str(_photos(tmp_path / "photos")),
            "--out", str(tmp_path / "out"), "--quiet"]
    assert main(args) == 2
    line = error_line(capsys)
    assert line.startswith(f"error: {damaged}") and "smir export --checkpoint RUN" in line, line


def test_a_checkpoint_with_an_invalid_stored_config_or_foreign_weights_is_named(tmp_path, capsys):
    """The stored configuration's error, and weights that do not fit, did not name the checkpoint
    (and advised ``reinit_head=True``, a Python argument no command takes)."""
    from test_export_predict import _photos, fake_checkpoint

    from smir_lib.data.registry import class_entries

    checkpoint = fake_checkpoint(tmp_path, "tiny", len(class_entries("synthetic")))
    state = torch.load(checkpoint, weights_only=True)
    state["config"]["image_size"] = -5
    torch.save(state, checkpoint)
    assert main(["predict", "--checkpoint", str(checkpoint), "--images", str(_photos(tmp_path / "photos")),
                 "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert f"{checkpoint} stores an invalid configuration (config image_size=-5" in error_line(capsys)
    cfg = load_config("fast", TINY)
    torch.save({"model": {"x": torch.zeros(1)}, "config": cfg.to_dict(), "stage": "finetune"}, checkpoint)
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--quiet", *TINY]) == 2
    line = error_line(capsys)
    assert f"weights in {checkpoint} do not fit" in line and "reinit_head" not in line


@pytest.mark.parametrize("text", ["[]", '{"username": "me", "ke'])
def test_a_damaged_kaggle_token_is_one_line_naming_it(tmp_path, monkeypatch, text):
    from smir_lib.data.download import kaggle_credentials

    (tmp_path / "kaggle.json").write_text(text)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path))
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'kaggle.json'} .*download a fresh token"):
        kaggle_credentials()


@pytest.mark.parametrize("line", ['{"kind": "fine', '{"image_steps": 10, "seconds": 1}', "[1]"])
def test_a_damaged_unit_log_is_one_line_naming_the_file_and_line(tmp_path, line):
    """A study killed mid-line left ``units.jsonl`` with a cut last line: a JSON error naming no
    file; a record without ``kind`` was a KeyError traceback."""
    from smir_lib.study.tables import load_protocol, time_estimate

    log = tmp_path / "units.jsonl"
    log.write_text('{"kind": "pretrain", "image_steps": 10, "seconds": 1.0}\n' + line + "\n")
    with pytest.raises(ValueError, match=rf"^unit log {log}, line 2: not a unit record"):
        time_estimate(log, load_protocol("toy"))


def test_a_finished_finetuning_run_reads_back_after_its_init_was_deleted(finished_run, tmp_path, capsys):
    """The stored init path is relative to the run folder; it was compared as if relative to the
    working directory, so a finished run whose init was gone was refused as another configuration."""
    shutil.copytree(finished_run, tmp_path / "pre")
    init = str(tmp_path / "pre" / "pretrained.pt")
    assert main(finetune_args(tmp_path / "ft", init)) == 0
    shutil.rmtree(tmp_path / "pre")
    capsys.readouterr()
    assert main(finetune_args(tmp_path / "ft", init)) == 0
    assert main(finetune_args(tmp_path / "ft", "scratch")) == 2  # another init is still another run
    assert "another configuration" in error_line(capsys)


def _weights_of_resnet18(state: dict) -> None:
    from smir_lib.models import build_model

    state["model"] = build_model(load_config("fast", {"model": "resnet18"}), 3).state_dict()


STATE_CHANGES = {"weights of another network": _weights_of_resnet18, "epoch text": lambda s: s.update(epoch="x"),
                 "epoch negative": lambda s: s.update(epoch=-7), "optimizer empty": lambda s: s.update(optimizer={}),
                 "history text": lambda s: s.update(history="x"), "best text": lambda s: s.update(best="x"),
                 "scheduler list": lambda s: s.update(scheduler=[1])}


@pytest.mark.parametrize("change", STATE_CHANGES.values(), ids=STATE_CHANGES.keys())
def test_a_state_pt_with_the_right_keys_and_wrong_values_is_one_line_naming_it(finished_run, tmp_path, capsys, change):
    """A ``state.pt`` with every key but foreign values was a RuntimeError / KeyError / TypeError
    traceback, or (a negative epoch, a history that is text) a run that resumed silently."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    for gone in ("result.json", "pretrained.pt", "step_1/done.json"):
        (run / gone).unlink()
    path = run / "step_1" / "state.pt"
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)
    assert pretrain(run) == 2
    line = error_line(capsys)
    assert f"{path} does not hold this stage's training state" in line and f"delete the folder {path.parent}" in line


def test_a_results_json_without_what_its_readers_print_is_one_line_naming_it(finished_run, tmp_path, capsys):
    """A finished fine-tuning run's ``results.json`` with an empty ``test`` section, no
    ``best_val_miou`` or per-class IoUs that are text was a KeyError traceback or printed garbage."""
    shutil.copytree(finished_run, tmp_path / "pre")
    args = finetune_args(tmp_path / "ft", str(tmp_path / "pre" / "pretrained.pt"))
    assert main(args) == 0
    path = tmp_path / "ft" / "results.json"
    good = json.loads(path.read_text())
    for damaged in ({**good, "test": {}}, {k: v for k, v in good.items() if k != "best_val_miou"},
                    {**good, "test": {**good["test"], "per_class_iou": "x"}}):
        path.write_text(json.dumps(damaged))
        capsys.readouterr()
        assert main(args) == 2
        assert f"{path} has no complete test results" in error_line(capsys)
