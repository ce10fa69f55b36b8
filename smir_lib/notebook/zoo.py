"""The teaching models: trained by the kit's own recipe, shipped for synthetic, built locally for CWFID.

A model that trained for a few dozen iterations reconstructs flat colour and its loss maps are
noise, so the notebooks would teach nothing. ``make models`` (``smir models``) trains,
with the engine and a packaged budget (``configs/teach_<dataset>.yaml``), the models the
notebooks need:

* ``pretrain_random`` and ``pretrain_selective``: tiny U-Nets pretrained with random and with
  partitioned selective masking, at the same number of iterations;
* ``finetune_scratch``, ``finetune_random``, ``finetune_selective``: the segmentation models of
  notebook 06, fine-tuned from each initialisation.

Each is exported as a *compact run folder* under ``models/<dataset>/``: the files the engine and
the notebooks read back (``config.json``, ``result.json`` / ``results.json``, histories, the
stored masks of the selective steps) with the weights in float16, at most a few MB each. The
folder's ``manifest.json`` lists every file's sha256, the exact command and commit that made it,
and the quality measured on held-back images; :func:`verify` checks it before anything loads,
and the weights load through the engine's ``weights_only`` loader.

The synthetic models are committed to the repository. CWFID's are built on your machine by the
same command (the dataset is for non-commercial research only, so models trained on it are not
redistributed here)::

    make models                        # synthetic (shipped ones are rebuilt) and, if present, CWFID
    smir models --dataset cwfid

Every run resumes: a build stopped half-way continues where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import torch

from smir_lib.engine.config import load_config, packaged_configs, parse_overrides
from smir_lib.engine.finetune import finetune
from smir_lib.engine.pretrain import pretrain_random, pretrain_selective
from smir_lib.engine.provenance import git_commit
from smir_lib.files import RunFileError, atomic_copy, atomic_save, atomic_write_text, read_json
from smir_lib.models import build_model, load_pretrained
from smir_lib.notebook.measure import heldback_quality

__all__ = ["MODELS_DIR", "RUNS", "teaching_config", "models_dir", "shipped_folder", "verify", "build", "add_arguments", "run"]

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
"""Where the teaching models live: ``<repository>/models/<dataset>/``."""

RUNS = ("pretrain_random", "pretrain_selective", "finetune_scratch", "finetune_random",
        "finetune_selective")
"""The run folders of a teaching set, in the order they are trained."""

QUALITY_IMAGES = 32
"""Held-back (test split) images on which reconstruction quality is measured."""


class ManifestError(ValueError):
    """A shipped model folder whose files do not match its manifest."""


MANIFEST_FIELDS = {"dataset": str, "command": str, "commit": str, "config": dict, "files": dict}
"""Entries every teaching set's ``manifest.json`` holds, with their types."""


def teaching_config(dataset: str, **overrides):
    """The packaged budget ``teach_<dataset>`` (the ``fast`` geometry, a longer schedule)."""

    name = f"teach_{dataset}"
    if name not in packaged_configs():
        known = [c.removeprefix("teach_") for c in packaged_configs() if c.startswith("teach_")]
        raise ValueError(f"no teaching budget for dataset {dataset!r}: expected one of {known} "
                         f"(smir_lib/configs/teach_<dataset>.yaml)")
    return load_config(name, overrides=overrides)


def models_dir() -> Path:
    """``$SMIR_MODELS_DIR`` when set (a teaching set of your own), else :data:`MODELS_DIR`."""
    return Path(os.environ.get("SMIR_MODELS_DIR") or MODELS_DIR)


