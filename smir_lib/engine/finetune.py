"""Fine-tuning for segmentation, and evaluation by mIoU over a whole test set.

``finetune(cfg, run_dir, init)`` trains the U-Net with one output per class:

* ``init="scratch"``: random initialisation;
* ``init="imagenet:<path>"``: a torchvision ResNet file loaded into the encoder only;
* ``init=<path to a pretraining checkpoint>``: the *whole* network (encoder and decoder), with
  only the final 1x1 head re-initialised, as the paper's recipe prescribes
  (``cfg.reinit_head=False``: a head whose shape matches, 3 classes, is kept, as the authors do).

``cfg.metric="authors"`` trains VOC and Cityscapes as the authors do, with the void pixels as one
more output (22 and 20), scored as wrong predictions of the true class; evaluation always
reports ``authors_miou`` (absent classes as IoU 0) beside ``miou``.

Training: augmented crops (geometry on image and label, jitter on the image), soft Jaccard loss
(``finetune_loss="ce"`` for cross-entropy), Adam with warm-up + cosine. After every epoch the
validation mIoU (short side + centre crop) is measured; the best epoch's weights are tested:
short side resized, whole image, batch 1, one confusion matrix over the whole test set.
Results go to ``run_dir/results.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from smir_lib.data.transforms import EvalTransform, TrainAugment, normalize
from smir_lib.data.views import item_key, read_item
from smir_lib.engine.checkpoint import (
    check_pretraining_checkpoint,
    check_run_config,
    from_run_relative,
    locked_run,
    read_done,
    to_run_relative,
    write_done,
)
from smir_lib.engine.config import Config, save_config
from smir_lib.engine.distributed import DistContext, all_reduce_sum, barrier, init_distributed
from smir_lib.engine.inference import find_checkpoint, segment_logits
from smir_lib.engine.pretrain_data import eval_items, load_split, training_source
from smir_lib.engine.train_loop import train_stage
from smir_lib.files import RunFileError, atomic_write_text, load_checkpoint, read_json
from smir_lib.metrics import class_map, confusion_matrix, segmentation_loss, segmentation_metrics
from smir_lib.models import build_model, load_imagenet_encoder, load_pretrained
from smir_lib.runtime import (
    autocast,
    derive_seed,
    forked_rng,
    loader_workers,
    prepare_model,
    seeded_generator,
    setup_determinism,
    to_device,
)

__all__ = ["finetune", "evaluate", "initialise", "LabelledSet"]


class LabelledSet(Dataset):
    """A labelled split with the paper's transform: ``train`` augmented per item (seeded by
    ``(seed, stage, epoch, index)``), ``val`` short side + centre crop, ``test`` short side only.
    ``full_resolution=True`` (sliding-window evaluation) returns evaluation items untouched."""

    def __init__(self, base: Dataset, split: str, cfg: Config, stage: str = "finetune",
                 full_resolution: bool = False):
        self.base, self.split, self.cfg, self.stage, self.epoch = base, split, cfg, stage, 0
        self.transform = (TrainAugment(cfg.image_size) if split == "train"
                          else None if full_resolution else EvalTransform.for_split(split, cfg.image_size))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)

    def item_key(self, index: int) -> tuple | None:
        """An evaluation item's key (``smir_lib.data.views.item_key``): its source's key and the
        transform; None for training items, which are augmented anew every epoch."""
        key = None if self.split == "train" else item_key(self.base, index)
        return None if key is None else ("eval", repr(self.transform), key)

    def __getitem__(self, index: int):
        if self.split == "train":  # the augmentation only reads the item: no copy of it first
            generator = seeded_generator(self.cfg.seed, self.stage, self.epoch, index)
            return self.transform(*read_item(self.base, index), generator=generator)
        image, label = self.base[index]
        return (image, label) if self.transform is None else self.transform(image, label)


VOID_OUTPUT_DATASETS = ("voc", "cityscapes")
"""Datasets the authors train with their void / "other" pixels as an extra output class."""


def output_classes(cfg: Config, n_classes: int) -> int:
    """Outputs of the segmentation head: the classes, plus the void output under the authors' metric."""
    return n_classes + int(cfg.metric == "authors" and cfg.dataset in VOID_OUTPUT_DATASETS)


