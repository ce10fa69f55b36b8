"""The strategies study's answer (smir_lib.study.strategies): rows, counts and merges checked by hand."""

from __future__ import annotations

import json

import pytest
from matplotlib.figure import Figure

from smir_lib.study.strategies import (
    beside_budgets,
    plants_hidden,
    strategies_figure,
    strategies_markdown,
    strategies_values,
    strategy_rows,
)

pytestmark = pytest.mark.unit


def diff(a, b, mean, low, high, rare=(0.0, -0.1, 0.1)):
    return {"a": a, "b": b, "budget": 9000, "n_seeds": 5,
            "metrics": {"mIoU": {"mean": mean, "low": low, "high": high}, "weed": dict(zip(("mean", "low", "high"), rare))}}


def init(miou, weed, per_seed=None):
    return {"mean": [miou, 0.9, 0.5, weed], "n_seeds": 5, "per_seed": per_seed or {"0": [miou, 0.9, 0.5, weed]}}


def summary():
    cell = {"finetune": {"n_train": 4},
            "inits": {"scratch": init(0.40, 0.10), "random_9000": init(0.50, 0.20, {"0": [0.5], "1": [0.6]}),
                      "selective_9000": init(0.45, 0.15), "block_9000": init(0.55, 0.30)},
            "differences": [diff("selective_9000", "random_9000", -0.05, -0.08, -0.02),  # named for random
                            diff("block_9000", "random_9000", 0.05, 0.01, 0.09, rare=(0.1, 0.05, 0.15)),  # named, both
                            diff("block_9000", "selective_9000", 0.10, -0.01, 0.2)]}  # not named
    return {"seeds": [0, 1, 2, 3, 4], "strategies": ["random", "selective", "block"], "pretrain_budgets": [9000],
            "pretraining": {"fields": {"9000": {"random": {}}}},
            "datasets": {"fields": {"rarest_class": "weed", "metrics": ["mIoU", "soil", "crop", "weed"],
                                    "class_names": ["soil", "crop", "weed"], "labels": {"4": cell}}}}


def mechanism():
    def m(crop, weed, passes):
        return {"hidden_share": {"soil": 0.5, "crop": crop, "weed": weed}, "gain_db": 5.0, "forward_passes": passes}
    return {"datasets": {"fields": {"k": 3, "class_names": ["soil", "crop", "weed"],
                                    "class_pixel_share": {"soil": 0.8, "crop": 0.05, "weed": 0.15},
                                    "strategies": {"random": m(0.5, 0.5, 0), "selective": m(0.9, 0.7, 3),
                                                   "block": m(0.4, 0.6, 0)}}}}


def test_plants_hidden_pools_the_classes_but_the_first_by_their_pixels():
    shares = plants_hidden(mechanism()["datasets"]["fields"])
    assert shares["random"] == pytest.approx(0.5)
    assert shares["selective"] == pytest.approx((0.9 * 0.05 + 0.7 * 0.15) / 0.2)  # 0.75


def test_rows_join_the_mechanism_and_the_differences():
    rows = {r["strategy"]: r for r in strategy_rows(summary(), mechanism(), "fields")}
    assert list(rows) == ["random", "selective", "block"]  # the library's order of strategies
    block = rows["block"]["labels"]["4"]
    assert (block["miou"], block["rare"], block["n_train"]) == (0.55, 0.30, 4)
    assert block["vs_random"]["mIoU"]["named"] == 1 and block["vs_random"]["weed"]["named"] == 1
    assert block["vs_selective"]["mIoU"]["named"] == 0 and block["vs_scratch"] is None  # no such difference
    assert rows["selective"]["labels"]["4"]["vs_random"]["mIoU"]["named"] == -1


def test_values_count_what_is_named_and_rank_plants_against_gain():
    v = strategies_values(summary(), mechanism(), "fields")
    assert (v["ahead_of_random"], v["behind_random"], v["ahead_of_selective"], v["behind_selective"]) == (1, 1, 0, 0)
    assert (v["rare_ahead_of_random"], v["rare_behind_random"]) == (1, 0)
    assert len(v["named"]) == 3 and v["named"][0].startswith("selective - random IR at 4 labels, mIoU: -0.050")
    label = v["per_label"]["4"]
    assert (label["best"], label["best_miou"]) == ("block", 0.55)
    # selective hides more plants (0.75) and does worse (-0.05); block fewer (0.55) and better (+0.05)
    assert label["spearman_plants_vs_gain"] == pytest.approx(-1.0)
    assert v["plants_random"] == pytest.approx(0.5) and v["plants_objects_oracle"] is None
    assert (v["compared"], v["chance"]) == (3, pytest.approx(0.15))  # selective, block - random; block - selective
    assert v["few"] is v["many"] is label  # one label budget: the fewest and the most labels are the same
    assert v["verdict_plants"] == "hiding more of the plants goes with a worse result"
    assert v["verdict_random"] == "some strategies are ahead of random masking by more than chance would name"


