"""Found a trained model, loading it: the models a notebook needs, read back or trained now.

A notebook looks for each model it needs in three places, in order:

1. the series' run folder (notebook 02 trains the random-mask model there, 05 the selective one,
   06 the fine-tuned ones, when they train their own);
2. the teaching models of its dataset (``smir_lib.notebook.zoo``: ``models/<dataset>/``, trained by the
   kit's recipe, verified against their manifest), when their network and patch grid match the
   notebook's profile and the notebook was not asked to train its own (``TRAIN_OWN``);
3. otherwise the engine trains it now with the notebook's profile.

Every function returns the model's source as a sentence the notebook prints.
"""

from __future__ import annotations

from pathlib import Path

from smir_lib.engine import pretrain
from smir_lib.engine.finetune import finetune
from smir_lib.engine.pretrain import load_pretrain_result
from smir_lib.files import read_json
from smir_lib.models import build_model, load_pretrained
from smir_lib.notebook import zoo

__all__ = ["find_pretrained", "teaching_set", "pretrained", "reconstruction_model", "finetuned"]

_GEOMETRY = ("model", "image_size", "n_patches", "msssim_win", "synthetic_size", "dataset")
"""Config keys a teaching model must share with a notebook's profile to stand in for its model."""


def find_pretrained(folder: str | Path):
    """The ``PretrainResult`` of the finished pretraining run in ``folder``, or None.

    ``smir_lib.engine.pretrain.load_pretrain_result`` reads it (and raises ``FileNotFoundError`` when
    the run has not finished); this turns "not finished" into None.
    """

    try:
        return load_pretrain_result(folder)
    except FileNotFoundError:
        return None


def teaching_set(ctx, cfg=None) -> tuple[Path, dict] | None:
    """``(folder, manifest)`` of the verified teaching models for this notebook, or None.

    None when ``ctx.train_own`` is set, when the dataset has none, or when their geometry
    (network, image size, patch grid) differs from the notebook's configuration ``cfg``.
    A damaged set raises ``smir_lib.notebook.zoo.ManifestError`` naming the file.
    """

    folder = None if ctx.train_own else zoo.shipped_folder(ctx.dataset)
    if folder is None:
        return None
    manifest = zoo.verify(folder)
    cfg = (cfg or ctx.config()).to_dict()
    if any(manifest["config"][k] != cfg[k] for k in _GEOMETRY):
        return None
    return folder, manifest


def _teaching_source(folder: Path, manifest: dict, what: str) -> str:
    return (f"Found a trained {what} ({folder.name} teaching model, made by `{manifest['command']}` at "
            f"commit {manifest['commit'][:12]}), loading it: {folder}")


def pretrained(ctx, kind: str = "random", cfg=None):
    """The ``PretrainResult`` of ``kind`` ("random" or "selective") pretraining for this notebook.

    See the module docstring for where it is looked for. Returns ``(result, message)``.
    """

    folder = Path(ctx.run_dir) / f"pretrain_{kind}"
    result = find_pretrained(folder)
    if result is not None:
        return result, f"Found a trained {kind}-mask model in this run folder, loading it: {folder}"
    shipped = teaching_set(ctx, cfg)
    if shipped is not None:
        zoo.require_listed(shipped[0], shipped[1], [f"pretrain_{kind}/{name}" for name in
                                                    ("result.json", "history.json", "pretrained.pt")])
        result = find_pretrained(shipped[0] / f"pretrain_{kind}")
        return result, _teaching_source(shipped[0], shipped[1], f"{kind}-mask model")
    train = {"random": pretrain.pretrain_random, "selective": pretrain.pretrain_selective}[kind]
    result = train(cfg or ctx.config(), folder)
    return result, f"No {kind}-mask model found: trained one now ({ctx.profile} profile) in {folder}"


def reconstruction_model(ctx, kind: str = "random", cfg=None):
    """The reconstruction network pretrained with ``kind`` masking, in eval mode, and where it came from.

    See :func:`pretrained`. Returns ``(model, message)``.
    """

    cfg = cfg or ctx.config()
    result, message = pretrained(ctx, kind, cfg)
    model = build_model(cfg, out_channels=3)
    load_pretrained(model, result.best_checkpoint, reinit_head=False)
    return model.eval(), message


def finetuned(ctx, name: str, init, cfg=None) -> tuple[dict, str]:
    """The fine-tuning results of initialisation ``name`` (``scratch``, ``random``, ``selective``...).

    ``RUN_DIR/finetune_<name>`` when it finished, else the teaching model of that name, else
    fine-tuned now from ``init`` (``smir_lib.engine.finetune.finetune``). Returns ``(results, message)``;
    ``results["checkpoint"]`` is a usable path in every case.
    """

    folder = Path(ctx.run_dir) / f"finetune_{name}"
    if (folder / "results.json").is_file():  # finished here before: the engine reads it back
        return finetune(cfg or ctx.config(), folder, init), f"{name}: found in this run folder ({folder})"
    shipped = teaching_set(ctx, cfg)
    if shipped is not None and (shipped[0] / f"finetune_{name}").is_dir():
        run = shipped[0] / f"finetune_{name}"
        zoo.require_listed(shipped[0], shipped[1], [f"finetune_{name}/results.json"])
        results = read_json(run / "results.json", expect=dict)
        zoo.require_listed(shipped[0], shipped[1], [f"finetune_{name}/{results.get('checkpoint')}"])
        results["checkpoint"] = str(run / results["checkpoint"])
        return results, _teaching_source(shipped[0], shipped[1], f"{name} segmentation model")
    return finetune(cfg or ctx.config(), folder, init), f"{name}: fine-tuned now ({folder})"
