"""``smir export``: a trained network as files other tools load.

From a pretraining or fine-tuning checkpoint (or its run folder), :func:`export_run` writes:

* ``encoder.pth``: the encoder alone, a plain state dict with torchvision's ResNet key names
  (``conv1.weight``, ``bn1.*``, ``layer1.0.conv1.weight`` ... no ``fc``). It loads into
  torchvision's ``resnet34()`` with ``strict=False`` (only ``fc`` is missing), into timm's
  ``resnet34`` (same names) and into segmentation_models.pytorch's ``Unet("resnet34").encoder``,
  whose ResNet encoder drops ``fc``. The ``resnet34`` / ``resnet18`` presets have torchvision's
  shapes; ``tiny`` has the names but a quarter of the widths.
* ``unet.safetensors``: the whole U-Net (encoder, decoder, head), with the model preset, output
  count and configuration in its metadata; rebuild it with ``build_unet(preset, out_channels)``.
* ``model.onnx`` (needs the ``export`` extra: ``pip install -e '.[export]'``): the network for
  ONNX Runtime, batch and sides dynamic, sides multiples of 64 (pad an image first: smir_lib
  reflect-pads to a multiple of 64, the graph skips that step). Checked against PyTorch with
  onnxruntime at 256 and 512 px (:func:`check_onnx`: at most ``ONNX_TOLERANCE`` for outputs within +-1).

:func:`latency` times batch-1 inference on the CPU (PyTorch, and ONNX Runtime when present).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from smir_lib.engine.inference import load_trained
from smir_lib.models import build_unet

__all__ = ["encoder_state_dict", "save_encoder", "save_safetensors", "load_safetensors", "onnx_available",
           "export_onnx", "check_onnx", "latency", "export_run", "ONNX_TOLERANCE"]

ONNX_TOLERANCE = 1e-4
"""Largest absolute difference allowed between ONNX Runtime and PyTorch outputs."""
ONNX_SIDE_MULTIPLE = 64


def encoder_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The encoder's weights under torchvision's ResNet names (already ours: no renaming needed)."""
    return {k: v.detach().cpu().clone() for k, v in model.encoder.state_dict().items()}


def save_encoder(model: nn.Module, path: str | Path) -> Path:
    """Write :func:`encoder_state_dict` with ``torch.save`` (loadable with ``weights_only=True``)."""
    path = Path(path)
    torch.save(encoder_state_dict(model), path)
    return path


def save_safetensors(model: nn.Module, path: str | Path, metadata: dict[str, str]) -> Path:
    """The whole network's state dict as safetensors, with string ``metadata``."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata=metadata)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)  # safetensors writes 0600; give it a normal file's permissions
    return Path(path)


def load_safetensors(path: str | Path) -> nn.Module:
    """Rebuild the U-Net written by :func:`save_safetensors` (preset and outputs from its metadata)."""
    from safetensors import safe_open
    from safetensors.torch import load_file


    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    model = build_unet(meta["model"], int(meta["out_channels"]))
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.eval()


def onnx_available() -> bool:
    """Whether the ``export`` extra (onnx, onnxscript, onnxruntime) is installed."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript", "onnxruntime"))


def export_onnx(model: nn.Module, path: str | Path, size: int = 256) -> Path:
    """Export ``model`` (eval mode) to ONNX with dynamic batch and sides (multiples of 64)."""
    if not onnx_available():
        raise ModuleNotFoundError("ONNX export needs the export extra: pip install -e '.[export]' "
                                  "(onnx, onnxscript, onnxruntime)")
    if size % ONNX_SIDE_MULTIPLE:
        raise ValueError(f"ONNX example size {size} must be a multiple of {ONNX_SIDE_MULTIPLE}")
    Dim = torch.export.Dim
    sides = {2: ONNX_SIDE_MULTIPLE * Dim("h64", min=1, max=256), 3: ONNX_SIDE_MULTIPLE * Dim("w64", min=1, max=256)}
    example = torch.zeros(1, 3, size, size)
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)  # the exporter logs that torchvision's ops are absent: they are unused
    try:  # and it prints its progress steps: keep the command's output to its summary
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model.eval().cpu(), (example,), str(path), dynamo=True, input_names=["image"],
                              output_names=["logits"], dynamic_shapes={"x": {0: Dim("batch", max=1024), **sides}},
                              external_data=False, verbose=False)
    finally:
        logger.setLevel(level)
    return Path(path)


