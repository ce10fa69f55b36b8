"""The budget study's plan: work units, shards, budgets in epochs, configs that pair the runs,
and the statistics (bootstrap intervals checked against an exact enumeration of resamples)."""

import itertools

import pytest
import torch

from smir_lib.study.plan import (
    Protocol,
    epochs_for_budget,
    load_protocol,
    parse_shard,
    protocol_names,
    shard,
    stage_train_sizes,
    unit_config,
    work_units,
)
from smir_lib.study.stats import bootstrap_interval, paired_difference
from smir_lib.study.tables import difference_table, headline, late_rise

pytestmark = pytest.mark.unit

ENGINE = dict(model="tiny", synthetic_size=72, image_size=64, msssim_win=3, n_patches=64, k=2, partitions=2,
              pretrain_batch=4, warmup_epochs=0, workers=0, progress=False)


def protocol(**changes) -> Protocol:
    values = dict(name="toy", seeds=[0, 1], datasets=["synthetic"], pretrain_budgets=[40, 16],
                  label_budgets=[{"train_size": 2, "finetune_epochs": 3, "finetune_batch": 2},
                                 {"train_size": 4, "finetune_epochs": 2, "finetune_batch": 2}],
                  engine=ENGINE, per_dataset={"synthetic": {"pool_size": 20, "val_size": 2, "test_size": 2}})
    return Protocol(**{**values, **changes})


def test_units_count_order_and_dependencies():
    p = protocol(datasets=["synthetic", "cwfid"], cross={"synthetic": "cwfid", "cwfid": "synthetic"})
    units = work_units(p)
    # per seed: 2 pools x 2 budgets x 2 methods; per seed, dataset and label budget:
    # scratch + 2 budgets x 2 methods + cross = 6
    assert sum(u.kind == "pretrain" for u in units) == 2 * 2 * 2 * 2
    assert sum(u.kind == "finetune" for u in units) == 2 * 2 * 2 * 6
    assert units == work_units(p)  # deterministic
    assert len({u.folder for u in units}) == len(units)
    first_finetune = next(i for i, u in enumerate(units) if u.kind == "finetune")
    assert all(u.kind == "pretrain" for u in units[:first_finetune])
    assert all(u.kind == "finetune" for u in units[first_finetune:])
    for u in units:
        if u.dependency is not None:
            assert u.dependency in units, u.folder
    cross = [u for u in units if u.init.startswith("cross")]
    assert {u.init for u in cross} == {"cross_cwfid_40", "cross_synthetic_40"}
    # the cross initialisation of synthetic is cwfid's own selective run at the largest budget
    assert {u.dependency.folder for u in cross if u.dataset == "synthetic"} == {
        "pretrain/cwfid/seed_0/selective_40", "pretrain/cwfid/seed_1/selective_40"}


def test_a_cross_pool_outside_the_datasets_pretrains_selectively_at_the_largest_budget_only():
    units = work_units(protocol(cross={"synthetic": "cwfid"}))
    cwfid = [u for u in units if u.kind == "pretrain" and u.dataset == "cwfid"]
    assert [(u.seed, u.method, u.budget) for u in cwfid] == [(0, "selective", 40), (1, "selective", 40)]


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_shards_are_disjoint_and_cover_every_unit(count):
    units = work_units(protocol(cross={"synthetic": "cwfid"}))
    shares = [shard(units, i, count) for i in range(count)]
    folders = [u.folder for s in shares for u in s]
    assert sorted(folders) == sorted(u.folder for u in units) and len(set(folders)) == len(folders)
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_parse_shard():
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "-1/2", "1-2", "a/b"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)
    with pytest.raises(ValueError, match="at least 1"):  # not "i must be 0..-1"
        parse_shard("0/0")


def test_budget_to_epochs_arithmetic():
    # CWFID's pool in the cpu protocol: 39 frames x 15 tiles = 585; random keeps 526 to train
    # (59 validate), selective 10 partitions of 58-59 tiles keep 53 x 5 + 52 x 5 = 525.
    assert epochs_for_budget(1500, [526]) == 3 and epochs_for_budget(1500, [53] * 5 + [52] * 5) == 3
    assert epochs_for_budget(9000, [526]) == 17  # 8942 images; 18 epochs would be 9468
    assert epochs_for_budget(100, [526]) == 1
    with pytest.raises(ValueError, match="no training image"):
        epochs_for_budget(100, [])


