"""An export that deploys (issue 30 item 5): the deployment record, no machine path in any exported
byte, ``predict`` on an exported folder alone, and docs/export.md's example run with numpy, Pillow
and onnxruntime only, reproducing the kit's predictions."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from smir_lib.data.base import REPO_ROOT
from smir_lib.data.folder_example import write_example_folder
from smir_lib.engine.config import load_config
from smir_lib.models import build_model
from smir_lib.tools.export import export_run, onnx_available, safetensors_metadata
from smir_lib.tools.predict import predict_folder

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_thread")]
EXAMPLE_HEADING = "## Use the exported model without this kit"
FORBIDDEN = ("torch", "smir_lib", "torchvision", "kornia", "safetensors", "onnx", "onnxscript")
GUARD = """
import sys
FORBIDDEN = set({forbidden!r})

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FORBIDDEN:
            raise ImportError(f"the example imported {{name}}")

sys.meta_path.insert(0, Refuse())
sys.argv = ["segment.py", *{argv!r}]
code = open({script!r}).read()
exec(compile(code, "docs/export.md", "exec"), {{"__name__": "__main__"}})
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & FORBIDDEN)
assert not loaded, loaded
print("imported:", sorted({{m.split(".")[0] for m in sys.modules}} & {{"numpy", "PIL", "onnxruntime"}}))
"""


def trained_checkpoint(tmp_path: Path, root: Path) -> Path:
    """A fine-tuning checkpoint of the example folder (as train_loop writes it: weights, config,
    the monitored val_miou) whose head is scaled up so that its class maps are not all one class."""
    cfg = load_config("fast", {"model": "tiny", "dataset": "folder", "data_root": str(root), "image_size": 64,
                                "msssim_win": 3})
    torch.manual_seed(0)
    net = build_model(cfg, 3)
    with torch.no_grad():
        net.head.conv.weight.mul_(20)
    path = tmp_path / "run" / "finetune" / "best.pt"
    path.parent.mkdir(parents=True)
    torch.save({"model": net.state_dict(), "config": cfg.to_dict(), "val_miou": 0.5, "stage": "finetune"}, path)
    return path


def photos(folder: Path) -> Path:
    """Photos of three kinds: at the network's size (short side 64, sides not multiples of 64),
    larger (resized by the protocol), and EXIF-rotated."""
    folder.mkdir(parents=True)
    fields = write_example_folder(folder.parent / "render", n_images=3, n_pool=0, size=(150, 230))
    shots = sorted((fields / "images").iterdir())
    Image.open(shots[0]).crop((0, 0, 100, 64)).save(folder / "exact.png")
    shutil.copy(shots[1], folder / "large.jpg")
    tags = Image.Exif()
    tags[0x0112] = 6
    Image.open(shots[2]).save(folder / "rotated.jpg", exif=tags, quality=95)
    return folder


def export_fixture(tmp_path_factory, onnx: bool) -> dict:
    tmp = tmp_path_factory.mktemp("deploy")
    root = write_example_folder(tmp / "field", n_images=4, n_pool=0)
    checkpoint = trained_checkpoint(tmp, root)
    out = tmp / "export"
    summary = export_run(checkpoint, out, onnx=onnx)
    return {"tmp": tmp, "root": root, "checkpoint": checkpoint, "out": out, "summary": summary}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """An export without ONNX (seconds)."""
    return export_fixture(tmp_path_factory, onnx=False)


@pytest.fixture(scope="module")
def exported_onnx(tmp_path_factory) -> dict:
    """An export with model.onnx (the ONNX exporter takes 25 s or more)."""
    if not onnx_available():
        pytest.skip("needs the export extra: pip install -c constraints.txt -e '.[export]'")
    return export_fixture(tmp_path_factory, onnx=True)


def test_export_records_what_a_deployment_needs(exported):
    out = exported["out"]
    info = json.loads((out / "model.json").read_text())
    assert info["written_by"] == "smir export" and info["complete"] and info["task"] == "segmentation"
    assert info["classes"] == [{"name": "soil", "color": [120, 85, 50], "value": 0},
                               {"name": "crop", "color": [0, 200, 0], "value": 1},
                               {"name": "weed", "color": [230, 30, 30], "value": 2}]
    assert info["input"]["channel_order"] == "RGB" and info["input"]["side_multiple"] == 64
    assert info["input"]["mean"] == pytest.approx([0.4529, 0.4317, 0.3999])
    assert info["input"]["std"] == pytest.approx([0.4443, 0.4665, 0.4887])
    assert info["protocol"]["resize_short_side"] == 64 and info["source"] == "finetune/best.pt"
    meta = safetensors_metadata(out / "unet.safetensors")
    assert json.loads(meta["deploy"])["classes"] == info["classes"]  # the same record in both files
    assert json.loads(meta["config"])["data_root"] == "field"


@pytest.mark.slow
def test_no_exported_file_holds_a_path_of_this_machine(exported_onnx):
    exported = exported_onnx
    tmp = exported["tmp"]
    needles = {str(tmp), str(tmp.resolve()), str(REPO_ROOT), os.path.expanduser("~"), str(exported["root"])}
    needles = {n for n in needles if len(n) > 4}  # '/' or '/root' alone would match by chance
    files = sorted(exported["out"].iterdir())
    assert {f.name for f in files} == {"encoder.pth", "unet.safetensors", "model.json", "model.onnx"}
    for path in files:
        data = path.read_bytes()
        for needle in needles:
            assert needle.encode() not in data, f"{path.name} holds {needle}"
        assert not re.search(rb'File "/', data), f"{path.name} holds a Python stack trace"


def test_predict_reads_an_exported_folder_without_the_run_or_the_data(exported, tmp_path):
    moved = tmp_path / "copied_export"
    shutil.copytree(exported["out"], moved)  # another machine: no run folder, no dataset
    images = photos(tmp_path / "photos")
    with_export = predict_folder(moved, images, tmp_path / "a", progress=False, fmt="values")
    with_checkpoint = predict_folder(exported["checkpoint"], images, tmp_path / "b", progress=False, fmt="values")
    assert with_export == with_checkpoint
    for name in ("exact", "large", "rotated"):
        assert np.array_equal(np.array(Image.open(tmp_path / "a" / f"{name}.png")),
                              np.array(Image.open(tmp_path / "b" / f"{name}.png")))


@pytest.mark.slow
def test_docs_example_reproduces_the_kits_predictions_with_onnxruntime_alone(exported_onnx, tmp_path):
    exported = exported_onnx
    text = (REPO_ROOT / "docs" / "export.md").read_text()
    block = re.search(r"```python\n(.*?)```", text[text.index(EXAMPLE_HEADING):], re.S).group(1)
    script = tmp_path / "segment.py"
    script.write_text(block)
    images = photos(tmp_path / "photos")
    kit = tmp_path / "kit"
    predict_folder(exported["out"], images, kit, progress=False)
    argv = [str(exported["out"])] + [str(p) for p in sorted(images.iterdir())]
    guard = GUARD.format(forbidden=FORBIDDEN, argv=argv, script=str(script))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-I", "-c", guard], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "imported: ['PIL', 'numpy', 'onnxruntime']" in done.stdout
    agreement = {}
    for name in ("exact", "large", "rotated"):
        ours = np.array(Image.open(images / f"{name}_classes.png"))
        theirs = np.array(Image.open(kit / f"{name}.png"))
        assert ours.shape == theirs.shape
        agreement[name] = float((ours == theirs).mean())
    assert min(agreement.values()) >= 0.9999, agreement  # equal up to ties within float rounding


def test_no_committed_file_holds_a_path_of_this_machine():
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    needles = {str(REPO_ROOT), str(REPO_ROOT.resolve()), os.path.expanduser("~") + "/"}
    needles = {n.encode() for n in needles if len(n) > 4}
    found = [(name, n) for name in tracked.decode().split("\0") if name and (REPO_ROOT / name).is_file()
             for data in [(REPO_ROOT / name).read_bytes()] for n in needles if n in data]
    assert not found, found


def test_an_exported_pretraining_network_is_not_used_to_segment(tmp_path):
    cfg = load_config("fast", {"model": "tiny"})
    path = tmp_path / "pre" / "pretrained.pt"
    path.parent.mkdir()
    torch.save({"model": build_model(cfg, 3).state_dict(), "config": cfg.to_dict(), "val_loss": 0.3}, path)
    export_run(path, tmp_path / "export", onnx=False)
    info = json.loads((tmp_path / "export" / "model.json").read_text())
    assert info["task"] == "reconstruction" and "classes" not in info
    with pytest.raises(ValueError, match="exported pretraining network"):
        predict_folder(tmp_path / "export", photos(tmp_path / "photos"), tmp_path / "pred", progress=False)
