"""predict (smir_lib.tools.predict) and export (smir_lib.tools.export): files others load, checked against PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from smir_lib.data.folder_example import write_example_folder
from smir_lib.engine.config import load_config
from smir_lib.models import ResNetEncoder, build_model
from smir_lib.tools.cli import main
from smir_lib.tools.export import (
    check_onnx,
    encoder_state_dict,
    export_onnx,
    export_run,
    load_safetensors,
    onnx_available,
)

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_thread")]

FIXTURE = Path(__file__).parent / "fixtures" / "torchvision_resnet_keys.json"
needs_onnx = pytest.mark.skipif(not onnx_available(), reason="ONNX export needs the export extra: "
                                "pip install -c constraints.txt -e '.[export]' (onnx, onnxscript, onnxruntime)")


def fake_checkpoint(tmp_path, model: str, out_channels: int, **overrides) -> Path:
    """A checkpoint as train_loop writes it: weights plus the run's configuration."""
    cfg = load_config("fast", {"model": model, **overrides})
    net = build_model(cfg, out_channels)
    path = tmp_path / "best.pt"
    torch.save({"model": net.state_dict(), "config": cfg.to_dict()}, path)
    return path


def test_encoder_has_torchvision_resnet34_keys_and_shapes(tmp_path):
    expected = {k: s for k, s in json.loads(FIXTURE.read_text())["resnet34"].items() if not k.startswith("fc.")}
    source = fake_checkpoint(tmp_path, "resnet34", 3)
    summary = export_run(source, tmp_path / "out", onnx=False)
    state = torch.load(summary["encoder"], weights_only=True)
    assert {k: list(v.shape) for k, v in state.items()} == expected
    fresh = ResNetEncoder("resnet34")
    fresh.load_state_dict(state, strict=True)  # what a torchvision / timm / smp ResNet-34 encoder reads


def test_safetensors_round_trip_keeps_every_weight(tmp_path):
    root = write_example_folder(tmp_path / "f", n_images=4, n_pool=0)
    (root / "classes.yaml").write_text("classes:\n" + "".join(f"  - {{name: c{i}, value: {i}}}\n" for i in range(4)))
    source = fake_checkpoint(tmp_path, "tiny", 4, dataset="folder", data_root=str(root))
    summary = export_run(source, tmp_path / "out", onnx=False)
    rebuilt = load_safetensors(summary["safetensors"])
    original = torch.load(source, weights_only=True)["model"]
    assert rebuilt.out_channels == 4 and set(rebuilt.state_dict()) == set(original)
    assert all(torch.equal(rebuilt.state_dict()[k], v) for k, v in original.items())
    assert encoder_state_dict(rebuilt).keys() == rebuilt.encoder.state_dict().keys()


@needs_onnx
def test_onnx_matches_pytorch_at_any_multiple_of_64(tmp_path):
    model = build_model(load_config("fast"), 3).eval()
    path = export_onnx(model, tmp_path / "m.onnx")
    check = check_onnx(model, path, sizes=(256, 512))
    assert check["max_abs_output"] < 100 and check["max_abs_diff"] <= 1e-4  # an untrained net: small outputs
    import onnxruntime as ort

    x = torch.randn(2, 3, 128, 320, generator=torch.Generator().manual_seed(1))  # batch and sides vary
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        assert np.abs(got - model(x).numpy()).max() <= 1e-4


