"""Interactive explorers for JupyterLab (ipywidgets), imported lazily inside each builder.

Each builder returns an ``ipywidgets.VBox``: sliders (each with a short description, e.g.
``ratio``, ``patches``, ``seed``, ``image``, ``K``) above an ``Output`` that redraws a matplotlib
figure from ``smir_lib.notebook.plots`` whenever a slider moves. Notebooks call them only
``if INTERACTIVE:``; the same content appears as static figures otherwise. One per notebook:
``dataset_browser`` (00), ``mask_explorer`` (01), ``reconstruction_explorer`` (02),
``loss_map_browser`` (03), ``mask_comparison_explorer`` and ``strategy_explorer`` (04),
``stored_mask_browser`` (05),
``prediction_browser`` (06); the ``ui`` test tier moves a slider of each in JupyterLab.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from smir_lib.data.transforms import denormalize
from smir_lib.notebook import plots
from smir_lib.notebook.measure import mae_views
from smir_lib.notebook.showcase import stored_mask_views
from smir_lib.patches import mask_images, mask_to_pixels, n_hidden, patch_grid, random_patch_mask
from smir_lib.selective import STRATEGIES, choose_masks, selective_mask
from smir_lib.study.mechanism import strategy_mechanism


def _explorer(sliders: dict, draw: Callable[..., object]):
    """Sliders above an Output widget; ``draw(**values)`` returns the Figure to show."""
    import ipywidgets as w
    from IPython.display import display

    out = w.Output()

    def redraw(**values):
        fig = draw(**values)
        out.clear_output(wait=True)
        with out:
            display(fig)

    interactive = w.interactive_output(redraw, sliders)
    box = w.VBox([w.HBox(list(sliders.values())), out, interactive])
    box.redraw = lambda: redraw(**{k: s.value for k, s in sliders.items()})  # for tests
    return box


def mask_explorer(images: torch.Tensor, *, n_patches: int = 512, fill: float = 0.0):
    """Random masks on NORMALISED images ``(N, 3, H, W)``: sliders ratio, patches, seed, image."""
    import ipywidgets as w


    sliders = {
        "ratio": w.FloatSlider(value=0.5, min=0.05, max=0.95, step=0.05, description="ratio"),
        "patches": w.IntSlider(value=n_patches, min=16, max=2048, step=16, description="patches"),
        "seed": w.IntSlider(value=0, min=0, max=99, description="seed"),
        "image": w.IntSlider(value=0, min=0, max=len(images) - 1, description="image"),
    }

    def draw(ratio, patches, seed, image):
        img = images[image : image + 1]  # (1, 3, H, W)
        grid = patch_grid(img.shape[-2], img.shape[-1], patches)
        mask = random_patch_mask(1, grid, ratio, generator=torch.Generator().manual_seed(seed))
        masked = mask_images(img, mask, grid, fill=fill)
        title = (f"{grid.gh} x {grid.gw} = {grid.n_patches} patches, "
                 f"{n_hidden(grid, ratio)} hidden (ratio {ratio:.2f}), seed {seed}")
        return plots.image_row([denormalize(img)[0], denormalize(masked)[0]], ["image", "masked"],
                               suptitle=title, size=3.6)

    return _explorer(sliders, draw)


def loss_map_browser(compute: Callable[[int, int], dict], n_images: int, *, k_max: int = 8, k: int = 5,
                     grid=None, reference: torch.Tensor | None = None):
    """Browse patch-loss maps: sliders image and K.

    ``compute(image_index, k)`` returns the arguments of ``plots.loss_maps_figure`` as a dict
    (``image``, ``masked``, ``reconstructions``, ``maps``, ``mean_map``, and ``selected``),
    display-ready. With ``reference`` (``(n_images, gh, gw)`` bool, e.g. the selection at the
    paper's K) the title gives the share of the top half at the slider's K that lies inside it:
    a number that moves with the sliders.
    """
    import ipywidgets as w


    sliders = {
        "image": w.IntSlider(value=0, min=0, max=n_images - 1, description="image"),
        "K": w.IntSlider(value=k, min=1, max=k_max, description="K"),
    }

    def draw(image, K):
        views = compute(image, K)
        if reference is not None and views.get("selected") is not None:
            ref = reference[image]  # (gh, gw) bool
            shared, chance = float((views["selected"] & ref).sum() / ref.sum()), float(ref.float().mean())
            views = {**views, "suptitle": f"image {image}: the top half at K = {K} shares {shared:.0%} of its "
                                          f"patches with the K = {k} selection (chance: {chance:.0%})"}
        return plots.loss_maps_figure(grid=grid, **views)

    return _explorer(sliders, draw)


def dataset_browser(images: torch.Tensor, labels: torch.Tensor, class_names, class_colors, *,
                    ignore_index: int = 255, title: str = "image"):
    """Browse images ``(N, 3, H, W)`` in [0, 1] with their labels ``(N, H, W)``: slider image."""
    import ipywidgets as w


    sliders = {"image": w.IntSlider(value=0, min=0, max=len(images) - 1, description="image")}

    def draw(image):
        return plots.image_label_grid(images[image : image + 1], labels[image : image + 1], class_names,
                                      class_colors, ignore_index=ignore_index, titles=[f"{title} {image}"])

    return _explorer(sliders, draw)


def reconstruction_explorer(model, images: torch.Tensor, grid, *, ratio: float = 0.5, win_size: int = 11):
    """The MAE view of one NORMALISED image of ``(N, 3, H, W)``: sliders image, seed, ratio."""
    import ipywidgets as w


    sliders = {
        "image": w.IntSlider(value=0, min=0, max=len(images) - 1, description="image"),
        "seed": w.IntSlider(value=0, min=0, max=99, description="seed"),
        "ratio": w.FloatSlider(value=ratio, min=0.1, max=0.9, step=0.1, description="ratio"),
    }

    def draw(image, seed, ratio):
        mask = random_patch_mask(1, grid, ratio, generator=torch.Generator().manual_seed(seed))
        v = mae_views(model, images[image : image + 1], grid, mask, win_size=win_size)
        return plots.mae_panel(v["original"], v["masked"], v["reconstruction"], v["pasted"], v["loss_map"],
                               grid, row_titles=[f"image {image}, ratio {ratio:.1f}"])

    return _explorer(sliders, draw)


def mask_comparison_explorer(model, images: torch.Tensor, labels: torch.Tensor, grid, *, k: int = 5,
                             ratio: float = 0.5, class_names=None, class_colors=None, ignore_index: int = 255):
    """Random against selective masks on one NORMALISED image: sliders image, seed, K.

    The title reads the share of the image's object pixels (every labelled class but the most
    frequent one over ``labels``) that each mask hides: it moves with every slider.
    """
    import ipywidgets as w

    labelled = labels[(labels >= 0) & (labels != ignore_index)]
    background = int(torch.bincount(labelled.flatten()).argmax())
    sliders = {
        "image": w.IntSlider(value=0, min=0, max=len(images) - 1, description="image"),
        "seed": w.IntSlider(value=0, min=0, max=99, description="seed"),
        "K": w.IntSlider(value=k, min=1, max=8, description="K"),
    }

    def draw(image, seed, K):
        x = images[image : image + 1]  # (1, 3, H, W)
        sel = selective_mask(model, x, grid, k=K, ratio=ratio, generator=torch.Generator().manual_seed(seed))
        rnd = random_patch_mask(1, grid, ratio, generator=torch.Generator().manual_seed(seed + 1))
        fig = plots.mask_comparison(denormalize(x), denormalize(mask_images(x, rnd, grid)),
                                    denormalize(mask_images(x, sel.mask, grid)), labels=labels[image : image + 1],
                                    class_colors=class_colors, class_names=class_names, scores=sel.scores,
                                    grid=grid, ignore_index=ignore_index)
        plants = (labels[image] != background) & (labels[image] != ignore_index)  # (H, W)
        hidden = {name: (mask_to_pixels(m, grid)[0] & plants).sum() / plants.sum().clamp(min=1)
                  for name, m in (("selective", sel.mask), ("random", rnd))}
        fig.suptitle(f"object pixels hidden: selective {hidden['selective']:.0%}, random {hidden['random']:.0%}")
        return fig

    return _explorer(sliders, draw)


def strategy_explorer(model, images: torch.Tensor, labels: torch.Tensor, grid, class_names, *, k: int = 5,
                      ratio: float = 0.5, ignore_index: int = 255):
    """One masking strategy at a time on one NORMALISED image (issue 28): a strategy menu, sliders
    image and seed; the panel's title gives the share of each class hidden and the forward passes."""
    import ipywidgets as w

    sliders = {
        "strategy": w.Dropdown(options=list(STRATEGIES), value="selective", description="strategy"),
        "image": w.IntSlider(value=0, min=0, max=len(images) - 1, description="image"),
        "seed": w.IntSlider(value=0, min=0, max=99, description="seed"),
    }

    def draw(strategy, image, seed):
        x, lab = images[image : image + 1], labels[image : image + 1]  # (1, 3, H, W), (1, H, W)
        found = choose_masks(strategy, model, x, grid, k=k, ratio=ratio, share=0.5, labels=lab,
                             generator=torch.Generator().manual_seed(seed))
        m = strategy_mechanism(model, x, lab, grid, class_names, k=k, ratio=ratio, seed=seed,
                               ignore_index=ignore_index, strategies=[strategy])["strategies"][strategy]
        note = ", ".join(f"{c} {100 * v:.0f} %" for c, v in m["hidden_share"].items())
        return plots.strategy_masks_figure({strategy: denormalize(mask_images(x, found.mask, grid))},
                                           {strategy: f"hidden: {note}\n{m['forward_passes']} passes"},
                                           images=denormalize(x))

    return _explorer(sliders, draw)


