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

``ms_ssim`` follows pytorch-msssim's arithmetic, but filters each scale's five local statistics
(x, y, x^2, y^2, xy) with two grouped 1-D convolutions (one per direction) instead of ten, on
channels-last tensors (where oneDNN's depthwise filters are fastest), and back-propagates only
through the three statistics that depend on the prediction. With its backward it costs about
half of pytorch-msssim on NCHW tensors and about 0.9x of pytorch-msssim on channels-last ones
(one CPU thread, 8 x 128 px, window 7), and equals ``pytorch_msssim.ms_ssim`` to 1e-4 in value
and gradient (tested).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from pytorch_msssim.ssim import _fspecial_gauss_1d

from smir_lib.patches import PatchGrid

__all__ = ["MS_WEIGHTS", "check_msssim_size", "ms_ssim", "reconstruction_loss", "patch_loss_map",
           "patch_loss_terms"]

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

    The number of scales is ``len(ms_weights)`` and the size check follows it (pytorch-msssim
    always assumes 5). Each scale is one :func:`_ssim_terms` call.
    """
    weights = pred.new_tensor(MS_WEIGHTS if ms_weights is None else tuple(ms_weights))
    check_msssim_size(pred.shape[-2], pred.shape[-1], win_size, len(weights))
    taps = _fspecial_gauss_1d(win_size, win_sigma).to(pred.device, pred.dtype)  # (1, 1, win)
    # channels-last: oneDNN runs these depthwise filters about 1.7x faster than on NCHW tensors
    x = pred.contiguous(memory_format=torch.channels_last)  # (B, C, H, W)
    y = target.contiguous(memory_format=torch.channels_last)
    terms = []
    for level in range(len(weights)):
        ssim_per_channel, cs = _ssim_terms(x, y, taps, data_range)  # (B, C) each
        if level < len(weights) - 1:  # contrast-structure at every scale but the coarsest
            terms.append(torch.relu(cs))
            padding = [s % 2 for s in x.shape[2:]]
            x = F.avg_pool2d(x, kernel_size=2, padding=padding)
            y = F.avg_pool2d(y, kernel_size=2, padding=padding)
    terms.append(torch.relu(ssim_per_channel))
    stacked = torch.stack(terms)  # (levels, B, C)
    return torch.prod(stacked ** weights.view(-1, 1, 1), dim=0).mean()


def _gaussian_filter(stats: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Valid separable Gaussian filter of every channel of ``stats (B, N, H, W)`` at once.

    Two grouped convolutions, down the rows then along the columns; a side shorter than the
    window is left unfiltered, as pytorch-msssim's ``gaussian_filter`` does (it warns; we do not).
    """
    n, win = stats.shape[1], taps.shape[-1]
    if stats.shape[-2] >= win:
        stats = F.conv2d(stats, taps.view(1, 1, win, 1).expand(n, 1, win, 1), groups=n)
    if stats.shape[-1] >= win:
        stats = F.conv2d(stats, taps.view(1, 1, 1, win).expand(n, 1, 1, win), groups=n)
    return stats


def _ssim_terms(x: torch.Tensor, y: torch.Tensor, taps: torch.Tensor,
                data_range: float, K: tuple[float, float] = (0.01, 0.03)
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """pytorch-msssim's ``_ssim``: per-channel mean SSIM and contrast-structure, ``(B, C)`` each.

    The statistics that depend on the prediction, (x, x^2, xy), are filtered in one grouped pass
    and those of the target alone, (y, y^2), in another: back-propagation then runs through 3C
    channels instead of 5C. The arithmetic after the filter is pytorch-msssim's, line for line.
    """
    c1, c2 = (K[0] * data_range) ** 2, (K[1] * data_range) ** 2
    mu1, e_xx, e_xy = _gaussian_filter(torch.cat([x, x * x, x * y], dim=1), taps).chunk(3, dim=1)
    mu2, e_yy = _gaussian_filter(torch.cat([y, y * y], dim=1), taps).chunk(2, dim=1)
    mu1_sq, mu2_sq, mu1_mu2 = mu1.pow(2), mu2.pow(2), mu1 * mu2  # (B, C, h, w) each
    sigma1_sq, sigma2_sq, sigma12 = e_xx - mu1_sq, e_yy - mu2_sq, e_xy - mu1_mu2
    cs_map = (2 * sigma12 + c2) / (sigma1_sq + sigma2_sq + c2)
    ssim_map = ((2 * mu1_mu2 + c1) / (mu1_sq + mu2_sq + c1)) * cs_map
    return ssim_map.flatten(2).mean(-1), cs_map.flatten(2).mean(-1)


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, *, data_range: float = 1.0,
                        win_size: int = 11, win_sigma: float = 1.5,
                        ms_weights: Sequence[float] | None = None, l1_weight: float = 1.0,
                        msssim_weight: float = 1.0) -> torch.Tensor:
    """The pretraining loss: ``l1_weight * mean|pred - target| + msssim_weight * (1 - MS-SSIM)``.

    ``pred`` and ``target`` are ``(B, C, H, W)``, normalised images in the authors' setting, with
    ``data_range = 1.0`` as they use it. The loss covers every pixel, hidden or visible. It is
    computed in float32 even under autocast (half-precision MS-SSIM is fragile). Returns a
    scalar.
    """
    with torch.autocast(pred.device.type, enabled=False):
        pred, target = pred.float(), target.float()
        l1 = (pred - target).abs().mean()
        similarity = ms_ssim(pred, target, data_range=data_range, win_size=win_size,
                             win_sigma=win_sigma, ms_weights=ms_weights)
        return l1_weight * l1 + msssim_weight * (1.0 - similarity)


class _Side(NamedTuple):
    """What ``patch_loss_map`` needs about one side (rows or columns) of the grid."""

    window_onehot: torch.Tensor  # (g, L): 1 where window position l lies inside band g
    pixel_onehot: torch.Tensor  # (g, H): 1 where pixel h belongs to band g
    uses_raw: bool  # some band is shorter than the window: raw positions follow filtered ones


@functools.lru_cache(maxsize=64)
def _side(edges: tuple[int, ...], win_size: int, device: torch.device) -> _Side:
    """Membership matrices of one side, cached so repeated calls copy nothing to the device.

    A window position ``l`` of the valid-filtered side covers pixels ``l .. l + win_size - 1``;
    it belongs to band ``[a, b)`` when ``a <= l <= b - win_size``, i.e. when the window lies
    entirely inside the band. ``pytorch_msssim`` does not filter a crop along a side shorter
    than the window (it warns and skips), so a short band uses its raw pixels instead: they are
    numbered after the filtered positions, ``offset + a .. offset + b - 1``.
    """
    size, n_bands = edges[-1], len(edges) - 1
    n_filtered = max(size - win_size + 1, 0)
    uses_raw = any(b - a < win_size for a, b in zip(edges[:-1], edges[1:]))
    windows = torch.zeros(n_bands, n_filtered + (size if uses_raw else 0))  # (g, L)
    pixels = torch.zeros(n_bands, size)  # (g, H)
    for g, (a, b) in enumerate(zip(edges[:-1], edges[1:])):  # over bands (~21), not pixels
        if b - a >= win_size:
            windows[g, a:b - win_size + 1] = 1.0
        else:
            windows[g, n_filtered + a:n_filtered + b] = 1.0
        pixels[g, a:b] = 1.0
    return _Side(windows.to(device), pixels.to(device), uses_raw)


@functools.lru_cache(maxsize=16)
def _gauss_taps(win_size: int, win_sigma: float) -> tuple[float, ...]:
    """The weights of pytorch-msssim's 1-D Gaussian window (its float32 values), cached."""
    return tuple(_fspecial_gauss_1d(win_size, win_sigma).flatten().tolist())


def _filter_side(x: torch.Tensor, taps: Sequence[float], dim: int, uses_raw: bool) -> torch.Tensor:
    """Valid 1-D filter of ``x`` along ``dim``, as a weighted sum of shifted slices.

    (Cheaper than a grouped convolution on the CPU.) With ``uses_raw`` the unfiltered ``x`` is
    appended along ``dim`` for bands shorter than the window.
    """
    n = x.shape[dim] - len(taps) + 1
    if n <= 0:  # side shorter than the window: nothing to filter, only raw pixels
        return x
    out = torch.mul(x.narrow(dim, 0, n), taps[0])
    for t in range(1, len(taps)):
        out.add_(x.narrow(dim, t, n), alpha=taps[t])
    return torch.cat([out, x], dim=dim) if uses_raw else out


CPU_BLOCK_PIXELS = 2 ** 18
"""On the CPU, ``patch_loss_map`` scores about this many pixels (4 images of 256x256) at a time."""


@torch.no_grad()
def patch_loss_map(pred: torch.Tensor, target: torch.Tensor, grid: PatchGrid, *,
                   win_size: int = 3, data_range: float = 1.0, win_sigma: float = 1.5,
                   K: tuple[float, float] = (0.01, 0.03),
                   block_pixels: int | None = None) -> torch.Tensor:
    """Per-patch score ``L1 + (1 - SSIM)`` of reconstructions ``pred`` against ``target``.

    ``pred`` and ``target`` are ``(B, C, H, W)`` on the grid's ``H x W``; returns ``(B, gh, gw)``
    (float32, or float64 for float64 inputs). The SSIM of a patch only sees that patch's pixels:
    we compute the SSIM map of the whole image with valid Gaussian windows (the separable filter
    of pytorch-msssim, as shifted slices), then average, per patch, only the window positions
    lying entirely inside it: a matrix product with a 0/1 membership matrix on each side sums
    every patch of every image at once. No loop over patches, no host-device synchronisation.

    The score ranks patches: it is computed without gradients, in place, to keep memory
    traffic low. On the CPU the batch is scored in blocks of ``block_pixels`` pixels (default
    ``CPU_BLOCK_PIXELS``, a few images), each block in one vectorised pass, because
    intermediates that stay in the cache make it several times faster than one pass over a
    large batch; on a GPU the default is the whole batch at once. ``block_pixels=0`` never
    splits the batch.
    """
    l1, dissimilarity = patch_loss_terms(pred, target, grid, win_size=win_size, data_range=data_range,
                                         win_sigma=win_sigma, K=K, block_pixels=block_pixels)
    return l1.add_(dissimilarity)


@torch.no_grad()
def patch_loss_terms(pred: torch.Tensor, target: torch.Tensor, grid: PatchGrid, *,
                     win_size: int = 3, data_range: float = 1.0, win_sigma: float = 1.5,
                     K: tuple[float, float] = (0.01, 0.03),
                     block_pixels: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The two terms of :func:`patch_loss_map`, ``(L1, 1 - SSIM)``, each ``(B, gh, gw)``.

    Their sum is the patch score. Apart they say *why* a patch scores high: a wrong colour shows
    in L1, lost fine structure (pixel grain, edges) in the SSIM term.
    """
    if tuple(pred.shape[-2:]) != (grid.height, grid.width) or pred.shape != target.shape:
        raise ValueError(f"pred is {tuple(pred.shape)}, target {tuple(target.shape)}, the grid "
                         f"is for {grid.height}x{grid.width}: pass (B, C, H, W) pairs on its size")
    with torch.autocast(pred.device.type, enabled=False):  # float32 sums, even under AMP
        terms = _patch_loss_blocks(pred, target, grid, win_size=win_size, data_range=data_range,
                                   win_sigma=win_sigma, K=K, block_pixels=block_pixels)
    return terms[0], terms[1]


def _patch_loss_blocks(pred: torch.Tensor, target: torch.Tensor, grid: PatchGrid, *,
                       win_size: int, data_range: float, win_sigma: float,
                       K: tuple[float, float], block_pixels: int | None) -> torch.Tensor:
    """Split the batch into blocks (see ``patch_loss_map``) and score each: ``(2, B, gh, gw)``,
    the L1 and the 1 - SSIM term."""
    dtype = torch.float64 if pred.dtype == torch.float64 else torch.float32
    n_img = pred.shape[0]
    if block_pixels is None:
        block_pixels = 0 if pred.device.type == "cuda" else CPU_BLOCK_PIXELS
    block = n_img if block_pixels <= 0 else max(1, block_pixels // (grid.height * grid.width))
    if block >= n_img:
        return _patch_loss_block(pred.to(dtype), target.to(dtype), grid, win_size=win_size,
                                 data_range=data_range, win_sigma=win_sigma, K=K)
    scores = torch.empty(2, n_img, *grid.shape, dtype=dtype, device=pred.device)  # (2, B, gh, gw)
    for start in range(0, n_img, block):  # blocks of images, each fully vectorised
        stop = min(start + block, n_img)
        scores[:, start:stop] = _patch_loss_block(
            pred[start:stop].to(dtype), target[start:stop].to(dtype), grid, win_size=win_size,
            data_range=data_range, win_sigma=win_sigma, K=K)
    return scores


def _patch_loss_block(pred: torch.Tensor, target: torch.Tensor, grid: PatchGrid, *,
                      win_size: int, data_range: float, win_sigma: float,
                      K: tuple[float, float]) -> torch.Tensor:
    """``patch_loss_terms`` of one block of images, ``(B, C, H, W)`` -> ``(2, B, gh, gw)``."""
    n_chan, dtype = pred.shape[1], pred.dtype
    rows = _side(grid.row_edges, win_size, pred.device)
    cols = _side(grid.col_edges, win_size, pred.device)
    taps = _gauss_taps(win_size, win_sigma)  # e.g. (0.31, 0.39, 0.31)

    # SSIM needs the local means of x, y, x^2, y^2 and xy. Each is filtered down the rows, then
    # along the columns; the arithmetic below follows pytorch-msssim's _ssim step by step, so
    # that rounding (which matters where the local variance is ~0) is the same as the loop's.
    def smooth(t: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, Lr, Lc)
        return _filter_side(_filter_side(t, taps, 2, rows.uses_raw), taps, 3, cols.uses_raw)

    mu1, mu2 = smooth(pred), smooth(target)  # (B, C, Lr, Lc) each
    sigma1_sq = smooth(pred * pred).sub_(mu1 * mu1)  # E[x^2] - mu1^2
    sigma2_sq = smooth(target * target).sub_(mu2 * mu2)  # E[y^2] - mu2^2
    mu1_mu2 = mu1 * mu2
    sigma12 = smooth(pred * target).sub_(mu1_mu2)  # E[xy] - mu1 mu2

    # SSIM map, in place:  (2 mu1 mu2 + c1) / (mu1^2 + mu2^2 + c1)  *  cs,
    # cs = (2 sigma12 + c2) / (sigma1^2 + sigma2^2 + c2).
    c1, c2 = (K[0] * data_range) ** 2, (K[1] * data_range) ** 2
    cs = sigma12.mul_(2).add_(c2).div_(sigma1_sq.add_(sigma2_sq).add_(c2))
    mu_sq = mu1.square_().add_(mu2.square_()).add_(c1)  # mu1^2 + mu2^2 + c1
    ssim_map = mu1_mu2.mul_(2).add_(c1).div_(mu_sq).mul_(cs)  # (B, C, Lr, Lc)

    # Sum the map over each patch's window positions: (g_h, Lr) @ (B, Lr, Lc) @ (Lc, g_w).
    ssim_sum = rows.window_onehot.to(dtype) @ ssim_map.sum(1) @ cols.window_onehot.to(dtype).T
    ssim_count = rows.window_onehot.sum(1)[:, None] * cols.window_onehot.sum(1) * n_chan
    # The L1 term averages |pred - target| over the patch's pixels and channels.
    abs_diff = torch.sub(pred, target).abs_().sum(1)  # (B, H, W)
    l1_sum = rows.pixel_onehot.to(dtype) @ abs_diff @ cols.pixel_onehot.to(dtype).T
    l1_count = rows.pixel_onehot.sum(1)[:, None] * cols.pixel_onehot.sum(1) * n_chan  # (gh, gw)
    return torch.stack([l1_sum / l1_count, 1.0 - ssim_sum / ssim_count])