def test_pretraining_configs_see_equal_images_and_every_initialisation_fine_tunes_alike():
    p = protocol()
    units = work_units(p)
    for budget in p.pretrain_budgets:
        seen = {}
        for method in ("random", "selective"):
            unit = next(u for u in units if u.kind == "pretrain" and u.method == method and u.budget == budget)
            cfg = unit_config(p, unit)
            epochs = cfg.epochs_for_random if method == "random" else cfg.pretrain_epochs
            seen[method] = epochs * sum(stage_train_sizes(cfg, method))
        # pool 20: random trains 18 (2 validate); 2 partitions of 10 keep 9 each = 18 per epoch;
        # 16 image-steps -> 1 epoch, 40 -> 2 epochs (36 images; 3 would be 54)
        expected = {16: 18, 40: 36}[budget]
        assert seen == {"random": expected, "selective": expected}
    for seed in p.seeds:
        for labels in p.label_budgets:
            cell = [u for u in units if u.kind == "finetune" and u.seed == seed
                    and u.train_size == labels["train_size"]]
            configs = {u.init: unit_config(p, u).to_dict() for u in cell}
            assert len(configs) == 5 and all(c == configs["scratch"] for c in configs.values())  # paired
            assert configs["scratch"]["seed"] == seed
            assert configs["scratch"]["finetune_epochs"] == labels["finetune_epochs"]


def test_label_budgets_are_nested_subsets():
    from smir_lib.engine.pretrain_data import load_split

    p = protocol()
    small, large = (load_split(unit_config(p, u), "train") for u in work_units(p)
                    if u.kind == "finetune" and u.seed == 0 and u.init == "scratch")
    assert (len(small), len(large)) == (2, 4)
    for i in range(len(small)):
        assert torch.equal(small[i][0], large[i][0]) and torch.equal(small[i][1], large[i][1])


def test_packaged_protocols_load_and_name_their_budgets():
    assert {"cpu", "reduced", "gpu", "toy", "cpu_longer", "cpu_check_2x", "cpu_check_35"} <= set(protocol_names())
    assert all(load_protocol(name).seeds for name in protocol_names())  # every packaged file is valid
    cpu = load_protocol("cpu")
    assert cpu.seeds == [0, 1, 2, 3, 4] and len(cpu.pretrain_budgets) >= 3 and len(cpu.label_budgets) >= 3
    assert set(cpu.datasets) == {"cwfid", "synthetic"} and cpu.cross == {"cwfid": "synthetic", "synthetic": "cwfid"}
    assert load_protocol("reduced", {"seeds": [3]}).seeds == [3]
    with pytest.raises(ValueError, match="packaged protocols"):
        load_protocol("no_such_protocol")
    with pytest.raises(ValueError, match="train_size"):
        protocol(label_budgets=[{"finetune_epochs": 3}])


PROTOCOL_FILE = """\
seeds: [0]
datasets: [cwfid, synthetic]
cross: {cwfid: synthetic}
pretrain_budgets: [10]
label_budgets:
  - {train_size: 2, finetune_epochs: 2}
  - {train_size: 4, finetune_epochs: 2, finetune_batch: 2, per_dataset: {synthetic: {finetune_epochs: 3}}}
engine:
  model: tiny
  image_size: 64
  msssim_win: 3
per_dataset:
  synthetic: {synthetic_size: 72, pool_size: 6}
"""