def stored_mask_browser(run_dir, model, steps: list[int], n_images: int):
    """The masks a selective run trained with (paper Fig. 4), one image: sliders step, image."""
    import ipywidgets as w


    sliders = {
        "step": w.SelectionSlider(options=list(steps), value=steps[-1], description="step"),
        "image": w.IntSlider(value=0, min=0, max=n_images - 1, description="image"),
    }

    def draw(step, image):
        v = stored_mask_views(run_dir, model, step=step, n_images=1, first=image)
        return plots.stored_mask_reconstructions(v["masked"], v["reconstructed"], v["original"], step=step,
                                                 row_titles=[f"pool {i}" for i in v["pool_indices"]])

    return _explorer(sliders, draw)


def prediction_browser(images: torch.Tensor, labels: torch.Tensor, predictions: dict, class_names,
                       class_colors, *, ignore_index: int = 255):
    """Predicted segmentations against the labels, one image: slider image.

    ``predictions[init]`` is ``(N, H, W)`` (``smir_lib.notebook.showcase.predict_labels``) for ``images``.
    """
    import ipywidgets as w


    sliders = {"image": w.IntSlider(value=0, min=0, max=len(images) - 1, description="image")}

    def draw(image):
        one = slice(image, image + 1)
        return plots.segmentation_predictions(images[one], labels[one], {n: p[one] for n, p in predictions.items()},
                                              class_names, class_colors, ignore_index=ignore_index,
                                              row_titles=[f"test {image}"])

    return _explorer(sliders, draw)
