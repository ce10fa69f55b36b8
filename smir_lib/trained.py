"""Found a trained model, loading it: the models a notebook needs, read back or trained now.

Notebook 02 trains the random-mask model and notebook 05 the selective one into the series' run
folder; the notebooks after them read those back instead of training again. A notebook opened
cold (nothing in its run folder) trains the model it needs with its profile.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["find_pretrained", "pretrained", "reconstruction_model"]


def find_pretrained(folder: str | Path):
    """The ``PretrainResult`` of the finished pretraining run in ``folder``, or None.

    ``smir_lib.pretrain.load_pretrain_result`` reads it (and raises ``FileNotFoundError`` when
    the run has not finished); this turns "not finished" into None.
    """
    from smir_lib.pretrain import load_pretrain_result

    try:
        return load_pretrain_result(folder)
    except FileNotFoundError:
        return None


def pretrained(ctx, kind: str = "random", cfg=None):
    """The ``PretrainResult`` of ``kind`` ("random" or "selective") pretraining in this run folder.

    When ``RUN_DIR/pretrain_<kind>/`` holds a finished run it is read back; otherwise the engine
    trains it now (``smir_lib.pretrain.pretrain_random`` / ``pretrain_selective``) with ``cfg``
    (default: the notebook's profile). Returns ``(result, message)``.
    """
    from smir_lib import pretrain

    folder = Path(ctx.run_dir) / f"pretrain_{kind}"
    result = find_pretrained(folder)
    if result is not None:
        return result, f"Found a trained {kind}-mask model, loading it: {result.best_checkpoint}"
    train = {"random": pretrain.pretrain_random, "selective": pretrain.pretrain_selective}[kind]
    result = train(cfg or ctx.config(), folder)
    return result, f"No {kind}-mask model in {folder}: trained one now ({ctx.profile} profile)"


def reconstruction_model(ctx, kind: str = "random", cfg=None):
    """The reconstruction network pretrained with ``kind`` masking, in eval mode, and where it came from.

    See :func:`pretrained`. Returns ``(model, message)``.
    """
    from smir_lib.models import build_model, load_pretrained

    cfg = cfg or ctx.config()
    result, message = pretrained(ctx, kind, cfg)
    model = build_model(cfg, out_channels=3)
    load_pretrained(model, result.best_checkpoint, reinit_head=False)
    return model.eval(), message
