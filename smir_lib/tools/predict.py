"""``smir predict``: segment a folder of images with a fine-tuned checkpoint.

For every image Pillow reads in the input folder (turned upright by its EXIF orientation), at
any size, :func:`predict_folder` writes to the output folder:

* ``<stem>.png``: the class index of every pixel, as a palette PNG (pixel value = class index,
  shown in the class colours by any image viewer; ``numpy.array(Image.open(f))`` gives indices);
* ``<stem>_overlay.jpg``: the photo with the class colours blended over it;
* ``predictions.json``: per image, its size and the share of pixels in each class.

The network, its configuration and so the protocol come from the checkpoint
(:func:`~smir_lib.engine.inference.load_trained`): short side ``image_size`` by default, full
resolution with ``eval_mode=sliding``; an image too large for one pass is slid over either way.
Class names and colours come from the dataset's definition (for ``folder``: its classes.yaml).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from smir_lib.data import class_info
from smir_lib.data.base import load_image
from smir_lib.data.folder import image_files
from smir_lib.engine.inference import load_trained, segment_logits
from smir_lib.metrics import class_map
from smir_lib.runtime import resolve_device

__all__ = ["predict_folder", "overlay"]


def overlay(image: np.ndarray, index: np.ndarray, colors: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``image (H, W, 3) uint8`` with ``colors[index]`` blended over it at ``alpha`` -> uint8."""
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colors[index].astype(np.float32)
    return blended.round().clip(0, 255).astype(np.uint8)


def predict_folder(checkpoint: str | os.PathLike, images: str | os.PathLike, out: str | os.PathLike,
                   config=None, overrides: Mapping | Sequence[str] | None = None,
                   progress: bool = True) -> list[dict]:
    """Segment every image in ``images`` with ``checkpoint``; write PNGs, overlays and a summary to ``out``.

    Returns the rows of ``predictions.json``: ``{"image", "width", "height", "class_shares"}``.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    model, cfg, _ = load_trained(checkpoint, config, overrides)
    names, colors = class_info(cfg.dataset, cfg.data_root)
    n_out = model.out_channels
    if len(names) != n_out:
        raise ValueError(f"checkpoint {checkpoint} segments {n_out} classes but dataset {cfg.dataset!r} "
                         f"has {len(names)} ({names}): is it a fine-tuned checkpoint (finetune/best.pt) of "
                         f"this dataset? (a pretraining checkpoint reconstructs colours, it does not segment)")
    files = image_files(Path(images))
    if not files:
        raise FileNotFoundError(f"no images in {images}: expected files Pillow reads (.jpg, .png, .tif, ...)")
    device = resolve_device(cfg.device)
    model = model.to(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    palette = np.zeros((256, 3), np.uint8)
    palette[:len(colors)] = np.array(colors, np.uint8)
    rows = []
    for path in tqdm(files, desc="predicting", disable=not (progress and cfg.progress)):
        image = load_image(path, exif_transpose=True)  # (3, H, W) in [0, 1]
        logits = segment_logits(model, image[None], cfg, device)  # (1, C, H, W)
        index = class_map(logits)[0].to(torch.uint8).cpu().numpy()  # (H, W)
        png = Image.frombytes("P", (index.shape[1], index.shape[0]), index.tobytes())  # values = classes
        png.putpalette(palette.ravel().tolist())
        png.save(out / f"{path.stem}.png")
        photo = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # (H, W, 3)
        Image.fromarray(overlay(photo, index, palette)).save(out / f"{path.stem}_overlay.jpg", quality=90)
        shares = np.bincount(index.ravel(), minlength=n_out) / index.size
        rows.append({"image": str(path), "width": int(index.shape[1]), "height": int(index.shape[0]),
                     "class_shares": dict(zip(names, shares.round(6).tolist()))})
    (out / "predictions.json").write_text(json.dumps(rows, indent=2))
    return rows
