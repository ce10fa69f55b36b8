"""What a pretraining step costs, and which part of it is masking and which the MS-SSIM loss.

One pretraining step is: draw random patch masks, hide the patches (fill 0.0 = mean colour),
forward, loss ``L1 + (1 - MS-SSIM)`` against the full image, backward, Adam step. We time three
versions of it on the same model and batch, interleaved:

* ``base``: fed a *precomputed* masked batch, plain L1 loss: the cheapest step there can be;
* ``+ MS-SSIM``: the same precomputed batch, the full reconstruction loss;
* ``+ masking``: the full step, masks drawn and applied inside the step (what training does).

so ``MS-SSIM overhead = (+ MS-SSIM) / base - 1`` and
``masking overhead = (+ masking) / (+ MS-SSIM) - 1``. The target is on masking and the data
handling inside the step (mask drawing, expansion to pixels, filling, moving the batch to the
device): at most 15 %. Because that difference of two whole steps drowns in timing noise on a
busy machine, the masking and data handling are also timed *alone*, interleaved with the steps,
and the target is judged on ``(masking alone) / (+ MS-SSIM step)``. Augmentation happens in the data loader and is measured by
``benchmarks/data_pipeline.py``; an inline-augmentation variant is reported for information.

On a GPU with ``amp=True`` the forward runs under ``torch.autocast`` (bfloat16 where supported,
else float16 with a ``GradScaler``) and the loss in float32, as the paper preset trains.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .harness import BenchResult, compare, ratio

__all__ = ["bench_training_step"]


def _make_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, device: torch.device,
               amp: bool, amp_dtype: torch.dtype, scaler) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One optimisation step ``(inputs, targets) -> None`` with optional autocast + scaler."""

    def step(inputs: torch.Tensor, targets: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
            pred = model(inputs)
        loss = loss_fn(pred.float(), targets)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()

    return step


def bench_training_step(*, preset: str = "tiny", batch: int = 8, size: int = 256,
                        device: torch.device, amp: bool = False, inline_augment: bool = True,
                        warmup: int = 1, repeats: int = 3, clock: str = "wall",
                        seed: int = 0) -> BenchResult:
    """Images/s of the three step versions above (and the inline-augmentation one)."""
    from smir_lib.data.transforms import TrainAugment, normalize
    from smir_lib.losses import reconstruction_loss
    from smir_lib.models import build_unet
    from smir_lib.patches import mask_images, patch_grid, random_patch_mask

    amp = bool(amp and device.type == "cuda")
    gen = torch.Generator().manual_seed(seed)
    model = build_unet(preset).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    # bfloat16 where the GPU has it (no loss scaling needed), else float16 with a GradScaler.
    amp_dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda") if amp and amp_dtype == torch.float16 else None
    grid = patch_grid(size, size)

    # The loader hands over [0, 1] images on the CPU; a crop of 1.25x leaves room to augment.
    raw = torch.rand(batch, 3, size, size, generator=gen)  # (B, 3, H, W) in [0, 1], CPU
    raw_large = torch.rand(batch, 3, size * 5 // 4, size * 5 // 4, generator=gen)
    targets_pre = normalize(raw).to(device)  # (B, 3, H, W)
    inputs_pre = mask_images(targets_pre, random_patch_mask(batch, grid, generator=gen).to(device), grid)

    def l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (pred - target).abs().mean()

    step_l1 = _make_step(model, optimizer, l1, device=device, amp=amp, amp_dtype=amp_dtype,
                         scaler=scaler)
    step_full = _make_step(model, optimizer, reconstruction_loss, device=device, amp=amp,
                           amp_dtype=amp_dtype, scaler=scaler)

    def prepare(images01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the training loop does to a loader batch before the step: (inputs, targets)."""
        targets = normalize(images01.to(device, non_blocking=True))  # (B, 3, H, W)
        masks = random_patch_mask(batch, grid, generator=gen).to(device)  # (B, gh, gw)
        return mask_images(targets, masks, grid), targets

    def masked_step(images01: torch.Tensor) -> None:
        step_full(*prepare(images01))

    augment = TrainAugment(size=size)

    def augmented_step() -> None:
        (images01,) = augment(raw_large, generator=gen)  # (B, 3, size, size), per-sample params
        masked_step(images01)

    sides: dict[str, tuple[Callable[[], None], int]] = {
        "base: premasked batch, L1": (lambda: step_l1(inputs_pre, targets_pre), batch),
        "+ MS-SSIM: premasked, L1 + MS-SSIM": (lambda: step_full(inputs_pre, targets_pre), batch),
        "+ masking: full step": (lambda: masked_step(raw), batch),
        "masking + data handling alone": (lambda: prepare(raw), batch),
    }
    if inline_augment:
        sides["+ inline augmentation (info)"] = (augmented_step, batch)
    timings = compare(sides, device=device, warmup=warmup, repeats=repeats, clock=clock)
    base, msssim, full = (timings[name] for name in list(sides)[:3])

    result = BenchResult(f"training_step[{preset}]", params={
        "preset": preset, "batch": batch, "size": size, "amp": amp,
        "amp_dtype": str(amp_dtype).replace("torch.", "") if amp else None, "optimizer": "Adam(lr=3e-3)",
        "device": str(device), "warmup": warmup, "repeats": repeats, "clock": clock})
    result.add_timings(timings)
    alone = timings["masking + data handling alone"]
    direct = ratio(alone, msssim)
    result.ratios["MS-SSIM overhead (vs L1 step)"] = ratio(msssim, base) - 1.0
    result.ratios["masking overhead, step vs premasked step"] = ratio(full, msssim) - 1.0
    result.ratios["masking + data handling, timed alone / step"] = direct
    result.ratios["full step / base step"] = ratio(full, base)
    # The target is judged on the directly timed part: the difference of two whole steps is
    # buried in their noise on a busy machine (it came out negative in some of our runs).
    result.add_target("masking + data handling, timed alone / step", direct, at_most=0.15,
                      description="masking and in-step data handling add at most 15 %")
    if inline_augment:
        result.ratios["inline augmentation overhead (info)"] = ratio(timings["+ inline augmentation (info)"], full) - 1.0
        result.notes.append("inline augmentation runs kornia in the training process; the data "
                            "loader does it in workers, so it is not part of the 15 % target")
    result.values["training images/s (full step)"] = full.items_per_second
    return result
