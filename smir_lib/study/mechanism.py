"""Why selective masking helps or not: the mechanism of every masking strategy, measured (issue 28).

:func:`strategy_mechanism` takes one reconstruction model and the same labelled images for every
strategy of ``smir_lib.selective.STRATEGIES`` and measures:

* ``hidden_share``: the share of each class's pixels that the strategy hides (a random half
  hides about 50 % of every class; selective masks on field images hide most of the plants);
* ``gain_db``: the model's hidden-pixel reconstruction gain over the mean-colour fill,
  ``10 log10(MSE_fill / MSE_reconstruction)`` on the hidden pixels (``notebook.measure.reconstruction_quality``):
  how much of what the strategy hides the model can draw;
* ``forward_passes``: the model passes per image that choosing the mask costs.

and, once, how much the selective score depends on its random masks (``mask_dependence``): the
mean Pearson correlation between an image's K score maps, and the overlap of three selections of
the same size: the top half of the first random mask's map alone (K = 1), of the K-map average
(the paper's), and of the unmasked image's map (``selective_unmasked``). Two random halves
overlap by ``ratio`` on average (``chance_overlap``).

Every strategy draws from a generator seeded alike, so all share the same K random masks;
``hard_ramp`` is measured at ``share`` (0.5: halfway through the steps). :func:`labelled_tiles`
cuts labelled frames into the pool's tiles so the images look like what the selective steps
score; :func:`mechanism_markdown` writes the report from the result, every number read from it.

    smir study mechanism --out notebooks/results/strategies_mechanism
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from smir_lib.data.tiles import tile_boxes
from smir_lib.data.transforms import normalize, resize_short_side
from smir_lib.engine.config import load_config
from smir_lib.engine.pretrain_data import load_split
from smir_lib.engine.provenance import git_commit
from smir_lib.files import atomic_write_text
from smir_lib.models import build_model, load_pretrained
from smir_lib.notebook.measure import class_pixel_counts, load_batch, reconstruction_quality
from smir_lib.patches import mask_to_pixels, n_hidden, patch_grid
from smir_lib.selective import STRATEGIES, choose_masks, forward_passes, selective_mask, top_patch_mask

__all__ = ["strategy_mechanism", "mask_dependence", "labelled_tiles", "mechanism_markdown", "main"]


def mask_dependence(model, images: torch.Tensor, grid, *, k: int = 5, ratio: float = 0.5,
                    generator: torch.Generator | None = None, **score_options) -> dict:
    """How much the selective score of normalised ``images`` (B, 3, H, W) depends on its K random masks.

    Returns ``k_map_correlation`` (mean over images of the mean Pearson correlation between the
    image's K score maps, over patches), ``overlap`` of the K = 1, K = ``k`` and unmasked selections
    (``|A and B| / n_hidden``, mean over images) and ``chance_overlap`` (= ``ratio``, two random halves).
    """
    sel = selective_mask(model, images, grid, k=k, ratio=ratio, generator=generator, return_all=True, **score_options)
    maps = sel.k_scores.flatten(2)  # (B, K, N)
    centred = maps - maps.mean(2, keepdim=True)
    unit = centred / centred.norm(dim=2, keepdim=True)
    corr = unit @ unit.transpose(1, 2)  # (B, K, K) Pearson correlations
    off_diagonal = ~torch.eye(k, dtype=torch.bool)
    count = n_hidden(grid, ratio)
    visible = torch.zeros(len(images), 1, *grid.shape, dtype=torch.bool)
    unmasked = selective_mask(model, images, grid, random_masks=visible, ratio=ratio, **score_options).mask
    chosen = {"k1": top_patch_mask(sel.k_scores[:, 0], count), f"k{k}": sel.mask, "unmasked": unmasked}

    def overlap(a: str, b: str) -> float:
        return ((chosen[a] & chosen[b]).flatten(1).sum(1).double() / count).mean().item()

    return {"k": k, "k_map_correlation": corr[:, off_diagonal].mean().item() if k > 1 else None,
            "overlap": {f"k1_vs_k{k}": overlap("k1", f"k{k}"), f"k{k}_vs_unmasked": overlap(f"k{k}", "unmasked"),
                        "k1_vs_unmasked": overlap("k1", "unmasked")},
            "chance_overlap": ratio}


def strategy_mechanism(model, images: torch.Tensor, labels: torch.Tensor, grid, class_names: Sequence[str], *,
                       k: int = 5, ratio: float = 0.5, share: float = 0.5, seed: int = 0, ignore_index: int = 255,
                       strategies: Sequence[str] = STRATEGIES, **score_options) -> dict:
    """The mechanism of each strategy on normalised ``images`` (B, 3, H, W) with ``labels`` (B, H, W).

    See the module docstring. Returns ``{"n_images", "grid", "n_hidden", "k", "class_names",
    "class_pixel_share", "strategies": {name: {"hidden_share": {class: share}, "gain_db",
    "forward_passes"}}, "mask_dependence": ...}``.
    """
    n_classes = len(class_names)
    all_pixels = class_pixel_counts(labels, n_classes, ignore_index).double()  # (C,)
    out = {"n_images": len(images), "grid": list(grid.shape), "n_hidden": n_hidden(grid, ratio), "k": k,
           "ratio": ratio, "hard_ramp_share": share, "class_names": list(class_names),
           "class_pixel_share": dict(zip(class_names, (all_pixels / all_pixels.sum()).tolist())), "strategies": {}}
    for strategy in strategies:
        found = choose_masks(strategy, model, images, grid, k=k, ratio=ratio, share=share, labels=labels,
                             generator=torch.Generator().manual_seed(seed), **score_options)
        hidden = class_pixel_counts(labels, n_classes, ignore_index, where=mask_to_pixels(found.mask, grid)).double()
        out["strategies"][strategy] = {
            "hidden_share": dict(zip(class_names, (hidden / all_pixels).tolist())),
            "gain_db": reconstruction_quality(model, images, grid, found.mask)["gain_db"],
            "forward_passes": forward_passes(strategy, k)}
    out["mask_dependence"] = mask_dependence(model, images, grid, k=k, ratio=ratio,
                                             generator=torch.Generator().manual_seed(seed), **score_options)
    return out


def labelled_tiles(ds, n_frames: int, tile: int, stride: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The tiles the pool of ``ds`` is cut into (``tile`` px every ``stride`` px), resized to short side
    ``size``, with their labels: images ``(N, 3, s, s')`` in [0, 1] and labels ``(N, s, s')``, from the
    first ``n_frames`` labelled frames (their tiles are the pool's tiles of those frames)."""
    images, labels = [], []
    for i in range(min(n_frames, len(ds))):
        image, label = ds[i][:2]
        for top, left, h, w in tile_boxes(*image.shape[-2:], tile, stride).tolist():
            crop, lab = resize_short_side(image[:, top:top + h, left:left + w], size, label[top:top + h, left:left + w])
            images.append(crop)
            labels.append(lab)
    return torch.stack(images), torch.stack(labels)


def mechanism_markdown(results: dict) -> str:
    """The report of :func:`main`'s JSON (``{"command", "commit", "datasets": {name: result}}``)."""
    lines = ["# Masking strategies: the mechanism, measured (issue 28)", "",
             f"Produced by `{results['command']}` at commit {results['commit'][:12]}; every number below is read "
             "from strategies_mechanism.json. Share hidden = the share of a class's pixels the strategy hides; "
             "gain = the model's hidden-pixel reconstruction over the mean-colour fill, in dB; passes = model "
             "forward passes per image to choose the mask.", ""]
    for name, r in results["datasets"].items():
        classes = r["class_names"]
        dep = r["mask_dependence"]
        lines += [f"## {name}", "", f"{r['source']}. {r['n_images']} images, a {r['grid'][0]}x{r['grid'][1]} grid, "
                  f"{r['n_hidden']} patches hidden by every strategy; K = {r['k']}; hard_ramp at share "
                  f"{r['hard_ramp_share']}. Pixel shares: " + ", ".join(f"{c} {100 * v:.1f} %" for c, v in
                                                                       r["class_pixel_share"].items()) + ".", "",
                  "| strategy | " + " | ".join(f"{c} hidden" for c in classes) + " | gain (dB) | passes |",
                  "|---|" + "---:|" * (len(classes) + 2)]
        for s, m in r["strategies"].items():
            lines.append(f"| {s} | " + " | ".join(f"{100 * m['hidden_share'][c]:.1f} %" for c in classes)
                         + f" | {m['gain_db']:+.2f} | {m['forward_passes']} |")
        overlaps = ", ".join(f"{a.replace('_vs_', ' vs ')} {100 * v:.1f} %" for a, v in dep["overlap"].items())
        corr = "n/a" if dep["k_map_correlation"] is None else f"{dep['k_map_correlation']:.2f}"
        lines += ["", f"How much the score depends on the random masks: the K = {dep['k']} score maps of an image "
                  f"correlate at {corr} (mean Pearson r); the selections overlap: {overlaps} (two random halves: "
                  f"{100 * dep['chance_overlap']:.0f} %).", ""]
    return "\n".join(lines)


def _measure(cfg, checkpoint: Path, n_frames: int, n_images: int, k: int, seed: int) -> dict:
    """One dataset: the model of ``checkpoint`` on the pool's tiles (or test images) of ``cfg``."""
    model = build_model(cfg, out_channels=3)
    load_pretrained(model, checkpoint, reinit_head=False)
    if cfg.pool_tile_size:  # the pool's tiles of the first training frames, with their labels
        ds = load_split(cfg.replace(train_size=None, cache_images=False), "train")
        images, labels = labelled_tiles(ds, n_frames, cfg.pool_tile_size, cfg.pool_tile_stride or cfg.pool_tile_size,
                                        cfg.image_size)
        source = (f"{cfg.pool_tile_size} px tiles every {cfg.pool_tile_stride} px (the pool's) of the first {n_frames} "
                  f"training frames, resized to {cfg.image_size} px")
    else:  # held-back test images at the training size
        ds = load_split(cfg.replace(test_size=None, cache_images=False), "test")
        images, labels = load_batch(ds, range(min(n_images, len(ds))), size=cfg.image_size)
        source = f"the first {len(images)} test images at {cfg.image_size} px"
    grid = patch_grid(*images.shape[-2:], cfg.n_patches)
    with torch.no_grad():
        result = strategy_mechanism(model.eval(), normalize(images), labels, grid, ds.class_names, k=k,
                                    ratio=cfg.mask_ratio, seed=seed, ignore_index=ds.ignore_index)
    return {"source": f"Model {checkpoint}; images: {source}", **result}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``smir study mechanism``."""
    parser.add_argument("--out", default="notebooks/results/strategies_mechanism", help="writes <OUT>.json and <OUT>.md")
    parser.add_argument("--synthetic", default="models/synthetic/pretrain_random",
                        help="a finished synthetic pretraining run folder (default: the shipped teaching model)")
    parser.add_argument("--cwfid", default=None, help="a finished CWFID pretraining run folder (its config's pool tiles)")
    parser.add_argument("--k", type=int, default=5, help="random masks per selective score (the paper: 5)")
    parser.add_argument("--frames", type=int, default=4, help="CWFID training frames whose tiles are measured")
    parser.add_argument("--images", type=int, default=32, help="synthetic test images measured")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    """``smir study mechanism``: measure every strategy and write ``<OUT>.json`` and ``<OUT>.md``."""
    torch.set_num_threads(1)
    found = git_commit()
    commit = "unknown" if found is None else found[0] + (" (with uncommitted changes to the code)" if found[1] else "")
    results = {"command": args.command_line, "commit": commit, "datasets": {}}
    for name, folder in (("synthetic", args.synthetic), ("cwfid", args.cwfid)):
        if folder:
            run_dir = Path(folder)
            cfg = load_config(run_dir / "config.json").replace(cache_images=False)
            results["datasets"][name] = _measure(cfg, run_dir / "pretrained.pt", args.frames, args.images, args.k, args.seed)
    out = Path(args.out)
    atomic_write_text(json.dumps(results, indent=1) + "\n", out.with_suffix(".json"))
    atomic_write_text(mechanism_markdown(results) + "\n", out.with_suffix(".md"))
    print(f"wrote {out}.json and {out}.md")
    return 0
