"""What every notebook does before and after its content, written once.

Each notebook opens with a ``parameters`` cell of literals (papermill overrides them) and then
calls :func:`setup_notebook`, which derives everything else:

- the profile (``"fast"`` or ``"paper"``), which the environment variable ``SMIR_PROFILE`` may
  override so ``SMIR_PROFILE=fast jupyter lab`` makes every notebook quick;
- the run folder: the ``RUN_DIR`` parameter, else ``$SMIR_RUN_DIR``, else ``runs/interactive``
  at the repository root (found by walking up to ``pyproject.toml``);
- the notebook's own output folder ``RUN_DIR/<notebook stem>/`` for its figures and metrics.

The returned :class:`NotebookContext` saves figures (:meth:`~NotebookContext.save_figure`),
writes metrics (:meth:`~NotebookContext.write_metrics`) and loads the engine configuration
(:meth:`~NotebookContext.config`). :func:`version_report` and :func:`check_data` are the
version/device report and the data check of the notebook skeleton (STYLE.md).
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import smir_lib
from smir_lib.data import get_dataset
from smir_lib.data.base import DatasetNotFoundError
from smir_lib.engine.config import load_config
from smir_lib.files import atomic_write, atomic_write_text
from smir_lib.notebook.prose import fill, read_templates

PROFILES = ("fast", "paper")


def find_repo_root(start: Path | str | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: the working directory) with a pyproject.toml.

    Falls back to the folder holding this package's parent when none is found (an installed copy).
    """
    here = Path(start or Path.cwd()).resolve()
    for folder in [here, *here.parents]:
        if (folder / "pyproject.toml").is_file():
            return folder
    return Path(__file__).resolve().parents[2]


def resolve_profile(profile: str) -> str:
    """``$SMIR_PROFILE`` wins over the parameter; the result must be one of :data:`PROFILES`."""
    chosen = os.environ.get("SMIR_PROFILE") or profile
    if chosen not in PROFILES:
        raise ValueError(f"PROFILE is {chosen!r}; expected one of {PROFILES}: "
                         "set PROFILE = \"fast\" in the parameters cell or unset SMIR_PROFILE")
    return chosen


def resolve_run_dir(run_dir: str | Path | None) -> Path:
    """The ``RUN_DIR`` parameter, else ``$SMIR_RUN_DIR``, else ``<repo>/runs/interactive``."""
    chosen = run_dir or os.environ.get("SMIR_RUN_DIR") or find_repo_root() / "runs" / "interactive"
    return Path(chosen).expanduser().resolve()


def to_jsonable(value: Any) -> Any:
    """Tensors, numpy values, paths and tuples turned into plain JSON types (recursively)."""
    if hasattr(value, "tolist"):  # torch.Tensor, numpy array or scalar
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and value != value:  # NaN is not valid JSON
        return None
    return value


@dataclass
class NotebookContext:
    """Everything a notebook derives from its parameters."""

    stem: str                 # e.g. "03_patch_loss_maps"
    profile: str              # "fast" or "paper"
    run_dir: Path             # shared by the whole series
    out_dir: Path             # run_dir / stem: this notebook's figures and metrics
    interactive: bool
    dataset: str
    seed: int
    train_own: bool = False   # True: train a quick model now instead of loading a teaching model
    overrides: dict = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)
    _config: Any = None

    def config(self):
        """The engine configuration for this profile, dataset and seed (loaded once)."""
        if self._config is None:
            overrides = {"seed": self.seed, **self.overrides}  # SMIR_PROGRESS=0: no bars (load_config)
            # No fallback: a dataset the config rejects is an error, never another dataset.
            self._config = load_config(self.profile, overrides={"dataset": self.dataset, **overrides})
        return self._config

    def say(self, section: str, values: dict):
        """Section ``section`` of ``notebooks/prose/<stem>.md`` filled from ``values``, as Markdown.

        The one way a notebook's prose quotes its run (``smir_lib.notebook.prose``).
        """
        from IPython.display import Markdown  # IPython comes with every kernel; not a library import

        path = find_repo_root() / "notebooks" / "prose" / f"{self.stem}.md"
        return Markdown(fill(read_templates(path), section, values, source=path))

    def path(self, name: str) -> Path:
        """A file in this notebook's output folder."""
        return self.out_dir / name

    def save_figure(self, fig, name: str, *, dpi: int = 110):
        """Save ``fig`` as ``<out_dir>/<name>.png`` and return the figure, so a cell can end with it."""
        path = self.out_dir / (name if name.endswith(".png") else f"{name}.png")
        atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=dpi, bbox_inches="tight"))
        if path not in self.figures:
            self.figures.append(path)
        return fig

    def write_metrics(self, metrics: dict, name: str = "metrics.json") -> Path:
        """Write ``metrics`` (plus profile, dataset, seed and figure list) as JSON; return the path."""
        payload = {"notebook": self.stem, "profile": self.profile, "dataset": self.dataset,
                   "seed": self.seed, **to_jsonable(metrics),
                   "figures": [p.name for p in self.figures]}
        path = self.out_dir / name
        atomic_write_text(json.dumps(payload, indent=2), path)
        return path


