"""Issue 29, item 4: no run that succeeds with a meaningless result.

Every numeric config key has a range, checked when the config is built and named in the error;
YAML booleans are not numbers; a loss that becomes NaN or infinite stops the run in one line
naming the epoch, keeping the last good checkpoint; a pretraining checkpoint is no segmenter.
"""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image
from test_reliability import TINY, error_line, pretrain

from smir_lib.data.folder import READ_FIX
from smir_lib.engine.config import Config, load_config
from smir_lib.engine.inference import load_trained
from smir_lib.files import load_checkpoint
from smir_lib.tools.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

BAD_VALUES = [
    ("lr", "inf"), ("lr", "0"), ("lr", "nan"), ("lr", "-1e-3"),
    ("min_lr_factor", "-0.1"), ("min_lr_factor", "1.5"), ("min_lr_factor", "nan"),
    ("warmup_epochs", "-1"),
    ("train_size", "0"), ("val_size", "0"), ("test_size", "0"), ("pool_size", "0"), ("pool_size", "-5"),
    ("train_size", "1e12"), ("pool_size", "1e12"),
    ("n_patches", "20000"),  # more patches than the 128 px crop of the fast preset has pixels
    ("msssim_win", "-1"), ("msssim_win", "-3"), ("msssim_win", "33"),
    ("synthetic_size", "8"), ("synthetic_size", "1e9"), ("image_size", "1e9"),
    ("k", "1e6"), ("partitions", "1e12"),
    ("seed", "inf"), ("workers", "inf"), ("pretrain_epochs", "nan"),
    ("deterministic", "2"), ("cache_images", "0.5"),
    ("eval_stride", "1000"), ("pool_tile_size", "1e9"), ("device", "gpu"),
]


@pytest.mark.unit
@pytest.mark.parametrize("key,value", BAD_VALUES)
def test_every_numeric_key_is_checked_at_config_time_naming_key_and_range(key, value):
    with pytest.raises(ValueError, match=rf"^config {key}=\S+(: expected| is invalid: expected) "):
        load_config("fast", [f"{key}={value}"])


@pytest.mark.unit
@pytest.mark.parametrize("key", ["k", "partitions", "lr", "pool_size", "seed", "mask_ratio"])
def test_yaml_booleans_are_not_numbers(tmp_path, key):
    path = tmp_path / "run.yaml"
    path.write_text(f"preset: fast\n{key}: yes\n")
    with pytest.raises(ValueError, match=rf"config file {path}, line 2: config {key}=True: expected"):
        load_config(path)
    with pytest.raises(ValueError, match=rf"config {key}=True: expected"):
        load_config("fast", {key: True})


@pytest.mark.unit
def test_valid_edge_values_still_load():
    cfg = load_config("fast", ["min_lr_factor=0", "min_lr_factor=1", "warmup_epochs=0", "train_size=1",
                               "msssim_win=3", "n_patches=16384", "deterministic=1", "pool_size=None"])
    assert (cfg.min_lr_factor, cfg.n_patches, cfg.deterministic, cfg.pool_size) == (1.0, 16384, True, None)
    assert Config().lr == 3e-3  # the paper's defaults pass their own checks


@pytest.mark.unit
def test_a_loss_that_becomes_nan_stops_the_run_naming_the_epoch_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    """Warm-up from lr 1e-3 (epoch 1 trains) to lr 1e30 (epoch 2 blows every weight up)."""
    out = tmp_path / "run"
    args = ["pretrain", "--method", "random", "--out", str(out), "--quiet", *TINY, "partitions=1",
            "pretrain_epochs=3", "warmup_epochs=1", "min_lr_factor=1e-33", "lr=1e30"]
    assert main(args) == 2
    line = error_line(capsys)
    assert line.startswith("error: random epoch 2/3: train_loss=nan") and f"{out / 'random' / 'best.pt'} is kept" in line
    best = load_checkpoint(out / "random" / "best.pt")
    assert best["epoch"] == 0 and all(torch.isfinite(w).all() for w in best["model"].values() if w.is_floating_point())
    assert math.isfinite(best["val_loss"])
    assert not (out / "pretrained.pt").exists() and not (out / "result.json").exists()


@pytest.mark.unit
def test_load_trained_for_segmentation_refuses_a_pretraining_checkpoint(tmp_path, capsys):
    run = tmp_path / "pre"
    assert pretrain(run, "partitions=1") == 0
    model, _, _ = load_trained(run / "pretrained.pt")  # export reads it: the network itself
    assert model.out_channels == 3
    with pytest.raises(ValueError, match=r"pretrained.pt is a pretraining checkpoint .* fine-tune it first"):
        load_trained(run / "pretrained.pt", segmentation=True)
    photos = tmp_path / "photos"  # predict segments: it refuses the file instead of labelling every pixel
    photos.mkdir()
    Image.new("RGB", (40, 30), (90, 120, 60)).save(photos / "a.png")
    assert main(["predict", "--checkpoint", str(run / "pretrained.pt"), "--images", str(photos),
                 "--out", str(tmp_path / "pred")]) == 2
    assert "is a pretraining checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "pred" / "a.png").exists()


# --------------------------------------------------------------------------------------------
# 5. Bombs and huge values
# --------------------------------------------------------------------------------------------