def check_onnx(model: nn.Module, path: str | Path, sizes: Sequence[int] = (256, 512), seed: int = 0) -> dict:
    """Compare ONNX Runtime with PyTorch on random normalised inputs of each size.

    Returns ``{"max_abs_diff", "max_abs_output"}``. The check passes when the difference is at
    most ``ONNX_TOLERANCE`` times ``max(1, largest |output|)``: 1e-4 absolute for outputs within
    +-1, and relative beyond, because float32 itself cannot do better on large logits (a barely
    trained network's logits near 8000 differ by 4e-3 between PyTorch's own float32 and float64).
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    worst, scale = 0.0, 0.0
    for size in sizes:
        x = torch.randn(1, 3, size, size, generator=generator)  # (1, 3, S, S)
        with torch.no_grad():
            expected = model.eval().cpu()(x).numpy()
        got = session.run(None, {"image": x.numpy()})[0]
        worst, scale = max(worst, float(abs(got - expected).max())), max(scale, float(abs(expected).max()))
    if worst > ONNX_TOLERANCE * max(1.0, scale):
        raise ValueError(f"{path}: ONNX Runtime differs from PyTorch by {worst:.2e} on outputs up to "
                         f"{scale:.3g} (allowed {ONNX_TOLERANCE:g} x max(1, output)); report it with the "
                         "torch and onnxruntime versions")
    return {"max_abs_diff": worst, "max_abs_output": scale}


def _median_ms(run, repeats: int) -> float:
    run()  # warm-up (first call allocates)
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        run()
        times.append(1000 * (time.perf_counter() - tic))
    return sorted(times)[len(times) // 2]


def latency(model: nn.Module, sizes: Sequence[int] = (256, 512), onnx_path: str | Path | None = None,
            repeats: int = 10, threads: int | None = None) -> list[dict]:
    """Median batch-1 CPU milliseconds per image, PyTorch (eval, no_grad) and ONNX Runtime.

    ``threads`` sets both runtimes' intra-op threads (None: their defaults).
    """
    rows = []
    session = None
    if onnx_path is not None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    model = model.eval().cpu()
    try:
        for size in sizes:
            x = torch.zeros(1, 3, size, size)
            with torch.no_grad():
                row = {"size": size, "pytorch_ms": _median_ms(lambda: model(x), repeats)}
            if session is not None:
                row["onnxruntime_ms"] = _median_ms(lambda: session.run(None, {"image": x.numpy()}), repeats)
            rows.append(row)
    finally:
        torch.set_num_threads(before)
    return rows


def export_run(source: str | Path, out: str | Path, onnx: bool | None = None, size: int = 256) -> dict:
    """Write encoder.pth, unet.safetensors and (``onnx``; None = when installed) model.onnx to ``out``.

    Returns a summary: the files, the source checkpoint, and the ONNX check's largest difference.
    """
    model, cfg, checkpoint = load_trained(source)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"model": cfg.model, "out_channels": str(model.out_channels), "source": str(checkpoint),
            "config": json.dumps(cfg.to_dict())}
    summary = {"checkpoint": str(checkpoint), "model": cfg.model, "out_channels": model.out_channels,
               "encoder": str(save_encoder(model, out / "encoder.pth")),
               "safetensors": str(save_safetensors(model, out / "unet.safetensors", meta))}
    if onnx or (onnx is None and onnx_available()):
        path = export_onnx(model, out / "model.onnx", size)
        summary.update(onnx=str(path), onnx_check=check_onnx(model, path))
    elif onnx is None:
        summary["onnx"] = "skipped: pip install -e '.[export]' to write model.onnx"
    return summary