def test_export_without_onnx_says_how_to_get_it(tmp_path, capsys):
    source = fake_checkpoint(tmp_path, "tiny", 3)
    assert main(["export", "--checkpoint", str(source), "--out", str(tmp_path / "o"), "--onnx", "no"]) == 0
    assert not (tmp_path / "o" / "model.onnx").exists() and (tmp_path / "o" / "unet.safetensors").is_file()
    assert main(["export", "--checkpoint", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert "run folder holding pretrained.pt" in capsys.readouterr().err


def test_predict_writes_index_pngs_and_overlays_at_each_image_size(tmp_path):
    root = write_example_folder(tmp_path / "f", n_images=4, n_pool=0, size=(96, 128))
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in {"small.jpg": (50, 70), "wide.png": (120, 700), "big.png": (1100, 1000)}.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(photos / name)
    source = fake_checkpoint(tmp_path, "tiny", 3, dataset="folder", data_root=str(root), image_size=128)
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(source), "--images", str(photos), "--out", str(out), "--quiet"]) == 0
    rows = {r["image"]: r for r in json.loads((out / "predictions.json").read_text())["predictions"]}
    for name, (h, w) in {"small.jpg": (50, 70), "wide.png": (120, 700), "big.png": (1100, 1000)}.items():
        index = np.array(Image.open(out / f"{Path(name).stem}.png"))
        assert index.shape == (h, w) and index.max() < 3
        assert Image.open(out / f"{Path(name).stem}_overlay.jpg").size == (w, h)
        assert sum(rows[name]["class_shares"].values()) == pytest.approx(1.0)
        assert set(rows[name]["class_shares"]) == {"soil", "crop", "weed"}
    palette = Image.open(out / "big.png").getpalette()[:9]
    assert palette == [120, 85, 50, 0, 200, 0, 230, 30, 30]  # the display colours of classes.yaml


def test_predict_refuses_a_pretraining_checkpoint_of_another_class_count(tmp_path, capsys):
    root = tmp_path / "f"
    write_example_folder(root, n_images=4, n_pool=0)
    (root / "classes.yaml").write_text("classes:\n  - {name: a, value: 0}\n  - {name: b, value: 1}\n")
    source = fake_checkpoint(tmp_path, "tiny", 3, dataset="folder", data_root=str(root))
    assert main(["predict", "--checkpoint", str(source), "--images", str(root / "images"),
                 "--out", str(tmp_path / "p")]) == 2
    assert "segments 3 classes but dataset 'folder' has 2" in capsys.readouterr().err


def _photos(folder: Path, names=("a.jpg", "b.png")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(folder / name)
    return folder


def _predict(source, images, out, *extra) -> int:
    return main(["predict", "--checkpoint", str(source), "--images", str(images), "--out", str(out), "--quiet",
                 *extra])


def test_predict_never_writes_over_inputs_or_files_it_did_not_write(tmp_path, capsys):
    root = write_example_folder(tmp_path / "f", n_images=4, n_pool=0)
    source = fake_checkpoint(tmp_path, "tiny", 3, dataset="folder", data_root=str(root))
    photos = _photos(tmp_path / "photos")
    before = {p.name: p.read_bytes() for p in photos.iterdir()}
    for out, said in [(photos, "is the same folder as --images"), (photos / "pred", "is inside --images")]:
        assert _predict(source, photos, out) == 2
        assert said in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in photos.iterdir()} == before  # nothing written, nothing replaced
    out = tmp_path / "pred"
    out.mkdir()
    (out / "b.png").write_bytes(b"the user's own file")
    assert _predict(source, photos, out) == 2
    assert "already holds b.png, not written by `smir predict`" in capsys.readouterr().err
    assert (out / "b.png").read_bytes() == b"the user's own file"
    (out / "b.png").unlink()
    assert _predict(source, photos, out) == 0 and _predict(source, photos, out, "--format", "color") == 0  # a rerun
    manifest = json.loads((out / "predictions.json").read_text())
    assert manifest["complete"] and manifest["format"] == "color"
    assert set(manifest["files"]) == {"a.png", "a_overlay.jpg", "b.png", "b_overlay.jpg"}
    assert np.array(Image.open(out / "a.png")).shape == (40, 60, 3)  # colours of classes.yaml
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    (out / "predictions.json").write_text("[]")  # a manifest someone else wrote
    assert _predict(source, photos, out) == 2 and "predictions.json exists and was not written" in capsys.readouterr().err