@pytest.mark.unit
@pytest.mark.parametrize("old, new, named", [
    ("pretrain_budgets:", "pretrain_budget:", "unknown key pretrain_budget; did you mean 'pretrain_budgets'"),
    ("  model: tiny", "  modle: tiny", "unknown key engine.modle; did you mean 'model'"),
    ("finetune_batch: 2,", "finetune_batc: 2,",
     "unknown key label_budgets[1].finetune_batc; did you mean 'finetune_batch'"),
    ("{synthetic_size:", "{synthetc_size:",
     "unknown key per_dataset.synthetic.synthetc_size; did you mean 'synthetic_size'"),
    ("  synthetic: {", "  synthtic: {",
     "unknown dataset 'synthtic' in per_dataset; did you mean 'synthetic'"),
    ("[cwfid, synthetic]", "[cwfid, synthtic]",
     "unknown dataset 'synthtic' in datasets[1]; did you mean 'synthetic'"),
    ("[cwfid, synthetic]", "[cwfid, imagenet]",
     "unknown dataset 'imagenet' in datasets[1]; expected one of: synthetic, cwfid"),
    ("{cwfid: synthetic}", "{cwfid: synthetik}",
     "unknown dataset 'synthetik' in cross.cwfid; did you mean 'synthetic'"),
    ("{train_size: 2, finetune_epochs: 2}", "{train_size: 2, finetune_epochs: 0}", "config finetune_epochs=0 is invalid"),
    ("  model: tiny", "  model: [tiny", "line 10: invalid YAML"),
    ("{synthetic: {finetune_epochs: 3}}", "{synthetik: {finetune_epochs: 3}}",
     "unknown dataset 'synthetik' in label_budgets[1].per_dataset (not in datasets); did you mean 'synthetic'"),
    ("{synthetic: {finetune_epochs: 3}}", "{synthetic: {finetune_epoch: 3}}",
     "unknown key label_budgets[1].per_dataset.synthetic.finetune_epoch; did you mean 'finetune_epochs'"),
    ("{synthetic: {finetune_epochs: 3}}", "{synthetic: {finetune_epochs: -1}}",
     "config finetune_epochs=-1 is invalid"),
    ("per_dataset: {synthetic: {finetune_epochs: 3}}", "per_dataset: [600]",
     "label_budgets[1].per_dataset=[600] is a list; expected a mapping of dataset name to config keys"),
])
def test_a_protocol_file_with_a_mistake_fails_at_load_naming_the_file_the_key_and_the_fix(tmp_path, old, new, named):
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(PROTOCOL_FILE)
    assert load_protocol(good).datasets == ["cwfid", "synthetic"]
    assert PROTOCOL_FILE.count(old) == 1
    bad.write_text(PROTOCOL_FILE.replace(old, new))
    with pytest.raises(ValueError) as err:
        load_protocol(bad)
    message = str(err.value)
    assert message.startswith(f"study protocol {bad}") and named in message and "\n" not in message


