"""The teaching models: built by the engine, exported compact, verified, found by the notebooks."""


import pytest
import torch

from smir_lib.models import build_model, load_pretrained
from smir_lib.notebook import zoo
from smir_lib.notebook.setup import setup_notebook
from smir_lib.notebook.trained import finetuned, pretrained, teaching_set

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

TOY = dict(synthetic_size=72, image_size=64, msssim_win=3, n_patches=64, k=2, pool_size=12,
           pretrain_epochs=1, random_epochs=1, pretrain_batch=4, warmup_epochs=0, train_size=4,
           val_size=2, test_size=2, finetune_epochs=1, finetune_batch=2, progress=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    manifest = zoo.build("synthetic", root / "models" / "synthetic", root / "work", TOY, command="test")
    return root, manifest


def test_build_exports_a_verified_compact_set(built):
    root, manifest = built
    folder = root / "models" / "synthetic"
    assert zoo.verify(folder)["files"] == manifest["files"]
    assert manifest["command"] == "test" and manifest["config"]["image_size"] == 64
    for name in zoo.RUNS:
        assert (folder / name / "config.json").is_file(), name
    weights = torch.load(folder / "pretrain_selective" / "pretrained.pt", weights_only=True)["model"]
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float16}
    original = torch.load(root / "work" / "pretrain_selective" / "pretrained.pt", weights_only=True)["model"]
    model = build_model(zoo.teaching_config("synthetic", **TOY), 3)
    load_pretrained(model, folder / "pretrain_selective" / "pretrained.pt", reinit_head=False)
    for k, v in model.state_dict().items():  # float16 storage: within half-precision rounding
        torch.testing.assert_close(v, original[k].to(v.dtype), rtol=1e-3, atol=1e-3)
    q = manifest["quality_on_test_images"]["random"]
    assert q["n_images"] == zoo.QUALITY_IMAGES and q["psnr_fill"] > 0 and set(q) >= {"gain_db", "hidden_visible_ratio"}


def test_a_damaged_file_is_named(built, tmp_path):
    import shutil

    copy = tmp_path / "synthetic"
    shutil.copytree(built[0] / "models" / "synthetic", copy)
    (copy / "pretrain_random" / "pretrained.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(zoo.ManifestError, match=r"pretrain_random/pretrained.pt does not match"):
        zoo.verify(copy)


def test_notebooks_find_the_teaching_models(built, tmp_path, monkeypatch):
    root, _ = built
    monkeypatch.setenv("SMIR_MODELS_DIR", str(root / "models"))  # the toy set, not the shipped one
    ctx = setup_notebook("02_reconstruction", run_dir=tmp_path / "run", overrides=TOY)
    assert teaching_set(ctx) is not None
    result, message = pretrained(ctx, "selective")
    assert "teaching model" in message and result.best_checkpoint.is_file()
    assert all(s["masks"] is None or torch.load(s["masks"], weights_only=True) for s in result.steps)
    results, message = finetuned(ctx, "random", result.best_checkpoint)
    assert "teaching model" in message and (root / "models" / "synthetic" / "finetune_random" / "best.pt").samefile(results["checkpoint"])
    assert not (tmp_path / "run" / "pretrain_selective").exists()  # nothing trained
    other = setup_notebook("02_reconstruction", run_dir=tmp_path / "run", overrides={**TOY, "image_size": 96})
    assert teaching_set(other) is None  # another geometry: the notebook trains its own
    own = setup_notebook("02_reconstruction", run_dir=tmp_path / "run", overrides=TOY, train_own=True)
    assert teaching_set(own) is None
