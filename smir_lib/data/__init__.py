"""Datasets, transforms and the synthetic field generator.

``get_dataset(name, split, root=None, **options)`` is the entry point (see ``registry``);
``transforms`` holds the kornia-based augmentation and evaluation preprocessing. Dataset
modules are imported lazily, on first use.
"""

from smir_lib.data.registry import ALL_NAMES, DATASET_NAMES, class_entries, class_info, get_dataset

__all__ = ["ALL_NAMES", "DATASET_NAMES", "class_entries", "class_info", "get_dataset"]
