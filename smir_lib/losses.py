"""The reconstruction loss, and the per-patch loss map that selective masking ranks patches by.

Both losses add an L1 term (are the colours right?) to a structural term (is the texture right?):

* ``reconstruction_loss``: ``mean |y_hat - y| + (1 - MS-SSIM(y_hat, y))`` over whole images,
  trained on (the authors use ``pytorch_msssim.MS_SSIM(data_range=1.0)``, 11x11 window, 5 scales);
* ``patch_loss_map``: for every patch ``p``,
  ``s_p = mean |y_hat_p - y_p| + (1 - SSIM(y_hat_p, y_p))`` with a 3x3 window computed on the
  patch alone, exactly what the authors get by calling ``pytorch_msssim.ssim`` on each crop.

The authors score one patch at a time in a Python loop. Here ``patch_loss_map`` computes the SSIM
map once over the whole image and averages it per patch with two small matrix products, keeping
only the window positions that lie entirely inside a patch. That gives the same numbers as the
loop (the tests check it to 1e-5) for a whole batch of images at once.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from pytorch_msssim.ssim import _fspecial_gauss_1d, _ssim

from .patches import PatchGrid

__all__ = ["MS_WEIGHTS", "check_msssim_size", "ms_ssim", "reconstruction_loss", "patch_loss_map"]

MS_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
"""pytorch-msssim's (and Wang et al. 2003's) weights of the 5 MS-SSIM scales, finest first."""


def check_msssim_size(height: int, width: int, win_size: int = 11, levels: int = 5) -> None:
    """Raise ``ValueError`` if an ``height x width`` image is too small for MS-SSIM.

    MS-SSIM halves the image ``levels - 1`` times and filters every scale with a ``win_size``
    window, so the shorter side must exceed ``(win_size - 1) * 2 ** (levels - 1)``: 160 px for
    the default 11x11 window and 5 scales.
    """
    limit = (win_size - 1) * 2 ** (levels - 1)
    if min(height, width) <= limit:
        raise ValueError(
            f"image is {height}x{width}; MS-SSIM with a {win_size}x{win_size} window and "
            f"{levels} scales needs the shorter side > {limit} px: use a larger crop, a smaller "
            "win_size, or fewer scales (ms_weights)")


def ms_ssim(pred: torch.Tensor, target: torch.Tensor, *, data_range: float = 1.0,
            win_size: int = 11, win_sigma: float = 1.5,
            ms_weights: Sequence[float] | None = None) -> torch.Tensor:
    """Mean MS-SSIM of a batch ``(B, C, H, W)``, as ``pytorch_msssim.ms_ssim`` computes it.

    Same arithmetic as pytorch-msssim (built on its ``_ssim``), except that the number of scales
    is ``len(ms_weights)`` and the size check follows it, instead of always assuming 5 scales.
    """
    weights = pred.new_tensor(MS_WEIGHTS if ms_weights is None else tuple(ms_weights))
    check_msssim_size(pred.shape[-2], pred.shape[-1], win_size, len(weights))
    win = _fspecial_gauss_1d(win_size, win_sigma).repeat(pred.shape[1], 1, 1, 1)  # (C, 1, 1, win)
    x, y = pred, target
    cs_per_scale = []
    for level in range(len(weights)):
        ssim_per_channel, cs = _ssim(x, y, data_range=data_range, win=win, size_average=False)
        if level < len(weights) - 1:  # contrast-structure at every scale but the coarsest
            cs_per_scale.append(torch.relu(cs))
            padding = [s % 2 for s in x.shape[2:]]
            x = F.avg_pool2d(x, kernel_size=2, padding=padding)
            y = F.avg_pool2d(y, kernel_size=2, padding=padding)
    terms = torch.stack(cs_per_scale + [torch.relu(ssim_per_channel)])  # (levels, B, C)
    return torch.prod(terms ** weights.view(-1, 1, 1), dim=0).mean()


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, *, data_range: float = 1.0,
                        win_size: int = 11, win_sigma: float = 1.5,
                        ms_weights: Sequence[float] | None = None, l1_weight: float = 1.0,
                        msssim_weight: float = 1.0) -> torch.Tensor:
    """The pretraining loss: ``l1_weight * mean|pred - target| + msssim_weight * (1 - MS-SSIM)``.

    ``pred`` and ``target`` are ``(B, C, H, W)``, normalised images in the authors' setting, with
    ``data_range = 1.0`` as they use it. The loss covers every pixel, hidden or visible. It is
    computed in float32 even under autocast. Returns a scalar.
    """
    pred, target = pred.float(), target.float()
    l1 = (pred - target).abs().mean()
    similarity = ms_ssim(pred, target, data_range=data_range, win_size=win_size,
                         win_sigma=win_sigma, ms_weights=ms_weights)
    return l1_weight * l1 + msssim_weight * (1.0 - similarity)


def _band_index(edges: Sequence[int], win_size: int) -> tuple[list[int], list[int]]:
    """For one image side: which positions of ``cat([valid-filtered, raw])`` to keep, per band.

    ``pytorch_msssim`` filters a crop along a side only if the crop is at least ``win_size``
    long there (otherwise it skips that side, with a warning). For a band ``[a, b)`` that is
    long enough, the valid window positions lie at ``a .. b - win_size`` of the filtered side;
    for a short band we keep its raw pixels ``a .. b - 1``, stored after the filtered ones.
    Returns ``(index, band)``: positions to gather, and the band each one belongs to.
    """
    offset = max(edges[-1] - win_size + 1, 0)  # length of the valid-filtered side
    index, band = [], []
    for i, (a, b) in enumerate(zip(edges[:-1], edges[1:])):  # loop over bands (~21), not pixels
        positions = range(a, b - win_size + 1) if b - a >= win_size else range(offset + a, offset + b)
        index += positions
        band += [i] * len(positions)
    return index, band


class _SideOperators(NamedTuple):
    """Everything ``patch_loss_map`` needs about one side of the grid, built once per grid."""

    window_index: torch.Tensor  # (R,) positions of the filtered-then-raw side to keep
    window_onehot: torch.Tensor  # (g, R) 1 where a kept window position belongs to band g
    pixel_onehot: torch.Tensor  # (g, H) 1 where a pixel belongs to band g
    uses_raw: bool  # some band is shorter than the window, so raw pixels are needed too


@functools.lru_cache(maxsize=64)
def _side_operators(edges: tuple[int, ...], win_size: int, device: torch.device) -> _SideOperators:
    """Cached per (edges, window, device): repeated calls cost no host-to-device copy."""
    n_bands = len(edges) - 1
    index, band = _band_index(edges, win_size)
    sizes = torch.tensor([b - a for a, b in zip(edges[:-1], edges[1:])])
    pixel_band = torch.repeat_interleave(torch.arange(n_bands), sizes)  # (H,)
    return _SideOperators(
        torch.tensor(index, dtype=torch.long).to(device),
        F.one_hot(torch.tensor(band, dtype=torch.long), n_bands).T.float().to(device),
        F.one_hot(pixel_band, n_bands).T.float().to(device),
        uses_raw=min(sizes.tolist()) < win_size)


@functools.lru_cache(maxsize=16)
def _gauss_window(win_size: int, win_sigma: float, channels: int, device: torch.device):
    """pytorch-msssim's 1-D Gaussian window, ``(C, 1, 1, win_size)``, cached per device."""
    return _fspecial_gauss_1d(win_size, win_sigma).repeat(channels, 1, 1, 1).to(device)


