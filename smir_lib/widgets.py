"""Interactive explorers for JupyterLab (ipywidgets), imported lazily inside each builder.

Each builder returns an ``ipywidgets.VBox``: sliders (each with a short description, e.g.
``ratio``, ``patches``, ``seed``, ``image``, ``K``) above an ``Output`` that redraws a matplotlib
figure from ``smir_lib.plots`` whenever a slider moves. Notebooks call them only
``if INTERACTIVE:``; the same content appears as static figures otherwise.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


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

    from smir_lib import plots
    from smir_lib.data.transforms import denormalize
    from smir_lib.patches import mask_images, n_hidden, patch_grid, random_patch_mask

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
                     grid=None):
    """Browse patch-loss maps: sliders image and K.

    ``compute(image_index, k)`` returns the arguments of ``plots.loss_maps_figure`` as a dict
    (``image``, ``masked``, ``reconstructions``, ``maps``, ``mean_map``), display-ready.
    """
    import ipywidgets as w

    from smir_lib import plots

    sliders = {
        "image": w.IntSlider(value=0, min=0, max=n_images - 1, description="image"),
        "K": w.IntSlider(value=k, min=1, max=k_max, description="K"),
    }

    def draw(image, K):
        return plots.loss_maps_figure(grid=grid, **compute(image, K))

    return _explorer(sliders, draw)
