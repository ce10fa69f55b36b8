"""``smir export``: a trained network as files other tools load, and that deploy.

From a pretraining or fine-tuning checkpoint (or its run folder), :func:`export_run` writes:

* ``encoder.pth``: the encoder alone, a plain state dict with torchvision's ResNet key names
  (``conv1.weight``, ``bn1.*``, ``layer1.0.conv1.weight`` ... no ``fc``). It loads into
  torchvision's ``resnet34()`` with ``strict=False`` (only ``fc`` is missing), into timm's
  ``resnet34`` (same names) and into segmentation_models.pytorch's ``Unet("resnet34").encoder``,
  whose ResNet encoder drops ``fc``. The ``resnet34`` / ``resnet18`` presets have torchvision's
  shapes; ``tiny`` has the names but a quarter of the widths.
* ``unet.safetensors``: the whole U-Net (encoder, decoder, head); its metadata holds the model
  preset, output count, configuration and the deployment record below (key ``deploy``);
  rebuild it with :func:`load_safetensors`.
* ``model.onnx`` (needs the ``export`` extra: ``pip install -e '.[export]'``): the network for
  ONNX Runtime, batch and sides dynamic, sides multiples of 64 (pad an image first: smir_lib
  reflect-pads to a multiple of 64, the graph skips that step). Checked against PyTorch with
  onnxruntime at 256 and 512 px (:func:`check_onnx`: at most ``ONNX_TOLERANCE`` for outputs within
  +-1). The exporter's stack traces (source file paths of this machine) are stripped.
* ``model.json``: the deployment record (:func:`deploy_info`): the task, the classes (name,
  display colour, stored mask value or colour), what the input must be (RGB, NCHW float32,
  ``pixel / 255``, mean and std, sides a multiple of 64, reflect padding, the resize protocol),
  the output, and the files written. No absolute path of this machine is written anywhere.

Every file is written atomically and only over an earlier export (:mod:`smir_lib.tools.outputs`).
``predict --checkpoint EXPORTED/`` reads an exported folder (:func:`load_export`), without the
run folder or the dataset. :func:`latency` times batch-1 inference on the CPU (PyTorch, and ONNX
Runtime when present).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from smir_lib.data.registry import class_entries
from smir_lib.data.transforms import NORM_MEAN, NORM_STD
from smir_lib.engine.config import Config, load_config
from smir_lib.engine.inference import load_trained
from smir_lib.files import RunFileError, load_checkpoint, read_json
from smir_lib.models import PAD_MULTIPLE, build_unet
from smir_lib.tools.outputs import OutputFolder

__all__ = ["encoder_state_dict", "save_encoder", "save_safetensors", "load_safetensors", "onnx_available",
           "export_onnx", "check_onnx", "latency", "export_run", "deploy_info", "load_export", "ONNX_TOLERANCE"]

ONNX_TOLERANCE = 1e-4
"""Largest absolute difference allowed between ONNX Runtime and PyTorch outputs."""
ONNX_SIDE_MULTIPLE = PAD_MULTIPLE
WRITTEN_BY = "smir export"
MANIFEST = "model.json"


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
    return Path(path)


def _export_fix(path: str | Path) -> str:
    """What a user does about an unreadable file of an exported folder."""
    return f"export the run again with: smir export --checkpoint RUN --out {Path(path).parent}"


def safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file (empty when it has none); a file that is not one
    (cut short, another format) is one :class:`~smir_lib.files.RunFileError` naming it."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return dict(f.metadata() or {})
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - safetensors raises its own SafetensorError and OSError
        raise RunFileError(f"{path} is not a safetensors file or is cut short ({err}); {_export_fix(path)}") from None


def load_safetensors(path: str | Path) -> nn.Module:
    """Rebuild the U-Net written by :func:`save_safetensors` (preset and outputs from its metadata)."""
    from safetensors.torch import load_file

    meta = safetensors_metadata(path)
    if "model" not in meta or not meta.get("out_channels", "").isdigit():
        raise ValueError(f"{path} has no 'model' and 'out_channels' in its metadata: it was not written by "
                         f"`smir export`; {_export_fix(path)}")
    try:
        model = build_unet(meta["model"], int(meta["out_channels"]))
        model.load_state_dict(load_file(str(path)), strict=True)
    except (ValueError, RuntimeError) as err:  # another preset, missing or reshaped weights
        raise RunFileError(f"{path} does not hold the {meta['model']!r} network its metadata names "
                           f"({str(err).splitlines()[0]}); {_export_fix(path)}") from None
    return model.eval()


def _metadata_json(path: Path, meta: Mapping[str, str], key: str, needs: Sequence[str] = ()) -> dict:
    """The JSON object stored under ``key`` in a safetensors file's metadata, with the keys ``needs``."""
    try:
        value = json.loads(meta[key])
    except ValueError:
        value = None
    missing = [k for k in needs if k not in value] if isinstance(value, dict) else list(needs)
    if not isinstance(value, dict) or missing:
        raise RunFileError(f"{path}: its metadata '{key}' is not the record `smir export` writes; {_export_fix(path)}")
    return value


def portable_config(cfg: Config) -> dict:
    """``cfg`` as a dict without this machine's paths: ``data_root`` keeps only its folder name."""
    data = cfg.to_dict()
    if data.get("data_root"):
        data["data_root"] = Path(data["data_root"]).name
    return data


def checkpoint_task(path: Path) -> str:
    """``segmentation`` (a fine-tuning checkpoint) or ``reconstruction`` (pretraining), from what it
    monitored; a checkpoint without that record counts as segmentation."""
    state = load_checkpoint(path)
    return "reconstruction" if "val_loss" in state and "val_miou" not in state else "segmentation"


