"""One entry point for every dataset: ``get_dataset(name, split, root=None, **options)``.

``name`` picks a module of this package (``synthetic``, ``cwfid``, ``voc``, ``cityscapes``,
``nassar``, ``sugarbeets``, and ``folder`` for your own images); each module's
``build(split, root, **options)`` makes the dataset. Modules are imported only when asked for,
so using ``synthetic`` never touches the others.

Splits are ``train``, ``val``, ``test`` (labelled: ``(image, label)`` items) and ``pool``
(unlabelled pretraining images: the image alone). The data folder is the ``root`` argument,
else ``$SMIR_DATA_DIR``, else ``./data`` (each dataset in its own sub-folder); a missing dataset
raises :class:`~smir_lib.data.base.DatasetNotFoundError` holding the download command. For
``folder``, ``root`` is the folder itself (``DIR/images``, ``DIR/masks``, ``DIR/classes.yaml``).
"""

from __future__ import annotations

import importlib
import os

DATASET_NAMES: tuple[str, ...] = ("synthetic", "cwfid", "voc", "cityscapes", "nassar", "sugarbeets")
"""The built-in datasets (generated, or fetched by ``smir download``)."""
FOLDER = "folder"
"""Your own images in a folder (``smir_lib.data.folder``): ``dataset=folder data_root=DIR``."""
ALL_NAMES: tuple[str, ...] = DATASET_NAMES + (FOLDER,)


def _module(name: str):
    if name not in ALL_NAMES:
        raise ValueError(f"unknown dataset '{name}': expected one of {list(ALL_NAMES)}")
    return importlib.import_module(f"smir_lib.data.{name}")


def get_dataset(name: str, split: str, root: str | os.PathLike | None = None, **options):
    """Build dataset ``name`` for ``split``.

    Args:
        name: one of ``ALL_NAMES`` (``DATASET_NAMES`` or ``"folder"``).
        split: ``train``, ``val``, ``test`` or ``pool``.
        root: data folder (or the dataset folder itself); default ``$SMIR_DATA_DIR`` or ``./data``.
        **options: dataset options, e.g. ``n_images``, ``seed``, ``size`` (synthetic),
            ``include_eval_in_pool`` (real datasets), ``transform`` (all).

    Every dataset has ``class_names``, ``class_colors`` (RGB display colours), ``ignore_index``
    (255) and ``labelled``.
    """
    return _module(name).build(split, root, **options)


def class_info(name: str, root: str | os.PathLike | None = None) -> tuple[list[str], list[tuple[int, int, int]]]:
    """Class names and display colours of dataset ``name`` without opening its images
    (``folder`` reads only ``classes.yaml``): what ``predict`` needs on a machine without the data."""
    module = _module(name)
    if hasattr(module, "class_info"):
        return module.class_info(root)
    return list(module.CLASS_NAMES), [tuple(c) for c in module.CLASS_COLORS]


def class_entries(name: str, root: str | os.PathLike | None = None) -> list[dict]:
    """One dict per class of dataset ``name``: ``name``, display ``color`` and, for a folder
    dataset, the stored ``value`` or ``mask_color`` its masks use (what ``export`` records)."""
    module = _module(name)
    if hasattr(module, "class_entries"):
        return module.class_entries(root)
    names, colors = class_info(name, root)
    return [{"name": n, "color": list(c)} for n, c in zip(names, colors)]