def png_header(path, width: int, height: int) -> None:
    """A PNG that claims ``width x height`` grey pixels (a decompression bomb's header, 57 bytes)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IEND", b""))


@pytest.mark.unit
@pytest.mark.parametrize("where", ["images/field_001.jpg", "masks/field_001_mask.png", "pool/drone_000.jpg"])
def test_a_decompression_bomb_is_one_line_naming_the_file(tmp_path, capsys, where):
    from smir_lib.data.folder_example import write_example_folder

    folder = write_example_folder(tmp_path / "own", n_images=6, n_pool=2)
    bomb = folder / where
    png_header(bomb, 30000, 30000)
    assert main(["check-data", str(folder), "--quiet"]) == 1
    out = capsys.readouterr()
    assert "Traceback" not in out.err and f"image file {bomb} is too large to decode" in out.out
    args = ["pretrain", "--method", "random", "--out", str(tmp_path / "run"), "--quiet", *TINY, "dataset=folder",
            f"data_root={folder}", "pool_size=None", "partitions=1"]
    if where.startswith("masks"):
        args = ["finetune", "--out", str(tmp_path / "ft"), "--quiet", *TINY, "dataset=folder", f"data_root={folder}",
                "train_size=None", "val_size=None", "test_size=None"]
    assert main(args) == 2
    line = error_line(capsys)
    assert f"image file {bomb} is too large to decode" in line or f"{bomb}" in line


@pytest.mark.unit
def test_images_over_the_kits_pixel_limit_are_refused_before_decoding(tmp_path):
    """Between Pillow's warning (89 M pixels) and its error (179 M): refused by the kit's limit."""
    from smir_lib.data.base import ImageLoadError, open_image_array

    path = tmp_path / "huge.png"
    png_header(path, 12000, 12000)  # 144 M pixels: Pillow only warns, and would decode 0.4 GB
    with pytest.raises(ImageLoadError, match=r"huge.png is too large to decode \(12000x12000 = 144,000,000 pixels"):
        open_image_array(path)


@pytest.mark.unit
def test_nassar_tiling_does_not_switch_the_bomb_check_off_for_the_process(tmp_path):
    from PIL import Image

    from smir_lib.data import base
    from smir_lib.data.nassar import tile_orthomosaic

    Image.fromarray(torch.zeros(300, 300, 3, dtype=torch.uint8).numpy()).save(tmp_path / "mosaic.png")
    limits = Image.MAX_IMAGE_PIXELS, base.MAX_PIXELS
    assert tile_orthomosaic(tmp_path / "mosaic.png", tmp_path / "tiles", tile=256, progress=False) == 4
    assert (Image.MAX_IMAGE_PIXELS, base.MAX_PIXELS) == limits and limits[0] is not None


@pytest.mark.unit
def test_check_data_warns_above_the_pixel_budget_and_decodes_every_image(tmp_path, capsys, monkeypatch):
    from smir_lib.data import folder_check
    from smir_lib.data.folder_example import write_example_folder

    folder = write_example_folder(tmp_path / "own", n_images=6, n_pool=1)
    monkeypatch.setattr(folder_check, "PIXEL_BUDGET", 100 * 100)
    assert main(["check-data", str(folder), "--quiet"]) == 0
    assert "warning: " in capsys.readouterr().out
    monkeypatch.undo()
    cut = folder / "images" / "field_002.jpg"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])  # a JPEG cut in half: the header is intact
    assert main(["check-data", str(folder), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert f"cannot read image file {cut}" in out and READ_FIX in out and "download" not in out.lower()


@pytest.mark.unit
def test_workers_are_capped_at_the_usable_cores():
    import os

    from smir_lib.runtime import loader_workers

    cores = len(os.sched_getaffinity(0))
    assert loader_workers(10**12) == cores and loader_workers(0) == 0 and loader_workers(1) == 1


@pytest.mark.unit
@pytest.mark.parametrize("key,value", [("model", "resnet35"), ("dataset", "cwfidd"), ("pool_dataset", "cwfd")])
def test_named_choices_are_checked_at_config_time(key, value):
    """A typo in the network or dataset name was accepted by ``load_config`` and failed only after
    the data had been loaded (or, for the pool, when the pretraining started)."""
    with pytest.raises(ValueError, match=rf"^config {key}='{value}' is invalid: expected (None .*)?one of "):
        load_config("fast", [f"{key}={value}"])


@pytest.mark.unit
def test_a_class_file_with_more_classes_than_label_indices_is_refused(tmp_path):
    """A 256th class got index 255, the index of ignored pixels: never trained, never scored, and
    dropped from an export's classes; a 100,000-class file also took minutes to check (a quadratic
    duplicate test). Both end at read time now, naming the count and the limit."""
    from smir_lib.data.folder import FolderError, read_classes

    lines = ["classes:"] + [f"  - {{name: c{i}, value: {i}}}" for i in range(256)]
    (tmp_path / "classes.yaml").write_text("\n".join(lines) + "\n")
    with pytest.raises(FolderError, match=r"classes.yaml lists 256 classes: at most 255 \(class indices 0 to 254; "
                                          r"255 marks ignored pixels\)"):
        read_classes(tmp_path)
    (tmp_path / "classes.yaml").write_text("\n".join(lines[:256]) + "\n")  # 255 classes: the most there can be
    assert len(read_classes(tmp_path).names) == 255


@pytest.mark.unit
@pytest.mark.parametrize("job", [["study", "run", "--protocol", "toy"], ["study", "rerun", "j", "u"], ["reproduce"]])
def test_threads_are_at_least_one_and_capped_at_the_usable_cores(job, capsys):
    """``--threads 0`` was torch's RuntimeError traceback; ``--threads 1000000000`` was accepted."""
    from smir_lib.runtime import usable_cores
    from smir_lib.tools.cli import build_parser

    assert build_parser().parse_args([*job, "--threads", "1000000000"]).threads == usable_cores()
    for bad in ("0", "-1", "two"):
        with pytest.raises(SystemExit) as stop:
            build_parser().parse_args([*job, "--threads", bad])
        assert stop.value.code == 2 and "--threads" in capsys.readouterr().err