def void_as_class(labels: torch.Tensor, ignore: int, n_classes: int, n_outputs: int) -> torch.Tensor:
    """Training labels for a void output: ignored pixels become class ``n_classes`` (no-op without it)."""
    return labels if n_outputs == n_classes else labels.masked_fill(labels == ignore, n_classes)


def initialise(model: nn.Module, init: str | Path, reinit_head: bool = True) -> str:
    """Load ``init`` into ``model``; returns a short description of what was loaded.

    ``reinit_head=False`` keeps a pretrained head whose shape fits (the authors' behaviour)."""
    init = str(init)
    if init == "scratch":
        return "scratch"
    if init.startswith("imagenet:"):
        load_imagenet_encoder(model, init[len("imagenet:"):])
        return "imagenet encoder"
    if not Path(init).is_file():
        raise FileNotFoundError(f"init {init!r} is neither 'scratch', 'imagenet:<file>' nor an "
                                "existing checkpoint file: pass a pretraining run's pretrained.pt")
    load_pretrained(model, init, reinit_head=True, reset_head=reinit_head)
    kept = not reinit_head and model.out_channels == 3  # a pretraining head has 3 (colour) outputs
    return "pretrained network, head kept" if kept else "pretrained network, head re-initialised"


def _meta(ds) -> tuple[list[str], int]:
    return list(ds.class_names), int(getattr(ds, "ignore_index", 255))


def _confusion(model: nn.Module, dataset: Dataset, batch_size: int, cfg: Config,
               ctx: DistContext, n_classes: int, ignore: int, progress: bool = False,
               sliding: bool = False) -> torch.Tensor:
    """Confusion matrix ``(C, C)`` of ``model`` over ``dataset``, sharded over ranks and summed;
    ``C`` = the model's outputs (a void output gets a column; void-labelled pixels are skipped).

    ``sliding``: full-resolution images through :func:`~smir_lib.engine.inference.segment_logits`."""
    shard = Subset(dataset, range(ctx.rank, len(dataset), ctx.world_size))
    loader = DataLoader(shard, batch_size=batch_size, num_workers=loader_workers(cfg.workers),
                        pin_memory=ctx.device.type == "cuda",
                        generator=seeded_generator(cfg.seed, "evaluation workers"))  # never the global stream
    if progress and cfg.progress and ctx.is_main:
        from tqdm.auto import tqdm

        loader = tqdm(loader, desc="evaluating", leave=False)
    confusion = torch.zeros(n_classes, n_classes, dtype=torch.long, device=ctx.device)
    model.eval()
    with torch.no_grad():
        for images, labels in loader:
            if sliding:
                logits = segment_logits(model, images, cfg, ctx.device)  # (B, C, H, W) at full resolution
            else:
                with autocast(cfg.amp, ctx.device):
                    logits = model(normalize(to_device(images, ctx.device, cfg.channels_last)))  # (B, C, H, W)
            confusion += confusion_matrix(class_map(logits), labels.to(ctx.device), n_classes, ignore)
    return all_reduce_sum(confusion, ctx).cpu()


