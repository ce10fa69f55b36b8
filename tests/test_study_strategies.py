"""The strategies protocols (issue 28): the units they plan, the units they share with the budget
study (same folders, same configs, so one root reuses them), the stale-config check that guards
that reuse, and the tables and figure with more strategies than random and selective."""

import json

import pytest
import torch
import yaml

from smir_lib.study import plots as study_plots
from smir_lib.study.inits import init_label, init_method
from smir_lib.study.plan import PROTOCOLS, Protocol, load_protocol, unit_config, work_units
from smir_lib.study.run import stale_config
from smir_lib.study.tables import _comparisons, _init_order

pytestmark = pytest.mark.unit

ENGINE = dict(model="tiny", synthetic_size=72, image_size=64, msssim_win=3, n_patches=64, k=2, partitions=2,
              pretrain_batch=4, warmup_epochs=0, workers=0, progress=False)


def protocol(**changes) -> Protocol:
    values = dict(name="toy", seeds=[0, 1], datasets=["synthetic"], pretrain_budgets=[40, 16],
                  label_budgets=[{"train_size": 2, "finetune_epochs": 3, "finetune_batch": 2}], engine=ENGINE,
                  per_dataset={"synthetic": {"pool_size": 20, "val_size": 2, "test_size": 2}},
                  strategies=["random", "selective", "block"])
    return Protocol(**{**values, **changes})


def test_units_cross_every_strategy_with_budgets_and_seeds():
    p = protocol()
    units = work_units(p)
    pretrain = [u.folder for u in units if u.kind == "pretrain" and u.seed == 0]
    assert pretrain == ["pretrain/synthetic/seed_0/random_16", "pretrain/synthetic/seed_0/selective_16",
                        "pretrain/synthetic/seed_0/block_16", "pretrain/synthetic/seed_0/random_40",
                        "pretrain/synthetic/seed_0/selective_40", "pretrain/synthetic/seed_0/block_40"]
    finetune = [u.init for u in units if u.kind == "finetune" and u.seed == 1]
    assert finetune == ["scratch", "random_16", "selective_16", "block_16", "random_40", "selective_40", "block_40"]
    configs = {u.method: unit_config(p, u) for u in units if u.kind == "pretrain" and u.budget == 40 and u.seed == 0}
    assert {m: c.mask_strategy for m, c in configs.items()} == {"random": "selective", "selective": "selective",
                                                                "block": "block"}  # random IR ignores the key
    assert ("block_40", "random_40", 40) in _comparisons(p, "synthetic")
    assert ("block_40", "selective_40", 40) in _comparisons(p, "synthetic")
    # the paper's pair keeps its folders and configs whatever else a protocol lists
    pair = protocol(strategies=["random", "selective"])
    assert {u.folder for u in work_units(pair)} < {u.folder for u in units}
    for u in work_units(pair):
        assert unit_config(pair, u) == unit_config(p, u), u.folder


@pytest.mark.parametrize("strategies, message", [
    (["selective", "block"], "include random and selective"),
    (["random", "selective", "selective"], "distinct names"),
])
def test_a_protocol_refuses_strategies_it_cannot_compare_or_run(strategies, message):
    with pytest.raises(ValueError, match=message):
        protocol(strategies=strategies)


def test_an_unknown_strategy_in_a_protocol_file_is_named(tmp_path):
    data = yaml.safe_load((PROTOCOLS / "toy.yaml").read_text())
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**data, "strategies": ["random", "selective", "blocks"]}))
    with pytest.raises(ValueError, match="unknown strategy 'blocks' in strategies; did you mean 'block'"):
        load_protocol(tmp_path / "bad.yaml")


def test_a_unit_saved_before_mask_strategy_existed_is_reused_and_another_strategy_is_not(tmp_path):
    p = protocol()
    unit = next(u for u in work_units(p) if u.kind == "pretrain" and u.method == "selective")
    folder = tmp_path / unit.folder
    folder.mkdir(parents=True)
    saved = {**unit_config(p, unit).to_dict(), "method": "selective"}
    del saved["mask_strategy"]  # written by the engine before issue 28
    (folder / "config.json").write_text(json.dumps(saved))
    assert stale_config(p, tmp_path, unit) == {}
    (folder / "config.json").write_text(json.dumps({**saved, "mask_strategy": "easiest"}))
    assert stale_config(p, tmp_path, unit) == {"mask_strategy": ("easiest", "selective")}


def test_the_packaged_protocols_share_the_budget_study_units():
    cpu, strategies, long = (yaml.safe_load((PROTOCOLS / f"{n}.yaml").read_text())
                             for n in ("cpu", "cpu_strategies", "cpu_budget_long"))
    shared = [{k: v for k, v in b.items() if k != "per_dataset"} for b in cpu["label_budgets"]
              if b["train_size"] in (4, 35)]
    for other in (strategies, long):  # key for key the budget study's, so its units are these units
        assert other["engine"] == cpu["engine"] and other["per_dataset"]["cwfid"] == cpu["per_dataset"]["cwfid"]
        assert other["label_budgets"] == shared
    units = work_units(load_protocol("cpu_strategies"))
    assert sum(u.kind == "pretrain" for u in units) == 5 * 7 and sum(u.kind == "finetune" for u in units) == 5 * 2 * 8
    cpu_folders = {u.folder for u in work_units(load_protocol("cpu"))}
    reused = [u.folder for u in units if u.folder in cpu_folders]
    assert len(reused) == 5 * (2 + 2 * 3)  # random_9000, selective_9000; scratch and both at 4 and 35 labels
    long_units = {u.folder for u in work_units(load_protocol("cpu_budget_long"))}
    assert len(long_units - {u.folder for u in units}) == 5 * 3 + 5 * 2 * 3  # only the 72k runs are new


