"""The mechanism measures of the masking strategies (issue 28) on cases small enough to work out by
hand, the committed report checked against its JSON, and the side-by-side figure."""

import json

import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from smir_lib.notebook.plots import strategy_masks_figure
from smir_lib.patches import patch_grid
from smir_lib.selective import STRATEGIES
from smir_lib.study.mechanism import labelled_tiles, mask_dependence, mechanism_markdown, strategy_mechanism

pytestmark = pytest.mark.unit


class Zeros(nn.Module):
    """Draws the mean colour everywhere (0 when normalised), whatever it is shown."""

    def forward(self, x):
        return torch.zeros_like(x)


def two_by_two():
    """One 8x8 image on a 2x2 grid of 4x4 px patches: texture about 2 in patches (0,1) and (1,0), a flat 1
    elsewhere (the mean colour, 0, draws the texture worse); labels: class 1 fills patch (0,0), class 2 patch (1,1), class 0 the two textured ones."""
    image = torch.ones(1, 3, 8, 8)
    image[:, :, :4, 4:] = torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(0)) + 2
    image[:, :, 4:, :4] = torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(1)) + 2
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[:, :4, :4], labels[:, 4:, 4:] = 1, 2
    return image, labels, patch_grid(8, 8, 4)


def test_each_strategy_hides_what_it_should_and_costs_what_it_should():
    image, labels, grid = two_by_two()
    out = strategy_mechanism(Zeros(), image, labels, grid, ["soil", "crop", "weed"], k=3, seed=0)
    s = out["strategies"]
    assert set(s) == set(STRATEGIES) and out["n_hidden"] == 2
    # selective: the two textured patches, which the mean colour draws worst
    assert s["selective"]["hidden_share"] == {"soil": 1.0, "crop": 0.0, "weed": 0.0}
    assert s["selective_unmasked"]["hidden_share"] == {"soil": 1.0, "crop": 0.0, "weed": 0.0}
    assert s["easiest"]["hidden_share"] == {"soil": 0.0, "crop": 1.0, "weed": 1.0}
    assert s["objects_oracle"]["hidden_share"] == {"soil": 0.0, "crop": 1.0, "weed": 1.0}
    assert sum(s["random"]["hidden_share"].values()) in (1.0, 1.5, 2.0)  # two whole patches of three classes
    assert all(m["gain_db"] == pytest.approx(0.0, abs=1e-6) for m in s.values())  # the mean fill itself
    assert {k: m["forward_passes"] for k, m in s.items()} == {
        "random": 0, "selective": 3, "selective_unmasked": 1, "easiest": 3, "block": 0, "hard_ramp": 3,
        "objects_oracle": 0}
    assert out["class_pixel_share"] == {"soil": 0.5, "crop": 0.25, "weed": 0.25}


def test_a_score_that_ignores_the_masks_selects_the_same_patches_whatever_they_are():
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    dep = mask_dependence(Zeros(), images, patch_grid(32, 32, 16), k=4, generator=torch.Generator().manual_seed(0))
    assert dep["k_map_correlation"] == pytest.approx(1.0)
    assert dep["overlap"] == {"k1_vs_k4": 1.0, "k4_vs_unmasked": 1.0, "k1_vs_unmasked": 1.0}
    assert dep["chance_overlap"] == 0.5


def test_labelled_tiles_are_the_pools_tiles_with_their_labels():
    image = torch.arange(8 * 12, dtype=torch.float32).view(1, 8, 12).expand(3, 8, 12) / 96
    label = torch.zeros(8, 12, dtype=torch.long)
    label[:, 8:] = 2  # the right third
    images, labels = labelled_tiles([(image, label)], 1, tile=8, stride=4, size=8)
    assert images.shape == (2, 3, 8, 8) and labels.shape == (2, 8, 8)  # columns 0..8 and 4..12
    assert torch.equal(images[1], image[:, :, 4:]) and labels[0].sum() == 0 and labels[1][:, 4:].eq(2).all()


def test_the_committed_report_is_its_json(repo_root):
    path = repo_root / "notebooks" / "results" / "strategies_mechanism"
    results = json.loads(path.with_suffix(".json").read_text())
    assert mechanism_markdown(results) + "\n" == path.with_suffix(".md").read_text()
    for name, r in results["datasets"].items():
        assert set(r["strategies"]) == set(STRATEGIES), name
        assert all(m["forward_passes"] in (0, 1, r["k"]) for m in r["strategies"].values())


def test_strategy_masks_figure_puts_strategies_side_by_side():
    panel = torch.rand(3, 8, 8)
    fig = strategy_masks_figure({"random": [panel, panel], "selective": [panel, panel]},
                                {"selective": "crop 95 % hidden, 5 passes"}, images=[panel, panel])
    assert isinstance(fig, Figure) and len(fig.axes) == 2 * 3
    assert [ax.get_title() for ax in fig.axes[:3]] == ["image", "random", "selective\ncrop 95 % hidden, 5 passes"]