def init_record(init: str | Path, run_dir: str | Path) -> tuple[str, str | None, str | None]:
    """How a run folder records its initialisation: ``(method, sha256, path)``.

    ``method`` is ``finetune:<init>`` with a file's path relative to the run folder (a folder
    moved together with its init still names it); ``sha256`` is the file's content hash, so a
    moved or differently spelled init (``./runs/x.pt``, ``runs/x.pt``) is recognised
    (``checkpoint.check_run_config``); ``path`` is the file as given. Scratch: no file.
    """
    init = str(init)
    prefix = "imagenet:" if init.startswith("imagenet:") else ""
    path = init[len(prefix):]
    if init == "scratch" or not Path(path).is_file():
        return f"finetune:{init}", None, None
    try:
        stored = Path(os.path.relpath(os.path.abspath(path), os.path.abspath(run_dir))).as_posix()
    except ValueError:  # another drive (Windows): no relative path
        stored = os.path.abspath(path)
    with open(path, "rb") as handle:
        sha256 = hashlib.file_digest(handle, "sha256").hexdigest()
    return f"finetune:{prefix}{stored}", sha256, path


def _number(value) -> bool:
    return type(value) in (int, float)


def _complete_results(stored: dict) -> bool:
    """Whether a fine-tuning run's ``results.json`` holds what its readers print: the best validation
    mIoU and a test section with both mIoUs and one IoU per class name."""
    test = stored.get("test")
    return (_number(stored.get("best_val_miou")) and isinstance(test, dict) and _number(test.get("miou"))
            and _number(test.get("authors_miou")) and isinstance(test.get("class_names"), list)
            and isinstance(test.get("per_class_iou"), list) and len(test["per_class_iou"]) == len(test["class_names"]))


def _finished_finetuning(cfg: Config, run_dir: str | Path, init: str | Path = "scratch") -> dict | None:
    """``read_finished`` of :func:`finetune`: a finished run's results, read back without locking
    or writing anything (a read-only or shared folder); None while unfinished."""
    run_dir = Path(run_dir)
    path = run_dir / "results.json"
    if not path.is_file() or read_done(run_dir / "finetune") is None:
        return None
    method, sha256, init_path = init_record(init, run_dir)
    check_run_config(run_dir, cfg.to_dict(), method, sha256, init_path)
    stored = read_json(path, expect=dict)
    if not _complete_results(stored):
        raise RunFileError(f"{path} has no complete test results: not a file this kit wrote; delete {path} and run "
                           f"the same command on {run_dir} again to rewrite it")
    return {**from_run_relative(stored, run_dir, source=path), "test": from_run_relative(stored["test"], run_dir, source=path)}


