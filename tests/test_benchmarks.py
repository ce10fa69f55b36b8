"""The benchmark machinery: a smoke run at tiny sizes, the JSON it writes, the ratios it computes.

Only the structure is checked, never the targets: timings on a shared CI machine are noise.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from benchmarks.end_to_end import bench_end_to_end
from benchmarks.harness import BenchResult, compare, ratio
from benchmarks.memory import mask_bytes_per_image
from benchmarks.reference import patch_loss_map_loop

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    """``python -m benchmarks --quick`` in-process, JSON into a temporary folder."""
    from benchmarks.suite import main

    out = tmp_path_factory.mktemp("bench") / "quick.json"
    threads = torch.get_num_threads()
    try:
        assert main(["--quick", "--device", "cpu", "--threads", "1", "--out", str(out),
                     "--make-test-seconds", "12.5"]) == 0
    finally:
        torch.set_num_threads(threads)
    return json.loads(out.read_text())


def test_quick_run_writes_machine_and_every_section(quick_report):
    machine = quick_report["machine"]
    for key in ("date_utc", "cpu", "logical_cores", "torch", "torch_threads", "device"):
        assert key in machine
    assert machine["torch_threads"] == 1
    names = [r["name"] for r in quick_report["results"]]
    for prefix in ("scoring.patch_loss_map", "scoring.selective_mask[tiny]", "training_step[tiny]",
                   "data_pipeline[synthetic]", "augment_item", "memory.score_partition", "end_to_end"):
        assert prefix in names, names


def _result(report, name):
    return next(r for r in report["results"] if r["name"] == name)


def test_timings_are_medians_of_repeats(quick_report):
    for result in quick_report["results"]:
        for side, t in result["timings"].items():
            assert len(t["seconds"]) == quick_report["profile_settings"]["repeats"], side
            assert t["min_s"] <= t["median_s"] <= t["max_s"]
            # items_per_s is stored to 3 decimals: on a slow machine 0.259 for 0.2594 is a 1.4e-3 relative gap
            assert t["items_per_s"] == pytest.approx(t["items"] / t["median_s"], rel=1e-3, abs=5e-4)


def test_ratios_and_targets_are_computed(quick_report):
    scoring = _result(quick_report, "scoring.patch_loss_map")
    t = scoring["timings"]
    loop = next(v for k, v in t.items() if k.startswith("per-patch loop"))
    vec = next(v for k, v in t.items() if k.startswith("vectorised"))
    assert scoring["ratios"]["loop / vectorised (per image)"] > 0
    assert scoring["values"]["max |vectorised - loop|"] < 1e-4  # both sides compute the same score
    target = scoring["targets"]["loop / vectorised (per image)"]
    assert target["at_least"] == 100.0 and isinstance(target["met"], bool)
    assert loop["per_item_s"] > 0 and vec["per_item_s"] > 0

    selective = _result(quick_report, "scoring.selective_mask[tiny]")
    assert selective["targets"]["selective / floor"]["at_most"] == 1.25
    training = _result(quick_report, "training_step[tiny]")
    for key in ("MS-SSIM overhead (vs L1 step)", "masking overhead, step vs premasked step",
                "masking + data handling, timed alone / step"):
        assert math.isfinite(training["ratios"][key])
    assert training["targets"]["masking + data handling, timed alone / step"]["at_most"] == 0.15
    data = _result(quick_report, "data_pipeline[synthetic]")
    assert data["ratios"]["data / training images/s [tiny] (loader, wall clock)"] > 0
    augment = _result(quick_report, "augment_item")
    assert augment["ratios"]["whole image / TrainAugment per item [200x260]"] > 0
    assert augment["values"]["same tensors [200x260]"] is True  # the optimisation changes nothing


def test_memory_and_end_to_end_figures(quick_report):
    memory = _result(quick_report, "memory.score_partition")
    assert memory["values"]["mask bytes/image, packed bits"] == math.ceil(memory["values"]["mask bytes/image, bool"] / 8)
    assert all(run["peak_rss_bytes"] > 0 for run in memory["values"]["runs"])
    e2e = _result(quick_report, "end_to_end")
    assert e2e["values"]["make test (s)"] == 12.5


def test_compare_interleaves_and_ratio_is_per_image():
    calls = []
    timings = compare({"a": (lambda: calls.append("a"), 2), "b": (lambda: calls.append("b"), 4)},
                      device=torch.device("cpu"), warmup=1, repeats=3)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-ups, then A B, B A, A B
    a, b = timings["a"], timings["b"]
    a.seconds, b.seconds = [1.0, 3.0, 2.0], [2.0, 2.0, 9.0]
    assert a.median == 2.0 and b.per_item == 0.5
    assert ratio(a, b) == pytest.approx(2.0)  # 1.0 s per image against 0.5 s per image


def test_add_target_records_met_and_missed():
    result = BenchResult("x")
    result.add_target("fast", 150.0, at_least=100.0)
    result.add_target("slow", 1.4, at_most=1.25)
    assert result.targets["fast"]["met"] and not result.targets["slow"]["met"]


def test_mask_bytes_per_image_at_256():
    assert mask_bytes_per_image(256, 256) == {"patches": 441, "bool_mask": 441, "packed_bits": 56,
                                              "float32_image_copy": 786432}


def test_reference_loop_matches_vectorised_map_on_uneven_grid():
    from smir_lib.losses import patch_loss_map
    from smir_lib.patches import patch_grid

    grid = patch_grid(40, 52, n_patches=20)
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 40, 52, generator=gen)
    pred = torch.rand(2, 3, 40, 52, generator=gen)
    loop = patch_loss_map_loop(pred, target, grid)
    assert loop.shape == (2, grid.gh, grid.gw)
    torch.testing.assert_close(loop, patch_loss_map(pred, target, grid).double(), atol=1e-5, rtol=0)
    torch.testing.assert_close(patch_loss_map_loop(pred, target, grid, sync=False), loop)


def test_end_to_end_reads_timings_and_ci_log(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "timings.json").write_text(json.dumps({"00_setup": 3.0, "01_data": 4.5}))
    log = tmp_path / "ci.log"
    log.write_text("... 120 passed\nmake test took 321 s (exit 0)\n")
    result = bench_end_to_end(notebook_run=run, make_test_log=log)
    assert result.values["notebooks total (s)"] == 7.5
    assert result.values["make test (s)"] == 321.0
    missing = bench_end_to_end(notebook_run=tmp_path / "nothing")
    assert "not measured" in missing.values["notebooks"] and "not measured" in missing.values["make test"]


def test_markdown_table_from_the_json(quick_report):
    from benchmarks.markdown import to_markdown

    text = to_markdown(quick_report)
    assert "| scoring.patch_loss_map |" in text and "max \\|vectorised - loop\\|" in text
    assert quick_report["machine"]["cpu"] in text


def test_gpu_check_on_a_cpu_machine_writes_nothing(tmp_path):
    from benchmarks import gpu_check

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: make gpu-check would run for real")
    assert gpu_check.main(["--out-dir", str(tmp_path / "results")]) == 2
    assert not (tmp_path / "results").exists()


def test_gpu_check_parts_record_failures_and_skips():
    from benchmarks.gpu_check import Budget, _part, to_markdown

    parts = {}

    def broken(left):
        raise RuntimeError("no such kernel")

    _part("broken", broken, Budget(100), 1, parts)
    _part("late", lambda left: {"x": 1}, Budget(5), 60, parts)
    _part("fine", lambda left: {"images_per_s": 12.5}, Budget(100), 1, parts)
    assert parts["broken"]["status"] == "failed" and "no such kernel" in parts["broken"]["error"]
    assert parts["late"]["status"] == "skipped" and "needs 60 s" in parts["late"]["reason"]
    assert parts["fine"] == {"status": "ok", "images_per_s": 12.5, "seconds": parts["fine"]["seconds"]}
    text = to_markdown({"date_utc": "d", "total_seconds": 1.0, "budget_s": 450.0, "parts": parts})
    assert "| broken | failed |" in text and "| late | skipped |" in text


def test_quick_run_reports_the_bare_step_and_flops(quick_report):
    bare = _result(quick_report, "bare_step[fast]")
    assert bare["values"]["bare step images/s"] > 0
    assert 0 < bare["ratios"]["achieved / matmul peak FLOP/s"] < 1
    assert bare["values"]["step GFLOP (forward + backward)"] > 0
    for side in ("pytorch-msssim loss", "no channels-last", "amp=bf16"):
        assert f"bare step, {side} / engine defaults (time per image)" in bare["ratios"]


def test_performance_table_lists_the_bare_step_figures(quick_report):
    from benchmarks.markdown import performance_table

    text = performance_table(quick_report)
    assert "| bare_step[fast]: achieved / matmul peak FLOP/s |" in text
    assert "| bare_step[fast]: bare step, no channels-last / engine defaults (time per image) |" in text
    assert quick_report["machine"]["cpu"] in text
