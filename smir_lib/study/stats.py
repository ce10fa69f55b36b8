"""Paired differences over seeds and their bootstrap intervals (the budget study's statistics).

Every seed of the study fine-tunes each initialisation with the same head, data order and
augmentation, and pretrains its own models, so ``a - b`` per seed is a paired difference that
carries pretraining and fine-tuning variance alike. :func:`bootstrap_interval` resamples the seeds
with replacement (``n_resamples`` draws from an explicit generator, all at once: one gather and
one mean) and returns the percentile interval of the mean; :func:`paired_difference` applies it
to the metrics of two initialisations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

__all__ = ["bootstrap_interval", "paired_difference", "named", "BOOTSTRAP_SEED", "N_RESAMPLES", "MIN_SEEDS"]

BOOTSTRAP_SEED = 15
"""Seed of the resampling generator: a report computes the same interval every time."""

N_RESAMPLES = 10_000

MIN_SEEDS = 5
"""Fewest seeds whose interval is called a difference (the protocol's five): a percentile bootstrap
interval never reaches beyond the smallest and largest of the ``n`` observed differences, so with
2 or 3 seeds it is far narrower than a 95 % interval should be, whatever the true spread."""


def bootstrap_interval(values: torch.Tensor, level: float = 0.95, n_resamples: int = N_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(mean, low, high)`` over the first axis of ``values`` ``(S, M)``: the mean of the ``S``
    seeds and the percentile bootstrap interval of that mean, per column ``M`` (NaN ignored).

    With one seed the interval is that value (no spread to resample).
    """
    values = torch.as_tensor(values, dtype=torch.float64)
    values = values[:, None] if values.dim() == 1 else values  # (S, M)
    n = values.shape[0]
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, n, (n_resamples, n), generator=generator)  # (R, S) seed indices
    means = values[picks].nanmean(dim=1)  # (R, M): the mean of each resample
    alpha = (1.0 - level) / 2
    low, high = torch.nanquantile(means, torch.tensor([alpha, 1.0 - alpha], dtype=torch.float64), dim=0)
    return values.nanmean(dim=0), low, high


def paired_difference(a: Mapping[int, Sequence[float]], b: Mapping[int, Sequence[float]],
                      names: Sequence[str], level: float = 0.95) -> dict | None:
    """Mean and bootstrap interval of ``a[seed] - b[seed]`` over the seeds both have, per metric.

    ``a`` and ``b`` map a seed to its metrics (in the order of ``names``, e.g. mIoU then each
    class's IoU). Returns ``{"n_seeds", "seeds", "metrics": {name: {"mean", "low", "high"}}}``,
    or None when no seed has both.
    """
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    diff = torch.tensor([a[s] for s in seeds], dtype=torch.float64) - torch.tensor([b[s] for s in seeds],
                                                                                   dtype=torch.float64)
    mean, low, high = bootstrap_interval(diff, level)
    return {"n_seeds": len(seeds), "seeds": seeds,
            "metrics": {name: {"mean": m, "low": lo, "high": hi}
                        for name, m, lo, hi in zip(names, mean.tolist(), low.tolist(), high.tolist())}}


def named(diff: Mapping, metric: str = "mIoU") -> int:
    """+1 when ``a`` of a paired difference is ahead of ``b`` in ``metric`` (its interval above 0
    over at least :data:`MIN_SEEDS` seeds), -1 when ``b`` is, 0 when no difference can be named."""
    m = diff["metrics"][metric]
    if diff["n_seeds"] < MIN_SEEDS:
        return 0
    return 1 if m["low"] > 0 else -1 if m["high"] < 0 else 0
