"""The figures of the SMIR notebooks. Every function returns a ``matplotlib.figure.Figure``.

Conventions:

- Images come in for display, in [0, 1]: ``(3, H, W)`` or ``(H, W, 3)``, torch or numpy.
  Denormalise model inputs and outputs first (``smir_lib.data.transforms.denormalize``).
- Labels are ``(H, W)`` class indices; ``class_colors`` (from ``ds.class_colors``) colour them the
  same way in every notebook; the ignore index is drawn grey.
- Patch-level maps ``(gh, gw)`` are drawn on the real, uneven patch grid (``grid.row_edges``,
  ``grid.col_edges``) and always get a colour bar.

No figure is shown or saved here: notebooks save with ``NotebookContext.save_figure``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, Patch, Rectangle
from matplotlib.ticker import MaxNLocator

from smir_lib.metrics import confusion_matrix, segmentation_metrics
from smir_lib.study.inits import INIT_COLORS

IGNORE_GREY = (128, 128, 128)
MASK_COLORS = {"random": "#4C72B0", "selective": "#DD8452", "image": "#8C8C8C"}


def to_numpy(x) -> np.ndarray:
    """A torch tensor or array as a float/int numpy array on the CPU."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        x = x.float() if x.is_floating_point() else x
        x = x.numpy()
    return np.asarray(x)


def to_hwc(image) -> np.ndarray:
    """``(3, H, W)`` or ``(H, W, 3)`` in [0, 1] -> ``(H, W, 3)`` clipped to [0, 1] for imshow."""
    a = to_numpy(image).astype(np.float32)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.ndim != 3:
        raise ValueError(f"image has shape {a.shape}; expected (3, H, W) or (H, W, 3)")
    return np.clip(a, 0.0, 1.0)


def label_to_rgb(label, class_colors: Sequence[Sequence[int]], ignore_index: int = 255) -> np.ndarray:
    """``(H, W)`` class indices -> ``(H, W, 3)`` floats, class c drawn in ``class_colors[c]``."""
    lab = to_numpy(label).astype(np.int64)
    palette = np.array(list(class_colors) + [IGNORE_GREY], dtype=np.float32) / 255.0  # (C + 1, 3)
    index = np.where((lab >= 0) & (lab < len(class_colors)), lab, len(class_colors))
    return palette[index]


def _legend_handles(class_names: Sequence[str], class_colors: Sequence[Sequence[int]]) -> list[Patch]:
    return [Patch(facecolor=np.array(c) / 255.0, edgecolor="black", label=n)
            for n, c in zip(class_names, class_colors)]


def _clean(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_patch_map(fig, ax, values, grid, *, cmap="magma", vmin=None, vmax=None, label="patch loss"):
    """A ``(gh, gw)`` map on the real patch edges, with its own colour bar."""
    values = to_numpy(values).astype(np.float32)
    if grid is not None:
        mesh = ax.pcolormesh(np.asarray(grid.col_edges), np.asarray(grid.row_edges), values,
                             cmap=cmap, vmin=vmin, vmax=vmax, shading="flat")
        ax.set_xlim(0, grid.width)
        ax.set_ylim(grid.height, 0)
        ax.set_aspect("equal")
    else:
        mesh = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax)
    _clean(ax)
    fig.colorbar(mesh, ax=ax, fraction=0.046, pad=0.02, label=label)
    return mesh


def image_row(images: Sequence, titles: Sequence[str] | None = None, *, suptitle: str | None = None,
              size: float = 2.8) -> Figure:
    """Images side by side with titles (masks at several ratios, fill colours, ...)."""
    n = len(images)
    fig = Figure(figsize=(size * n, size + 0.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, n))
    for i, (ax, img) in enumerate(zip(axes, images)):
        ax.imshow(to_hwc(img))
        _clean(ax)
        if titles:
            ax.set_title(titles[i], fontsize=10)
    if suptitle:
        fig.suptitle(suptitle, fontsize=12)
    return fig