def _filter_side(x: torch.Tensor, win: torch.Tensor, dim: int,
                 side: _SideOperators) -> torch.Tensor:
    """Valid Gaussian filter of ``x (N, C, H, W)`` along ``dim`` (2 or 3), then keep positions.

    The raw side is appended after the filtered one when short bands need raw pixels.
    """
    weight = win if dim == 3 else win.transpose(2, 3)  # (C, 1, 1, w) or (C, 1, w, 1)
    parts = []
    if x.shape[dim] >= win.shape[-1]:
        parts.append(F.conv2d(x, weight, groups=x.shape[1]))
    if side.uses_raw:
        parts.append(x)
    return torch.cat(parts, dim=dim).index_select(dim, side.window_index)


def patch_loss_map(pred: torch.Tensor, target: torch.Tensor, grid: PatchGrid, *,
                   win_size: int = 3, data_range: float = 1.0, win_sigma: float = 1.5,
                   K: tuple[float, float] = (0.01, 0.03)) -> torch.Tensor:
    """Per-patch score ``L1 + (1 - SSIM)`` of reconstructions ``pred`` against ``target``.

    ``pred`` and ``target`` are ``(B, C, H, W)`` on the grid's ``H x W``. Returns ``(B, gh, gw)``
    float32. The SSIM of a patch only looks at pixels of that patch: from the SSIM map of the
    whole image (valid Gaussian windows) we average, per patch, just the window positions that
    fit inside it. One matrix product per side then sums the map over all patches at once.
    """
    if tuple(pred.shape[-2:]) != (grid.height, grid.width) or pred.shape != target.shape:
        raise ValueError(f"pred is {tuple(pred.shape)}, target {tuple(target.shape)}, the grid "
                         f"is for {grid.height}x{grid.width}: pass (B, C, H, W) pairs on its size")
    pred, target = pred.float(), target.float()
    n_img, n_chan, device = pred.shape[0], pred.shape[1], pred.device
    win = _gauss_window(win_size, win_sigma, n_chan, device)  # (C, 1, 1, w)
    rows = _side_operators(grid.row_edges, win_size, device)
    cols = _side_operators(grid.col_edges, win_size, device)

    # The five local statistics of SSIM, for pred and target at once: (5 * B, C, H, W).
    stats = torch.cat([pred, target, pred * pred, target * target, pred * target])
    stats = _filter_side(stats, win, 2, rows)  # (5B, C, R, W): filter the rows
    stats = _filter_side(stats, win, 3, cols)  # (5B, C, R, Q): then the columns
    mu1, mu2, xx, yy, xy = stats.view(5, n_img, n_chan, *stats.shape[-2:])
    c1, c2 = (K[0] * data_range) ** 2, (K[1] * data_range) ** 2
    cs = (2 * (xy - mu1 * mu2) + c2) / ((xx - mu1 ** 2) + (yy - mu2 ** 2) + c2)
    ssim_map = (2 * mu1 * mu2 + c1) / (mu1 ** 2 + mu2 ** 2 + c1) * cs  # (B, C, R, Q)

    # Sum the map over each patch's window positions with one-hot membership matrices.
    ssim_sum = rows.window_onehot @ ssim_map.sum(1) @ cols.window_onehot.T  # (B, gh, gw)
    ssim_count = rows.window_onehot.sum(1)[:, None] * cols.window_onehot.sum(1) * n_chan

    # The L1 term averages |pred - target| over the patch's pixels and channels.
    l1_sum = rows.pixel_onehot @ (pred - target).abs().sum(1) @ cols.pixel_onehot.T  # (B, gh, gw)
    l1_count = rows.pixel_onehot.sum(1)[:, None] * cols.pixel_onehot.sum(1) * n_chan  # (gh, gw)

    return l1_sum / l1_count + (1.0 - ssim_sum / ssim_count)
