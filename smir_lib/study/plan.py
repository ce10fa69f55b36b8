"""The budget study's protocol: which engine runs ("work units") it needs, and their configs.

A protocol (``smir_lib/configs/studies/<name>.yaml``, read by :func:`load_protocol`) crosses
seeds x label budgets x pretraining budgets. :func:`work_units` turns it into a deterministic list
of units, one engine run each:

* ``pretrain`` units: per seed, pool and pretraining budget, one run per masking strategy
  (``strategies``; default random IR and selective IR, the paper's pair): ``random`` is the
  random-masking baseline, every other strategy the partitioned selective loop with that
  ``mask_strategy`` (``smir_lib.selective.STRATEGIES``; ``selective`` = the paper). A unit's folder
  and config do not depend on which other strategies a protocol lists, so protocols that share a
  study root share their identical units (the stale-config check guards that they are). A budget is in image-steps (images x epochs over all stages); :func:`epochs_for_budget`
  turns it into epochs from the run's own pool or partition sizes, so both methods see the same
  number of images. A pool's selective run at the largest budget also serves as the "cross"
  initialisation of the other dataset (one run, two uses).
* ``finetune`` units: per seed, dataset and label budget, one run from each initialisation:
  scratch, every strategy at every budget, and selective IR on the cross pool at the
  largest budget. Every initialisation of a seed fine-tunes with that seed: the same head
  initialisation, data order and augmentation, so differences between them are paired.

Units come pretraining first, then fine-tuning, seed by seed; :func:`shard` gives process ``i``
of ``n`` its share (``units[i::n]``). Folders, relative to the study root::

    pretrain/<pool>/seed_<s>/<strategy>_<budget>/            (the engine's pretraining folder)
    finetune/<dataset>/seed_<s>/train_<n>/<init>/            (init: scratch, random_<b>, selective_<b>,
                                                              <strategy>_<b>, cross_<pool>_<b>)
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from smir_lib.data import ALL_NAMES
from smir_lib.engine.config import PRESETS, Config, config_keys, load_config, read_mapping
from smir_lib.engine.pretrain_data import load_split, partition_indices
from smir_lib.selective import STRATEGIES

__all__ = ["Protocol", "WorkUnit", "PROTOCOLS", "load_protocol", "protocol_names", "work_units", "shard",
           "parse_shard", "epochs_for_budget", "unit_config", "label_values", "stage_train_sizes"]

PROTOCOLS = Path(__file__).parents[1] / "configs" / "studies"
"""The packaged study protocols (``cpu``, ``reduced``, ``gpu``)."""


@dataclass
class Protocol:
    """What a budget study runs; see ``configs/studies/cpu.yaml`` for every field in use."""

    name: str
    seeds: list[int]
    datasets: list[str]
    pretrain_budgets: list[int]
    label_budgets: list[dict]
    engine: dict
    per_dataset: dict[str, dict] = field(default_factory=dict)
    cross: dict[str, str] = field(default_factory=dict)
    description: str = ""
    strategies: list[str] = field(default_factory=lambda: ["random", "selective"])

    def __post_init__(self) -> None:
        problems = [(not self.seeds, "seeds", "at least one seed"),
                    (not self.datasets, "datasets", "at least one dataset"),
                    (not self.pretrain_budgets or min(self.pretrain_budgets) < 1, "pretrain_budgets",
                     "image-steps >= 1, e.g. [1000, 3000, 9000]"),
                    (not self.label_budgets or any("train_size" not in b for b in self.label_budgets),
                     "label_budgets", "a list of dicts that each set train_size"),
                    (not self.strategies or len(set(self.strategies)) < len(self.strategies)
                     or not {"random", "selective"} <= set(self.strategies), "strategies",
                     "distinct names that include random and selective (the pair every strategy is compared with)")]
        for bad, key, expected in problems:
            if bad:
                raise ValueError(f"{key}={getattr(self, key)!r} is invalid: expected {expected}")
        self.pretrain_budgets = sorted(int(b) for b in self.pretrain_budgets)

    @property
    def largest_budget(self) -> int:
        return self.pretrain_budgets[-1]

    def pools(self) -> list[str]:
        """Every pool pretrained on: the datasets themselves, then the cross pools."""
        out = list(self.datasets)
        out += [p for d in self.datasets if (p := self.cross.get(d)) and p not in out]
        return out


def protocol_names() -> list[str]:
    return sorted(p.stem for p in PROTOCOLS.glob("*.yaml"))


def load_protocol(name_or_path: str | Path, overrides: dict | None = None) -> Protocol:
    """A packaged protocol by name (``cpu``, ``reduced``, ``gpu``) or a YAML file; ``overrides``
    replace top-level fields (e.g. ``{"seeds": [0, 1]}``).

    The whole file is checked up front, so a typo fails here, not at ``run`` once per unit: every
    key and dataset name must be known (a ``ValueError`` names it, where it is and the closest
    valid name), and every unit's engine config must build (``load_config``'s checks of each value).
    """
    path = Path(name_or_path)
    if not path.is_file():
        path = PROTOCOLS / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ValueError(f"study protocol {str(name_or_path)!r} is neither a file nor one of the packaged "
                         f"protocols {protocol_names()} (smir_lib/configs/studies/)")
    data = {**read_mapping(path, "study protocol"), **(overrides or {})}
    try:
        _check_names_and_keys(data)
        protocol = Protocol(name=data.pop("name", path.stem), **data)
        for dataset in protocol.pools():
            for i, labels in enumerate(protocol.label_budgets):
                try:
                    _engine_config(protocol, dataset, label_values(protocol, dataset, labels["train_size"]))
                except ValueError as err:
                    raise ValueError(f"{err} (dataset {dataset}, label_budgets[{i}])") from None
    except ValueError as err:
        raise ValueError(f"study protocol {path}: {err}") from None
    return protocol


def _check_known(names: list[tuple[str, str]], known: list[str], what: str) -> None:
    """Raise on the first ``(name, where)`` whose name is not in ``known``: say where it is, and the
    closest known name (``difflib``) or, without one, every known name."""
    for name, where in names:
        if name not in known:
            close = difflib.get_close_matches(str(name), known, n=1)
            fix = f"did you mean {close[0]!r}?" if close else f"expected one of: {', '.join(known)}"
            raise ValueError(f"unknown {what} {where}; {fix}")


def _check_names_and_keys(data: dict) -> None:
    """Every top-level key of a protocol, every dataset name (``smir_lib.data.ALL_NAMES``) and every
    config key (``Config``'s fields) of ``engine``, ``per_dataset`` and each label budget is known."""

    top = [f.name for f in fields(Protocol)]
    _check_known([(k, k) for k in data], top, "key")
    missing = [f.name for f in fields(Protocol) if f.name != "name" and f.name not in data
               and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise ValueError(f"missing key(s) {missing}: see smir_lib/configs/studies/cpu.yaml for every field")
    shapes = {"seeds": list, "datasets": list, "pretrain_budgets": list, "label_budgets": list,
              "engine": Mapping, "per_dataset": Mapping, "cross": Mapping, "strategies": list}
    for key, shape in shapes.items():
        if key in data and not isinstance(data[key], shape):
            raise ValueError(f"{key}={data[key]!r} is a {type(data[key]).__name__}; expected a "
                             f"{'list' if shape is list else 'mapping'}")
    datasets, per_dataset, cross = data["datasets"], data.get("per_dataset", {}), data.get("cross", {})
    names = [(d, f"{d!r} in datasets[{i}]") for i, d in enumerate(datasets)]
    names += [(d, f"{d!r} in per_dataset") for d in per_dataset]
    names += [(p, f"{p!r} in cross.{d}") for d, p in cross.items()]
    _check_known(names, list(ALL_NAMES), "dataset")
    _check_known([(m, f"{m!r} in strategies") for m in data.get("strategies", [])], list(STRATEGIES), "strategy")
    _check_known([(d, f"{d!r} in cross (not in datasets)") for d in cross], list(datasets), "downstream dataset")
    if "preset" in data["engine"]:
        preset = data["engine"]["preset"]
        _check_known([(preset, f"{preset!r} in engine.preset")], list(PRESETS), "preset")
    keys = config_keys()
    sections = [("engine", data["engine"], keys + ["preset"])]
    sections += [(f"per_dataset.{d}", v, keys) for d, v in per_dataset.items()]
    for i, budget in enumerate(data["label_budgets"]):
        sections.append((f"label_budgets[{i}]", budget, keys + ["per_dataset"]))
        own = budget.get("per_dataset", {}) if isinstance(budget, Mapping) else {}
        if not isinstance(own, Mapping):
            raise ValueError(f"label_budgets[{i}].per_dataset={own!r} is a {type(own).__name__}; expected a "
                             "mapping of dataset name to config keys, e.g. {synthetic: {finetune_epochs: 600}}")
        _check_known([(d, f"{d!r} in label_budgets[{i}].per_dataset (not in datasets)") for d in own],
                     list(datasets), "dataset")
        sections += [(f"label_budgets[{i}].per_dataset.{d}", v, keys) for d, v in own.items()]
    for where, values, known in sections:
        if not isinstance(values, Mapping):
            raise ValueError(f"{where}={values!r} is a {type(values).__name__}; expected a mapping of config keys")
        _check_known([(k, f"{where}.{k}") for k in values], known, "key")


@dataclass(frozen=True, order=True)
class WorkUnit:
    """One engine run of the study. ``dataset`` is the pool of a pretraining unit, the downstream
    dataset of a fine-tuning unit; ``init`` (fine-tuning) is ``scratch`` or the pretraining unit
    (``method``, ``budget``, ``pool``) it starts from; ``train_size`` is the label budget."""

    kind: str  # "pretrain" or "finetune"
    seed: int
    dataset: str
    method: str = ""  # a strategy (random, selective, ...): the pretraining (of the init, for a fine-tuning unit)
    budget: int = 0  # image-steps of that pretraining
    pool: str = ""  # pool of that pretraining (= dataset for self, the cross pool for cross)
    train_size: int = 0

    @property
    def init(self) -> str:
        """``scratch``, ``<strategy>_<b>`` (``random_<b>``, ``selective_<b>``, ...) or ``cross_<pool>_<b>``."""
        if self.kind == "pretrain" or not self.method:
            return "scratch" if self.kind == "finetune" else ""
        if self.pool != self.dataset:
            return f"cross_{self.pool}_{self.budget}"
        return f"{self.method}_{self.budget}"

    @property
    def folder(self) -> str:
        if self.kind == "pretrain":
            return f"pretrain/{self.dataset}/seed_{self.seed}/{self.method}_{self.budget}"
        return f"finetune/{self.dataset}/seed_{self.seed}/train_{self.train_size}/{self.init}"

    @property
    def dependency(self) -> WorkUnit | None:
        """The pretraining unit a fine-tuning unit starts from (None for scratch and pretraining)."""
        if self.kind == "pretrain" or not self.method:
            return None
        return WorkUnit("pretrain", self.seed, self.pool, self.method, self.budget)


def work_units(protocol: Protocol) -> list[WorkUnit]:
    """Every unit of ``protocol``, in a fixed order: all pretraining, then all fine-tuning, seed by seed."""
    pretrain, finetune = [], []
    for seed in protocol.seeds:
        for pool in protocol.pools():
            budgets = protocol.pretrain_budgets if pool in protocol.datasets else [protocol.largest_budget]
            methods = protocol.strategies if pool in protocol.datasets else ("selective",)
            pretrain += [WorkUnit("pretrain", seed, pool, m, b) for b in budgets for m in methods]
        for dataset in protocol.datasets:
            for labels in protocol.label_budgets:
                n = int(labels["train_size"])
                finetune.append(WorkUnit("finetune", seed, dataset, train_size=n))
                finetune += [WorkUnit("finetune", seed, dataset, m, b, dataset, n)
                             for b in protocol.pretrain_budgets for m in protocol.strategies]
                if dataset in protocol.cross:
                    finetune.append(WorkUnit("finetune", seed, dataset, "selective", protocol.largest_budget,
                                             protocol.cross[dataset], n))
    return pretrain + finetune


def parse_shard(text: str) -> tuple[int, int]:
    """``"1/4"`` -> ``(1, 4)``: process 1 of 4 (0-based)."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"shard {text!r} is not i/n, e.g. 0/2 for the first of two processes") from None
    if n < 1:
        raise ValueError(f"shard {text!r}: n is the number of processes, at least 1 (0/1 runs every unit in one)")
    if not 0 <= i < n:
        raise ValueError(f"shard {text!r}: i must be 0..{n - 1} for n = {n} processes")
    return i, n


def shard(units: list[WorkUnit], index: int, count: int) -> list[WorkUnit]:
    """Process ``index`` of ``count``'s share: every ``count``-th unit, starting at ``index``.

    The shares are disjoint and together hold every unit. Pretraining comes first in ``units``,
    so every process starts with some of it; fine-tuning from a run that another process has not
    finished yet waits for it, or runs it (``study_run``).
    """
    return units[index::count]


def epochs_for_budget(budget: int, stage_train_sizes: list[int]) -> int:
    """Epochs per stage so that ``epochs * sum(stage_train_sizes)`` is nearest ``budget`` image-steps
    (at least 1): random masking has one stage (its pool's training images), selective masking one
    per partition, every stage the same number of epochs.

    >>> epochs_for_budget(3000, [421])       # random: 7 epochs x 421 tiles = 2947 images
    7
    >>> epochs_for_budget(3000, [42] * 10)   # selective: 7 epochs per step x 420 tiles = 2940 images
    7
    >>> epochs_for_budget(100, [421])        # less than one epoch still trains one
    1
    """
    per_epoch = sum(stage_train_sizes)
    if per_epoch < 1:
        raise ValueError(f"stages {stage_train_sizes} hold no training image: a larger pool is needed")
    return max(1, round(budget / per_epoch))


def _engine_config(protocol: Protocol, dataset: str, extra: dict) -> Config:
    engine = dict(protocol.engine)
    preset = engine.pop("preset", None)
    values = {**(PRESETS[preset] if preset else {}), **engine, **protocol.per_dataset.get(dataset, {}),
              **extra, "dataset": dataset}
    return load_config(Config(), overrides=values)


_POOL_KEYS = ("dataset", "pool_dataset", "data_root", "pool_size", "synthetic_size", "include_eval_in_pool",
              "pool_tile_size", "pool_tile_stride")
"""The config keys that decide a pool's size: units that share them share it."""

_pool_sizes: dict[tuple, int] = {}


def stage_train_sizes(cfg: Config, method: str) -> list[int]:
    """Training images of each stage of a ``method`` pretraining with ``cfg`` (pool read, not
    decoded; its size is read once per process for every unit that shares ``_POOL_KEYS``)."""

    key = tuple(getattr(cfg, k) for k in _POOL_KEYS)
    if key not in _pool_sizes:
        _pool_sizes[key] = len(load_split(cfg.replace(cache_images=False), "pool"))
    n_pool = _pool_sizes[key]
    partitions = 1 if method == "random" else cfg.partitions
    return [len(train) for train, _ in partition_indices(n_pool, partitions, cfg.val_fraction)]


def unit_config(protocol: Protocol, unit: WorkUnit) -> Config:
    """The engine config of ``unit``: the protocol's engine keys, the dataset's keys, then the
    unit's own: seed, epochs from its budget (pretraining) or its label budget (fine-tuning), and a
    selective-loop strategy's ``mask_strategy`` (``selective``, the default, changes nothing)."""
    if unit.kind == "pretrain":
        cfg = _engine_config(protocol, unit.dataset, {"seed": unit.seed})
        epochs = epochs_for_budget(unit.budget, stage_train_sizes(cfg, unit.method))
        strategy = {} if unit.method == "random" else {"mask_strategy": unit.method}
        return cfg.replace(pretrain_epochs=epochs, random_epochs=epochs if unit.method == "random" else None,
                           **strategy)
    return _engine_config(protocol, unit.dataset, {**label_values(protocol, unit.dataset, unit.train_size),
                                                   "seed": unit.seed})


def label_values(protocol: Protocol, dataset: str, train_size: int) -> dict:
    """The config keys of ``dataset``'s label budget of ``train_size`` images: the budget's own keys,
    then its ``per_dataset.<dataset>`` keys, which win (e.g. more fine-tuning epochs for a dataset
    whose validation curves rise longer)."""
    budget = next(b for b in protocol.label_budgets if int(b["train_size"]) == int(train_size))
    shared = {k: v for k, v in budget.items() if k != "per_dataset"}
    return {**shared, **budget.get("per_dataset", {}).get(dataset, {})}