def image_label_grid(images: Sequence, labels: Sequence, class_names: Sequence[str],
                     class_colors: Sequence[Sequence[int]], *, ignore_index: int = 255,
                     titles: Sequence[str] | None = None, alpha: float = 0.55) -> Figure:
    """Each image above its label map blended over it, with a class legend."""
    n = len(images)
    fig = Figure(figsize=(2.6 * n, 5.8), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        img = to_hwc(images[i])
        axes[0, i].imshow(img)
        axes[1, i].imshow((1 - alpha) * img + alpha * label_to_rgb(labels[i], class_colors, ignore_index))
        axes[0, i].set_title(titles[i] if titles else f"image {i}", fontsize=10)
        _clean(axes[0, i])
        _clean(axes[1, i])
    axes[1, 0].set_ylabel("labels", fontsize=10)
    fig.legend(handles=_legend_handles(class_names, class_colors), loc="outside lower center",
               ncol=min(len(class_names), 6), fontsize=9)
    return fig


def class_share_bars(shares: Mapping[str, Sequence[float]], class_names: Sequence[str],
                     class_colors: Sequence[Sequence[int]], *, title: str = "pixel share per class") -> Figure:
    """Per-class pixel shares (fractions) for one or more splits: which classes are rare."""
    groups = list(shares)
    x = np.arange(len(class_names))
    width = 0.8 / len(groups)
    fig = Figure(figsize=(max(5.0, 1.3 * len(class_names) * len(groups) ** 0.5), 3.6), layout="constrained")
    ax = fig.subplots()
    hatches = ["", "//", "..", "xx"]
    for g, name in enumerate(groups):
        vals = 100 * np.asarray(to_numpy(shares[name]), dtype=float)
        bars = ax.bar(x + (g - (len(groups) - 1) / 2) * width, vals, width,
                      color=[np.array(c) / 255.0 for c in class_colors], edgecolor="black",
                      hatch=hatches[g % len(hatches)], label=name)
        ax.bar_label(bars, fmt="%.1f%%", fontsize=8)
    ax.set_xticks(x, class_names)
    ax.set_ylabel("share of labelled pixels (%)")
    ax.set_title(title)
    if len(groups) > 1:  # bars are coloured by class, so the legend shows the hatch of each group
        ax.legend(handles=[Patch(facecolor="white", edgecolor="black", hatch=hatches[g % len(hatches)], label=n)
                           for g, n in enumerate(groups)], fontsize=9)
    ax.margins(y=0.15)
    return fig


def patch_grid_figure(image, grid, *, title: str | None = None) -> Figure:
    """The image with the patch grid drawn on it (uneven last row and column included)."""
    fig = Figure(figsize=(4.6, 4.6), layout="constrained")
    ax = fig.subplots()
    ax.imshow(to_hwc(image), extent=(0, grid.width, grid.height, 0))
    for r in grid.row_edges[1:-1]:
        ax.axhline(r, color="white", lw=0.6)
    for c in grid.col_edges[1:-1]:
        ax.axvline(c, color="white", lw=0.6)
    _clean(ax)
    ax.set_title(title or f"{grid.gh} x {grid.gw} patches on {grid.height} x {grid.width} px", fontsize=10)
    return fig


def mae_panel(original, masked, reconstruction, pasted, loss_map, grid=None, *,
              row_titles: Sequence[str] | None = None) -> Figure:
    """The MAE view plus the loss map: original / masked / reconstruction / pasted / patch loss.

    Each argument is one image ``(3, H, W)`` or a batch ``(B, 3, H, W)`` (``loss_map``: ``(gh, gw)``
    or ``(B, gh, gw)``); one row per image. The loss maps share one colour scale.
    """
    cols = [original, masked, reconstruction, pasted]
    batch = [to_numpy(c) for c in cols]
    if batch[0].ndim == 3:
        batch = [b[None] for b in batch]
    maps = to_numpy(loss_map)
    maps = maps[None] if maps.ndim == 2 else maps
    rows = batch[0].shape[0]
    fig = Figure(figsize=(15, 3.0 * rows + 0.3), layout="constrained")
    axes = fig.subplots(rows, 5, squeeze=False)
    names = ["original", "masked input", "reconstruction", "reconstruction +\nvisible patches pasted",
             "patch loss"]
    vmax = float(np.nanmax(maps))
    for r in range(rows):
        for c in range(4):
            axes[r, c].imshow(to_hwc(batch[c][r]))
            _clean(axes[r, c])
        _draw_patch_map(fig, axes[r, 4], maps[r], grid, vmin=0.0, vmax=vmax)
        if row_titles:
            axes[r, 0].set_ylabel(row_titles[r], fontsize=10)
    for c, name in enumerate(names):
        axes[0, c].set_title(name, fontsize=11)
    return fig


def loss_maps_figure(image, masked, reconstructions, maps, mean_map, grid=None, *,
                     selected=None, selective_masked=None, suptitle: str | None = None) -> Figure:
    """K masked copies, their reconstructions and patch-loss maps, and the averaged map.

    ``masked``, ``reconstructions``: ``(K, 3, H, W)`` display images; ``maps``: ``(K, gh, gw)``;
    ``mean_map``: ``(gh, gw)``. Row 1: image + masked copies; row 2: reconstructions;
    row 3: per-copy loss maps (one shared scale) and their average.

    With ``selected`` (the chosen patches, ``(gh, gw)`` bool) and ``selective_masked`` (the image
    with them hidden, ``(3, H, W)``) a fourth row ends the pipeline: average score, top half,
    selectively masked image (paper Fig. 2, end to end on one image). ``suptitle`` goes above it all.
    """
    k = len(maps)
    end_to_end = selected is not None and selective_masked is not None
    rows = 4 if end_to_end else 3
    fig = Figure(figsize=(2.9 * (k + 1), 2.8 * rows), layout="constrained")
    axes = fig.subplots(rows, max(k + 1, 3), squeeze=False)
    vmax = float(max(np.nanmax(to_numpy(maps)), np.nanmax(to_numpy(mean_map))))
    axes[0, 0].imshow(to_hwc(image))
    axes[0, 0].set_title("original", fontsize=10)
    for i in range(k):
        axes[0, i + 1].imshow(to_hwc(masked[i]))
        axes[0, i + 1].set_title(f"random mask {i + 1}", fontsize=10)
        axes[1, i + 1].imshow(to_hwc(reconstructions[i]))
        axes[1, i + 1].set_title(f"reconstruction {i + 1}", fontsize=10)
        _draw_patch_map(fig, axes[2, i + 1], maps[i], grid, vmin=0.0, vmax=vmax, label="")
        axes[2, i + 1].set_title(f"patch loss {i + 1}", fontsize=10)
    used = {(0, c) for c in range(k + 1)} | {(r, c) for r in (1, 2) for c in range(1, k + 1)}
    if end_to_end:  # the last row reads left to right: score -> top half -> masked image
        _draw_patch_map(fig, axes[3, 0], mean_map, grid, vmin=0.0, vmax=vmax, label="patch loss")
        axes[3, 0].set_title(f"score: average of {k}", fontsize=10, fontweight="bold")
        _draw_patch_map(fig, axes[3, 1], to_numpy(selected).astype(np.float32), grid, cmap="gray_r",
                        vmin=0.0, vmax=1.0, label="hidden")
        axes[3, 1].set_title(f"top half: {int(to_numpy(selected).sum())} patches", fontsize=10)
        axes[3, 2].imshow(to_hwc(selective_masked))
        axes[3, 2].set_title("selectively masked", fontsize=10, fontweight="bold")
        used |= {(3, 0), (3, 1), (3, 2)}
    else:
        _draw_patch_map(fig, axes[2, 0], mean_map, grid, vmin=0.0, vmax=vmax, label="patch loss")
        axes[2, 0].set_title(f"average of {k} (score)", fontsize=10, fontweight="bold")
        used.add((2, 0))
    for (r, c), ax in np.ndenumerate(axes):
        if (r, c) in used:
            _clean(ax)
        else:
            ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle, fontsize=12)
    return fig