def shipped_folder(dataset: str) -> Path | None:
    """``<models dir>/<dataset>`` when it holds a complete teaching set (its manifest), else None."""
    folder = models_dir() / dataset
    return folder if (folder / "manifest.json").is_file() else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(folder: str | Path) -> dict:
    """Check every file of a teaching set against its ``manifest.json``; return the manifest.

    Raises :class:`ManifestError` naming the first file that is missing or whose sha256 differs,
    with the command that rebuilds the set.
    """
    folder = Path(folder)
    path = folder / "manifest.json"
    rebuild = (f"the teaching models are damaged; rebuild them with `smir models --dataset {folder.name}` "
               f"(or `git checkout {folder}`)")
    try:
        manifest = read_json(path, rebuild, expect=dict)
    except RunFileError as err:
        raise ManifestError(str(err)) from None
    for field, kind in MANIFEST_FIELDS.items():
        if not isinstance(manifest.get(field), kind):
            raise ManifestError(f"{path} lacks its {field!r} entry (a {kind.__name__}): {rebuild}")
    for rel, expected in manifest["files"].items():
        path = folder / rel
        if not path.is_file() or _sha256(path) != expected:
            state = "is missing" if not path.is_file() else "does not match its sha256"
            raise ManifestError(f"{path} {state} in {folder / 'manifest.json'}: {rebuild}")
    return manifest


def require_listed(folder: Path, manifest: dict, names: list[str]) -> None:
    """Refuse to load files of a teaching set that its (verified) manifest does not list: only a
    listed file's sha256 was checked."""
    unlisted = [name for name in names if name not in manifest["files"]]
    if unlisted:
        raise ManifestError(f"{folder / unlisted[0]} is not listed in {folder / 'manifest.json'}, so it was "
                            f"not checked: refusing to load it; rebuild the teaching models with "
                            f"`smir models --dataset {folder.name}` (or `git checkout {folder}`)")


def _compact_checkpoint(source: Path, target: Path) -> None:
    """Copy a checkpoint with its floating-point tensors in float16 (about half the size)."""

    state = torch.load(source, map_location="cpu", weights_only=True)
    state["model"] = {k: v.half() if v.is_floating_point() else v for k, v in state["model"].items()}
    atomic_save(state, target)


EXPORTED_NAMES = frozenset({"result.json", "results.json", "history.json", "config.json", "pretrained.pt",
                            "best.pt", "masks.pt"})
"""The files :func:`_export_run` writes into a teaching set: the only ones a rebuild deletes."""


def _remove_previous_export(dst: Path) -> None:
    """Delete an earlier build's ``dst`` (``models/<dataset>/<run>``); refuse a link, a file, or a
    folder holding a file the build does not write (``--out`` pointed at a folder of yours)."""
    if not (dst.exists() or dst.is_symlink()):
        return
    foreign = [dst] if dst.is_symlink() or not dst.is_dir() else \
        [p for p in sorted(dst.rglob("*")) if p.is_symlink() or (p.is_file() and p.name not in EXPORTED_NAMES)]
    if foreign:
        raise ValueError(f"{foreign[0]} was not written by `smir models`: refusing to delete {dst}; pass another "
                         f"--out folder, or move it away")
    shutil.rmtree(dst)


def _export_run(work: Path, out: Path, name: str) -> list[Path]:
    """Copy what the notebooks read of run ``work/name`` into ``out/name``; paths made relative."""
    src, dst = work / name, out / name
    _remove_previous_export(dst)
    dst.mkdir(parents=True)
    written = []
    if name.startswith("pretrain_"):
        result = json.loads((src / "result.json").read_text())
        result["best_checkpoint"] = "pretrained.pt"
        for step in result["steps"]:
            stage = step["stage"]
            step["checkpoint"] = "pretrained.pt" if step is result["steps"][-1] else None
            if step.get("masks"):
                (dst / stage).mkdir()
                atomic_copy(src / stage / "masks.pt", dst / stage / "masks.pt")
                step["masks"] = f"{stage}/masks.pt"
                written.append(dst / stage / "masks.pt")
        atomic_write_text(json.dumps(result, indent=2), dst / "result.json")
        _compact_checkpoint(src / "pretrained.pt", dst / "pretrained.pt")
        atomic_copy(src / "history.json", dst / "history.json")
        written += [dst / "result.json", dst / "pretrained.pt", dst / "history.json"]
    else:
        results = json.loads((src / "results.json").read_text())
        results["checkpoint"] = "best.pt"
        results["test"]["checkpoint"] = "best.pt"
        atomic_write_text(json.dumps(results, indent=2), dst / "results.json")
        _compact_checkpoint(src / "finetune" / "best.pt", dst / "best.pt")
        written += [dst / "results.json", dst / "best.pt"]
    atomic_copy(src / "config.json", dst / "config.json")
    return written + [dst / "config.json"]