def test_the_results_page_block_says_notebook_07s_sentences(tmp_path):
    from smir_lib.study.strategies import STRATEGIES_BEGIN, STRATEGIES_END
    from smir_lib.study.tables import write_readme_section

    report = {**summary(), "mechanism": mechanism(), "units": {"done": 9, "total": 12}}
    report["datasets"]["cwfid"] = report["datasets"].pop("fields")  # the notebook's dataset
    report["mechanism"]["datasets"]["cwfid"] = report["mechanism"]["datasets"].pop("fields")
    report["strategies"] += ["selective_unmasked", "objects_oracle"]  # the sentences quote both
    cell = report["datasets"]["cwfid"]["labels"]["4"]
    cell["inits"]["selective_unmasked_9000"] = init(0.46, 0.15)
    cell["differences"].append(diff("selective_unmasked_9000", "selective_9000", 0.01, -0.02, 0.04))
    report["mechanism"]["datasets"]["cwfid"]["strategies"]["selective_unmasked"] = mechanism()["datasets"][
        "fields"]["strategies"]["selective"]
    report["mechanism"]["datasets"]["cwfid"]["strategies"]["objects_oracle"] = {
        "hidden_share": {"soil": 0.4, "crop": 1.0, "weed": 1.0}, "gain_db": 5.0, "forward_passes": 0}
    (tmp_path / "study_strategies.json").write_text(json.dumps(report))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{STRATEGIES_BEGIN}\nOLD\n{STRATEGIES_END}\nafter\n")
    block = write_readme_section(tmp_path / "study_strategies.json", readme)
    said = block.replace("\n", " ")
    assert "random masks hide 50% of the plant pixels, the paper's selective masks 75%, and the oracle" in said
    assert "labelled plants 100%. Downstream, some strategies are ahead of random masking by more than chance" in said
    assert "averaging K masked passes changes mIoU by +0.010 [-0.020, +0.040] at 4 labels" in said
    assert "Report (9 of 12 units finished): [study_strategies.md](study_strategies.md)" in block
    assert readme.read_text() == f"# x\n\n{block}\nafter\n"


def test_markdown_and_figure():
    text = "\n".join(strategies_markdown(summary(), mechanism(), "fields"))
    assert "| strategy | passes (K = 3) | plants hidden |" in text
    assert "| block | 0 | 55 % | +5.00 | 0.550 | **+0.050 [+0.010, +0.090]** | +0.100 [-0.010, +0.200] |" in text
    assert isinstance(strategies_figure(summary(), mechanism(), "fields"), Figure)


def test_beside_budgets_adds_earlier_budgets_and_compares_shared_runs():
    earlier = summary()
    cell = earlier["datasets"]["fields"]["labels"]["4"]
    cell["inits"] = {"scratch": init(0.4, 0.1), "random_1000": init(0.3, 0.1), "cross_x_9000": init(0.1, 0.1),
                     "random_9000": init(0.5, 0.2, {"0": [0.5], "1": [0.62]})}
    earlier["pretraining"] = {"fields": {"1000": {"random": {}}, "9000": {"random": {"old": 1}}}}
    datasets, pretraining, reproduced = beside_budgets(summary(), earlier)
    inits = datasets["fields"]["labels"]["4"]["inits"]
    assert "random_1000" in inits and "cross_x_9000" not in inits  # other budgets join; cross ones do not
    assert inits["random_9000"]["per_seed"]["1"] == [0.6]  # the newer report's runs win
    assert reproduced == {"fields/4/scratch": 0.0, "fields/4/random_9000": pytest.approx(0.02)}
    assert set(pretraining["fields"]) == {"1000", "9000"} and pretraining["fields"]["9000"] == {"random": {}}


def test_the_results_page_block_is_generated_from_the_committed_report():
    """Every number the results page says of the strategies study is read from its committed JSON
    (regenerate with ``smir study readme notebooks/results/study_strategies.json``)."""
    from pathlib import Path

    from smir_lib.study.strategies import STRATEGIES_BEGIN, STRATEGIES_END, strategies_block

    results = Path(__file__).resolve().parent.parent / "notebooks" / "results"
    text = (results / "README.md").read_text()
    block = text[text.index(STRATEGIES_BEGIN):text.index(STRATEGIES_END) + len(STRATEGIES_END)]
    report = json.loads((results / "study_strategies.json").read_text())
    assert block == strategies_block(report, "study_strategies.json")
    assert report["units"]["done"] == report["units"]["total"] == 115 and len(report["strategies"]) >= 6
    assert report["seeds"] == [0, 1, 2, 3, 4] and report["pretrain_budgets"] == [9000]
