"""Every plot function returns a Figure on small inputs (and draws loss maps with colour bars)."""

from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure

from smir_lib.notebook import plots
from smir_lib.patches import patch_grid

pytestmark = pytest.mark.unit

NAMES = ["soil", "crop", "weed"]
COLORS = [(0, 0, 0), (0, 255, 0), (255, 0, 0)]


@pytest.fixture(scope="module")
def small():
    g = torch.Generator().manual_seed(0)
    grid = patch_grid(32, 48, n_patches=16)
    image = torch.rand(3, 32, 48, generator=g)
    label = torch.randint(0, 3, (32, 48), generator=g)
    label[0, 0] = 255  # the ignore index is drawn grey, not an error
    scores = torch.rand(2, grid.gh, grid.gw, generator=g)
    return grid, image, label, scores


def test_label_to_rgb_uses_class_colours_and_grey_for_ignore(small):
    _, _, label, _ = small
    rgb = plots.label_to_rgb(label, COLORS)
    assert rgb.shape == (32, 48, 3)
    assert tuple(rgb[0, 0]) == pytest.approx((128 / 255,) * 3)
    crop = (label == 1).numpy()
    assert (rgb[crop] == [0.0, 1.0, 0.0]).all()


def test_to_hwc_rejects_a_flat_array():
    with pytest.raises(ValueError, match="expected"):
        plots.to_hwc(torch.zeros(4, 4))


def test_every_figure_function_returns_a_figure(small):
    grid, image, label, scores = small
    batch = torch.stack([image, image])
    figs = [
        plots.image_row([image, image], ["a", "b"], suptitle="row"),
        plots.image_label_grid([image], [label], NAMES, COLORS),
        plots.class_share_bars({"train": [0.9, 0.04, 0.06]}, NAMES, COLORS),
        plots.patch_grid_figure(image, grid),
        plots.mae_panel(batch, batch, batch, batch, scores, grid),
        plots.mae_panel(image, image, image, image, scores[0], None),
        plots.loss_maps_figure(image, batch, batch, scores, scores.mean(0), grid),
        plots.mask_comparison([image], [image], [image], labels=[label], class_colors=COLORS,
                              class_names=NAMES, scores=scores[:1], grid=grid),
        plots.hidden_share_figure({"image": [0.8, 0.1, 0.1], "random": [0.8, 0.1, 0.1],
                                   "selective": [0.6, 0.2, 0.2]}, NAMES),
        plots.partition_diagram([{"step": 0, "masking": "random", "n_train": 9},
                                 {"step": 1, "masking": "selective", "n_train": 9, "epochs": 1,
                                  "best_val_loss": 0.4}]),
        plots.loss_curves([{"train_loss": [1.0, 0.8], "val_loss": [0.9, 0.85]}, {"train_loss": [0.7]}]),
        plots.iou_bars({"scratch": [0.9, 0.1, 0.2], "selective": [0.9, 0.2, 0.3]}, NAMES,
                       spread={"selective": [0.01, 0.02, 0.03]}),
        plots.miou_bars({"scratch": 0.4, "random": 0.45}, {"scratch": 0.01, "random": 0.02}),
    ]
    for fig in figs:
        assert isinstance(fig, Figure)


def test_loss_maps_carry_colour_bars(small):
    grid, image, _, scores = small
    fig = plots.mae_panel(image, image, image, image, scores[0], grid)
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)


def test_the_paper_figures_return_figures(small):
    """Fig. 2 end to end, Fig. 4, Fig. 5, the prediction table and the loop diagram."""
    grid, image, label, scores = small
    batch = torch.stack([image, image])
    selected = scores[0] > scores[0].median()
    figs = [
        plots.loss_maps_figure(image, batch, batch, scores, scores.mean(0), grid, selected=selected,
                               selective_masked=image),
        plots.stored_mask_reconstructions([image], [image], [image], step=2),
        plots.reconstruction_comparison(batch, batch, batch, batch, batch),
        plots.segmentation_predictions([image], [label], {"scratch": [label], "random": [label.flip(0)]},
                                       NAMES, COLORS),
        plots.smir_loop_diagram(10, 5, 0.5),
        plots.per_image_share_figure({"random": [0.2, 0.1], "selective": [0.3, float("nan")]}),
    ]
    assert all(isinstance(f, Figure) for f in figs)
    titles = [ax.get_title() for ax in figs[0].axes]
    assert f"top half: {int(selected.sum())} patches" in titles and "selectively masked" in titles
    assert "scratch\nmIoU 1.00" in [ax.get_title() for ax in figs[3].axes]  # the labels themselves