def deploy_info(model: nn.Module, cfg: Config, checkpoint: Path) -> dict:
    """What a deployment needs to know to feed the exported network and read its output.

    Classes come from the dataset's definition (a folder dataset's classes.yaml, with each class's
    stored mask value or colour); the input is RGB, ``pixel / 255``, normalised by ``mean`` / ``std``,
    NCHW, sides padded (reflect, half on each side) to a multiple of ``side_multiple``; the kit's
    own protocol (``resize_short_side`` or sliding windows) is recorded as ``protocol``.
    """
    task = checkpoint_task(checkpoint)
    info = {"task": task, "model": cfg.model, "out_channels": int(model.out_channels),
            "source": f"{checkpoint.parent.name}/{checkpoint.name}"}
    if task == "segmentation":
        classes = class_entries(cfg.dataset, cfg.data_root)
        if len(classes) != model.out_channels:
            raise ValueError(f"{checkpoint} segments {model.out_channels} classes but dataset {cfg.dataset!r} has "
                             f"{len(classes)} ({[c['name'] for c in classes]}): export the fine-tuned run of this dataset")
        info["classes"] = classes
        info["ignore_index"] = 255
    info["input"] = {"name": "image", "layout": "NCHW", "dtype": "float32", "channel_order": "RGB",
                     "scale": "pixel / 255", "mean": list(NORM_MEAN), "std": list(NORM_STD),
                     "side_multiple": ONNX_SIDE_MULTIPLE,
                     "padding": "reflect, half on each side (the odd pixel bottom/right); crop the output back"}
    info["protocol"] = {"eval_mode": cfg.eval_mode, "resize_short_side": cfg.image_size,
                        "window": cfg.image_size, "stride": cfg.eval_stride or max(1, cfg.image_size // 2)}
    info["output"] = ({"name": "logits", "layout": "NCHW", "meaning": "class scores; argmax over C = class index"}
                      if task == "segmentation" else
                      {"name": "logits", "layout": "NCHW", "meaning": "the reconstructed image, normalised "
                       "(x * std + mean gives [0, 1] RGB)"})
    return info


def strip_onnx_paths(path: Path) -> None:
    """Remove the exporter's per-node metadata (Python stack traces naming this machine's source
    files) and doc strings from the ONNX file at ``path``, in place."""
    import onnx

    model = onnx.load(str(path))
    graphs = [model.graph] + [f for f in model.functions]
    for graph in graphs:
        for node in graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
    model.graph.doc_string = ""
    del model.metadata_props[:]
    onnx.save(model, str(path))


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
    """Write encoder.pth, unet.safetensors, (``onnx``; None = when installed) model.onnx and model.json to ``out``.

    Refuses to overwrite a file an earlier export did not write; every file is written to a
    temporary name first and moved into place once all are written and the ONNX check passed.
    Returns a summary: the files, the source checkpoint, and the ONNX check's largest difference.
    """
    model, cfg, checkpoint = load_trained(source)
    info = deploy_info(model, cfg, checkpoint)
    write_onnx = bool(onnx or (onnx is None and onnx_available()))
    names = ["encoder.pth", "unet.safetensors"] + (["model.onnx"] if write_onnx else [])
    meta = {"model": cfg.model, "out_channels": str(model.out_channels), "source": info["source"],
            "config": json.dumps(portable_config(cfg)), "deploy": json.dumps(info)}
    summary = {"checkpoint": str(checkpoint), "model": cfg.model, "out_channels": model.out_channels,
               "task": info["task"]}
    with OutputFolder(out, WRITTEN_BY, MANIFEST) as folder:
        folder.claim(names)
        save_encoder(model, folder.stage("encoder.pth"))
        save_safetensors(model, folder.stage("unet.safetensors"), meta)
        if write_onnx:
            staged = export_onnx(model, folder.stage("model.onnx"), size)
            strip_onnx_paths(staged)
            summary["onnx_check"] = check_onnx(model, staged)
        folder.commit()
        folder.finish({**info, "config": portable_config(cfg)})
    out = Path(out)
    summary.update(encoder=str(out / "encoder.pth"), safetensors=str(out / "unet.safetensors"),
                   deploy=str(out / MANIFEST))
    if write_onnx:
        summary["onnx"] = str(out / "model.onnx")
    elif onnx is None:
        summary["onnx"] = "skipped: pip install -e '.[export]' to write model.onnx"
    return summary


def load_export(folder: str | Path, overrides=None) -> tuple[nn.Module, Config, dict]:
    """The network of an exported folder (``unet.safetensors``), its configuration (with
    ``overrides``) and its deployment record; nothing from the run folder or dataset is read."""
    path = Path(folder) / "unet.safetensors"
    meta = safetensors_metadata(path)
    if "deploy" not in meta or "config" not in meta:
        raise ValueError(f"{path} holds no deployment record (metadata 'deploy'): it was exported by an older "
                         f"kit; export the run again with: smir export --checkpoint RUN --out {folder}")
    manifest = Path(folder) / MANIFEST
    if manifest.is_file() and read_json(manifest, _export_fix(manifest), expect=dict).get("complete") is False:
        raise ValueError(f"{manifest} says the export into {folder} did not finish: run the export again")
    stored = _metadata_json(path, meta, "config")
    try:
        stored = load_config("paper", overrides=stored)
    except ValueError as err:
        raise RunFileError(f"{path}: the configuration in its metadata is invalid ({err}); {_export_fix(path)}") from None
    info = _metadata_json(path, meta, "deploy", needs=("task",))
    if info["task"] == "segmentation" and not isinstance(info.get("classes"), list):  # predict names them
        raise RunFileError(f"{path}: its metadata 'deploy' lists no classes for a segmentation network; "
                           f"{_export_fix(path)}")
    return load_safetensors(path), load_config(stored, overrides), info
