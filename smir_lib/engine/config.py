"""One flat, typed configuration for every run of the engine, with the presets ``paper`` and ``fast``.

A run is described by a :class:`Config`: which data, which network, how the patches are masked,
how long and how hard to train. ``load_config`` starts from a preset name or a YAML/JSON file and
applies overrides, either a dict or ``key=value`` strings from the command line::

    cfg = load_config("fast", overrides={"seed": 3})
    cfg = load_config("runs/x/config.yaml", overrides=["pretrain_epochs=20", "model=resnet18"])

An unknown key is an error that lists the valid keys, so a typo never silently falls back to a
default. Every run folder gets the resolved configuration as ``config.json``; resuming checks
that the configuration still matches.

Presets:

* ``paper``: the paper's numbers (ResNet-34 U-Net, 256 px, 512 patches, K = 5, 10 partitions,
  1000 pretraining epochs per step, batch by dataset, Adam 3e-3 with 10 warm-up epochs, 500
  fine-tuning epochs of batch 8).
* ``fast``: minutes on a laptop CPU: the ``tiny`` network on synthetic fields of 144 px, a pool
  of 96 images in 3 partitions of 4 epochs each, 128 px crops, 10 fine-tuning epochs on 32 images,
  decoded images kept in memory (``cache_images``). MS-SSIM needs the short side above
  ``(win - 1) * 16`` px, so the fast preset uses a 7x7 window (limit 96 px) instead of the paper's
  11x11 (limit 160 px): 128 px crops instead of 192 px more than halve the cost of every step.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from smir_lib.data.registry import ALL_NAMES
from smir_lib.files import atomic_write_text, read_yaml
from smir_lib.models import PRESETS as MODEL_PRESETS
from smir_lib.patches import n_hidden, patch_grid
from smir_lib.selective import STRATEGIES

__all__ = ["Config", "ConfigValueError", "PRESETS", "PRETRAIN_BATCH", "load_config", "packaged_configs", "parse_overrides", "save_config",
           "config_diff"]

class ConfigValueError(ValueError):
    """A config value is invalid; ``key`` names the field (so a file's line can be named too)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


MAX_SIDE = 8192
"""Largest ``image_size`` / ``synthetic_size``: beyond it one image alone fills a GPU."""
MAX_IMAGES = 10_000_000
"""Largest ``*_size``: more images than any dataset holds (and the synthetic fields are generated)."""

PRETRAIN_BATCH: dict[str, int] = {"voc": 128, "cityscapes": 128, "nassar": 256, "sugarbeets": 64}
"""The authors' pretraining batch size per dataset; any other dataset gets 128."""


@dataclass
class Config:
    """Everything a pretraining, fine-tuning or evaluation run depends on.

    Data
        dataset: downstream dataset (``smir_lib.data.DATASET_NAMES``), also the pretraining pool.
        pool_dataset: pretraining pool when it differs ("cross" setting); None = ``dataset``.
        data_root: data folder; None = ``$SMIR_DATA_DIR`` or ``./data``.
        pool_size: use only the first ``pool_size`` pool images (None = all; synthetic needs a number).
        train_size, val_size, test_size: limit the labelled splits (None = all / dataset default).
        synthetic_size: side of the generated synthetic images, before any crop.
        include_eval_in_pool: reproduce the authors' pools that contain the evaluation images.
    Network
        model: ``smir_lib.models.PRESETS`` name: ``resnet34`` (paper), ``resnet18``, ``tiny``.
    Masking
        image_size: training crop side and the short side images are resized to for scoring.
        n_patches: nominal patch count (512: a 21x21 grid on 256x256).
        mask_ratio: fraction of patches hidden. k: random masks averaged per selective score.
        partitions: partitions of the pool (= selective steps).
        mask_strategy: how a selective step chooses its masks (``smir_lib.selective.STRATEGIES``;
            ``selective``: the paper; the others are the controls of docs/strategies.md).
        msssim_win: MS-SSIM window; the short side must exceed ``(msssim_win - 1) * 16`` px.
        shared_augmentation: input and target share the colour jitter (False: the authors' quirk
            of jittering the selective input only).
    Optimisation
        lr, warmup_epochs, min_lr_factor: Adam (no weight decay), linear warm-up from
            ``min_lr_factor * lr`` then cosine down to it, stepped per epoch.
        pretrain_epochs: epochs per selective step. random_epochs: epochs of the random-masking
            baseline on the whole pool (None = ``pretrain_epochs``: the same number of iterations
            as the selective loop, as in the paper's recipe).
        pretrain_batch: None = the per-dataset table ``PRETRAIN_BATCH``.
        val_fraction: share of each partition (and of the random baseline's pool) kept for validation.
        finetune_epochs, finetune_batch, finetune_loss (``jaccard`` or ``ce``).
    Faithfulness (issue 17; defaults = the authors' code unless noted)
        handoff: which checkpoint of step k-1 scores and warm-starts step k: ``last`` (the
            authors: the weights after its last epoch) or ``best`` (its best-validation epoch).
        val_masking: how selective steps validate: ``selective`` (the authors: the step's
            validation images, selectively masked by the previous model) or ``random`` (fixed
            random masks, comparable across steps). Step 0 always uses fixed random masks.
        metric: ``ours`` (default: classes absent from the test set leave the mean; void pixels
            ignored in training and scoring) or ``authors`` (VOC / Cityscapes train void as an
            extra output; the authors' mIoU, absent classes as IoU 0, is reported either way).
        reinit_head: re-initialise the head downstream even when its shape matches the 3-colour
            reconstruction head (default; False keeps it for 3-class tasks, as the authors do).
    Machinery
        seed, deterministic (``torch.use_deterministic_algorithms``), workers (DataLoader
        processes; persistent for a whole stage), amp (``auto``: bf16/fp16 on CUDA, bf16 on a
        CPU with AMX-BF16, else float32, see ``runtime.amp_dtype``; ``off``, ``bf16``, ``fp16``),
        channels_last (CUDA and CPU), device (``auto``, ``cpu``, ``cuda``, ``cuda:1``),
        score_batch (images per scoring batch), score_chunk (masked copies per forward pass,
        None = a whole batch; halved on out-of-memory), progress (tqdm bars; the environment variable
        ``SMIR_PROGRESS=0`` makes False the default, so batch runs such as papermill show none), cache_images
        (decode every image once and keep it in memory, 8-bit images as uint8; the pool resized
        for the selective steps too: same results, no file decoding per item; for datasets
        that fit in memory).
    Your own data, tiles and evaluation (issue 16)
        dataset ``folder`` with ``data_root=DIR`` reads your own images (``smir_lib.data.folder``).
        pool_tile_size: cut every pool image into tiles of this many px at full resolution
            (None = off, the paper's recipe: whole images); ``pool_size`` still counts source images.
        pool_tile_stride: px between tiles (None = ``pool_tile_size``: no overlap but at the
            borders, where the last tile is shifted inwards).
        eval_mode: ``resize`` (the paper's test protocol: short side ``image_size``, whole image)
            or ``sliding`` (full resolution, windows of ``image_size`` px averaged where they overlap).
        eval_stride: px between sliding windows (None = ``image_size // 2``).
    """

    dataset: str = "synthetic"
    pool_dataset: str | None = None
    data_root: str | None = None
    pool_size: int | None = None
    train_size: int | None = None
    val_size: int | None = None
    test_size: int | None = None
    synthetic_size: int = 256
    include_eval_in_pool: bool = False
    model: str = "resnet34"
    image_size: int = 256
    n_patches: int = 512
    mask_ratio: float = 0.5
    k: int = 5
    partitions: int = 10
    mask_strategy: str = "selective"
    msssim_win: int = 11
    shared_augmentation: bool = True
    lr: float = 3e-3
    warmup_epochs: int = 10
    min_lr_factor: float = 0.01
    pretrain_epochs: int = 1000
    random_epochs: int | None = None
    pretrain_batch: int | None = None
    val_fraction: float = 0.1
    finetune_epochs: int = 500
    finetune_batch: int = 8
    finetune_loss: str = "jaccard"
    # issue 17: the authors' hand-off and metric as named options (see the docstring)
    handoff: str = "last"
    val_masking: str = "selective"
    metric: str = "ours"
    reinit_head: bool = True
    seed: int = 0
    deterministic: bool = False
    workers: int = 4
    amp: str = "auto"
    channels_last: bool = True
    device: str = "auto"
    score_batch: int = 16
    score_chunk: int | None = None
    progress: bool = True
    cache_images: bool = False
    # issue 16: your own data, pool tiles, sliding-window evaluation
    pool_tile_size: int | None = None
    pool_tile_stride: int | None = None
    eval_mode: str = "resize"
    eval_stride: int | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.finetune_loss in ("jaccard", "ce"), "finetune_loss", "'jaccard' or 'ce'"),
            (self.amp in ("auto", "off", "bf16", "fp16"), "amp", "'auto', 'off', 'bf16' or 'fp16'"),
            (0.0 < self.mask_ratio < 1.0, "mask_ratio", "a fraction in (0, 1), e.g. 0.5"),
            (0.0 < self.val_fraction < 1.0, "val_fraction", "a fraction in (0, 1), e.g. 0.1"),
            (self.partitions >= 1, "partitions", "at least 1 (the paper uses 10)"),
            (self.k >= 1, "k", "at least 1 random mask per image (the paper uses 5)"),
            (self.mask_strategy in STRATEGIES, "mask_strategy", f"one of {', '.join(STRATEGIES)} (the paper: selective)"),
            (self.msssim_win % 2 == 1, "msssim_win", "an odd window size, e.g. 11 or 7"),
            (self.handoff in ("last", "best"), "handoff", "'last' (the authors) or 'best'"),
            (self.val_masking in ("selective", "random"), "val_masking",
             "'selective' (the authors) or 'random'"),
            (self.metric in ("ours", "authors"), "metric", "'ours' or 'authors'"),
            (self.eval_mode in ("resize", "sliding"), "eval_mode", "'resize' or 'sliding'"),
            (re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device) is not None, "device",
             "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"),
            (self.pool_tile_size is None or self.pool_tile_size >= 32, "pool_tile_size", "None or at least 32 px"),
            (self.pool_tile_stride is None or self.pool_tile_stride >= 1, "pool_tile_stride", "None or at least 1 px"),
            (self.eval_stride is None or self.eval_stride >= 1, "eval_stride", "None or at least 1 px"),
        ]
        # Issue 18: counts that would silently mean something else (0 -> the default batch) or
        # end in an unrelated error far from the config.
        checks += [
            (self.pretrain_batch is None or self.pretrain_batch >= 1, "pretrain_batch",
             "at least 1, or None for the per-dataset table (128 for most datasets)"),
            (self.pretrain_epochs >= 1, "pretrain_epochs", "at least 1 epoch per step (the paper uses 1000)"),
            (self.random_epochs is None or self.random_epochs >= 1, "random_epochs",
             "at least 1, or None for pretrain_epochs"),
            (self.finetune_epochs >= 1, "finetune_epochs", "at least 1 (the paper uses 500)"),
            (self.finetune_batch >= 1, "finetune_batch", "at least 1 (the paper uses 8)"),
            (self.score_batch >= 1, "score_batch", "at least 1 image per scoring batch, e.g. 16"),
            (self.score_chunk is None or self.score_chunk >= 1, "score_chunk",
             "at least 1, or None for a whole batch"),
            (self.workers >= 0, "workers", "0 (load in the main process) or more DataLoader processes"),
            (self.n_patches >= 1, "n_patches", "at least 1 (the paper uses 512)"),
            (1 <= self.image_size <= MAX_SIDE, "image_size", f"a side in pixels from 1 to {MAX_SIDE}, e.g. 256"),
        ]
        # Issue 29: every other number, so none ends in a run that succeeds with a meaningless result
        # (NaN weights, negative learning rates, zero images) or fills the memory.
        sizes = f"at least 1 and at most {MAX_IMAGES:,} images, or None for all"
        checks += [
            (self.n_patches <= self.image_size ** 2, "n_patches",
             f"at most {self.image_size ** 2} (one patch per pixel of the {self.image_size} px crop)"),
            (math.isfinite(self.lr) and self.lr > 0, "lr", "a positive finite learning rate, e.g. 3e-3"),
            (self.warmup_epochs >= 0, "warmup_epochs", "0 or more epochs (the paper uses 10)"),
            (0.0 <= self.min_lr_factor <= 1.0, "min_lr_factor",
             "a fraction in [0, 1] of lr where the schedule starts and ends, e.g. 0.01"),
            (1 <= self.msssim_win <= 31, "msssim_win", "an odd window size from 1 to 31, e.g. 11 or 7"),
            (32 <= self.synthetic_size <= MAX_SIDE, "synthetic_size", f"a side from 32 to {MAX_SIDE} px, e.g. 256"),
            (self.k <= 1000, "k", "at most 1000 random masks per image (the paper uses 5)"),
            (self.partitions <= MAX_IMAGES, "partitions", "at most one per pool image (the paper uses 10)"),
            (self.eval_stride is None or self.eval_stride <= self.image_size, "eval_stride",
             f"at most image_size ({self.image_size} px): a longer stride leaves pixels no window sees"),
            (self.pool_tile_size is None or self.pool_tile_size <= MAX_SIDE, "pool_tile_size",
             f"None or 32 to {MAX_SIDE} px"),
            (None in (self.pool_tile_size, self.pool_tile_stride) or self.pool_tile_stride <= self.pool_tile_size,
             "pool_tile_stride", f"at most pool_tile_size ({self.pool_tile_size} px): a longer stride skips pixels"),
        ] + [(getattr(self, key) is None or 1 <= getattr(self, key) <= MAX_IMAGES, key, sizes)
             for key in ("pool_size", "train_size", "val_size", "test_size")]
        # Round 3: the names too, so a typo (model=resnet35) fails here, not after the data loaded.
        checks += [
            (self.model in MODEL_PRESETS, "model", f"one of {', '.join(MODEL_PRESETS)} (the paper: resnet34)"),
            (self.dataset in ALL_NAMES, "dataset", f"one of {', '.join(ALL_NAMES)}"),
            (self.pool_dataset is None or self.pool_dataset in ALL_NAMES, "pool_dataset",
             f"None (the dataset itself) or one of {', '.join(ALL_NAMES)}"),
        ]
        for ok, key, expected in checks:
            if not ok:
                raise ConfigValueError(key, f"config {key}={getattr(self, key)!r} is invalid: expected {expected}")
        limit = (self.msssim_win - 1) * 16
        if self.image_size <= limit:
            raise ConfigValueError("image_size", f"config image_size={self.image_size} is too small for MS-SSIM with a "
                                   f"{self.msssim_win}x{self.msssim_win} window (needs > {limit} px): raise "
                                   f"image_size or lower msssim_win (7 needs > 96 px, 5 needs > 64 px)")
        self._check_hidden_patches()

    def _check_hidden_patches(self) -> None:
        """``mask_ratio`` must hide at least one patch of the actual grid of an ``image_size`` crop."""

        grid = patch_grid(self.image_size, self.image_size, self.n_patches)
        if n_hidden(grid, self.mask_ratio) == 0:
            raise ConfigValueError(
                "mask_ratio", f"config mask_ratio={self.mask_ratio} hides no patch: the {self.image_size} px "
                f"crop has {grid.n_patches} patches ({grid.gh}x{grid.gw}) and floor({self.mask_ratio} * "
                f"{grid.n_patches}) = 0; use mask_ratio >= {1 / grid.n_patches:.4g} (the paper uses 0.5)")

    @property
    def pool_name(self) -> str:
        """The dataset the pretraining pool comes from."""
        return self.pool_dataset or self.dataset

    @property
    def batch_for_pretraining(self) -> int:
        """``pretrain_batch``, or the authors' batch size for the pool dataset."""
        return self.pretrain_batch or PRETRAIN_BATCH.get(self.pool_name, 128)

    @property
    def epochs_for_random(self) -> int:
        """Epochs of the random-masking baseline on the whole pool."""
        return self.random_epochs if self.random_epochs is not None else self.pretrain_epochs

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> Config:
        """A copy with ``changes`` applied (unknown keys raise like ``load_config``)."""
        return _build({**self.to_dict(), **_checked(changes)})


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string"}
"""How a type is named in error messages."""


