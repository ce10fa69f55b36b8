"""The initialisations compared downstream: their names, labels and colours, in one table.

Every study text and figure reads them from here, so a label or a colour is named once. An
initialisation is what a fine-tuning run starts from: ``scratch``, the ``imagenet`` encoder, or a
pretraining run (``random``, ``selective``, ``selective_cross`` in the reproduction study;
``random_3000``, ``selective_9000``, ``cross_synthetic_9000`` ... in the budget study, whose names
carry their pretraining budget in image-steps).
"""

from __future__ import annotations

__all__ = ["INIT_LABELS", "INIT_COLORS", "init_label", "init_method", "pair_labels"]

#: Display order and names of the reproduction study's initialisations.
INIT_LABELS = {"scratch": "scratch", "imagenet": "ImageNet encoder", "random": "random IR (self)",
               "selective": "selective IR (self)", "selective_cross": "selective IR (cross)"}

#: One colour per kind of initialisation, in every figure (and per masking strategy, issue 28).
INIT_COLORS = {"scratch": "#8C8C8C", "imagenet": "#55A868", "random": "#4C72B0",
               "selective": "#DD8452", "selective_cross": "#C44E52", "selective_unmasked": "#8172B3",
               "easiest": "#937860", "block": "#DA8BC3", "hard_ramp": "#CCB974", "objects_oracle": "#64B5CD"}


def init_label(init: str) -> str:
    """``selective_3000`` -> ``selective IR 3000``; ``cross_synthetic_9000`` -> ``selective IR 9000 (cross: synthetic)``;
    ``selective_unmasked_9000`` -> ``selective_unmasked IR 9000``."""
    if init == "scratch":
        return "scratch"
    if init.startswith("cross_"):
        _, pool, budget = init.split("_")
        return f"selective IR {budget} (cross: {pool})"
    method, budget = init_method(init), init.rsplit("_", 1)[1]
    return f"{method} IR {budget}"


def init_method(init: str) -> str:
    """The pretraining of a budget-study initialisation: ``selective_unmasked_9000`` -> ``selective_unmasked``,
    ``cross_synthetic_9000`` -> ``selective_cross``, ``scratch`` -> ``scratch``."""
    if init == "scratch" or init.startswith("cross_"):
        return "scratch" if init == "scratch" else "selective_cross"
    return init.rsplit("_", 1)[0]


def pair_labels(a: str, b: str) -> tuple[str, str]:
    """:func:`init_label` of both sides; beside a cross initialisation the other is marked (self)."""
    cross = a.startswith("cross") or b.startswith("cross")
    return tuple(init_label(x) + (" (self)" if cross and not x.startswith(("cross", "scratch")) else "") for x in (a, b))
