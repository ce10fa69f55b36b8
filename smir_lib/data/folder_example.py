"""A small folder dataset written to disk, in the layout ``smir_lib.data.folder`` reads.

Notebook 00, the tests and the walk-through in docs/own-images.md need a folder of "your own
images" that anyone can make in a second: :func:`write_example_folder` renders synthetic crop/weed fields
(:mod:`smir_lib.data.synthetic`) and saves them as a user would have them: JPEG photos in
``images/``, PNG masks named ``<stem>_mask.png`` in ``masks/`` (index masks with values 0, 1, 2,
or colour masks), a ``classes.yaml``, and unlabelled photos in ``pool/``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from smir_lib.data.base import save_image_file
from smir_lib.data.synthetic import CLASS_COLORS, CLASS_NAMES, SyntheticFields
from smir_lib.files import atomic_write_text

__all__ = ["write_example_folder", "MASK_COLORS"]

MASK_COLORS = [(0, 0, 0), (0, 255, 0), (255, 0, 0)]
"""Stored colours of soil, crop and weed in colour masks (as in CWFID)."""


def _to_uint8(image) -> np.ndarray:
    return (image.permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)  # (H, W, 3)


def write_example_folder(out: str | os.PathLike, n_images: int = 10, n_pool: int = 4,
                         size: int | tuple[int, int] = (96, 128), mask_kind: str = "value",
                         seed: int = 0, suffix: str = "_mask") -> Path:
    """Write ``n_images`` labelled and ``n_pool`` unlabelled field photos under ``out``; return ``out``.

    Images are ``field_NNN.jpg`` (quality 95); masks ``field_NNN<suffix>.png``, single-channel
    class values (``mask_kind="value"``) or RGB colours ``MASK_COLORS`` (``"color"``).
    """
    if mask_kind not in ("value", "color"):
        raise ValueError(f"mask_kind is {mask_kind!r}; expected 'value' or 'color'")
    out = Path(out)
    for sub in ("images", "masks", "pool"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    labelled = SyntheticFields("train", n_images=n_images, seed=seed, size=size)
    colors = np.array(MASK_COLORS, np.uint8)
    for i in range(n_images):
        image, label = labelled[i]  # (3, H, W), (H, W)
        save_image_file(_to_uint8(image), out / "images" / f"field_{i:03d}.jpg", quality=95)
        mask = label.numpy().astype(np.uint8)
        save_image_file(mask if mask_kind == "value" else colors[mask], out / "masks" / f"field_{i:03d}{suffix}.png")
    pool = SyntheticFields("pool", n_images=n_pool, seed=seed, size=size)
    for i in range(n_pool):
        save_image_file(_to_uint8(pool[i]), out / "pool" / f"drone_{i:03d}.jpg", quality=95)
    key = "value" if mask_kind == "value" else "mask_color"
    lines = [f"mask_suffix: {suffix}", "classes:"]
    for index, (name, color) in enumerate(zip(CLASS_NAMES, CLASS_COLORS)):
        stored = index if mask_kind == "value" else list(MASK_COLORS[index])
        lines.append(f"  - {{name: {name}, {key}: {stored}, color: {list(color)}}}")
    lines.append("ignore: [255]" if mask_kind == "value" else "ignore: [[255, 255, 255]]")
    atomic_write_text("\n".join(lines) + "\n", out / "classes.yaml")
    return out
