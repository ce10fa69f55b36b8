"""What selective masking costs: patch scoring and whole mask generation, against references.

Two comparisons, both on ``256 x 256`` images (a 21x21 grid of 441 patches) with ``K = 5``:

(a) **Patch-loss map** from given reconstructions: :func:`smir_lib.losses.patch_loss_map`
    (one vectorised pass over a batch) against :func:`benchmarks.reference.patch_loss_map_loop`
    (one patch at a time, an ``.item()`` per patch, as the authors' code). Same score, so the
    ratio is the price of the loop. Target: the vectorised map at least 100x faster per image.
    The loop takes about a second per reconstruction on a CPU, so it is timed on the first
    ``loop_images`` reconstructions only; both sides are compared per image.

(b) **Whole selective-mask generation** (:func:`smir_lib.selective.selective_mask`: K random
    masks, K reconstructions, scoring, top-n selection) against its *floor*: the same ``B * K``
    forward passes on already-masked copies, in the same chunks, with nothing else. Whatever
    selective masking adds on top of the reconstructions it cannot avoid shows in this ratio.
    Target: at most 1.25x the floor.
"""

from __future__ import annotations

import math

import torch

from .harness import BenchResult, compare, ratio

__all__ = ["bench_patch_loss_map", "bench_selective_mask"]


def _reconstruction_pair(n: int, size: int, generator: torch.Generator,
                         device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised-looking targets and plausible reconstructions (target + noise): ``(n, 3, H, W)``."""
    target = torch.randn(n, 3, size, size, generator=generator).to(device)
    pred = target + 0.3 * torch.randn(n, 3, size, size, generator=generator).to(device)
    return pred, target


def bench_patch_loss_map(*, images: int = 8, k: int = 5, size: int = 256, loop_images: int = 2,
                         device: torch.device, warmup: int = 1, repeats: int = 3,
                         clock: str = "wall", seed: int = 0) -> BenchResult:
    """(a) Vectorised patch-loss map of ``images * k`` reconstructions against the per-patch loop."""
    from smir_lib.losses import patch_loss_map
    from smir_lib.patches import patch_grid

    from .reference import patch_loss_map_loop

    grid = patch_grid(size, size)
    gen = torch.Generator().manual_seed(seed)
    n = images * k
    pred, target = _reconstruction_pair(n, size, gen, device)  # (B*K, 3, H, W) each
    loop_n = min(loop_images, n)
    # The two sides must compute the same score, or the ratio means nothing.
    fast = patch_loss_map(pred[:loop_n], target[:loop_n], grid).cpu()
    slow = patch_loss_map_loop(pred[:loop_n], target[:loop_n], grid)
    max_diff = (fast - slow).abs().max().item()

    timings = compare({
        f"vectorised ({n} recon.)": (lambda: patch_loss_map(pred, target, grid), n),
        f"vectorised ({loop_n} recon.)": (lambda: patch_loss_map(pred[:loop_n], target[:loop_n], grid), loop_n),
        f"per-patch loop ({loop_n} recon.)": (lambda: patch_loss_map_loop(pred[:loop_n], target[:loop_n], grid), loop_n),
    }, device=device, warmup=warmup, repeats=repeats, clock=clock)
    vec, vec_small, loop = timings.values()
    result = BenchResult("scoring.patch_loss_map", params={
        "images": images, "k": k, "reconstructions": n, "size": size, "grid": list(grid.shape),
        "n_patches": grid.n_patches, "loop_reconstructions": loop_n, "device": str(device),
        "warmup": warmup, "repeats": repeats, "clock": clock})
    result.add_timings(timings)
    result.ratios["loop / vectorised (per image)"] = ratio(loop, vec)
    result.ratios["loop / vectorised (same inputs)"] = ratio(loop, vec_small)
    result.add_target("loop / vectorised (per image)", ratio(loop, vec), at_least=100.0,
                      description="vectorised patch-loss map at least 100x faster than the loop")
    result.values["max |vectorised - loop|"] = max_diff
    result.values["scored images/s (K reconstructions each)"] = vec.items_per_second / k
    return result


def _masked_copies(images: torch.Tensor, grid, k: int, ratio_: float, generator: torch.Generator,
                   fill: float) -> torch.Tensor:
    """The ``B * K`` randomly masked copies the floor feeds to the model: ``(B * K, 3, H, W)``."""
    from smir_lib.patches import mask_images, random_patch_mask

    b = images.shape[0]
    masks = random_patch_mask(b * k, grid, ratio_, generator=generator).to(images.device)
    copies = images.repeat_interleave(k, dim=0)  # (B*K, 3, H, W): image i at rows i*K..i*K+K-1
    return mask_images(copies, masks, grid, fill)


def bench_selective_mask(*, preset: str = "tiny", images: int = 8, k: int = 5, size: int = 256,
                         chunk_size: int | None = None, amp: bool = False,
                         device: torch.device, warmup: int = 1, repeats: int = 3,
                         clock: str = "wall", seed: int = 0) -> BenchResult:
    """(b) ``selective_mask`` against the ``images * k`` bare forward passes it cannot avoid."""
    from smir_lib.models import build_unet
    from smir_lib.patches import patch_grid
    from smir_lib.selective import selective_mask

    grid = patch_grid(size, size)
    gen = torch.Generator().manual_seed(seed)
    model = build_unet(preset).to(device).eval()
    images_t = torch.randn(images, 3, size, size, generator=gen).to(device)  # (B, 3, H, W)
    n = images * k
    chunk = chunk_size or n
    copies = _masked_copies(images_t, grid, k, 0.5, gen, 0.0)  # (B*K, 3, H, W)

    from smir_lib.runtime import amp_dtype as amp_dtype_of
    from smir_lib.runtime import autocast

    mode = "auto" if amp else "off"  # the engine's policy: mixed precision on CUDA only
    amp_dtype = amp_dtype_of(mode, device)
    use_amp = amp_dtype is not None

    def floor() -> None:
        with torch.inference_mode(), autocast(mode, device):
            for start in range(0, n, chunk):
                model(copies[start:start + chunk])

    mask_gen = torch.Generator().manual_seed(seed + 1)  # masks are drawn on the CPU, then moved

    def selective() -> None:
        selective_mask(model, images_t, grid, k=k, generator=mask_gen, chunk_size=chunk,
                       amp=mode)

    timings = compare({f"selective_mask (B={images}, K={k})": (selective, images),
                       f"floor: {n} forward passes": (floor, images)},
                      device=device, warmup=warmup, repeats=repeats, clock=clock)
    sel, flo = timings.values()
    result = BenchResult(f"scoring.selective_mask[{preset}]", params={
        "preset": preset, "images": images, "k": k, "size": size, "chunk_size": chunk,
        "forward_passes_per_call": math.ceil(n / chunk), "amp": use_amp,
        "amp_dtype": str(amp_dtype).replace("torch.", "") if use_amp else None,
        "device": str(device), "warmup": warmup, "repeats": repeats, "clock": clock})
    result.add_timings(timings)
    r = ratio(sel, flo)
    result.ratios["selective / floor"] = r
    result.add_target("selective / floor", r, at_most=1.25,
                      description="whole selective-mask generation at most 1.25x the K forward passes")
    result.values["selected images/s"] = sel.items_per_second
    return result
