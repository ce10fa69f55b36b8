"""The command line: ``python -m smir_lib`` (or ``smir``) ``pretrain | finetune | evaluate | check-data | predict | export``.

Each command takes a configuration (a preset ``paper`` / ``fast`` or a YAML/JSON file) plus
``key=value`` overrides, and a run folder::

    python -m smir_lib pretrain --method selective --config fast --out runs/sel seed=1
    python -m smir_lib finetune --config fast --init runs/sel/pretrained.pt --out runs/ft
    python -m smir_lib evaluate --config fast --checkpoint runs/ft/finetune/best.pt
    torchrun --nproc_per_node 2 -m smir_lib pretrain --method selective --config fast --out runs/ddp
    python -m smir_lib check-data my_field                      # a folder dataset, no training
    python -m smir_lib predict --checkpoint runs/ft/finetune/best.pt --images photos/ --out preds/
    python -m smir_lib export --checkpoint runs/ft --out exported/   # encoder.pth, safetensors, onnx, model.json
    python -m smir_lib predict --checkpoint exported/ --images photos/ --out preds/ --format values

The same functions the notebooks call run underneath (``pretrain_random``,
``pretrain_selective``, ``finetune``, ``evaluate``); running a command again on the same
``--out`` folder resumes it. ``--quiet`` switches the progress bars off.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from smir_lib.data.base import ImageLoadError
from smir_lib.data.folder import write_splits
from smir_lib.data.folder_check import check_folder
from smir_lib.engine.config import load_config
from smir_lib.engine.finetune import evaluate, finetune
from smir_lib.engine.pretrain import pretrain_random, pretrain_selective
from smir_lib.files import atomic_write_text
from smir_lib.tools.export import export_run, latency, load_safetensors
from smir_lib.tools.predict import FORMATS, predict_folder

__all__ = ["main", "build_parser", "check_metrics_out", "user_message", "per_class_iou"]

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smir", description="SMIR training engine")
    commands = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", default="fast", help="preset (paper, fast) or .yaml/.json file")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")

    p = commands.add_parser("pretrain", help="reconstruction pretraining")
    p.add_argument("--method", choices=("random", "selective"), required=True)
    p.add_argument("--out", required=True, help="run folder (resumed if it exists)")
    common(p)
    p = commands.add_parser("finetune", help="fine-tune for segmentation and test")
    p.add_argument("--init", default="scratch",
                   help="scratch, imagenet:<resnet file>, or a pretraining checkpoint")
    p.add_argument("--out", required=True, help="run folder (resumed if it exists)")
    common(p)
    p = commands.add_parser("evaluate", help="mIoU of a fine-tuned checkpoint")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--split", default="test", choices=("val", "test"))
    p.add_argument("--out", default=None,
                   help="write the metrics JSON here (a file; only an earlier evaluate output is overwritten)")
    common(p)
    p = commands.add_parser("check-data", help="validate a folder dataset (images/, masks/, classes.yaml)")
    p.add_argument("folder")
    p.add_argument("--write-splits", action="store_true", help="write the drawn split to FOLDER/splits.yaml")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = commands.add_parser("predict", help="segment a folder of images with a fine-tuned checkpoint")
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
    p = commands.add_parser("export", help="encoder.pth, unet.safetensors, model.onnx and model.json (what the "
                                          "model expects) of a trained network")
    p.add_argument("--checkpoint", required=True, help="a .pt checkpoint, or a pretraining / fine-tuning run folder")
    p.add_argument("--out", required=True, help="output folder (only files an earlier export wrote are overwritten)")
    p.add_argument("--onnx", choices=("auto", "yes", "no"), default="auto",
                   help="auto: write model.onnx when the export extra is installed")
    p.add_argument("--latency", action="store_true", help="also time batch-1 CPU inference at 256 and 512 px")
    return parser


def _run_tool(args) -> dict | int:
    """check-data, predict and export: commands that read a folder or a checkpoint, not a config."""
    if args.command == "check-data":

        report = check_folder(args.folder, progress=not args.quiet)
        print(report.format())
        if args.write_splits and report.ok:
            print(f"wrote {write_splits(report.layout)}")
        return 0 if report.ok else 1
    if args.command == "predict":

        overrides = [o for o in args.overrides] + (["progress=false"] if args.quiet else [])
        rows = predict_folder(args.checkpoint, args.images, args.out, args.config, overrides, fmt=args.format)
        return {"images": len(rows), "out": args.out}

    summary = export_run(args.checkpoint, args.out, onnx={"auto": None, "yes": True, "no": False}[args.onnx])
    if args.latency:

        onnx_path = summary["onnx"] if str(summary.get("onnx", "")).endswith(".onnx") else None
        summary["latency_ms"] = latency(load_safetensors(summary["safetensors"]), onnx_path=onnx_path)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m smir_lib`` and the ``smir`` console script."""
    args = build_parser().parse_args(argv)
    if args.command in ("check-data", "predict", "export"):
        bad = [o for o in getattr(args, "overrides", []) if "=" not in o]
        if bad:
            print(f"error: overrides must be key=value, got {bad}", file=sys.stderr)
            return 2
        try:
            result = _run_tool(args)
        except user_errors() as err:
            return report_user_error(err)
        if isinstance(result, int):
            return result
        print(json.dumps(result, indent=2, default=str))
        return 0

    overrides = dict(o.split("=", 1) for o in args.overrides if "=" in o)
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        print(f"error: overrides must be key=value, got {bad}", file=sys.stderr)
        return 2
    if args.quiet:
        overrides["progress"] = "false"
    try:
        cfg = load_config(args.config, overrides)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    try:  # a user's mistake (bad value, missing file or dataset) is one clear line, not a traceback
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
    except user_errors() as err:
        return report_user_error(err)
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps(summary, indent=2, default=str))
    return 0
