"""The committed study's answer (smir_lib.study.answer): counts by hand on a small summary, and the real one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from smir_lib.study.answer import answer_figure, answer_values, named

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent


def diff(a, b, mean, low, high, rare=(0.0, -0.1, 0.1), n_seeds=5, budget=1000):
    return {"a": a, "b": b, "budget": budget, "n_seeds": n_seeds,
            "metrics": {"mIoU": {"mean": mean, "low": low, "high": high},
                        "weed": dict(zip(("mean", "low", "high"), rare))}}


def summary():
    cell = {"finetune": {"n_train": 4}, "differences": [
        diff("selective_1000", "random_1000", -0.02, -0.03, -0.01),  # named for random
        diff("selective_3000", "random_3000", 0.01, -0.01, 0.03, rare=(0.05, 0.01, 0.09), budget=3000),  # rare: selective
        diff("selective_1000", "scratch", 0.02, 0.01, 0.03),  # pretrained ahead
        diff("random_1000", "scratch", 0.02, 0.01, 0.03, n_seeds=3),  # too few seeds: not named
    ]}
    return {"protocol": "toy", "seeds": [0, 1, 2, 3, 4], "units": {"total": 9, "done": 9},
            "datasets": {"fields": {"rarest_class": "weed", "labels": {"4": cell}}}}


def test_counts_by_hand():
    v = answer_values(summary())
    assert (v["pairs"], v["below"], v["low"], v["high"]) == (2, 1, -0.02, 0.01)
    assert (v["for_selective"], v["for_random"]) == (0, 1)
    assert (v["rare_for_selective"], v["rare_for_random"]) == (1, 0)
    assert (v["vs_scratch"], v["pretrained_ahead"], v["scratch_ahead"]) == (2, 1, 0)
    assert (v["n_diffs"], v["n_named"], v["chance"]) == (4, 2, pytest.approx(0.2))
    assert named(diff("a", "b", 0.1, 0.05, 0.2, n_seeds=4)) == 0  # fewer than MIN_SEEDS


def test_a_summary_without_the_question_is_named():
    s = summary()
    s["datasets"]["fields"]["labels"]["4"]["differences"] = []
    with pytest.raises(ValueError, match="'toy' holds no selective - random difference"):
        answer_values(s)


def test_the_committed_cpu_study():
    study = json.loads((ROOT / "notebooks" / "results" / "study_cpu.json").read_text())
    v = answer_values(study)
    assert v["pairs"] == 2 * 3 * 3  # 2 datasets x 3 label budgets x 3 pretraining budgets
    assert v["n_diffs"] == 60 and v["seeds"] == 5
    assert isinstance(answer_figure(study), Figure)