PRESETS: dict[str, dict] = {
    "paper": {"model": "resnet34", "image_size": 256, "n_patches": 512, "k": 5, "partitions": 10,
              "pretrain_epochs": 1000, "finetune_epochs": 500, "finetune_batch": 8,
              "msssim_win": 11, "warmup_epochs": 10},
    "fast": {"model": "tiny", "dataset": "synthetic", "synthetic_size": 144, "image_size": 128,
             "msssim_win": 7, "n_patches": 256, "k": 3, "partitions": 3, "pool_size": 96,
             "pretrain_epochs": 4, "pretrain_batch": 8, "warmup_epochs": 1,
             "finetune_epochs": 10, "finetune_batch": 8, "train_size": 32, "val_size": 8,
             "test_size": 8, "workers": 0, "score_batch": 8,
             # issue 13: decoded images kept in memory; training images/s +15 % on synthetic
             # fields, x3.3 on CWFID (make bench); the items are the same.
             "cache_images": True},
}
"""Preset overrides on the ``Config`` defaults (which are the paper's numbers)."""


PACKAGED = Path(__file__).parents[1] / "configs"
"""Example config files shipped with the package, loadable by name (``load_config("cwfid_fast")``)."""


def packaged_configs() -> list[str]:
    """Names of the packaged example configs."""
    return sorted(p.stem for p in PACKAGED.glob("*.yaml"))


