"""``smir predict``: segment a folder of images with a fine-tuned checkpoint or an export.

For every image Pillow reads in the input folder (turned upright by its EXIF orientation), at
any size, :func:`predict_folder` writes to the output folder:

* ``<stem>.png``, by ``fmt``: ``index`` (default) the class index of every pixel, as a palette
  PNG (``numpy.array(Image.open(f))`` gives indices, any viewer shows the class colours);
  ``values`` the mask value (or mask colour) each class has in classes.yaml, so a prediction
  reads like one of your masks; ``color`` the display colours of classes.yaml as an RGB PNG;
* ``<stem>_overlay.jpg``: the photo with the class colours blended over it;
* ``predictions.json``: per image, its size and the share of pixels in each class, and the list
  of files written (the folder's manifest: see :mod:`smir_lib.tools.outputs`).

The output folder may not be the input folder or inside it; a file there that an earlier
``predict`` did not write is never overwritten, two inputs with one stem (``a.jpg``, ``a.png``)
are refused, and every file is written atomically.

The network, its configuration and so the protocol come from the checkpoint
(:func:`~smir_lib.engine.inference.load_trained`), or from an exported folder
(:func:`~smir_lib.tools.export.load_export`, which also carries the classes): short side
``image_size`` by default, full resolution with ``eval_mode=sliding``; an image too large for one
pass is slid over either way. Class names and colours come from the dataset's definition (for
``folder``: its classes.yaml), or from the export.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from smir_lib.data.base import load_image
from smir_lib.data.folder import image_files
from smir_lib.data.registry import class_entries
from smir_lib.engine.inference import load_trained, segment_logits
from smir_lib.metrics import class_map
from smir_lib.runtime import resolve_device
from smir_lib.tools.export import load_export
from smir_lib.tools.outputs import OutputFolder, refuse_inside

__all__ = ["predict_folder", "overlay", "FORMATS", "encode_prediction"]

FORMATS = ("index", "values", "color")
"""What ``<stem>.png`` holds: class indices, classes.yaml's mask values, or display colours."""
WRITTEN_BY = "smir predict"


def overlay(image: np.ndarray, index: np.ndarray, colors: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``image (H, W, 3) uint8`` with ``colors[index]`` blended over it at ``alpha`` -> uint8."""
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colors[index].astype(np.float32)
    return blended.round().clip(0, 255).astype(np.uint8)


def encode_prediction(index: np.ndarray, classes: Sequence[Mapping], fmt: str = "index"):
    """Class indices ``(H, W)`` as the PIL image ``<stem>.png`` holds in format ``fmt`` (see module)."""
    from PIL import Image

    if fmt == "index":
        palette = np.zeros((256, 3), np.uint8)
        palette[:len(classes)] = [c["color"] for c in classes]
        png = Image.frombytes("P", (index.shape[1], index.shape[0]), index.astype(np.uint8).tobytes())
        png.putpalette(palette.ravel().tolist())
        return png
    if fmt == "color":
        return Image.fromarray(np.array([c["color"] for c in classes], np.uint8)[index])  # (H, W, 3)
    if all("value" in c for c in classes):
        values = np.array([c["value"] for c in classes])[index]  # (H, W) stored values
        return Image.fromarray(values.astype(np.uint8 if values.max() <= 255 else np.uint16))
    if all("mask_color" in c for c in classes):
        return Image.fromarray(np.array([c["mask_color"] for c in classes], np.uint8)[index])  # (H, W, 3)
    raise ValueError("--format values writes the mask values of a folder dataset's classes.yaml, and these "
                     f"classes ({[c['name'] for c in classes]}) have none: use --format index or color")


def _model_and_classes(source, config, overrides):
    """``(model, cfg, classes)`` of a checkpoint or run folder, or of an exported folder."""
    if (Path(source) / "unet.safetensors").is_file():
        model, cfg, info = load_export(source, overrides)
        if info["task"] != "segmentation":
            raise ValueError(f"{source} is an exported pretraining network (it reconstructs images, it does not "
                             f"segment): export the fine-tuning run (finetune/best.pt) instead")
        return model, cfg, info["classes"]
    model, cfg, _ = load_trained(source, config, overrides, segmentation=True)
    return model, cfg, class_entries(cfg.dataset, cfg.data_root)


def _input_files(images: Path) -> list[Path]:
    """The images of the input folder; two with one stem are refused (they would share outputs)."""
    files = image_files(images)
    if not files:
        raise FileNotFoundError(f"no images in {images}: expected files Pillow reads (.jpg, .png, .tif, ...)")
    seen: dict[str, Path] = {}
    for path in files:
        if path.stem in seen:
            raise ValueError(f"images {seen[path.stem].name} and {path.name} in {images} share the stem "
                             f"'{path.stem}', so both would be written to {path.stem}.png: rename one")
        seen[path.stem] = path
    return files


def predict_folder(checkpoint: str | os.PathLike, images: str | os.PathLike, out: str | os.PathLike,
                   config=None, overrides: Mapping | Sequence[str] | None = None,
                   progress: bool = True, fmt: str = "index") -> list[dict]:
    """Segment every image in ``images`` with ``checkpoint`` (a checkpoint, run folder or exported
    folder); write ``<stem>.png`` in format ``fmt``, overlays and ``predictions.json`` to ``out``.

    Returns the rows of ``predictions.json``: ``{"image", "width", "height", "class_shares"}``.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: expected one of {list(FORMATS)}")
    images, out = Path(images), Path(out)
    refuse_inside(out, images)
    files = _input_files(images)
    model, cfg, classes = _model_and_classes(checkpoint, config, overrides)
    names = [c["name"] for c in classes]
    n_out = model.out_channels
    if len(names) != n_out:
        raise ValueError(f"checkpoint {checkpoint} segments {n_out} classes but dataset {cfg.dataset!r} "
                         f"has {len(names)} ({names}): is it a fine-tuned checkpoint (finetune/best.pt) of "
                         f"this dataset? (a pretraining checkpoint reconstructs colours, it does not segment)")
    encode_prediction(np.zeros((1, 1), np.int64), classes, fmt)  # an impossible format fails before any work
    device = resolve_device(cfg.device)
    model = model.to(device)
    colors = np.array([c["color"] for c in classes], np.uint8)  # (C, 3)
    rows = []
    with OutputFolder(out, WRITTEN_BY, "predictions.json") as folder:
        folder.claim([f"{p.stem}{suffix}" for p in files for suffix in (".png", "_overlay.jpg")])
        for path in tqdm(files, desc="predicting", disable=not (progress and cfg.progress)):
            image = load_image(path, exif_transpose=True, fix=f"replace it or move it out of {images}")  # (3, H, W)
            logits = segment_logits(model, image[None], cfg, device)  # (1, C, H, W)
            index = class_map(logits)[0].cpu().numpy()  # (H, W)
            encode_prediction(index, classes, fmt).save(folder.stage(f"{path.stem}.png"), format="PNG")
            photo = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # (H, W, 3)
            Image.fromarray(overlay(photo, index, colors)).save(folder.stage(f"{path.stem}_overlay.jpg"),
                                                                format="JPEG", quality=90)
            folder.commit()
            shares = np.bincount(index.ravel(), minlength=n_out) / index.size
            rows.append({"image": path.name, "width": int(index.shape[1]), "height": int(index.shape[0]),
                         "class_shares": dict(zip(names, shares.round(6).tolist()))})
        folder.finish({"format": fmt, "classes": classes, "predictions": rows})
    return rows