def mask_comparison(images: Sequence, random_masked: Sequence, selective_masked: Sequence, *,
                    labels: Sequence | None = None, class_colors: Sequence[Sequence[int]] | None = None,
                    class_names: Sequence[str] | None = None, scores: Sequence | None = None,
                    grid=None, ignore_index: int = 255) -> Figure:
    """Random against selective masks, one row per image (paper Fig. 2 and 3).

    Columns: image, [labels], random 50 % mask, selective 50 % mask, [the score map it came from].
    """
    cols = ["image"] + (["labels"] if labels is not None else []) + ["random mask", "selective mask"]
    cols += ["patch score"] if scores is not None else []
    n = len(images)
    fig = Figure(figsize=(3.0 * len(cols) + 0.6, 3.0 * n + 0.4), layout="constrained")
    axes = fig.subplots(n, len(cols), squeeze=False)
    for r in range(n):
        panels = [to_hwc(images[r])]
        if labels is not None:
            panels.append(label_to_rgb(labels[r], class_colors, ignore_index))
        panels += [to_hwc(random_masked[r]), to_hwc(selective_masked[r])]
        for c, panel in enumerate(panels):
            axes[r, c].imshow(panel)
            _clean(axes[r, c])
        if scores is not None:
            _draw_patch_map(fig, axes[r, -1], scores[r], grid, cmap="viridis", label="mean patch loss")
    for c, name in enumerate(cols):
        axes[0, c].set_title(name, fontsize=11)
    if labels is not None and class_names is not None:
        fig.legend(handles=_legend_handles(class_names, class_colors), loc="outside lower center",
                   ncol=min(len(class_names), 6), fontsize=9)
    return fig


