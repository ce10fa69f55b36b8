"""Config presets, files, typed overrides and the errors a typo gets."""

import json

import pytest

from smir_lib.engine.config import PRESETS, Config, config_diff, load_config, parse_overrides, save_config

pytestmark = pytest.mark.unit


def test_paper_preset_has_spec_numbers():
    cfg = load_config("paper")
    assert (cfg.model, cfg.image_size, cfg.n_patches, cfg.k, cfg.partitions) == ("resnet34", 256, 512, 5, 10)
    assert (cfg.lr, cfg.warmup_epochs, cfg.pretrain_epochs, cfg.finetune_epochs) == (3e-3, 10, 1000, 500)
    assert cfg.finetune_loss == "jaccard" and cfg.msssim_win == 11 and cfg.mask_ratio == 0.5
    assert cfg.epochs_for_random == cfg.pretrain_epochs  # equal-iteration baseline


def test_pretrain_batch_follows_the_dataset_table():
    assert load_config("paper", {"dataset": "nassar"}).batch_for_pretraining == 256
    assert load_config("paper", {"dataset": "sugarbeets"}).batch_for_pretraining == 64
    assert load_config("paper", {"dataset": "voc"}).batch_for_pretraining == 128
    assert load_config("paper", {"dataset": "voc", "pool_dataset": "nassar"}).batch_for_pretraining == 256
    assert load_config("paper", {"pretrain_batch": 7}).batch_for_pretraining == 7


def test_fast_preset_is_small_and_valid():
    cfg = load_config("fast")
    assert cfg.model == "tiny" and cfg.dataset == "synthetic" and cfg.pool_size <= 200
    assert cfg.image_size > (cfg.msssim_win - 1) * 16
    assert set(PRESETS) == {"paper", "fast"}


def test_string_overrides_are_typed():
    cfg = load_config("fast", ["seed=3", "lr=1e-3", "deterministic=true", "pool_size=none",
                               "mask_ratio=0.25", "pretrain_epochs=1e1"])
    assert cfg.seed == 3 and cfg.lr == 1e-3 and cfg.deterministic is True
    assert cfg.pool_size is None and cfg.mask_ratio == 0.25 and cfg.pretrain_epochs == 10
    assert parse_overrides(["a=b=c"]) == {"a": "b=c"}


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ValueError, match="unknown config key.*'epochz'.*valid keys are: dataset"):
        load_config("fast", {"epochz": 3})


@pytest.mark.parametrize("override, match", [
    ({"seed": "abc"}, "seed='abc': expected an integer"),
    ({"finetune_loss": "dice"}, "finetune_loss"),
    ({"image_size": 128, "msssim_win": 11}, "image_size=128 is too small"),
    ({"deterministic": "maybe"}, "expected true or false"),
])
def test_bad_values_name_the_key(override, match):
    with pytest.raises(ValueError, match=match):
        load_config("fast", override)


def test_unknown_preset_or_file():
    with pytest.raises(ValueError, match="neither a preset"):
        load_config("fastest")


def test_yaml_file_with_preset_and_roundtrip(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("preset: fast\nseed: 5\nmodel: resnet18\n")
    cfg = load_config(path, {"k": 2})
    assert (cfg.seed, cfg.model, cfg.k, cfg.image_size) == (5, "resnet18", 2, PRESETS["fast"]["image_size"])
    saved = save_config(cfg, tmp_path / "run")
    assert load_config(saved) == cfg
    assert json.loads(saved.read_text())["seed"] == 5
    bad = tmp_path / "bad.yaml"
    bad.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        load_config(bad)


def test_replace_and_diff_ignore_execution_keys():
    cfg = load_config("fast")
    other = cfg.replace(workers=3, progress=False, seed=9)
    assert isinstance(other, Config) and other.seed == 9
    assert config_diff(cfg.to_dict(), other.to_dict()) == {"seed": (0, 9)}
    with pytest.raises(ValueError, match="unknown config key"):
        cfg.replace(nope=1)


def test_packaged_configs_load_by_name():
    from smir_lib.engine.config import packaged_configs

    assert {"cwfid_fast", "voc_paper"} <= set(packaged_configs())
    cfg = load_config("cwfid_fast")
    assert cfg.dataset == "cwfid" and cfg.pool_size is None and cfg.model == "tiny"
    assert load_config("voc_paper").batch_for_pretraining == 128


def test_smir_progress_0_switches_every_bar_off_unless_asked(monkeypatch, tmp_path):
    """Batch runs (the notebook runner sets SMIR_PROGRESS=0): every config, the study's too, shows no bars."""
    monkeypatch.delenv("SMIR_PROGRESS", raising=False)
    assert load_config("fast").progress is True
    monkeypatch.setenv("SMIR_PROGRESS", "0")
    assert load_config("fast").progress is False
    path = tmp_path / "c.yaml"
    path.write_text("preset: fast\nprogress: true\n")
    assert load_config(path).progress is False  # the environment wins over a file
    assert load_config("fast", {"progress": True}).progress is True  # an explicit override wins
