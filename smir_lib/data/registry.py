"""One entry point for every dataset: ``get_dataset(name, split, root=None, **options)``.

``name`` picks a module of this package (``synthetic``, ``cwfid``, ``voc``, ``cityscapes``,
``nassar``, ``sugarbeets``); each module's ``build(split, root, **options)`` makes the dataset.
Modules are imported only when asked for, so using ``synthetic`` never touches the others.

Splits are ``train``, ``val``, ``test`` (labelled: ``(image, label)`` items) and ``pool``
(unlabelled pretraining images: the image alone). The data folder is the ``root`` argument,
else ``$SMIR_DATA_DIR``, else ``./data`` (each dataset in its own sub-folder); a missing dataset
raises :class:`~smir_lib.data.base.DatasetNotFoundError` holding the download command.
"""

from __future__ import annotations

import importlib
import os

DATASET_NAMES: tuple[str, ...] = ("synthetic", "cwfid", "voc", "cityscapes", "nassar", "sugarbeets")


def get_dataset(name: str, split: str, root: str | os.PathLike | None = None, **options):
    """Build dataset ``name`` for ``split``.

    Args:
        name: one of ``DATASET_NAMES``.
        split: ``train``, ``val``, ``test`` or ``pool``.
        root: data folder (or the dataset folder itself); default ``$SMIR_DATA_DIR`` or ``./data``.
        **options: dataset options, e.g. ``n_images``, ``seed``, ``size`` (synthetic),
            ``include_eval_in_pool`` (real datasets), ``transform`` (all).

    Every dataset has ``class_names``, ``class_colors`` (RGB display colours), ``ignore_index``
    (255) and ``labelled``.
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset '{name}': expected one of {list(DATASET_NAMES)}")
    module = importlib.import_module(f"smir_lib.data.{name}")
    return module.build(split, root, **options)