@locked_run(_finished_finetuning)
def finetune(cfg: Config, run_dir: str | Path, init: str | Path = "scratch") -> dict:
    """Fine-tune on ``cfg.dataset`` from ``init``, test the best-validation-mIoU checkpoint.

    Returns (and writes to ``run_dir/results.json``) ``{"init", "best_val_miou", "best_epoch",
    "checkpoint", "n_train", "n_val", "history", "test": {miou, authors_miou, per_class_iou,
    class_names, lowest_classes, pixel_accuracy, confusion, n_images}}``.
    """
    ctx = init_distributed(cfg.device)
    setup_determinism(cfg.deterministic)
    run_dir = Path(run_dir)
    method, sha256, init_path = init_record(init, run_dir)
    check_run_config(run_dir, cfg.to_dict(), method, sha256, init_path)
    if ctx.is_main:
        save_config(cfg, run_dir, method, {"init_sha256": sha256} if sha256 else None)
    barrier(ctx)
    train, val = load_split(cfg, "train", announce=True), load_split(cfg, "val", announce=True)
    class_names, ignore = _meta(train)
    n_classes = len(class_names)
    n_outputs = output_classes(cfg, n_classes)
    stage_dir = run_dir / "finetune"
    done = read_done(stage_dir)
    if done is None:
        model = build_model(cfg, n_outputs)
        with forked_rng(derive_seed(cfg.seed, "head")):  # a re-initialised head draws from the seed too
            loaded = initialise(model, init, reinit_head=cfg.reinit_head)
        model = prepare_model(model, ctx.device, cfg.channels_last)
        val_set = eval_items(LabelledSet(val, "val", cfg), cfg, "val")

        def batch_loss(net, batch, generator):
            images, labels = (to_device(t, ctx.device, cfg.channels_last) for t in batch)
            labels = void_as_class(labels, ignore, n_classes, n_outputs)  # (B, S, S)
            logits = net(normalize(images))  # (B, n_outputs, S, S)
            return segmentation_loss(cfg.finetune_loss, logits, labels, ignore,
                                     n_scored=n_classes), len(images)

        def validate(net):
            conf = _confusion(net, val_set, cfg.finetune_batch, cfg, ctx, n_outputs, ignore)
            return {"val_miou": segmentation_metrics(conf, class_names, n_scored=n_classes)["miou"]}

        train_set = LabelledSet(training_source(train, cfg, cfg.dataset), "train", cfg)
        result = train_stage(model, train_set, batch_loss, validate, cfg=cfg,
                             ctx=ctx, stage_dir=stage_dir, stage="finetune",
                             epochs=cfg.finetune_epochs, batch_size=cfg.finetune_batch,
                             monitor="val_miou", mode="max")
        best_epoch = max(result.history, key=lambda r: r["val_miou"])["epoch"]
        done = {"init": str(init), "loaded": loaded, "best_val_miou": result.best_value,
                "best_epoch": best_epoch, "checkpoint": str(result.best_checkpoint),
                "n_train": len(train), "n_val": len(val)}  # what ran, not what the config asked
        if ctx.is_main:
            write_done(stage_dir, done)
        barrier(ctx)
    test = evaluate(cfg, done["checkpoint"], split="test", ctx=ctx)
    history = read_json(stage_dir / "history.json", expect=list)
    results = {**done, "history": history, "test": test}
    if ctx.is_main:  # paths relative to the run folder, as in done.json
        stored = {**to_run_relative(results, run_dir), "test": to_run_relative(test, run_dir)}
        atomic_write_text(json.dumps(stored, indent=2, default=str), run_dir / "results.json")
    return results



def evaluate(cfg: Config, checkpoint: str | Path, split: str = "test",
             ctx: DistContext | None = None) -> dict:
    """Metrics of a fine-tuned ``checkpoint`` (a file, or a fine-tuning run folder) on ``split`` of ``cfg.dataset``.

    ``test``: short side ``image_size``, whole image, batch 1; ``val``: centre crop;
    ``cfg.eval_mode="sliding"``: either split at full resolution by sliding windows. A checkpoint
    of another architecture or class count raises ``ValueError`` naming the mismatched keys.
    Returns ``segmentation_metrics`` (mIoU, the authors' mIoU, per-class IoU, lowest classes,
    confusion) plus ``n_images`` and ``split``.
    """
    ctx = ctx or init_distributed(cfg.device)
    checkpoint = find_checkpoint(checkpoint)  # a run folder names its finetune/best.pt, as for predict
    base = load_split(cfg, split, announce=True)
    class_names, ignore = _meta(base)
    n_outputs = output_classes(cfg, len(class_names))
    model = build_model(cfg, n_outputs)
    state = load_checkpoint(checkpoint)
    check_pretraining_checkpoint(state, checkpoint)  # a reconstruction head is no segmenter
    load_pretrained(model, state, reinit_head=False, origin=checkpoint)  # strict: names every mismatched key
    model = prepare_model(model, ctx.device, cfg.channels_last)
    sliding = cfg.eval_mode == "sliding"
    batch = 1 if split == "test" or sliding else cfg.finetune_batch
    items = eval_items(LabelledSet(base, split, cfg, full_resolution=sliding), cfg, split)
    conf = _confusion(model, items, batch, cfg, ctx, n_outputs, ignore, progress=True, sliding=sliding)
    metrics = segmentation_metrics(conf, class_names, n_lowest=min(3, len(class_names)),
                                   n_scored=len(class_names))
    return {**metrics, "n_images": len(base), "split": split, "checkpoint": str(checkpoint)}
