"""The long budget curve's answer (smir_lib.study.longer): differences, counts and words checked by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from smir_lib.notebook.prose import fill, read_templates
from smir_lib.study.longer import LONGER_BEGIN, LONGER_END, PROSE, longer_block, longer_values
from smir_lib.study.stats import paired_difference

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "notebooks" / "results"
METRICS = ["mIoU", "soil", "crop", "weed"]


def init(per_seed_miou: list[float]) -> dict:
    per_seed = {str(s): [m, 0.9, 0.5, 0.1] for s, m in enumerate(per_seed_miou)}
    return {"n_seeds": len(per_seed), "mean": [sum(per_seed_miou) / len(per_seed_miou), 0.9, 0.5, 0.1],
            "per_seed": per_seed}


def summary(n_seeds: int = 5) -> dict:
    base = [0.50, 0.52, 0.48, 0.51, 0.49][:n_seeds]
    shift = lambda d: [b + d + 0.001 * i for i, b in enumerate(base)]  # noqa: E731 (a paired shift with a little spread)
    cell = {"finetune": {"n_train": 4}, "differences": [],
            "inits": {"scratch": init(base), "random_9000": init(shift(0.0)), "selective_9000": init(shift(0.0)),
                      "random_72000": init(shift(0.05)),  # 8x the pretraining helps random IR
                      "selective_72000": init(shift(0.02)), "selective_unmasked_72000": init(shift(0.02))}}
    return {"protocol": "toy_long", "seeds": list(range(5)), "pretrain_budgets": [9000, 72000],
            "strategies": ["random", "selective", "selective_unmasked"], "units": {"done": 10, "total": 10},
            "datasets": {"fields": {"metrics": METRICS, "rarest_class": "weed", "labels": {"4": cell}}}}


def test_values_pair_each_model_with_itself_at_the_shorter_budget_and_with_scratch():
    v = longer_values(summary(), "fields")
    label = v["per_label"]["4"]
    assert (v["short"], v["long"], v["ratio"]) == (9000, 72000, 8.0) and v["few"] is v["many"] is label
    assert label["longer"]["random"]["mean"] == pytest.approx(0.05) and label["longer"]["random"]["named"] == 1
    assert label["longer"]["selective"]["mean"] == pytest.approx(0.02)
    assert "selective_unmasked" not in label["longer"]  # never run at 9k here: nothing to pair with
    assert label["sel_rand_long"]["mean"] == pytest.approx(-0.03) and label["sel_rand_long"]["named"] == -1
    assert label["sel_rand_short"]["mean"] == pytest.approx(0.0) and label["sel_rand_short"]["named"] == 0
    assert label["unmasked_sel"]["mean"] == pytest.approx(0.0)
    assert (label["best"], label["best_miou"]) == ("random IR", pytest.approx(0.552))
    assert (v["longer_up"], v["longer_down"], v["longer_compared"]) == (2, 0, 2)
    assert (v["ahead_of_scratch"], v["behind_scratch"], v["scratch_compared"]) == (3, 0, 3)
    # 2 longer + 3 vs scratch + selective - random + unmasked - selective + the gap's growth
    assert (v["compared"], v["n_named"]) == (8, 7) and v["chance"] == pytest.approx(0.4)
    assert v["verdict_question"] == "random masking is ahead of selective masking at 4 labels"
    assert v["verdict_longer"] == "With 8 times the pretraining, fine-tuned models measurably better: 2 of 2; measurably worse: 0"
    assert v["verdict_scratch"] == "pretrained models measurably ahead of it: 3 of 3"
    # selective's gap to random: 0 at 9k, -0.03 at 72k, for every seed
    assert label["growth"]["mean"] == pytest.approx(-0.03) and label["growth"]["named"] == -1


def test_differences_are_the_study_statistics_on_the_per_seed_metrics():
    cell = summary()["datasets"]["fields"]["labels"]["4"]
    inits = cell["inits"]
    expected = paired_difference(inits["selective_72000"]["per_seed"], inits["random_72000"]["per_seed"], METRICS)
    got = longer_values(summary(), "fields")["few"]["sel_rand_long"]
    torch.testing.assert_close({k: got[k] for k in ("mean", "low", "high")}, expected["metrics"]["mIoU"])


def test_too_few_seeds_name_nothing_and_say_it_is_not_judged_rather_than_no_difference():
    v = longer_values(summary(n_seeds=2), "fields")
    assert v["n_named"] == 0 and v["named_text"] == "none" and v["seeds_long"] == 2
    wait = "not judged yet (2 of 5 seeds; the study judges from 5)"
    assert v["verdict_longer"] == f"What 8 times the pretraining does is {wait}"
    assert v["verdict_question"] == f"the question is {wait}" and v["verdict_scratch"] == f"the comparison is {wait}"


def test_a_report_without_the_long_budget_fine_tuned_is_refused_with_the_fix():
    s = summary()
    for key in ("random_72000", "selective_72000", "selective_unmasked_72000"):
        del s["datasets"]["fields"]["labels"]["4"]["inits"][key]
    with pytest.raises(ValueError, match="smir study run"):
        longer_values(s, "fields")
    with pytest.raises(ValueError, match="two"):
        longer_values({**summary(), "pretrain_budgets": [9000]}, "fields")


def test_the_sentences_fill_from_a_toy_report():
    text = fill(read_templates(PROSE), "longer", longer_values(summary(), "fields"), source=PROSE)
    assert "random IR +0.050" in text and "8 times the" in text and "{" not in text
    assert "random, selective and selective_unmasked IR to 72,000 image-steps" in text


def committed() -> dict:
    return json.loads((RESULTS / "study_budget_long.json").read_text())


def test_the_results_page_block_is_what_the_committed_report_generates():
    text = (RESULTS / "README.md").read_text()
    block = text[text.index(LONGER_BEGIN):text.index(LONGER_END) + len(LONGER_END)]
    assert block == longer_block(committed(), "study_budget_long.json")


def test_the_committed_differences_equal_the_reports_own():
    s = committed()
    short, long_ = sorted(s["pretrain_budgets"])[-2:]
    checked = 0
    for label, cell in s["datasets"]["cwfid"]["labels"].items():
        entry = longer_values(s)["per_label"][label]
        ours = {(f"selective_{b}", f"random_{b}"): entry[f"sel_rand_{k}"] for b, k in ((short, "short"), (long_, "long"))}
        ours[(f"selective_unmasked_{long_}", f"selective_{long_}")] = entry["unmasked_sel"]
        for d in cell["differences"]:
            if (d["a"], d["b"]) in ours:
                mine = ours[(d["a"], d["b"])]
                assert [mine[k] for k in ("mean", "low", "high")] == pytest.approx(
                    [d["metrics"]["mIoU"][k] for k in ("mean", "low", "high")])
                checked += 1
    assert checked == 6  # three differences at each of the two label budgets


def test_smir_study_readme_fills_the_long_budget_block_of_a_report_with_earlier_budgets_beside(tmp_path):
    from smir_lib.study.tables import write_readme_section

    report = tmp_path / "toy_long.json"
    report.write_text(json.dumps({**summary(), "beside": [{"report": "study_cpu.json", "reproduced": {}}]}))
    page = tmp_path / "README.md"
    page.write_text(f"# Results\n\nbefore\n\n{LONGER_BEGIN}\nold\n{LONGER_END}\n\nafter\n")
    block = write_readme_section(report, page)
    assert block.startswith(LONGER_BEGIN) and "Report (complete): [toy_long.md](toy_long.md)" in block
    assert page.read_text() == f"# Results\n\nbefore\n\n{block}\n\nafter\n"
    page.write_text("# Results\n")
    with pytest.raises(ValueError, match="longer:begin"):
        write_readme_section(report, page)