def hidden_share_figure(shares: Mapping[str, Sequence[float]], class_names: Sequence[str], *,
                        title: str = "where the hidden pixels fall",
                        ylabel: str = "% of hidden pixels\n(image: % of all pixels)") -> Figure:
    """Share of hidden pixels on each class, per masking (e.g. image / random / selective).

    ``shares[name][c]`` is a fraction; ``"image"`` (the class's share of all pixels) is the
    reference a mask that ignores content would match. The same bars draw any per-class
    fraction, e.g. the share of each class's pixels a mask hides (with its own ``ylabel``).
    """
    names = list(shares)
    x = np.arange(len(class_names))
    width = 0.8 / len(names)
    fig = Figure(figsize=(max(5.5, 1.6 * len(class_names)), 3.8), layout="constrained")
    ax = fig.subplots()
    for i, name in enumerate(names):
        vals = 100 * np.asarray(to_numpy(shares[name]), dtype=float)
        bars = ax.bar(x + (i - (len(names) - 1) / 2) * width, vals, width, label=name,
                      color=MASK_COLORS.get(name, None), edgecolor="black")
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(x, class_names)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=9)
    ax.margins(y=0.15)
    return fig


def partition_diagram(steps: Sequence[Mapping]) -> Figure:
    """Partitioned pretraining (paper Fig. 1) drawn from a run.

    ``steps[k]`` holds ``step``, ``masking`` ("random"/"selective"), ``n_train`` and optionally
    ``epochs`` and ``best_val_loss``. Each step is a box; arrows carry the weights forward and
    the masks from step k-1's model into step k.
    """
    n = len(steps)
    fig = Figure(figsize=(max(6.0, 1.55 * n), 3.2), layout="constrained")
    ax = fig.subplots()
    for k, s in enumerate(steps):
        color = MASK_COLORS.get(s.get("masking", "random"), "#8C8C8C")
        ax.add_patch(Rectangle((k * 1.4, 0), 1.1, 1.6, facecolor=color, alpha=0.35, edgecolor="black"))
        lines = [f"step {s.get('step', k)}", f"partition {s.get('step', k)}", s.get("masking", ""),
                 f"{s.get('n_train', '?')} imgs"]
        if s.get("epochs") is not None:
            lines.append(f"{s['epochs']} ep")
        if s.get("best_val_loss") is not None:
            lines.append(f"val {s['best_val_loss']:.3f}")
        ax.text(k * 1.4 + 0.55, 0.8, "\n".join(lines), ha="center", va="center", fontsize=8)
        if k:
            ax.add_patch(FancyArrowPatch(((k - 1) * 1.4 + 1.1, 1.2), (k * 1.4, 1.2), arrowstyle="-|>",
                                         mutation_scale=10, color="black"))
            ax.add_patch(FancyArrowPatch(((k - 1) * 1.4 + 1.1, 0.4), (k * 1.4, 0.4), arrowstyle="-|>",
                                         mutation_scale=10, color=MASK_COLORS["selective"], ls="--"))
    ax.set_xlim(-0.1, n * 1.4 - 0.2)
    ax.set_ylim(-0.55, 1.75)
    ax.axis("off")
    ax.set_title("partitioned pretraining: black arrows carry the weights, dashed arrows the masks "
                 "the previous model selects", fontsize=10)
    ax.legend(handles=[Patch(facecolor=MASK_COLORS[m], alpha=0.35, edgecolor="black", label=f"{m} masking")
                       for m in ("random", "selective")], loc="lower center", ncol=2, fontsize=8,
              bbox_to_anchor=(0.5, -0.05), frameon=False)
    return fig