def test_labels_order_and_figure_name_every_strategy():
    assert init_label("selective_unmasked_9000") == "selective_unmasked IR 9000"
    assert init_method("hard_ramp_9000") == "hard_ramp" and init_method("cross_synthetic_9000") == "selective_cross"
    inits = ["cross_synthetic_9000", "block_9000", "selective_9000", "scratch", "random_9000", "random_1000"]
    assert sorted(inits, key=_init_order) == ["scratch", "random_1000", "random_9000", "selective_9000",
                                              "block_9000", "cross_synthetic_9000"]
    row = lambda m: {"mean": [m], "low": [m - 0.01], "high": [m + 0.01]}  # noqa: E731
    data = {"pool": "cwfid", "labels": {"4": {"inits": {"scratch": row(0.5), "random_9000": row(0.5),
                                                          "selective_9000": row(0.51), "easiest_9000": row(0.49)},
                                                "finetune": {"n_train": 4, "iterations": 10}}}}
    fig = study_plots.study_budget_curves(data, {})
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert [t for t in legend if t.endswith(" IR")] == ["random IR", "selective IR", "easiest IR"]


def test_the_gpu_strategies_protocol_is_the_gpu_protocol_with_the_strategies_axis():
    gpu, strategies = (yaml.safe_load((PROTOCOLS / f"{n}.yaml").read_text()) for n in ("gpu", "gpu_strategies"))
    assert {k: v for k, v in strategies.items() if k not in ("strategies", "description")} == \
        {k: v for k, v in gpu.items() if k != "description"}
    gpu_units = {u.folder for u in work_units(load_protocol("gpu"))}
    units = work_units(load_protocol("gpu_strategies"))
    assert gpu_units < {u.folder for u in units} and len(units) == 2 * 7 + 2 * 2 * 8


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_a_toy_strategies_study_runs_and_reports(tmp_path):
    from smir_lib.study.run import run_units
    from smir_lib.study.tables import write_report

    toy = load_protocol("toy", {"seeds": [0], "pretrain_budgets": [5], "strategies": ["random", "selective", "block"]})
    out = run_units(toy, tmp_path / "study", poll_s=0.1, wait_s=1)
    assert not out["failed"] and out["left"] == [] and len(out["ran"]) == 3 + 4
    masks = torch.load(tmp_path / "study/pretrain/synthetic/seed_0/block_5/step_1/masks.pt")
    assert json.loads((tmp_path / "study/pretrain/synthetic/seed_0/block_5/config.json").read_text())["mask_strategy"] == "block"
    assert masks["scores"].isnan().all() and masks["masks"].flatten(1).sum(1).eq(32).all()  # 8x8 grid, no model
    summary = write_report(toy, tmp_path / "study", tmp_path / "out" / "toy", "python test")
    cell = summary["datasets"]["synthetic"]["labels"]["2"]
    assert set(cell["inits"]) == {"scratch", "random_5", "selective_5", "block_5"}
    assert {(d["a"], d["b"]) for d in cell["differences"]} >= {("block_5", "random_5"), ("block_5", "selective_5")}
    assert "block IR 5 - random IR 5" in (tmp_path / "out" / "toy.md").read_text()
    shares = {"soil": 0.5, "crop": 0.9, "weed": 0.7}
    mechanism = {"datasets": {"synthetic": {
        "k": 5, "class_names": ["soil", "crop", "weed"], "class_pixel_share": {"soil": 0.8, "crop": 0.15, "weed": 0.05},
        "strategies": {s: {"hidden_share": shares, "gain_db": 4.0, "forward_passes": 1} for s in toy.strategies}}}}
    (tmp_path / "mechanism.json").write_text(json.dumps(mechanism))
    again = write_report(toy, tmp_path / "study", tmp_path / "out" / "again", "python test",
                         mechanism=tmp_path / "mechanism.json", beside=[tmp_path / "out" / "toy.json"])
    text = (tmp_path / "out" / "again.md").read_text()
    assert "## Masking strategies: mechanism and downstream effect (synthetic)" in text and "| block | 1 | 85 % |" in text
    assert ("of the 4 initialisations both ran (label budget / initialisation), 4 give the same test mIoU for "
            "every seed.") in text
    assert {p.name for p in (tmp_path / "out").glob("again_*.png")} == {
        f"again_synthetic_{kind}.png" for kind in ("budget", "curves", "strategies", "budget_beside")}
    assert again["mechanism"] == mechanism
