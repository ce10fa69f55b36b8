"""Seeds, devices and mixed precision: the run-time choices every other module shares.

Small on purpose, and free of the training loop, so that data code (which seeds its
augmentation) and the selective scorer (which needs the autocast policy) can import it without
importing the engine.

* Every random stream derives from a tuple such as ``(seed, "step_3", epoch)`` through
  :func:`derive_seed`; hashing keeps ``(0, 1)`` and ``(1, 0)`` independent.
* One mixed-precision policy, :func:`amp_dtype`, serves training, validation and scoring.
  ``auto`` is bf16 (or fp16) on CUDA and, on the CPU, bf16 only where the CPU multiplies bf16
  matrices natively (:func:`cpu_has_fast_bf16`: AMX-BF16). On a CPU with AVX512-BF16 but no AMX
  a bf16 training step measured slower than fp32 (``make bench``, benchmarks/RESULTS.md), so
  ``auto`` stays float32 there; ``amp=bf16`` forces it anywhere.
* :func:`prepare_model` and :func:`to_device` put a network and its batches where they run:
  channels-last memory on CUDA and on the CPU (oneDNN's convolutions are faster on it).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

__all__ = ["usable_cores", "thread_count", "whole_number", "derive_seed", "seeded_generator", "forked_rng", "setup_determinism", "AMP_MODES", "cpu_has_fast_bf16",
           "amp_dtype", "autocast", "resolve_device", "prepare_model", "to_device", "loader_workers"]


def derive_seed(*parts) -> int:
    """A 62-bit seed from any tuple of ints and strings, e.g. ``(seed, "step_3", epoch)``.

    Hashing (not adding) the parts keeps streams independent: ``(0, 1)`` and ``(1, 0)`` differ.
    """
    digest = hashlib.sha256(repr(tuple(parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 2


def seeded_generator(*parts, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` seeded with ``derive_seed(*parts)``."""
    return torch.Generator(device=device).manual_seed(derive_seed(*parts))


def loader_workers(requested: int) -> int:
    """DataLoader worker processes for ``workers=requested``: at most the CPU cores this process
    may use (``workers=1e12`` would fork until the process limit). ``workers`` changes how a run
    loads its data, never its numbers, so the cap changes nothing it computes."""
    return min(requested, usable_cores())


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the system has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def whole_number(text: str, minimum: int, fix: str) -> int:
    """An ``argparse`` type: ``text`` as a whole number of at least ``minimum``, else one line naming
    the value and ``fix``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number: {fix}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{value} is below {minimum}: {fix}")
    return value


def thread_count(text: str) -> int:
    """The ``--threads`` option's type: a whole number of at least 1 (torch refuses 0 with a
    RuntimeError), capped at :func:`usable_cores` (``--threads 1000000000`` was accepted)."""
    return min(whole_number(text, 1, "pass 1 or more threads"), usable_cores())


@contextlib.contextmanager
def forked_rng(seed: int, devices: Sequence = ()):
    """Run the block with torch's global generators seeded with ``seed``; restore them after.

    The CPU generator always, and that of each CUDA device in ``devices``; for code that draws
    from the global generators (kornia's augmentations, layer initialisers, dropout).
    ``torch.manual_seed`` would seed every CUDA, XPU and MTIA device, which costs about 1.5 ms
    per call on a machine without them (each records a stack trace for a lazy call): once per
    augmented item, that was 10-20 % of an item's time. The CPU stream is the same either way.
    """
    with torch.random.fork_rng(devices=list(devices)):
        torch.default_generator.manual_seed(seed)
        for device in devices:
            if torch.device(device).type == "cuda":
                with torch.cuda.device(device):
                    torch.cuda.manual_seed(seed)
        yield


def setup_determinism(deterministic: bool) -> None:
    """``deterministic=True`` (the ``Config`` key of that name): deterministic kernels only.

    On the CPU every op used here has one, so runs repeat bit for bit. On CUDA a few ops have no
    deterministic kernel (the backward of bilinear upsampling in the head): they only warn
    (``warn_only``) instead of stopping the run, so GPU runs repeat closely but not bit for bit.
    """
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=torch.cuda.is_available())
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


AMP_MODES = ("auto", "off", "bf16", "fp16")
"""Values of ``Config.amp`` (and of ``selective_mask(amp=...)``)."""


def _cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (Linux); empty elsewhere."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """Whether bf16 autocast should pay off on this CPU: AMX-BF16 tiles, and a bf16 conv runs.

    The rule is a capability, not a timing, so the choice (and with it the numbers a run
    computes) never depends on how busy the machine was. The probe runs one tiny bf16
    convolution under autocast, so a torch build without oneDNN bf16 kernels falls back to
    float32 instead of failing mid-run.
    """
    if "amx_bf16" not in _cpu_flags() or not torch.backends.mkldnn.is_available():
        return False
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = torch.nn.functional.conv2d(torch.ones(1, 2, 4, 4), torch.ones(2, 2, 3, 3))
        return out.dtype == torch.bfloat16
    except RuntimeError:  # no bf16 kernel in this build
        return False


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of mode ``amp`` on ``device``; None means full float32.

    ``auto``: bf16 on CUDA when supported, else fp16; on the CPU bf16 where
    :func:`cpu_has_fast_bf16`, else float32. ``off``: float32. ``bf16`` / ``fp16``: that dtype.
    Training, validation and selective scoring all use this one policy; the losses and patch
    scores are computed in float32 whatever it says.
    """
    if amp not in AMP_MODES:
        raise ValueError(f"amp is {amp!r}; expected one of {', '.join(AMP_MODES)}")
    if amp == "off":
        return None
    if device.type != "cuda":
        if amp == "auto":
            return torch.bfloat16 if cpu_has_fast_bf16() else None
        return torch.bfloat16 if amp == "bf16" else torch.float16
    if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def autocast(amp: str, device: torch.device):
    """The mixed-precision context of mode ``amp`` on ``device`` (see :func:`amp_dtype`)."""
    dtype = amp_dtype(amp, device)
    return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: this rank's GPU when CUDA is available, else the CPU; ``cuda`` means this rank's GPU."""
    if name == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but CUDA is not available: use device=auto or cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def prepare_model(model: nn.Module, device: torch.device, channels_last: bool = False) -> nn.Module:
    """Move ``model`` to ``device``, in channels-last memory when ``channels_last``.

    Channels-last is the layout oneDNN (CPU) and cuDNN (CUDA) convolve fastest; it changes only
    the order of floating-point sums (results agree to rounding, runs still repeat exactly).
    """
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def to_device(x: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """Copy a batch to ``device`` without blocking; images ``(B, 3, H, W)`` go channels-last when asked."""
    x = x.to(device, non_blocking=True)
    if channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x
