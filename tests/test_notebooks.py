"""The notebooks tier: the whole series runs once with papermill (fast profile, synthetic data).

One session-scoped fixture runs ``smir_lib.notebook.runner.run_series`` into a temporary run folder;
each test then checks what one notebook left there: its metrics (keys present, values in
plausible ranges), its figures (every PNG it lists exists), the report, and the time budget
(the whole series in 10 minutes on 2 CPU cores).

With the teaching models present (``models/synthetic/``, or ``$SMIR_MODELS_DIR/synthetic/``),
notebooks 02-06 load them, and the quality they show is asserted (issue 14): hidden pixels
reconstructed at least 6 dB better than the mean-colour fill on held-back images (notebook 02's
random-IR model), hidden patches scoring at least 1.1x visible ones in the loss maps; the issue's
1.2x is a strict expected failure until a model reaches it.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest

from smir_lib.notebook.runner import run_series

pytestmark = pytest.mark.notebooks

STEMS = ["00_data", "01_random_masking", "02_reconstruction", "03_patch_loss_maps", "04_selective_masks",
         "05_partitioned_pretraining", "06_segmentation_evaluation", "07_reproduction_study",
         "08_appendix_own_data"]
BUDGET_S = 600.0
MAX_WORDS_07 = 1000        # issue 26: the executed 07 states three studies' answers (about 250 words each), it does not log its runs
MIN_GAIN_DB = 6.0          # hidden-pixel PSNR of the teaching model over the mean-colour fill
MIN_HIDDEN_VISIBLE = 1.1   # mean patch loss of hidden over visible patches: what the teaching model meets
TARGET_HIDDEN_VISIBLE = 1.2  # issue 14's target, not met yet: the shipped model measures 1.16x


def teaching_models_or_skip() -> None:
    """Skip a quality assertion only when no teaching set is installed (the repository ships one)."""
    from smir_lib.notebook import zoo

    if zoo.shipped_folder("synthetic") is None:
        pytest.skip(f"no teaching models in {zoo.models_dir() / 'synthetic'} (rebuild them with `make models`): "
                    "the quality of a model the notebooks train for themselves is not asserted")


@pytest.fixture(scope="session")
def series(tmp_path_factory):
    """Run every notebook once; returns (run folder, timings, 5-minute load average after the run)."""
    run_dir = tmp_path_factory.mktemp("series")
    os.environ.pop("SMIR_PROFILE", None)
    result = run_series(run_dir, "fast", progress=False)
    return run_dir, result.seconds, os.getloadavg()[1]


def generated_words(path: Path) -> int:
    """Words of generated text in an executed notebook: streams, Markdown and plain-text outputs, tracebacks."""
    words = 0
    for cell in json.loads(path.read_text())["cells"]:
        for out in cell.get("outputs", []):
            if out["output_type"] == "stream":
                words += len("".join(out["text"]).split())
            elif out["output_type"] == "error":
                words += len(" ".join(out["traceback"]).split())
            elif "text/markdown" in out.get("data", {}):
                words += len("".join(out["data"]["text/markdown"]).split())
            elif not {"image/png", "application/vnd.jupyter.widget-view+json"} & set(out.get("data", {})):
                words += len("".join(out.get("data", {}).get("text/plain", "")).split())
    return words


def metrics(run_dir: Path, stem: str) -> dict:
    path = run_dir / stem / "metrics.json"
    assert path.is_file(), f"{stem} wrote no metrics.json"
    return json.loads(path.read_text())


def finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


@pytest.mark.parametrize("stem", STEMS)
def test_notebook_ran_and_saved_its_figures(series, stem):
    run_dir, seconds, _ = series
    assert stem in seconds and (run_dir / "executed" / f"{stem}.ipynb").is_file()
    m = metrics(run_dir, stem)
    assert m["profile"] == "fast" and m["notebook"] == stem
    assert m["figures"], f"{stem} saved no figure"
    for name in m["figures"]:
        assert (run_dir / stem / name).stat().st_size > 1000, f"{stem}: {name} missing or empty"
    executed = (run_dir / "executed" / f"{stem}.ipynb").read_text()
    assert "application/vnd.jupyter.widget-view+json" not in executed, f"{stem}: a progress bar under papermill"


def test_00_data(series):
    m = metrics(series[0], "00_data")
    assert m["split_sizes"]["train"] > 0 and m["pool_size"] > 0
    for shares in m["class_shares"].values():
        assert abs(sum(shares) - 1) < 1e-6
    assert set(m["rarest_classes"]) <= set(m["class_names"])


def test_08_appendix_own_data(series):
    m = metrics(series[0], "08_appendix_own_data")
    assert m["own_folder"] == {"train": 9, "val": 1, "test": 2, "pool": 14}  # 12 labelled + 4 pool photos, 70/10/20
    assert m["problems_found"] == 1  # the mask without its photo, named (the photo without a mask only joins the pool)
    assert "own_folder.png" in m["figures"]


def test_01_random_masking(series):
    m = metrics(series[0], "01_random_masking")
    assert m["grid"] == [21, 21] and m["n_patches"] == 441 and m["n_hidden"] == 220
    for p, h in zip(m["pixel_share"], m["random_hidden_share"]):
        assert abs(p - h) < 0.05  # a random mask hides each class in proportion to its area


def test_02_reconstruction(series):
    m = metrics(series[0], "02_reconstruction")
    assert m["parameters"] > 100_000 and m["epochs"] >= 1
    assert 0 < m["best_val_loss"] < 3 and finite(m["train_loss_last"])
    assert all(0 <= v < 3 for v in m["losses"].values())
    assert Path(m["checkpoint"]).is_file()
    q = m["reconstruction_quality"]
    assert q["n_images"] >= 8 and all(finite(q[k]) for k in ("psnr_hidden", "psnr_fill", "gain_db"))
    assert q["gain_db"] == pytest.approx(q["psnr_hidden"] - q["psnr_fill"], abs=1e-6)


def test_02_teaching_model_beats_the_mean_fill_on_held_back_images(series):
    teaching_models_or_skip()
    m = metrics(series[0], "02_reconstruction")
    assert "teaching model" in m["model_source"], f"02 did not load the teaching model: {m['model_source']}"
    q = m["reconstruction_quality"]
    assert q["gain_db"] >= MIN_GAIN_DB, (f"the teaching model reconstructs hidden pixels only {q['gain_db']:+.2f} dB "
                                         f"better than the mean fill ({q}); expected >= {MIN_GAIN_DB} dB")


def test_03_patch_loss_maps(series):
    m = metrics(series[0], "03_patch_loss_maps")
    assert "loading it" in m["model_source"]  # notebook 02's model was found, not retrained
    assert all(finite(m[k]) and m[k] >= 0 for k in ("hidden_patch_loss", "visible_patch_loss"))
    assert m["hidden_visible_ratio"] == pytest.approx(m["hidden_patch_loss"] / m["visible_patch_loss"])
    assert m["selected_score"] >= m["unselected_score"]  # the top half by score is selected
    assert -1 <= m["k_map_correlation"] <= 1
    assert all(0 <= m[k] <= 1 for k in ("one_map_overlap", "unmasked_overlap"))
    assert "loss_maps.png" in m["figures"]  # paper Fig. 2, end to end


def test_03_teaching_model_scores_hidden_patches_higher_but_mostly_by_content(series):
    teaching_models_or_skip()
    m = metrics(series[0], "03_patch_loss_maps")
    assert "teaching model" in m["model_source"], f"03 did not load the teaching model: {m['model_source']}"
    assert m["hidden_visible_ratio"] >= MIN_HIDDEN_VISIBLE, (
        f"hidden patches score only {m['hidden_visible_ratio']:.3f}x visible ones; expected >= {MIN_HIDDEN_VISIBLE}")
    terms = m["score_terms"]  # why not more: the original drawn at the head's stride-4 resolution
    assert terms["hidden"]["l1"] > terms["visible"]["l1"] and terms["hidden"]["ssim"] > terms["visible"]["ssim"]
    assert terms["coarse"]["ssim"] >= 0.7 * terms["visible"]["ssim"], terms  # loses most of the visible SSIM term too
    # issue 26: the score hardly depends on the mask; the unmasked image's top half picks most of the selection
    assert m["unmasked_overlap"] >= 0.8 and m["k_map_correlation"] >= 0.7, m


@pytest.mark.xfail(strict=True, reason="the paper's head draws at stride 4 (bilinear x4), so visible patches keep a "
                   "high SSIM term: the original itself at 1/4 resolution scores 88 % of it (notebook 03); 1.16x "
                   "after 40 epochs, 1.18x after 90")
def test_03_teaching_model_reaches_the_target_ratio(series):
    teaching_models_or_skip()
    m = metrics(series[0], "03_patch_loss_maps")
    assert m["hidden_visible_ratio"] >= TARGET_HIDDEN_VISIBLE


def test_04_selective_masks(series):
    m = metrics(series[0], "04_selective_masks")
    for key in ("pixel_share", "hidden_share_random", "hidden_share_selective"):
        assert abs(sum(m[key]) - 1) < 1e-6
    assert all(0 <= v <= 1 for v in m["object_share_hidden"].values())
    assert ("DOES concentrate" in m["verdict"]) == (m["object_share_hidden"]["selective"] >
                                                    1.05 * m["object_share_hidden"]["random"])
    # The finding's spread over images: a statement of the numbers, never asserted as a result.
    ratios = [r for r in m["selective_over_random_per_image"] if r is not None and math.isfinite(r)]
    spread = m["selective_over_random_spread"]
    assert len(m["object_share_per_image"]["selective"]) == m["n_images"] and spread["n"] == len(ratios)
    assert spread["mean"] == pytest.approx(sum(ratios) / len(ratios))
    assert spread["n_more"] == sum(r > 1 for r in ratios) and spread["min"] <= spread["mean"] <= spread["max"]
    assert f"{spread['n_more']} of {spread['n']} images" in m["finding"]
    # The object share's ceiling: objects can fill the hidden pixels at most with all of their own.
    assert m["object_share_hidden"]["selective"] <= m["object_share_ceiling"] + 1e-9
    assert m["object_share_ceiling"] == pytest.approx(min(1, m["object_share_hidden"]["image"] / m["hidden_pixel_fraction"]), rel=0.05)
    assert len(m["class_hidden_selective"]) == len(m["class_names"]) and f"{100 * m['object_share_ceiling']:.1f}%" in m["verdict"]


def test_05_partitioned_pretraining(series):
    m = metrics(series[0], "05_partitioned_pretraining")
    steps = m["steps"]
    assert len(steps) >= 2 and steps[0]["masking"] == "random"
    assert all(s["masking"] == "selective" for s in steps[1:])
    assert all(0 < s["best_val_loss"] < 3 for s in steps)
    assert m["stored_masks_step"] == steps[-1]["step"]  # Fig. 4 shows the last step's stored masks
    for kind in ("random", "selective"):
        assert finite(m["reconstruction_quality"][kind]["gain_db"])
    assert {"stored_masks.png", "reconstructions.png"} <= set(m["figures"])  # Fig. 4 and Fig. 5
    assert m["toy"]["partitions"] >= 2  # the inline loop ran, and matched the engine (its asserts)
    last = steps[-1]
    assert m["downstream"]["stage"] == last["stage"]  # pretrained.pt is the last step's best epoch
    assert m["downstream"]["val_loss"] == pytest.approx(last["best_val_loss"])


def test_06_segmentation_evaluation(series):
    run_dir = series[0]
    m = metrics(run_dir, "06_segmentation_evaluation")
    assert {"scratch", "random", "selective"} <= set(m["miou"])
    assert all(0 <= v <= 1 for v in m["miou"].values())
    assert m["lowest_class"] in m["class_names"]
    beat = m["miou"]["selective"] > m["miou"]["random"]
    assert ("did NOT beat" in m["verdict"]) == (not beat)  # the text follows the numbers
    table = (run_dir / "06_segmentation_evaluation" / "results.md").read_text()
    assert "| 1 |" in table and "±" not in table  # one seed: values without a spread
    assert set(m["model_sources"]) == {"scratch", "random", "selective"}
    assert "predictions.png" in m["figures"]
    d = m["downstream"]  # everything but the head loaded unchanged (06 asserts it key by key)
    assert d["keys_loaded"] == d["keys"] - len(d["head_keys"]) and all(k.startswith("head.") for k in d["head_keys"])


def test_07_reproduction_study(series):
    run_dir = series[0]
    m = metrics(run_dir, "07_reproduction_study")
    results = json.loads((run_dir / "07_reproduction_study" / "results.json").read_text())
    assert results["seeds"] == m["seeds"] and len(m["seeds"]) >= 2
    assert {"scratch", "random", "selective"} <= set(results["inits"])
    for row in results["inits"].values():
        assert row["n_seeds"] == len(m["seeds"]) and 0 <= row["miou_mean"] <= 1 and row["miou_std"] >= 0
        assert len(row["per_class_mean"]) == len(results["class_names"])
    table = (run_dir / "07_reproduction_study" / "results.md").read_text()
    assert "selective IR (self)" in table and "±" in table
    committed = m["committed_study"]  # the answer, computed from the committed JSON
    assert committed["source"] == "notebooks/results/study_cpu.json" and f"{committed['pairs']} mIoU means" in committed["answer"]


def test_07_states_its_answer_in_few_words(series):
    words = generated_words(series[0] / "executed" / "07_reproduction_study.ipynb")
    assert words < MAX_WORDS_07, f"the executed 07 holds {words} words of generated text; at most {MAX_WORDS_07}"


def test_report_references_the_figures(series):
    run_dir = series[0]
    report = run_dir / "report.md"
    assert report.is_file()
    text = report.read_text()
    links = re.findall(r"\]\(\./([^)]+\.png)\)", text)
    assert links, "the report links no figure"
    for link in links:
        assert (run_dir / link).is_file(), f"report links a missing figure {link}"
    for stem in STEMS:
        assert f"./{stem}/" in text, f"the report shows nothing of {stem}"
    assert "selective IR (self)" in text  # the results table


def test_series_fits_the_time_budget(series):
    _, seconds, load = series
    total = sum(seconds.values())
    if total > BUDGET_S and load > (os.cpu_count() or 1):
        pytest.xfail(f"series took {total:.0f} s > {BUDGET_S:.0f} s, but the machine's 5-minute load "
                     f"average was {load:.1f} on {os.cpu_count()} cores: the timing is not meaningful")
    assert total <= BUDGET_S, f"the fast series took {total:.0f} s ({seconds}); budget {BUDGET_S:.0f} s"
