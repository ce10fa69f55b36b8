"""``python -m smir_lib``: config files, overrides, errors, and pretrain -> finetune -> evaluate."""

import json

import pytest

from smir_lib.tools.cli import build_parser, main

TINY = ["model=tiny", "synthetic_size=72", "image_size=64", "msssim_win=3", "n_patches=64", "k=2",
        "partitions=2", "pool_size=10", "pretrain_epochs=1", "pretrain_batch=4", "warmup_epochs=0",
        "workers=0", "score_batch=4", "train_size=4", "val_size=2", "test_size=2",
        "finetune_epochs=1", "finetune_batch=2"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.unit
def test_parser_and_bad_overrides(capsys, tmp_path):
    args = build_parser().parse_args(["pretrain", "--method", "random", "--out", "x", "seed=2"])
    assert (args.command, args.method, args.overrides) == ("pretrain", "random", ["seed=2"])
    assert main(["pretrain", "--method", "random", "--out", str(tmp_path), "epochz=3"]) == 2
    assert "valid keys are" in capsys.readouterr().err
    assert main(["finetune", "--out", str(tmp_path), "seed"]) == 2
    with pytest.raises(SystemExit):
        main(["pretrain", "--method", "mae", "--out", str(tmp_path)])


@pytest.mark.slow
def test_pretrain_finetune_evaluate_from_a_config_file(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text("preset: fast\n" + "".join(f"{o.replace('=', ': ', 1)}\n" for o in TINY))
    pre = tmp_path / "pre"
    assert main(["pretrain", "--method", "selective", "--config", str(config), "--out", str(pre), "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["best_checkpoint"].endswith("pretrained.pt")
    assert (pre / "history.csv").is_file() and (pre / "step_1" / "masks.pt").is_file()
    ft = tmp_path / "ft"
    assert main(["finetune", "--config", str(config), "--init", str(pre / "pretrained.pt"),
                 "--out", str(ft), "--quiet", "seed=0"]) == 0
    assert "test_miou" in json.loads(capsys.readouterr().out)
    metrics = tmp_path / "metrics.json"
    assert main(["evaluate", "--config", str(config), "--checkpoint", str(ft / "finetune" / "best.pt"),
                 "--out", str(metrics), "--quiet"]) == 0
    assert set(json.loads(metrics.read_text())) >= {"miou", "per_class_iou", "confusion", "lowest_classes"}