def _git_commit() -> str:
    """The commit the build ran at (``+dirty`` when the library had changes), or "unknown"."""
    found = git_commit(code=("smir_lib",))
    return "unknown" if found is None else found[0] + ("+dirty" if found[1] else "")


def measure_quality(cfg, pretrain_dir: Path) -> dict:
    """``measure.heldback_quality`` of a pretrained model on the first held-back test images."""

    model = build_model(cfg, 3)
    load_pretrained(model, pretrain_dir / "pretrained.pt", reinit_head=False)
    return heldback_quality(model, cfg, QUALITY_IMAGES)


def build(dataset: str, out: Path | None = None, work: Path | None = None,
          overrides: dict | None = None, command: str | None = None) -> dict:
    """Train (or resume) the teaching set of ``dataset`` and export it to ``out``; return the manifest.

    ``work`` (default ``runs/models/<dataset>``) holds the engine's full run folders, so a
    stopped build resumes; ``out`` (default ``models/<dataset>``) receives the compact set.
    """
    from tqdm.auto import tqdm


    cfg = teaching_config(dataset, **(overrides or {}))
    out = Path(out or models_dir() / dataset)
    work = Path(work or Path("runs") / "models" / dataset)
    seconds: dict[str, float] = {}
    bar = tqdm(RUNS, desc=f"teaching models ({dataset})", disable=not cfg.progress)
    for name in bar:
        bar.set_postfix_str(name)
        tic = time.perf_counter()
        if name == "pretrain_random":
            pretrain_random(cfg, work / name)
        elif name == "pretrain_selective":
            pretrain_selective(cfg, work / name)
        else:
            init = name.removeprefix("finetune_")
            source = "scratch" if init == "scratch" else work / f"pretrain_{init}" / "pretrained.pt"
            finetune(cfg, work / name, source)
        seconds[name] = time.perf_counter() - tic
    quality = {kind: measure_quality(cfg, work / f"pretrain_{kind}") for kind in ("random", "selective")}
    out.mkdir(parents=True, exist_ok=True)
    files = [p for name in RUNS for p in _export_run(work, out, name)]
    tests = {name.removeprefix("finetune_"): json.loads((work / name / "results.json").read_text())["test"]["miou"]
             for name in RUNS if name.startswith("finetune_")}
    manifest = {"dataset": dataset, "command": command or f"smir models --dataset {dataset}",
                "commit": _git_commit(), "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                "config": cfg.to_dict(), "seconds_this_call": seconds,
                "quality_on_test_images": quality, "test_miou": tests,
                "files": {str(p.relative_to(out)): _sha256(p) for p in sorted(files)}}
    atomic_write_text(json.dumps(manifest, indent=2), out / "manifest.json")
    return manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``smir models``."""
    parser.add_argument("--dataset", nargs="+", default=["synthetic"], help="synthetic, cwfid")
    parser.add_argument("--out", default=None, help="models folder (default models/<dataset>)")
    parser.add_argument("--work", default=None, help="engine run folders (default runs/models/<dataset>)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")


def run(args: argparse.Namespace) -> int:
    """``smir models``: build each dataset's set; ``args.command_line`` goes into the manifest."""
    for dataset in args.dataset:
        manifest = build(dataset, args.out and Path(args.out) / dataset,
                         args.work and Path(args.work) / dataset, parse_overrides(args.overrides),
                         args.command_line)
        q = manifest["quality_on_test_images"]
        print(f"{dataset}: hidden-pixel PSNR gain over the mean fill: random {q['random']['gain_db']:+.1f} dB, "
              f"selective {q['selective']['gain_db']:+.1f} dB; test mIoU {manifest['test_miou']}")
    return 0
