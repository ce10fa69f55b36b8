"""The one command line: ``smir <job>`` (the ``smir`` console script, or ``python -m smir_lib <job>``).

``smir --help`` lists the jobs (:data:`JOBS`), ``smir <job> --help`` their options
(docs/command-line.md has an example of each). The training jobs take a configuration (a preset
``paper`` / ``fast`` or a YAML/JSON file) plus ``key=value`` overrides, and a run folder::

    smir pretrain --method selective --config fast --out runs/sel seed=1
    smir finetune --config fast --init runs/sel/pretrained.pt --out runs/ft
    smir evaluate --config fast --checkpoint runs/ft/finetune/best.pt
    torchrun --nproc_per_node 2 -m smir_lib pretrain --method selective --config fast --out runs/ddp
    smir check-data my_field                      # a folder dataset, no training
    smir predict --checkpoint runs/ft/finetune/best.pt --images photos/ --out preds/
    smir export --checkpoint runs/ft --out exported/   # encoder.pth, safetensors, onnx
    smir download cwfid                           # also: smir download cwfid
    smir models --dataset synthetic               # the teaching models (make models)
    smir demo --profile fast --out runs/demo      # the notebook series (make demo)
    smir study plan --protocol toy                # the budget study: plan | run | report | readme | rerun
    smir reproduce --datasets synthetic --seeds 0 # the reproduction study on a CPU budget

The same functions the notebooks call run underneath (``pretrain_random``,
``pretrain_selective``, ``finetune``, ``evaluate``); running a command again on the same
``--out`` folder resumes it. ``--quiet`` switches the progress bars off. Each job's options sit
beside the code that does it (``add_arguments`` / ``run`` in ``data.download``,
``notebook.zoo``, ``notebook.runner``; ``study.cli`` for the two studies); this module only
gathers them, and prints a user's mistake as one line (exit 2) instead of a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from smir_lib.data import download
from smir_lib.data.base import ImageLoadError
from smir_lib.data.folder import write_splits
from smir_lib.data.folder_check import check_folder
from smir_lib.engine.config import load_config, parse_overrides
from smir_lib.engine.finetune import evaluate, finetune
from smir_lib.engine.pretrain import pretrain_random, pretrain_selective
from smir_lib.files import atomic_write_text
from smir_lib.notebook import runner, zoo
from smir_lib.study import cli as study_cli
from smir_lib.tools.export import export_run, latency, load_safetensors
from smir_lib.tools.predict import FORMATS, predict_folder

__all__ = ["JOBS", "main", "build_parser", "check_metrics_out", "user_message", "per_class_iou"]

WRITTEN_BY = "smir evaluate"
"""Marks a metrics file as written by ``evaluate --out``: only such a file may be overwritten."""


def check_metrics_out(path: str | Path) -> Path:
    """Refuse a bad ``evaluate --out`` before any work: a folder, a path through a file, or an
    existing file that is not an earlier ``evaluate`` output (a checkpoint, say)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--out {path} is a folder; evaluate writes one JSON file: pass a file name "
                         f"such as {path / 'metrics.json'}")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"--out {path}: {parent} is a file, not a folder; pass a path in a folder")
    if path.exists():
        try:
            ours = json.loads(path.read_text()).get("written_by") == WRITTEN_BY
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise ValueError(f"--out {path} exists and is not an earlier `smir evaluate` output: refusing "
                             f"to overwrite it; pass a new file name, or delete the file first")
    return path


def per_class_iou(metrics: dict) -> dict[str, float]:
    """``{class name: IoU}`` of a metrics dict (``class_names`` and the list ``per_class_iou``): the one
    form every command prints and writes."""
    return dict(zip(metrics["class_names"], metrics["per_class_iou"]))