def loss_curves(histories: Sequence[Mapping[str, Sequence[float]]], *, keys=("train_loss", "val_loss"),
                step_names: Sequence[str] | None = None) -> Figure:
    """Loss per epoch for consecutive steps on one axis; step boundaries dashed.

    ``histories[k]`` maps e.g. ``"train_loss"``/``"val_loss"`` to a list per epoch of step k.
    """
    fig = Figure(figsize=(8.5, 3.6), layout="constrained")
    ax = fig.subplots()
    start = 0
    styles = {keys[0]: "-", **({keys[1]: "--"} if len(keys) > 1 else {})}
    for k, hist in enumerate(histories):
        length = max((len(hist.get(key) or []) for key in keys), default=0)
        color = MASK_COLORS["random"] if k == 0 else MASK_COLORS["selective"]
        for key in keys:
            vals = list(hist.get(key) or [])
            if vals:
                xs = np.arange(start, start + len(vals)) + 1
                ax.plot(xs, vals, styles.get(key, "-"), color=color, marker="." if len(vals) < 30 else None,
                        label=key.replace("_", " ") if k < 2 else None)
        if k:
            ax.axvline(start + 0.5, color="grey", ls=":", lw=0.8)
        ax.text(start + max(length, 1) / 2 + 0.5, 1.0, step_names[k] if step_names else str(k), fontsize=8,
                ha="center", va="bottom", transform=ax.get_xaxis_transform())
        start += length
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch (all steps in sequence)")
    ax.set_ylabel("L1 + (1 - MS-SSIM)")
    handles, lbls = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles[:4], [f"{l} ({'random' if i < len(keys) else 'selective'})" for i, l in enumerate(lbls[:4])],
                  fontsize=8)
    ax.set_title("pretraining loss per step", pad=16)
    return fig


