"""The "Use your own images" path of docs/own-images.md on a generated folder: check-data, pretrain, finetune,
evaluate (both protocols), predict, export."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from smir_lib.data.folder_example import write_example_folder
from smir_lib.tools.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

TINY = ["model=tiny", "image_size=64", "msssim_win=3", "n_patches=64", "k=2", "partitions=2", "pretrain_epochs=1",
        "pretrain_batch=4", "warmup_epochs=0", "workers=0", "score_batch=4", "finetune_epochs=1", "finetune_batch=2",
        "pool_size=null", "train_size=null", "val_size=null", "test_size=null"]


def test_own_folder_from_check_to_export(tmp_path, capsys):
    root = write_example_folder(tmp_path / "field", n_images=12, n_pool=4, size=(96, 128))
    data = ["dataset=folder", f"data_root={root}"]
    assert main(["check-data", str(root), "--quiet"]) == 0
    assert "0 problem(s): ready to train" in capsys.readouterr().out
    pre = tmp_path / "pre"
    assert main(["pretrain", "--method", "selective", "--out", str(pre), "--quiet", *TINY, *data,
                 "pool_tile_size=64", "pool_tile_stride=48"]) == 0
    steps = json.loads((pre / "result.json").read_text())["steps"]
    assert sum(s["n_train"] + s["n_val"] for s in steps) == (9 + 1 + 4) * 6  # train + val + pool images, 6 tiles each
    ft = tmp_path / "ft"
    assert main(["finetune", "--init", str(pre / "pretrained.pt"), "--out", str(ft), "--quiet", *TINY, *data]) == 0
    capsys.readouterr()
    scored = {"resize": 2 * 64 * 85, "sliding": 2 * 96 * 128}  # pixels of 2 test images: short side 64, or as stored
    for mode, pixels in scored.items():
        out = tmp_path / f"eval_{mode}.json"
        assert main(["evaluate", "--checkpoint", str(ft / "finetune" / "best.pt"), "--out", str(out), "--quiet",
                     *TINY, *data, f"eval_mode={mode}"]) == 0
        metrics = json.loads(out.read_text())
        assert metrics["n_images"] == 2 and np.array(metrics["confusion"]).sum() == pixels
        assert list(metrics["per_class_iou"]) == ["soil", "crop", "weed"]  # the same dict finetune prints
    pred = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(ft), "--images", str(root / "pool"), "--out", str(pred), "--quiet"]) == 0
    assert np.array(Image.open(pred / "drone_000.png")).shape == (96, 128)
    assert main(["export", "--checkpoint", str(ft), "--out", str(tmp_path / "exported"), "--onnx", "no"]) == 0
    assert {p.name for p in (tmp_path / "exported").iterdir()} == {"encoder.pth", "unet.safetensors", "model.json"}
    said = [line for line in capsys.readouterr().err.splitlines() if "no splits.yaml" in line]
    assert len(said) <= 1  # the drawn split is said once per process (and was said before this point)


def test_split_folders_from_check_to_export(tmp_path, capsys):
    """A dataset shipped as train/ trainannot/ val/ valannot/ test/ testannot/ (CamVid's layout), with
    the documented commands only."""
    flat = write_example_folder(tmp_path / "flat", n_images=8, n_pool=0, size=(96, 128))
    root = tmp_path / "camvid"
    for i, image in enumerate(sorted((flat / "images").iterdir())):
        split = "train" if i < 5 else "val" if i == 5 else "test"
        for folder, source in ((root / split, image), (root / f"{split}annot", flat / "masks" / f"{image.stem}_mask.png")):
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{image.stem}{source.suffix}").write_bytes(source.read_bytes())
    (root / "classes.yaml").write_text((flat / "classes.yaml").read_text())
    data = ["dataset=folder", f"data_root={root}"]
    assert main(["check-data", str(root), "--quiet"]) == 0
    assert "splits from the sibling folders (train 5, val 1, test 2)" in capsys.readouterr().out
    ft = tmp_path / "ft"
    assert main(["finetune", "--out", str(ft), "--quiet", *TINY, *data]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert list(printed["per_class_iou"]) == ["soil", "crop", "weed"]
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--checkpoint", str(ft / "finetune" / "best.pt"), "--out", str(out), "--quiet",
                 *TINY, *data]) == 0
    written = json.loads(out.read_text())["per_class_iou"]
    assert list(written) == list(printed["per_class_iou"])  # one format: {class: IoU}
    np.testing.assert_allclose(list(written.values()), list(printed["per_class_iou"].values()), equal_nan=True)
    exported = tmp_path / "exported"
    assert main(["export", "--checkpoint", str(ft), "--out", str(exported), "--onnx", "no"]) == 0
    assert main(["predict", "--checkpoint", str(exported), "--images", str(root / "test"), "--out",
                 str(tmp_path / "pred"), "--format", "values", "--quiet"]) == 0
    assert set(np.unique(np.array(Image.open(tmp_path / "pred" / "field_006.png")))) <= {0, 1, 2}