def config_keys() -> list[str]:
    """Every key a config (file, override, study protocol section) may set: ``Config``'s fields."""
    return [f.name for f in fields(Config)]


def _checked(values: Mapping) -> dict:
    valid = config_keys()
    unknown = [k for k in values if k not in valid]
    if unknown:
        raise ConfigValueError(unknown[0], f"unknown config key(s) {unknown}; valid keys are: {', '.join(valid)}")
    return dict(values)


def _coerce(key: str, value):
    """Turn ``value`` (often a string from the command line) into the type of field ``key``."""
    hint = typing.get_type_hints(Config)[key]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = type(None) in typing.get_args(hint)
    base = args[0] if args else hint
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null", "")):
        if optional:
            return None
        raise ConfigValueError(key, f"config {key} cannot be None: expected {_TYPE_NAMES.get(base, base.__name__)}")
    if base is bool:
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ConfigValueError(key, f"config {key}={value!r}: expected true or false")
        if value not in (0, 1) or not isinstance(value, (bool, int)):  # 2, 0.5, [...]: not a yes or no
            raise ConfigValueError(key, f"config {key}={value!r}: expected true or false")
        return bool(value)
    try:
        if isinstance(value, bool) and base in (int, float):  # YAML `k: true`, `partitions: yes`
            raise ValueError
        if base is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return base(float(value)) if base is int and isinstance(value, str) and "e" in value.lower() \
            else base(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigValueError(key, f"config {key}={value!r}: expected "
                               f"{_TYPE_NAMES.get(base, base.__name__)}") from None


def _build(values: Mapping) -> Config:
    return Config(**{k: _coerce(k, v) for k, v in _checked(values).items()})


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    """``["seed=3", "model=tiny"]`` -> ``{"seed": "3", "model": "tiny"}`` (typed by ``load_config``)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value; e.g. pretrain_epochs=20")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def read_mapping(path: Path, what: str = "config file") -> dict:
    """The mapping in a YAML/JSON file (an empty YAML file is ``{}``); a syntax error, or a file
    that is not a mapping, is one ValueError naming ``what``, the file and the line."""
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{what} {path}, line {err.lineno}: invalid JSON ({err.msg})") from None
    else:
        data = read_yaml(path, what) or {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{what} {path} holds a {type(data).__name__}; expected a mapping of keys")
    return dict(data)


def _read_file(path: Path) -> dict:
    """The mapping in a YAML/JSON config file, on top of the preset it names (``preset: fast``)."""
    data = read_mapping(path)
    base = data.pop("preset", None)  # a file may start from a preset: `preset: fast`
    for key in RUN_METADATA:  # a run folder's config.json names its method (see save_config)
        data.pop(key, None)
    if base is not None and (not isinstance(base, str) or base not in PRESETS):
        raise ConfigValueError("preset", f"config file {path}, line {_key_line(path, 'preset') or '?'}: preset "
                               f"{base!r} is unknown: expected one of {sorted(PRESETS)}")
    return {**(PRESETS[base] if base else {}), **data}


def _key_line(path: Path, key: str) -> int | None:
    """The line (1-based) where ``key`` is set in a YAML/JSON config file, None if not found."""

    pattern = re.compile(rf'^\s*"?{re.escape(key)}"?\s*:')
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if pattern.search(line) or (path.suffix == ".json" and f'"{key}"' in line):
            return number
    return None


def load_config(preset_or_path: str | Path = "paper",
                overrides: Mapping | Sequence[str] | None = None) -> Config:
    """Build a :class:`Config` from a preset, a YAML/JSON file or a packaged config, then ``overrides``.

    ``overrides`` is a dict, or a list of ``key=value`` strings (the command line); values are
    converted to each field's type. Unknown keys raise ``ValueError`` listing the valid keys.
    """
    file = None
    if isinstance(preset_or_path, Config):
        base = preset_or_path.to_dict()
    elif str(preset_or_path) in PRESETS:
        base = dict(PRESETS[str(preset_or_path)])
    elif Path(preset_or_path).is_file():
        file = Path(preset_or_path)
    elif (PACKAGED / f"{preset_or_path}.yaml").is_file():
        file = PACKAGED / f"{preset_or_path}.yaml"
    else:
        raise ValueError(f"config {str(preset_or_path)!r} is neither a preset ({sorted(PRESETS)}), "
                         f"a packaged config ({packaged_configs()}) nor an existing .yaml/.json file")
    if file is not None:
        base = _read_file(file)
    if overrides is not None and not isinstance(overrides, Mapping):
        overrides = parse_overrides(overrides)
    overrides = dict(overrides or {})
    if os.environ.get("SMIR_PROGRESS") == "0":  # batch runs (notebook runner, papermill): no bars
        base["progress"] = False  # an explicit override still wins
    try:
        return _build({**base, **overrides})
    except ConfigValueError as err:  # a bad value read from a file: name the file and its line
        line = _key_line(file, err.key) if file is not None and err.key not in overrides else None
        if line is None:
            raise
        raise ConfigValueError(err.key, f"config file {file}, line {line}: {err}") from None


RUN_METADATA = ("method", "init_sha256")
"""Keys of a run's ``config.json`` that describe the run, not its configuration (see :func:`save_config`)."""


def save_config(cfg: Config, run_dir: str | Path, method: str | None = None,
                metadata: Mapping | None = None) -> Path:
    """Write the resolved configuration to ``run_dir/config.json`` atomically; return the path.

    The one writer of a run's ``config.json``: the engine adds the run's ``method`` (``random``,
    ``selective``, ``finetune:<init>``), which ``load_config`` reads back as metadata, so the
    file loads as a config (``load_config("runs/x/config.json")``); ``metadata`` adds more such
    keys (``init_sha256``: the content hash of a fine-tuning run's init file), see ``RUN_METADATA``.
    """

    payload = {**cfg.to_dict(), **({"method": method} if method else {}), **(metadata or {})}
    return atomic_write_text(json.dumps(payload, indent=2), Path(run_dir) / "config.json")


_NOT_RESULTS = ("progress", "workers", "device", "score_batch", "score_chunk", "data_root", "cache_images")
"""Keys that change how a run executes but not what it computes (a resume may change them)."""


def config_diff(a: Mapping, b: Mapping) -> dict[str, tuple]:
    """Keys whose values differ between two config dicts, ignoring execution-only keys."""
    keys = (set(a) | set(b)) - set(_NOT_RESULTS)
    return {k: (a.get(k), b.get(k)) for k in sorted(keys) if a.get(k) != b.get(k)}