def user_message(err: BaseException) -> str:
    """The message of ``err``; for an error re-raised from a DataLoader worker, the original
    message (torch wraps it in 'Caught X in DataLoader worker process N' and a traceback)."""
    text = str(err)
    if text.startswith("Caught ") and "Original Traceback" in text:
        found = re.search(rf"(?:^|\n)[\w.]*{re.escape(type(err).__name__)}: (.*)\Z", text, re.S)
        if found:
            return found.group(1).strip()
    return text


def user_errors() -> tuple[type[BaseException], ...]:
    """The errors that are a user's mistake (a bad value, a missing file or dataset, an unreadable
    image or label): printed as one line, not a traceback."""

    return (ValueError, FileNotFoundError, ModuleNotFoundError, ImageLoadError)


def report_user_error(err: BaseException) -> int:
    """Print ``err`` as one line on stderr and return the exit status 2; call it in the ``except``
    of :func:`user_errors`. With ``SMIR_DEBUG=1`` it re-raises instead, traceback and all."""
    if os.environ.get("SMIR_DEBUG"):
        raise err
    print(f"error: {user_message(err)}\n(set SMIR_DEBUG=1 for the full traceback)", file=sys.stderr)
    return 2


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="fast", help="preset (paper, fast) or .yaml/.json file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")


def _add_pretrain(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", choices=("random", "selective"), required=True)
    p.add_argument("--out", required=True, help="run folder (resumed if it exists)")
    _common(p)


def _add_finetune(p: argparse.ArgumentParser) -> None:
    p.add_argument("--init", default="scratch",
                   help="scratch, imagenet:<resnet file>, or a pretraining checkpoint")
    p.add_argument("--out", required=True, help="run folder (resumed if it exists)")
    _common(p)


def _add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="a fine-tuned .pt checkpoint, or a fine-tuning run folder")
    p.add_argument("--split", default="test", choices=("val", "test"))
    p.add_argument("--out", default=None,
                   help="write the metrics JSON here (a file; only an earlier evaluate output is overwritten)")
    _common(p)


def _add_check_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder")
    p.add_argument("--write-splits", action="store_true", help="write the drawn split to FOLDER/splits.yaml")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True,
                   help="finetune/best.pt, the fine-tuning run folder, or a folder written by export")
    p.add_argument("--images", required=True, help="folder of images (any size, any Pillow format)")
    p.add_argument("--out", required=True, help="folder for <stem>.png, <stem>_overlay.jpg, predictions.json "
                   "(not inside --images; only files an earlier predict wrote are overwritten)")
    p.add_argument("--format", default="index", choices=FORMATS,
                   help="<stem>.png holds class indices (palette PNG), the mask values (or mask colours) of "
                        "classes.yaml, or the display colours of classes.yaml")
    p.add_argument("--config", default=None, help="default: the configuration saved in the checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. eval_mode=sliding device=cpu")


def _add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="a .pt checkpoint, or a pretraining / fine-tuning run folder")
    p.add_argument("--out", required=True, help="output folder (only files an earlier export wrote are overwritten)")
    p.add_argument("--onnx", choices=("auto", "yes", "no"), default="auto",
                   help="auto: write model.onnx when the export extra is installed")
    p.add_argument("--latency", action="store_true", help="also time batch-1 CPU inference at 256 and 512 px")


def _print_summary(summary: dict) -> int:
    """Print a job's summary as JSON (on the first process only, under torchrun); exit 0."""
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps(summary, indent=2, default=str))
    return 0