def test_predict_refuses_two_images_with_one_stem(tmp_path, capsys):
    root = write_example_folder(tmp_path / "f", n_images=4, n_pool=0)
    source = fake_checkpoint(tmp_path, "tiny", 3, dataset="folder", data_root=str(root))
    photos = _photos(tmp_path / "photos", ("a.jpg", "a.png"))
    assert _predict(source, photos, tmp_path / "pred") == 2
    assert "a.jpg and a.png" in capsys.readouterr().err and not (tmp_path / "pred").exists()


def test_predict_formats_write_indices_mask_values_or_colours(tmp_path):
    root = write_example_folder(tmp_path / "f", n_images=4, n_pool=0)
    (root / "classes.yaml").write_text("classes:\n  - {name: soil, value: 0}\n  - {name: crop, value: 1000}\n"
                                       "  - {name: weed, value: 2000, color: [230, 30, 30]}\n")
    source = fake_checkpoint(tmp_path, "tiny", 3, dataset="folder", data_root=str(root))
    photos = _photos(tmp_path / "photos", ("a.jpg",))
    maps = {}
    for fmt in ("index", "values", "color"):
        assert _predict(source, photos, tmp_path / fmt, "--format", fmt) == 0
        maps[fmt] = np.array(Image.open(tmp_path / fmt / "a.png"))
    index = maps["index"]
    assert np.array_equal(maps["values"], np.array([0, 1000, 2000])[index])  # 16-bit PNG of the stored values
    colors = np.array([c for c in Image.open(tmp_path / "index" / "a.png").getpalette()[:9]]).reshape(3, 3)
    assert np.array_equal(maps["color"], colors[index]) and colors[2].tolist() == [230, 30, 30]
    synthetic = fake_checkpoint(tmp_path, "tiny", 3)  # built-in dataset: no mask values to write
    with pytest.raises(ValueError, match="--format values writes the mask values"):
        from smir_lib.tools.predict import predict_folder
        predict_folder(synthetic, photos, tmp_path / "v2", fmt="values", progress=False)


def test_export_is_atomic_and_never_overwrites_a_file_it_did_not_write(tmp_path, monkeypatch, capsys):
    source = fake_checkpoint(tmp_path, "tiny", 3)
    out = tmp_path / "exp"
    out.mkdir()
    (out / "encoder.pth").write_bytes(b"someone else's weights")
    assert main(["export", "--checkpoint", str(source), "--out", str(out), "--onnx", "no"]) == 2
    assert "already holds encoder.pth, not written by `smir export`" in capsys.readouterr().err
    (out / "encoder.pth").unlink()
    export_run(source, out, onnx=False)
    good = {p.name: p.read_bytes() for p in out.iterdir()}
    import smir_lib.tools.export as export_module

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process is interrupted halfway through writing the weights

    monkeypatch.setattr(export_module, "save_safetensors", killed)
    with pytest.raises(KeyboardInterrupt):
        export_run(source, out, onnx=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == good  # the previous export, whole; no temporary file
    monkeypatch.undo()
    export_run(source, out, onnx=False)  # an earlier export's files may be replaced
    assert json.loads((out / "model.json").read_text())["complete"]


@needs_onnx
def test_a_killed_export_leaves_the_previous_export_whole(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    source = fake_checkpoint(tmp_path, "tiny", 3)
    out = tmp_path / "exp"
    export_run(source, out, onnx=False)
    good = {p.name: p.read_bytes() for p in out.iterdir()}
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "smir_lib", "export", "--checkpoint", str(source), "--out", str(out),
                             "--onnx", "yes"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(out.glob(".model.onnx.*.tmp")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the ONNX export has begun: the weights are written, under temporary names
    assert proc.poll() is None, "the export finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.endswith(".tmp")}
    assert kept.keys() == good.keys() and all(kept[n] == good[n] for n in good if n != "model.json")
    manifest = json.loads(kept["model.json"])  # now also lists model.onnx, so that a rerun may write it
    assert manifest["complete"] and "model.onnx" in manifest["files"] and not (out / "model.onnx").exists()
    export_run(source, out, onnx=False)  # the next export clears the killed one's temporary files
    assert not list(out.glob(".*.tmp"))