def iou_bars(per_class: Mapping[str, Sequence[float]], class_names: Sequence[str], *,
             spread: Mapping[str, Sequence[float]] | None = None, n_lowest: int = 1,
             title: str = "per-class IoU") -> Figure:
    """Per-class IoU for each initialisation (grouped bars), the lowest classes shaded.

    ``per_class[init]`` is a list of IoUs in class order; ``spread`` the same shape (std over seeds)
    draws error bars. The ``n_lowest`` classes by mean IoU over inits get a shaded background.
    """
    inits = list(per_class)
    values = np.array([to_numpy(per_class[i]) for i in inits], dtype=float)  # (I, C)
    x = np.arange(len(class_names))
    width = 0.8 / len(inits)
    fig = Figure(figsize=(max(6.0, 1.1 * len(class_names) * max(1, len(inits)) ** 0.6), 3.9), layout="constrained")
    ax = fig.subplots()
    lowest = np.argsort(np.nanmean(values, axis=0))[:n_lowest]
    for c in lowest:
        ax.axvspan(c - 0.45, c + 0.45, color="#F2D7D5", zorder=0)
    for i, init in enumerate(inits):
        err = None if spread is None or init not in spread else to_numpy(spread[init])
        ax.bar(x + (i - (len(inits) - 1) / 2) * width, values[i], width, yerr=err, capsize=2,
               label=init, color=INIT_COLORS.get(init), edgecolor="black", zorder=2)
    ax.set_xticks(x, [f"{n}\n(lowest)" if j in lowest else n for j, n in enumerate(class_names)])
    ax.set_ylabel("IoU")
    ax.set_ylim(0, max(1.0, float(np.nanmax(values))) * 1.2)  # headroom for the legend
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=min(len(inits), 5), loc="upper center")
    return fig


def miou_bars(mean: Mapping[str, float], std: Mapping[str, float] | None = None, *,
              title: str = "mIoU by initialisation") -> Figure:
    """mIoU per initialisation as bars (mean, with the spread over seeds as error bars)."""
    inits = list(mean)
    vals = [float(mean[i]) for i in inits]
    err = [float(std.get(i, 0.0)) for i in inits] if std else None
    fig = Figure(figsize=(max(4.5, 1.3 * len(inits)), 3.4), layout="constrained")
    ax = fig.subplots()
    bars = ax.bar(inits, vals, yerr=err, capsize=4, color=[INIT_COLORS.get(i, "#999999") for i in inits],
                  edgecolor="black")
    ax.bar_label(bars, fmt="%.3f", fontsize=8, padding=3)
    ax.set_ylabel("mIoU")
    ax.set_ylim(0, max(1.0, max(vals) * 1.15))
    ax.set_title(title)
    ax.tick_params(axis="x", labelsize=9)
    return fig


