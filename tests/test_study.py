"""The reproduction study end to end, at toy size: every initialisation, statistics over seeds,
hidden-pixel shares and the written files. It checks the pipeline, never which method wins."""

import json
import math

import pytest
import torch

from smir_lib.notebook.measure import stored_mask_shares
from smir_lib.study.reproduction import run_study
from smir_lib.study.reproduction_report import report

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

#: A study small enough for the suite: 64 px images, 2 partitions of a 6-image pool, 1 epoch.
TOY = dict(model="tiny", synthetic_size=72, image_size=64, msssim_win=3, n_patches=64, k=2,
           partitions=2, pool_size=6, pretrain_epochs=1, pretrain_batch=4, warmup_epochs=0,
           finetune_epochs=1, finetune_batch=4, train_size=4, val_size=2, test_size=2,
           workers=0, score_batch=4, progress=False)
INITS = {"scratch", "random", "selective", "selective_cross"}


def _check_results(res: dict, dataset: str, seeds: list[int]) -> None:
    n_classes = len(res["class_names"])
    assert res["dataset"] == dataset and res["seeds"] == seeds
    assert INITS <= set(res["inits"]), f"missing initialisations: {INITS - set(res['inits'])}"
    for init, row in res["inits"].items():
        assert row["n_seeds"] == len(seeds), init
        assert len(row["miou_per_seed"]) == len(seeds)
        assert 0.0 <= row["miou_mean"] <= 1.0 and row["miou_std"] >= 0.0
        assert len(row["per_class_mean"]) == n_classes == len(row["per_class_std"])
        assert all(s >= 0.0 or math.isnan(s) for s in row["per_class_std"])
        if len(seeds) > 1:  # std over seeds agrees with the per-seed values
            expected = torch.tensor(row["miou_per_seed"], dtype=torch.float64).std().item()
            assert row["miou_std"] == pytest.approx(expected)
    assert res["lowest_classes"] and set(res["lowest_classes"]) <= set(res["class_names"])
    for kind in ("image", "random", "selective"):
        share = res["object_share_hidden"][kind]
        assert 0.0 <= share["mean"] <= 1.0 and len(share["per_seed"]) == len(seeds)
        assert all(0.0 <= s <= 1.0 for s in share["per_seed"])
    assert isinstance(res["verdict"], str) and res["verdict"]


def _check_files(run_dir, res: dict) -> None:
    saved = json.loads((run_dir / "results.json").read_text())
    assert set(saved["inits"]) == set(res["inits"]) and saved["seeds"] == res["seeds"]
    table = (run_dir / "results.md").read_text()
    assert "selective IR (self)" in table and "mIoU" in table
    for seed in res["seeds"]:
        for part in ("pretrain_random", "pretrain_selective", "pretrain_selective_cross"):
            assert (run_dir / f"seed_{seed}" / part / "pretrained.pt").is_file(), part
        for init in INITS:
            assert (run_dir / f"seed_{seed}" / f"finetune_{init}" / "results.json").is_file(), init


def test_reduced_study_synthetic_two_seeds_and_report(tmp_path):
    run_dir = tmp_path / "synthetic"
    res = run_study("synthetic", [0, 1], run_dir, profile="fast", budget=TOY, cross_dataset="synthetic",
                    n_share_images=2)
    _check_results(res, "synthetic", [0, 1])
    _check_files(run_dir, res)

    again = run_study("synthetic", [0, 1], run_dir, profile="fast", budget=TOY,
                      cross_dataset="synthetic", n_share_images=2)  # read back, not retrained
    assert again["inits"]["selective"]["miou_per_seed"] == res["inits"]["selective"]["miou_per_seed"]

    combined = report({"synthetic": res}, "python test", 1.0, tmp_path / "report",
                                {"synthetic": run_dir}, note="a note")
    assert (tmp_path / "report.md").is_file() and (tmp_path / "report.json").is_file()
    row = combined["datasets"]["synthetic"]
    assert set(row["lowest_class_per_init"]) == set(res["inits"])
    assert len(row["verdicts"]) >= 4
    assert "Produced by: `python test`" in (tmp_path / "report.md").read_text()
    spent = row["budget_per_seed"]
    assert spent["pretrain_random"]["images_seen"] == 5  # 5 of 6 pool images train (1 validates), 1 epoch
    assert [s["n_train"] for s in spent["pretrain_selective"]["stages"]] == [2, 2]
    assert spent["finetune"]["iterations"] == 1


@pytest.mark.realdata
def test_reduced_study_cwfid_with_cross_pool(tmp_path, cwfid_root, monkeypatch):
    monkeypatch.setenv("SMIR_DATA_DIR", str(cwfid_root.parent))
    run_dir = tmp_path / "cwfid"
    res = run_study("cwfid", [0], run_dir, profile="fast",  # cache: decode each 1296x966 PNG once
                    budget={**TOY, "image_size": 64, "cache_images": True},
                    cross_dataset="synthetic", n_share_images=2)
    _check_results(res, "cwfid", [0])
    _check_files(run_dir, res)
    assert res["class_names"] == ["soil", "crop", "weed"]
    cross = json.loads((run_dir / "seed_0" / "pretrain_selective_cross" / "config.json").read_text())
    assert cross["pool_dataset"] == "synthetic" and cross["dataset"] == "cwfid"
    shares = stored_mask_shares(run_dir / "seed_0" / "pretrain_selective")  # masks it trained with
    assert set(shares) == {"image", "random", "selective"}
    assert all(0.0 < v < 1.0 for v in shares.values())
    assert stored_mask_shares(run_dir / "seed_0" / "pretrain_selective_cross") is None  # synthetic pool


@pytest.mark.unit
def test_results_table_shows_a_spread_only_over_several_seeds():
    """Hand-made summaries: two seeds print mean ± std; one seed prints the value alone."""
    from smir_lib.study.reproduction import results_markdown

    def summary(n_seeds, std):
        row = {"label": "random IR (self)", "n_seeds": n_seeds, "miou_mean": 0.5, "miou_std": std,
               "per_class_mean": [0.9, 0.1], "per_class_std": [std, std]}
        return {"class_names": ["soil", "weed"], "inits": {"random": row}}

    two = results_markdown(summary(2, 0.0125)).splitlines()[-1]
    assert two == "| random IR (self) | 2 | 0.500 ± 0.013 | 0.900 ± 0.013 | 0.100 ± 0.013 |"
    one = results_markdown(summary(1, 0.0)).splitlines()[-1]
    assert one == "| random IR (self) | 1 | 0.500 | 0.900 | 0.100 |"