def _train(args: argparse.Namespace) -> int:
    """pretrain, finetune and evaluate: a configuration plus overrides, then the engine."""
    overrides = parse_overrides(args.overrides)
    if args.quiet:
        overrides["progress"] = "false"
    cfg = load_config(args.config, overrides)
    if args.command == "pretrain":
        run = pretrain_random if args.method == "random" else pretrain_selective
        result = run(cfg, args.out)
        summary = {"best_checkpoint": str(result.best_checkpoint),
                   "best_val_loss": result.steps[-1]["best_val_loss"]}
    elif args.command == "finetune":
        result = finetune(cfg, args.out, init=args.init)
        summary = {"best_val_miou": result["best_val_miou"], "test_miou": result["test"]["miou"],
                   "test_authors_miou": result["test"]["authors_miou"],
                   "per_class_iou": per_class_iou(result["test"])}
    else:
        out = check_metrics_out(args.out) if args.out else None  # before any work
        summary = evaluate(cfg, args.checkpoint, split=args.split)
        summary = {**summary, "per_class_iou": per_class_iou(summary)}
        if out is not None:
            atomic_write_text(json.dumps({"written_by": WRITTEN_BY, **summary}, indent=2), out)
        summary = {k: v for k, v in summary.items() if k != "confusion"}
    return _print_summary(summary)


def _check_data(args: argparse.Namespace) -> int:
    report = check_folder(args.folder, progress=not args.quiet)
    print(report.format())
    if args.write_splits and report.ok:
        print(f"wrote {write_splits(report.layout)}")
    return 0 if report.ok else 1


def _predict(args: argparse.Namespace) -> int:
    overrides = list(args.overrides) + (["progress=false"] if args.quiet else [])
    rows = predict_folder(args.checkpoint, args.images, args.out, args.config, overrides, fmt=args.format)
    return _print_summary({"images": len(rows), "out": args.out})


def _export(args: argparse.Namespace) -> int:
    summary = export_run(args.checkpoint, args.out, onnx={"auto": None, "yes": True, "no": False}[args.onnx])
    if args.latency:
        onnx_path = summary["onnx"] if str(summary.get("onnx", "")).endswith(".onnx") else None
        summary["latency_ms"] = latency(load_safetensors(summary["safetensors"]), onnx_path=onnx_path)
    return _print_summary(summary)


JOBS = {
    "pretrain": ("reconstruction pretraining, random or selective masks", _add_pretrain, _train),
    "finetune": ("fine-tune for segmentation and test", _add_finetune, _train),
    "evaluate": ("mIoU of a fine-tuned checkpoint", _add_evaluate, _train),
    "predict": ("segment a folder of images with a fine-tuned checkpoint", _add_predict, _predict),
    "export": ("a trained network as safetensors, ONNX and model.json", _add_export, _export),
    "check-data": ("check a folder dataset before training", _add_check_data, _check_data),
    "download": ("download, verify and extract a dataset or weights", download.add_arguments,
                 download.run),
    "models": ("train the teaching models the notebooks load", zoo.add_arguments, zoo.run),
    "demo": ("run the notebook series into a run folder", runner.add_arguments, runner.run),
    "study": ("the budget study: plan | run | report | readme | rerun", study_cli.add_study_arguments,
              study_cli.study),
    "reproduce": ("the reproduction study (notebook 07) and its report", study_cli.add_reproduce_arguments,
                  study_cli.reproduce),
}
"""Every job of ``smir``: name -> (one-line description, add its options to a parser, run it)."""


def build_parser() -> argparse.ArgumentParser:
    """``smir`` with one sub-command per job of :data:`JOBS`."""
    parser = argparse.ArgumentParser(
        prog="smir", description="SMIR notebooks: every job of the kit from one command line. "
        "`smir <job> --help` gives a job's options; docs/command-line.md an example of each.",
        formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=18))
    commands = parser.add_subparsers(dest="command", required=True, metavar="<job>", title="jobs")
    for name, (description, add_arguments, run) in JOBS.items():
        p = commands.add_parser(name, help=description, description=description)
        add_arguments(p)
        p.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m smir_lib`` and the ``smir`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.command_line = "smir " + shlex.join(argv)  # what a report or manifest records as its command
    bad = [o for o in getattr(args, "overrides", []) if "=" not in o]
    if bad:
        print(f"error: overrides must be key=value, got {bad}", file=sys.stderr)
        return 2
    try:  # a user's mistake (bad value, missing file or dataset) is one clear line, not a traceback
        return args.run(args)
    except user_errors() as err:
        return report_user_error(err)