def metric_curves(curves: Mapping[str, Sequence[float]], *, ylabel: str = "value",
                  title: str | None = None) -> Figure:
    """One line per initialisation (e.g. validation mIoU per epoch), coloured like the bar charts."""
    fig = Figure(figsize=(6.5, 3.4), layout="constrained")
    ax = fig.subplots()
    for name, values in curves.items():
        xs = np.arange(1, len(values) + 1)
        ax.plot(xs, values, marker="." if len(values) < 40 else None, label=name, color=INIT_COLORS.get(name))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def _image_table(rows: Sequence[Sequence], col_titles: Sequence[str], row_titles: Sequence[str] | None = None,
                 *, size: float = 2.8) -> tuple[Figure, np.ndarray]:
    """A table of panels: ``rows[r][c]`` is a display image ``(3, H, W)``, or ``(H, W, 3)`` RGB."""
    n_rows, n_cols = len(rows), len(col_titles)
    fig = Figure(figsize=(size * n_cols + 0.4, size * n_rows + 0.5), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            axes[r, c].imshow(to_hwc(panel))
            _clean(axes[r, c])
        if row_titles:
            axes[r, 0].set_ylabel(row_titles[r], fontsize=10)
    for c, name in enumerate(col_titles):
        axes[0, c].set_title(name, fontsize=10)
    return fig, axes


def strategy_masks_figure(masked: Mapping[str, Sequence], notes: Mapping[str, str] | None = None, *,
                          images: Sequence | None = None) -> Figure:
    """Masking strategies side by side on the same images (issue 28): one column per strategy
    (``masked[strategy][r]``: image ``r`` with that strategy's patches hidden, display-ready),
    one row per image, the original first when ``images`` are given; ``notes[strategy]`` goes
    under the column's name (e.g. the share of each class hidden and the forward passes)."""
    names = list(masked)
    cols = (["image"] if images is not None else []) + [f"{n}\n{notes[n]}" if notes and n in notes else n
                                                         for n in names]
    rows = [([images[r]] if images is not None else []) + [masked[n][r] for n in names]
            for r in range(len(masked[names[0]]))]
    fig, axes = _image_table(rows, cols, size=2.4)
    for ax in axes[0]:
        ax.title.set_fontsize(8)
    return fig


def stored_mask_reconstructions(masked: Sequence, reconstructed: Sequence, original: Sequence, *,
                                row_titles: Sequence[str] | None = None, step: int | None = None) -> Figure:
    """Paper Fig. 4: images as a selective step trained on them, one row per image.

    Columns: the image with the step's stored selective mask, the final model's reconstruction of
    it, the original. Each argument is a list of ``(3, h, w)`` display images (sizes may differ).
    """
    where = f"step {step} " if step is not None else ""
    fig, _ = _image_table([list(r) for r in zip(masked, reconstructed, original)],
                          [f"{where}stored selective mask", "reconstructed", "original"], row_titles)
    return fig


def reconstruction_comparison(original, random_masked, random_recon, selective_masked, selective_recon, *,
                              row_titles: Sequence[str] | None = None,
                              names: Sequence[str] = ("random-mask model", "selective model")) -> Figure:
    """Paper Fig. 5: each image as original, random-masked reconstruction and selective-masked
    reconstruction side by side, one row per image (arguments ``(B, 3, H, W)`` or lists)."""
    cols = [original, random_masked, random_recon, selective_masked, selective_recon]
    rows = [list(r) for r in zip(*cols)]
    return _image_table(rows, ["original", "random mask", f"reconstruction\n({names[0]})",
                               "selective mask", f"reconstruction\n({names[1]})"], row_titles)[0]


def segmentation_predictions(images: Sequence, labels: Sequence, predictions: Mapping[str, Sequence],
                             class_names: Sequence[str], class_colors: Sequence[Sequence[int]], *,
                             ignore_index: int = 255, row_titles: Sequence[str] | None = None,
                             errors: bool = True) -> Figure:
    """Predicted segmentations against the labels: image, labels, one column per initialisation.

    ``predictions[init]`` holds ``(H, W)`` class maps, one per image. A column title carries that
    initialisation's mIoU over the images shown (one confusion matrix, ``smir_lib.metrics``), so
    columns differ where the rare classes differ, not only by the share of pixels right (which the
    most frequent class dominates). ``errors``: labelled pixels a model got wrong are drawn white.
    """
    titles = ["image", "labels"]
    columns = []
    lab = np.stack([to_numpy(l) for l in labels]).astype(np.int64)  # (N, H, W)
    keep = lab != ignore_index
    for name, preds in predictions.items():
        pred = np.stack([to_numpy(p) for p in preds]).astype(np.int64)
        conf = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(lab), len(class_names), ignore_index)
        titles.append(f"{name}\nmIoU {segmentation_metrics(conf)['miou']:.2f}")
        drawn = [label_to_rgb(p, class_colors, ignore_index) for p in pred]  # (H, W, 3) each
        if errors:
            for d, wrong in zip(drawn, (pred != lab) & keep):
                d[wrong] = 1.0
        columns.append(drawn)
    rows = [[images[i], label_to_rgb(labels[i], class_colors, ignore_index)] + [c[i] for c in columns]
            for i in range(len(images))]
    fig, _ = _image_table(rows, titles, row_titles, size=2.5)
    handles = _legend_handles(class_names, class_colors)
    if errors:
        handles.append(Patch(facecolor="white", edgecolor="black", label="wrong"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=9)
    return fig


def smir_loop_diagram(partitions: int = 10, k: int = 5, ratio: float = 0.5) -> Figure:
    """The SMIR loop: model of step k-1 -> score partition k -> top-half masks -> train step k -> ...

    Drawn as a cycle of four boxes with the partitioned pool below it; the numbers are the
    arguments (the paper's: 10 partitions, K = 5 random masks, 50 % hidden).
    """
    fig = Figure(figsize=(9.0, 4.6), layout="constrained")
    ax = fig.subplots()
    boxes = [((0.0, 2.2), f"model of step k-1\n(step 0: trained from scratch\nwith random masks)", "#8C8C8C"),
             ((3.3, 2.2), f"score partition k\n{k} random {int(100 * ratio)} % masks per image,\n"
                          "patch loss L1 + (1 - SSIM), averaged", MASK_COLORS["random"]),
             ((3.3, 0.3), f"top {int(100 * ratio)} % of patches by score\n= the image's selective mask\n"
                          "(fixed for the whole step)", MASK_COLORS["selective"]),
             ((0.0, 0.3), "train step k on partition k\nmasked image -> original,\nwarm start from step k-1",
              "#55A868")]
    for (x, y), text, color in boxes:
        ax.add_patch(Rectangle((x, y), 2.6, 1.3, facecolor=color, alpha=0.3, edgecolor="black"))
        ax.text(x + 1.3, y + 0.65, text, ha="center", va="center", fontsize=9)
    arrows = [((2.6, 2.85), (3.3, 2.85)), ((4.6, 2.2), (4.6, 1.6)), ((3.3, 0.95), (2.6, 0.95)),
              ((1.3, 1.6), (1.3, 2.2))]
    for start, end in arrows:
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14, color="black"))
    ax.text(1.4, 1.9, "k -> k + 1", fontsize=8, ha="left", va="center", style="italic")
    for i in range(partitions):  # the pool, cut into interleaved partitions pool[i::P]
        ax.add_patch(Rectangle((6.4, 3.3 - 0.3 * i), 1.6, 0.24, facecolor="#DDDDDD", edgecolor="black", lw=0.5))
        ax.text(7.2, 3.42 - 0.3 * i, f"partition {i}: pool[{i}::{partitions}]", ha="center", va="center", fontsize=7)
    ax.text(7.2, 3.75, "unlabelled pool", ha="center", fontsize=9, fontweight="bold")
    ax.text(7.2, 3.3 - 0.3 * partitions, f"after step {partitions - 1}: fine-tune\nfor segmentation",
            ha="center", va="top", fontsize=8)
    ax.set_xlim(-0.2, 8.3)
    ax.set_ylim(min(-0.2, 2.9 - 0.3 * partitions), 4.0)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title("Selective Masking Image Reconstruction (SMIR): one step of the loop", fontsize=11)
    return fig


def per_image_share_figure(per_image: Mapping[str, Sequence[float]], *,
                           title: str = "share of each image's hidden pixels on objects") -> Figure:
    """One image per x position, one marker per masking (e.g. random / selective), joined per image.

    ``per_image[name]`` holds a fraction per image; the grey segments show each image's difference.
    """
    names = list(per_image)
    values = np.array([to_numpy(per_image[n]) for n in names], dtype=float) * 100  # (M, N) percent
    x = np.arange(values.shape[1])
    fig = Figure(figsize=(max(5.5, 0.35 * len(x) + 2.5), 3.4), layout="constrained")
    ax = fig.subplots()
    ax.vlines(x, np.nanmin(values, 0), np.nanmax(values, 0), color="#BBBBBB", lw=1.5, zorder=1)
    for name, vals in zip(names, values):
        ax.scatter(x, vals, label=name, color=MASK_COLORS.get(name), edgecolor="black", zorder=2)
    ax.set_xticks(x, [str(i) for i in x], fontsize=8)
    ax.set_xlabel("image")
    ax.set_ylabel("% of its hidden pixels\non objects")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return fig
