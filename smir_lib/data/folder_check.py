"""``smir check-data DIR``: everything wrong with a folder dataset, before training.

:func:`check_folder` scans the layout (:func:`smir_lib.data.folder.scan_folder`), then reads
every file once: every image's size from its header (EXIF orientation applied) and every image
decoded (a file cut short fails here, not in the middle of a run), every mask's size from its
header compared with its image's, every mask decoded, every pool image decoded; an image above
:data:`PIXEL_BUDGET` pixels is a warning (what it costs to train on). It never stops at the first
problem, of the folder or of a file (a mask of the wrong size with unknown values is reported for
both): the :class:`FolderReport` lists them all, with counts per split, image sizes and the share
of labelled pixels per class.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from smir_lib.data.base import ImageLoadError, LabelError, image_shape, open_image_array, size_mismatch
from smir_lib.data.folder import READ_FIX, SIZE_FIX, FolderLayout, scan_folder

__all__ = ["FolderReport", "check_folder"]


@dataclass
class FolderReport:
    """What :func:`check_folder` found. ``ok`` is True when ``problems`` is empty."""

    layout: FolderLayout
    counts: dict[str, int]
    sizes: Counter = field(default_factory=Counter)  # (width, height) -> number of images
    pixel_counts: dict[str, np.ndarray] = field(default_factory=dict)  # split -> (C,) labelled pixels
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # worth knowing, not blocking

    @property
    def ok(self) -> bool:
        return not self.problems

    def class_shares(self) -> dict[str, list[float]]:
        """Per split, the share of labelled (not ignored) pixels in each class."""
        return {s: (c / max(c.sum(), 1)).tolist() for s, c in self.pixel_counts.items()}

    def format(self) -> str:
        """The report as text: splits, sizes, class shares, then every problem."""
        lines = [f"folder dataset {self.layout.root} ({self.layout.kind})", f"  {self.layout.split_note}",
                 "  images: " + ", ".join(f"{s} {n}" for s, n in self.counts.items())]
        lines += [f"  {note}" for note in self.layout.notes]
        if self.layout.unused:
            lines.append(f"  {len(self.layout.unused)} labelled image(s) in no split (unused): "
                         f"{', '.join(self.layout.unused[:5])}")
        sizes = ", ".join(f"{w}x{h} ({n})" for (w, h), n in self.sizes.most_common(6))
        lines.append(f"  sizes (width x height): {sizes or 'none'}"
                     + (f" and {len(self.sizes) - 6} more" if len(self.sizes) > 6 else ""))
        if self.layout.classes is not None:
            names = self.layout.classes.names
            for split, shares in self.class_shares().items():
                lines.append(f"  class pixels, {split}: "
                             + ", ".join(f"{n} {100 * s:.1f} %" for n, s in zip(names, shares)))
        lines += [f"  warning: {w}" for w in self.warnings]
        lines.append(f"{len(self.problems)} problem(s)" + (":" if self.problems else ": ready to train"))
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


def _header_shape(path: Path, exif_transpose: bool, problems: list[str]) -> tuple[int, int] | None:
    """``(height, width)`` from the file's header, or None with the reason added to ``problems``."""
    try:
        return image_shape(path, exif_transpose=exif_transpose, fix=READ_FIX)
    except ImageLoadError as err:
        problems.append(str(err))
        return None


PIXEL_BUDGET = 40_000_000
"""Pixels above which an image is worth a warning: fine-tuning, ``evaluate`` and ``predict`` read
labelled and predicted photos at full size (a 10000 x 10000 photo measured 10.2 GB in ``predict``);
pretraining reads pool photos decoded smaller (``SegmentationFiles.read_near``: 0.6 GB, not 6.2)."""


def _over_budget(image: Path, hw: tuple[int, int]) -> str:
    h, w = hw
    return (f"{image} is {w}x{h} = {w * h / 1e6:.0f} M pixels (budget {PIXEL_BUDGET / 1e6:.0f} M): decoding it "
            f"costs about {w * h * 12 / 1e9:.1f} GB as floats, more in training and predict (a pool photo is "
            f"decoded smaller for pretraining); downsize it, or cut it into tiles")


def check_folder(root: str | os.PathLike, progress: bool = True) -> FolderReport:
    """Validate the folder dataset at ``root`` without training (see the module docstring)."""
    from tqdm.auto import tqdm

    layout = scan_folder(Path(root))
    report = FolderReport(layout, {**{s: len(p) for s, p in layout.splits.items()}, "pool": len(layout.pool)},
                          problems=list(layout.problems))
    classes = layout.classes
    n_classes = len(classes.names) if classes else 0
    jobs = [(s, image, mask) for s, pairs in layout.splits.items() for image, mask in pairs]
    labelled = {image for _, image, _ in jobs}
    jobs += [("pool", image, None) for image in layout.pool if image not in labelled]
    for split, image, mask in tqdm(jobs, desc="checking", disable=not progress, leave=False):
        hw = _header_shape(image, True, report.problems)
        if hw is not None:
            report.sizes[(hw[1], hw[0])] += 1
            if hw[0] * hw[1] > PIXEL_BUDGET:
                report.warnings.append(_over_budget(image, hw))
            try:  # decoded, so a file cut short fails here and not in the middle of a run
                open_image_array(image, "RGB", exif_transpose=True, fix=READ_FIX)
            except ImageLoadError as err:
                report.problems.append(str(err))
        if mask is None or classes is None:
            continue
        mask_hw = _header_shape(mask, False, report.problems)  # the size even when the pixels do not decode
        if mask_hw is None:
            continue
        if hw is not None and mask_hw != hw:
            report.problems.append(size_mismatch(hw, mask_hw, image, mask, SIZE_FIX))
        try:
            index = classes.decode(mask)  # (H, W) class indices, 255 = ignored
        except (LabelError, ImageLoadError) as err:
            report.problems.append(str(err))
            continue
        if index.shape != hw:
            continue
        counts = np.bincount(index[index != 255].ravel(), minlength=n_classes)  # (C,)
        report.pixel_counts[split] = report.pixel_counts.get(split, 0) + counts
    return report
