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
    pred = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(ft), "--images", str(root / "pool"), "--out", str(pred), "--quiet"]) == 0
    assert np.array(Image.open(pred / "drone_000.png")).shape == (96, 128)
    assert main(["export", "--checkpoint", str(ft), "--out", str(tmp_path / "exported"), "--onnx", "no"]) == 0
    assert {p.name for p in (tmp_path / "exported").iterdir()} == {"encoder.pth", "unet.safetensors"}