PARAMETER_RULES: dict[str, tuple[Any, str]] = {
    "SEED": (lambda v: _whole(v), "a whole number, e.g. 0"),
    "SEEDS": (lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(_whole(x) for x in v),
              "a non-empty list of whole numbers, e.g. [0, 1]"),
    "K": (lambda v: _whole(v) and v >= 1, "a whole number of at least 1, e.g. 5"),
    "N_IMAGES": (lambda v: _whole(v) and v >= 1, "a whole number of at least 1, e.g. 16"),
    "IMAGE_INDEX": (lambda v: _whole(v) and v >= 0, "a whole number of at least 0, e.g. 0"),
    "INTERACTIVE": (lambda v: isinstance(v, bool), "True or False"),
    "TRAIN_OWN": (lambda v: isinstance(v, bool), "True or False"),
}
"""What each notebook parameter accepts: a check and the words that say so."""


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_parameters(**values) -> None:
    """Refuse a notebook parameter out of range: one ``ValueError`` naming it and what it accepts."""
    for name, value in values.items():
        ok, expected = PARAMETER_RULES[name]
        if not ok(value):
            raise ValueError(f"parameter {name} = {value!r}: expected {expected}; change it in the parameters cell")


def check_index(name: str, value: int, length: int) -> int:
    """``value`` when it indexes ``length`` items; else a ``ValueError`` naming parameter ``name``."""
    check_parameters(**{name: value})
    if value >= length:
        raise ValueError(f"parameter {name} = {value} is past the data ({length} items, 0 to {length - 1}); "
                         f"change it in the parameters cell")
    return value


def setup_notebook(stem: str, *, profile: str = "fast", run_dir: str | Path | None = "",
                   interactive: bool = False, dataset: str = "synthetic", seed: int = 0,
                   train_own: bool = False, overrides: dict | None = None,
                   parameters: dict | None = None) -> NotebookContext:
    """Derive the run folder, profile and output folder from a notebook's parameters.

    ``train_own``: models the run folder lacks are trained now with the profile, instead of
    loading the teaching models (``smir_lib.notebook.zoo``). ``overrides`` go to
    ``smir_lib.engine.config.load_config`` (e.g. a smaller budget for a quick look).
    ``parameters``: the notebook's own parameters (``{"K": K, "N_IMAGES": N_IMAGES}``), checked
    with :func:`check_parameters` like ``seed``, ``interactive`` and ``train_own``.
    Creates ``run_dir/stem/``. Does not import torch.
    """
    check_parameters(SEED=seed, INTERACTIVE=interactive, TRAIN_OWN=train_own, **(parameters or {}))
    profile = resolve_profile(profile)
    root = resolve_run_dir(run_dir)
    enable_figure_display()
    out_dir = root / stem
    out_dir.mkdir(parents=True, exist_ok=True)
    return NotebookContext(stem=stem, profile=profile, run_dir=root, out_dir=out_dir,
                           interactive=bool(interactive), dataset=dataset, seed=int(seed),
                           train_own=bool(train_own), overrides=dict(overrides or {}))


def version_report(ctx: NotebookContext | None = None) -> dict:
    """Print and return the versions, the device and the threads this notebook runs with."""
    import matplotlib
    import numpy
    import torch


    if torch.cuda.is_available():
        device = f"cuda ({torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} GPU)"
    else:
        device = f"cpu ({torch.get_num_threads()} threads, {os.cpu_count()} cores visible)"
    info = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "matplotlib": matplotlib.__version__, "smir_lib": smir_lib.__version__, "device": device,
            "platform": platform.platform(terse=True)}
    if ctx is not None:
        info.update(profile=ctx.profile, dataset=ctx.dataset, seed=ctx.seed, run_dir=str(ctx.run_dir))
    width = max(map(len, info))
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")
    return info


def check_data(dataset: str, split: str = "train", root: str | Path | None = None, **options):
    """Open ``dataset``/``split``, print what was found and return it.

    Missing files raise ``DatasetNotFoundError`` with the folders searched and the exact command
    that gets them: a notebook asked for one dataset never goes on with another.
    """

    try:
        ds = get_dataset(dataset, split, root=root, **options)
    except DatasetNotFoundError as err:
        raise DatasetNotFoundError(
            f"{dataset!r} ({split}) is not on this machine. {err}\nOr set DATASET = 'synthetic'.") from None
    names = getattr(ds, "class_names", None)
    classes = f", classes {names}" if names else ""
    print(f"{dataset!r} {split}: {len(ds)} items{classes}")
    return ds


def enable_figure_display() -> None:
    """Make a cell that ends with a ``Figure`` show it as PNG, whatever the matplotlib backend.

    ``smir_lib.notebook.plots`` builds figures without pyplot; under papermill the backend may be Agg
    (``MPLBACKEND=Agg``), where IPython would otherwise print ``<Figure ...>`` instead of the image.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return
    ip = get_ipython()
    if ip is None:
        return
    from matplotlib.figure import Figure

    def png(fig: Figure) -> bytes:
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
        return buf.getvalue()

    ip.display_formatter.formatters["image/png"].for_type(Figure, png)