def test_a_label_budget_can_give_one_dataset_other_values_and_still_pairs_its_runs(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(PROTOCOL_FILE)
    p = load_protocol(path)
    epochs = {(u.dataset, u.train_size, u.init): unit_config(p, u).finetune_epochs
              for u in work_units(p) if u.kind == "finetune"}
    assert {e for (d, n, _), e in epochs.items() if n == 4 and d == "synthetic"} == {3}  # its own value
    assert {e for (d, n, _), e in epochs.items() if n == 4 and d == "cwfid"} == {2}  # the budget's
    assert {e for (d, n, _), e in epochs.items() if n == 2} == {2}
    assert unit_config(p, next(u for u in work_units(p) if u.kind == "finetune" and u.train_size == 4
                                and u.dataset == "synthetic")).finetune_batch == 2  # the rest is shared


def _exact_percentiles(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """Percentiles of the mean over all n^n equally likely resamples (inverse of the exact CDF)."""
    n = len(values)
    means = sorted(sum(values[i] for i in pick) / n for pick in itertools.product(range(n), repeat=n))
    alpha = (1 - level) / 2
    return means[int(alpha * len(means))], means[int((1 - alpha) * len(means))]


@pytest.mark.parametrize("values", [[0.0, 1.0, 2.0, 3.0], [0.1, -0.2, 0.4, 0.05], [0.0, 1.0, 2.0]])
def test_bootstrap_interval_matches_the_exact_resampling_distribution(values):
    # For these sets the 2.5 % and 97.5 % points fall well inside one value of the exact
    # distribution (e.g. [0, 1, 2, 3]: P(mean <= 0.25) = 5/256 = 2.0 %, P(mean <= 0.5) = 15/256 = 5.9 %),
    # so 10,000 resamples land on the exact percentile.
    low, high = _exact_percentiles(values)
    mean, lo, hi = bootstrap_interval(torch.tensor(values))
    assert mean.item() == pytest.approx(sum(values) / len(values))
    assert lo.item() == pytest.approx(low) and hi.item() == pytest.approx(high)


def test_bootstrap_is_seeded_vectorised_over_metrics_and_paired_by_seed():
    data = torch.tensor([[0.1, 0.5], [0.3, 0.2], [0.0, 0.9], [0.2, 0.4]], dtype=torch.float64)
    both = bootstrap_interval(data)
    for col in range(2):
        alone = bootstrap_interval(data[:, col])
        assert [t[col].item() for t in both] == [t[0].item() for t in alone]
    assert [t.tolist() for t in bootstrap_interval(data)] == [t.tolist() for t in both]  # same seed, same interval
    diff = paired_difference({0: [0.5, 0.9], 1: [0.4, 0.8], 7: [0.9, 0.9]}, {0: [0.3, 0.9], 1: [0.5, 0.7], 2: [0.0, 0.0]},
                             ["mIoU", "crop"])
    assert diff["seeds"] == [0, 1] and diff["n_seeds"] == 2
    assert diff["metrics"]["mIoU"]["mean"] == pytest.approx((0.2 - 0.1) / 2)
    assert diff["metrics"]["crop"]["mean"] == pytest.approx(0.05)
    assert diff["metrics"]["mIoU"]["low"] == pytest.approx(-0.1) and diff["metrics"]["mIoU"]["high"] == pytest.approx(0.2)
    assert paired_difference({0: [1.0]}, {1: [1.0]}, ["mIoU"]) is None


def test_budget_figure_has_one_panel_per_label_budget_and_reads_images_from_what_ran():
    from matplotlib.figure import Figure

    from smir_lib.study import plots as study_plots

    row = lambda m: {"mean": [m], "low": [m - 0.01], "high": [m + 0.01]}  # noqa: E731
    inits = {"scratch": row(0.5), "random_500": row(0.52), "selective_500": row(0.53), "random_1500": row(0.55),
             "cross_synthetic_1500": row(0.51)}
    data = {"pool": "cwfid", "labels": {n: {"inits": inits, "finetune": {"n_train": int(n), "iterations": 10}}
                                        for n in ("8", "4")}}
    ran = {"cwfid": {"500": {"random": {"0": {"images": 526, "iterations": 33}}},
                     "1500": {"random": {"0": {"images": 1578, "iterations": 99}}}},
           "synthetic": {"1500": {"selective": {"0": {"images": 1672, "iterations": 110}}}}}
    fig = study_plots.study_budget_curves(data, ran, title="t")
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["526\n33 it.", "1578\n99 it."]
    assert fig.axes[0].get_title().startswith("4 labelled")  # panels in label-budget order
    one = {"pool": "cwfid", "labels": {"4": {"inits": {"random_500": row(0.52), "cross_synthetic_1500": row(0.5)},
                                             "finetune": {"n_train": 4, "iterations": 10}}}}
    low, high = study_plots.study_budget_curves(one, ran).axes[0].get_xlim()  # points off the panel's edges
    assert 526 / 2 < low < 526 / 1.3 and 1672 * 1.06 * 1.3 < high < 1672 * 1.06 * 2
    curves = study_plots.finetune_curves({"4": {"scratch": [0.1, 0.2]}, "35": {"scratch": [0.3, 0.4]}})
    assert len(curves.axes) == 2


def test_time_estimate_fits_the_logged_unit_times(tmp_path):
    import json

    from smir_lib.study.tables import time_estimate

    log = tmp_path / "units.jsonl"
    records = [{"kind": "pretrain", "image_steps": 100, "seconds": 90, "cpu_seconds": 20},
               {"kind": "pretrain", "image_steps": 200, "seconds": 95, "cpu_seconds": 30},
               {"kind": "finetune", "image_steps": 4, "seconds": 9, "cpu_seconds": 2}]
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    est = time_estimate(log, load_protocol("toy"), processes=2)
    # CPU seconds win over wall seconds. Pretraining: 20 = a + 100 b, 30 = a + 200 b -> a 10, b 0.1.
    # Fine-tuning, one size only: 0.5 s per image-step. The toy protocol per seed: pretraining
    # random_5 (5 images), selective_5 (4), random_10 (10), selective_10 (8); 5 fine-tunings of
    # 2 images x 2 epochs. Two seeds: 8 x 10 + 0.1 x 54 + 10 x 4 x 0.5 = 105.4 s.
    assert est["per_kind"]["pretrain"] == pytest.approx([10.0, 0.1])
    assert est["per_kind"]["finetune"] == pytest.approx([0.0, 0.5])
    assert est["unit_seconds"] == pytest.approx(105.4)
    assert est["wall_hours"] == pytest.approx(105.4 / 3600 / 2)
    with pytest.raises(ValueError, match="no unit log .*missing.jsonl"):
        time_estimate(tmp_path / "missing.jsonl", load_protocol("toy"))
    log.write_text("".join(json.dumps({**r, "image_steps": 10 - i, "cpu_seconds": 5 + i}) + "\n" for i, r in enumerate(records)))
    with pytest.raises(ValueError, match="too small to measure a time per image-step"):  # more steps, less time: noise
        time_estimate(log, load_protocol("toy"))


def test_headline_names_only_differences_whose_interval_excludes_zero_over_enough_seeds():
    names = ["mIoU", "soil", "crop"]
    sel = {s: [0.50 + 0.01 * s, 0.9, 0.20] for s in range(5)}
    rnd = {s: [0.45 + 0.01 * s, 0.9, 0.20 + 0.02 * (s % 2 * 2 - 1)] for s in range(5)}  # crop: +-0.02 around sel
    diffs = [{"a": "selective_10", "b": "random_10", "budget": 10, **paired_difference(sel, rnd, names)},
             {"a": "random_10", "b": "scratch", "budget": 10, **paired_difference(rnd, sel, names)}]
    few = {"a": "selective_10", "b": "scratch", "budget": 10,
           **paired_difference({s: sel[s] for s in range(3)}, {s: rnd[s] for s in range(3)}, names)}
    flat = [0.1, 0.3, 0.4, 0.45, 0.46, 0.46, 0.46, 0.46, 0.455, 0.46]  # 10 epochs: the last 2 are the tail
    data = {"rarest_class": "crop", "labels": {"4": {"finetune": {"n_train": 4, "epochs": 10}, "curves": {"scratch": flat},
                                                     "differences": [*diffs, few]}}}
    question, *lines = headline({"datasets": {"cwfid": data}})
    assert question == ("- cwfid, the question itself: selective minus random IR at equal image-steps is below 0 in "
                        "0 of 1 mIoU means (label x pretraining budgets); named in favour of selective once, of random 0 times.")
    assert lines[0] == ("- cwfid, 4 labels: selective IR 10 - random IR 10, mIoU: +0.050 [+0.050, +0.050] over 5 seeds: "
                        "selective IR 10 higher.")
    assert lines[1].endswith("random IR 10 LOWER (scratch wins).")
    assert lines[2].startswith("- cwfid, mIoU: 2 of 3 paired differences named (interval excluding 0, at least 5 seeds); "
                               "0 hold 0 in their 95 % interval (no difference detectable); 1 rest on fewer than 5 "
                               "seeds and are not called, whatever their interval. With no effect at all, about 0.2 of 3")
    assert lines[3].startswith("- cwfid, IoU of crop (the rarest class): 0 of 3 paired differences named (interval "
                               "excluding 0, at least 5 seeds); 2 hold 0")  # named + holding 0 + too few seeds = all
    assert late_rise({"scratch": flat}) == pytest.approx(0.0) and late_rise({"a": flat, "b": flat[:8] + [0.47, 0.48]}) == pytest.approx(0.02)
    data["labels"]["4"]["curves"]["random_10"] = flat[:8] + [0.47, 0.48]  # still rising: flagged first
    assert headline({"datasets": {"cwfid": data}})[0].startswith("- cwfid, 4 labels: NOT PLATEAUED. Validation mIoU "
                                                                 "still rose +0.020 in the last 20 % of the 10")
    table = difference_table(data, "mIoU")
    assert table[0] == "| a - b | 4 labels |" and table[2] == "| selective IR 10 - random IR 10 | **+0.050 [+0.050, +0.050]** |"
    assert table[4] == "| selective IR 10 - scratch | +0.050 [+0.050, +0.050] |"  # 3 seeds: not called, not bold
