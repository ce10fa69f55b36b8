"""The initialisations compared downstream: their names, labels and colours, in one table.

Every study text and figure reads them from here, so a label or a colour is named once. An
initialisation is what a fine-tuning run starts from: ``scratch``, the ``imagenet`` encoder, or a
pretraining run (``random``, ``selective``, ``selective_cross`` in the reproduction study;
``random_3000``, ``selective_9000``, ``cross_synthetic_9000`` ... in the budget study, whose names
carry their pretraining budget in image-steps).
"""

from __future__ import annotations

__all__ = ["INIT_LABELS", "INIT_COLORS", "init_label", "pair_labels"]

#: Display order and names of the reproduction study's initialisations.
INIT_LABELS = {"scratch": "scratch", "imagenet": "ImageNet encoder", "random": "random IR (self)",
               "selective": "selective IR (self)", "selective_cross": "selective IR (cross)"}

#: One colour per kind of initialisation, in every figure.
INIT_COLORS = {"scratch": "#8C8C8C", "imagenet": "#55A868", "random": "#4C72B0",
               "selective": "#DD8452", "selective_cross": "#C44E52"}


def init_label(init: str) -> str:
    """``selective_3000`` -> ``selective IR 3000``; ``cross_synthetic_9000`` -> ``selective IR 9000 (cross: synthetic)``."""
    if init == "scratch":
        return "scratch"
    parts = init.split("_")
    if parts[0] == "cross":
        return f"selective IR {parts[2]} (cross: {parts[1]})"
    return f"{parts[0]} IR {parts[1]}"


def pair_labels(a: str, b: str) -> tuple[str, str]:
    """:func:`init_label` of both sides; beside a cross initialisation the other is marked (self)."""
    cross = a.startswith("cross") or b.startswith("cross")
    return tuple(init_label(x) + (" (self)" if cross and not x.startswith(("cross", "scratch")) else "") for x in (a, b))
