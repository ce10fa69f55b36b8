"""Every explorer builds and draws once outside JupyterLab (the ui tier moves their sliders there)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from smir_lib.data.transforms import normalize
from smir_lib.notebook import widgets
from smir_lib.notebook.showcase import selection_views
from smir_lib.patches import patch_grid

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_thread")]

NAMES, COLORS = ["soil", "crop", "weed"], [(0, 0, 0), (0, 255, 0), (255, 0, 0)]


class Blur(nn.Module):
    def forward(self, x):
        return nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 40, 40, generator=g)
    return images, torch.randint(0, 3, (3, 40, 40), generator=g), patch_grid(40, 40, 16)


def test_explorers_build_and_redraw(batch):
    pytest.importorskip("ipywidgets")
    images, labels, grid = batch
    x = normalize(images)
    boxes = [
        widgets.dataset_browser(images, labels, NAMES, COLORS),
        widgets.reconstruction_explorer(Blur(), x, grid, win_size=3),
        widgets.mask_comparison_explorer(Blur(), x, labels, grid, k=2, class_names=NAMES, class_colors=COLORS),
        widgets.strategy_explorer(Blur(), x, labels, grid, NAMES, k=2),
        widgets.prediction_browser(images, labels, {"scratch": labels, "random": labels.flip(1)}, NAMES, COLORS),
    ]
    for box in boxes:
        box.redraw()  # draws the figure for the sliders' current values; raises on any error
        sliders = [w for w in box.children[0].children]
        assert sliders and all(s.description for s in sliders)



def test_loss_map_browser_titles_the_overlap_with_the_reference_selection(batch, monkeypatch):
    pytest.importorskip("ipywidgets")
    images, _, grid = batch
    x = normalize(images)
    views = [selection_views(Blur(), x[i], grid, k=2, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    keep = ("image", "masked", "reconstructions", "maps", "mean_map", "selected")
    compute = lambda i, k: {key: v for key, v in views[i].items() if key in keep}
    reference = torch.stack([v["selected"] for v in views])  # (3, gh, gw): the browser's own selections
    reference[0] = ~reference[0]  # image 0: the complement, so its top half shares none of it
    drawn = []
    monkeypatch.setattr(widgets.plots, "loss_maps_figure", lambda **kw: drawn.append(kw["suptitle"]))
    box = widgets.loss_map_browser(compute, 3, k=2, grid=grid, reference=reference)
    box.redraw()  # image 0, K = 2
    box.children[0].children[0].value = 1  # image slider -> 1
    assert drawn[0].startswith("image 0: the top half at K = 2 shares 0% of its patches with the K = 2 selection")
    assert drawn[-1].startswith("image 1: the top half at K = 2 shares 100% of its patches")
    assert drawn[-1].endswith(f"(chance: {reference[1].float().mean():.0%})")


def test_strategy_explorer_draws_every_strategy(batch):
    pytest.importorskip("ipywidgets")
    from smir_lib.selective import STRATEGIES

    images, labels, grid = batch
    box = widgets.strategy_explorer(Blur(), normalize(images), labels, grid, NAMES, k=2)
    menu = box.children[0].children[0]
    assert list(menu.options) == list(STRATEGIES)
    for strategy in STRATEGIES:
        menu.value = strategy
        box.redraw()  # raises on any error
