"""Segmenting whole images: the paper's resize protocol, and sliding windows at full resolution.

* :func:`sliding_window_logits` runs the network on overlapping ``window x window`` crops (laid
  out by :func:`smir_lib.data.tiles.tile_boxes`, so every pixel is covered without padding) and
  averages the logits where windows overlap. Memory depends on the window, not on the image.
* :func:`segment_logits` is what ``evaluate`` and ``predict`` call for one batch of images:
  ``eval_mode="resize"`` (default) resizes the short side to ``image_size`` and runs the whole
  image, as the paper tests; ``"sliding"`` keeps full resolution and slides windows of
  ``image_size`` px every ``eval_stride`` px (default half a window). A resized image larger
  than ``MAX_WHOLE_PIXELS`` is slid over too, so a huge photo never needs one huge forward pass.
  Logits come back at the input's resolution either way.

* :func:`load_trained` rebuilds a trained network from a checkpoint or a run folder, with the
  configuration saved inside the checkpoint (``predict`` and ``export`` start from it).

Use ``sliding`` when the model learned at full resolution (pool tiles, small objects in large
photos); a model fine-tuned on whole resized images sees objects larger than it learned them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from smir_lib.data.tiles import tile_boxes, tile_starts
from smir_lib.data.transforms import normalize, resize_short_side
from smir_lib.engine.checkpoint import check_pretraining_checkpoint
from smir_lib.engine.config import Config, load_config
from smir_lib.files import load_checkpoint
from smir_lib.models import build_model, load_pretrained
from smir_lib.runtime import autocast

__all__ = ["sliding_window_logits", "segment_logits", "load_trained", "stored_config", "find_checkpoint", "MAX_WHOLE_PIXELS"]

MAX_WHOLE_PIXELS = 1024 * 1024
"""Largest image (in pixels) that goes through the network in one piece; larger ones are slid over."""


MAX_WINDOWS = 10_000
"""Most sliding windows per image that ``eval_stride`` may ask for beyond four times what the
default stride (half a window) lays out: ``eval_stride=1`` slid 740,151 windows over one CWFID
frame (hours of evaluation for nothing a stride of 32 px would not show)."""


def check_window_count(height: int, width: int, window: int, stride: int) -> None:
    """Refuse, naming ``eval_stride``, a stride that lays out more than :data:`MAX_WINDOWS` windows
    over a ``height x width`` image and more than four times the default stride's."""
    count = len(tile_starts(height, window, stride)) * len(tile_starts(width, window, stride))
    half = max(1, window // 2)
    default = len(tile_starts(height, window, half)) * len(tile_starts(width, window, half))
    if count > MAX_WINDOWS and count > 4 * default:
        raise ValueError(f"config eval_stride={stride} px slides {count:,} windows of {window} px over a "
                         f"{width}x{height} image ({default:,} at the default stride of {half} px): raise "
                         f"eval_stride, or leave it unset")


@torch.no_grad()
def sliding_window_logits(model: nn.Module, images: torch.Tensor, window: int, stride: int,
                          batch: int = 8) -> torch.Tensor:
    """Logits ``(B, C, H, W)`` of normalised ``images (B, 3, H, W)``, window by window.

    Windows are ``min(window, H) x min(window, W)``; ``batch`` windows (of all B images) go
    through the network at once; overlapping logits are averaged.
    """
    b, _, h, w = images.shape
    check_window_count(h, w, window, stride)
    boxes = tile_boxes(h, w, window, stride).tolist()  # [(top, left, wh, ww)]
    total, cover = None, torch.zeros(1, 1, h, w, device=images.device)
    for start in range(0, len(boxes), batch):
        chunk = boxes[start:start + batch]
        crops = torch.cat([images[..., t:t + wh, l:l + ww] for t, l, wh, ww in chunk])  # (n * B, 3, wh, ww)
        logits = model(crops).float()  # (n * B, C, wh, ww)
        if total is None:
            total = torch.zeros(b, logits.shape[1], h, w, device=images.device)
        for n, (t, l, wh, ww) in enumerate(chunk):  # one add per window, not per pixel
            total[..., t:t + wh, l:l + ww] += logits[n * b:(n + 1) * b]
            cover[..., t:t + wh, l:l + ww] += 1
    return total / cover  # (B, C, H, W)


@torch.no_grad()
def segment_logits(model: nn.Module, images: torch.Tensor, cfg: Config, device: torch.device) -> torch.Tensor:
    """Logits ``(B, C, H, W)`` of ``[0, 1]`` images ``(B, 3, H, W)`` by ``cfg.eval_mode`` (see module)."""
    h, w = images.shape[-2:]
    images = images.to(device)
    if cfg.eval_mode == "resize":  # the same resize as the test transform (EvalTransform)
        images = resize_short_side(images, cfg.image_size)
    x = normalize(images)  # (B, 3, h, w)
    window = cfg.image_size
    stride = cfg.eval_stride or max(1, window // 2)
    with autocast(cfg.amp, device):
        if cfg.eval_mode == "sliding" or x.shape[-2] * x.shape[-1] > MAX_WHOLE_PIXELS:
            logits = sliding_window_logits(model, x, window, stride)
        else:
            logits = model(x).float()
    if tuple(logits.shape[-2:]) != (h, w):
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    return logits


def find_checkpoint(source: str | Path) -> Path:
    """``source`` itself when it is a file; in a run folder its ``pretrained.pt`` (pretraining)
    or ``finetune/best.pt`` (fine-tuning)."""
    source = Path(source)
    if source.is_file():
        return source
    for candidate in (source / "pretrained.pt", source / "finetune" / "best.pt", source / "best.pt"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no checkpoint at {source}: pass a .pt file, or a run folder holding "
                            "pretrained.pt (pretraining) or finetune/best.pt (fine-tuning)")


def stored_config(values: Mapping, path: Path) -> Config:
    """The configuration a checkpoint stores; an invalid one is one line naming the checkpoint."""
    try:
        return load_config("paper", overrides=dict(values))
    except ValueError as err:
        raise ValueError(f"{path} stores an invalid configuration ({err}): pass --config (the preset or "
                         f"file it was trained with), or use a checkpoint this kit wrote") from None


def load_trained(source: str | Path, config=None, overrides: Mapping | Sequence[str] | None = None,
                 segmentation: bool = False) -> tuple[nn.Module, Config, Path]:
    """The network of a checkpoint (or run folder), in eval mode on the CPU, with its ``Config``.

    The configuration is the one saved in the checkpoint (every ``best.pt`` and ``pretrained.pt``
    holds it), or ``config`` (a preset or file) when given; ``overrides`` change it (e.g.
    ``eval_mode=sliding``, ``data_root=...``). The output count is read from the head's weights.
    ``segmentation=True`` (segmenting images, as ``predict`` does) refuses a pretraining
    checkpoint, as ``evaluate`` does. Returns ``(model, cfg, checkpoint path)``.
    """

    path = find_checkpoint(source)
    state = load_checkpoint(path)
    if segmentation:  # a reconstruction head would label every pixel with a colour channel
        check_pretraining_checkpoint(state, path)
    if config is None:
        if not isinstance(state.get("config"), Mapping):
            raise ValueError(f"{path} holds no saved configuration: pass --config (the preset or file it "
                             "was trained with)")
        base = stored_config(state["config"], path)
    else:
        base = load_config(config)
    cfg = load_config(base, overrides)
    weights = state.get("model", state)
    if "head.conv.weight" not in weights:
        raise ValueError(f"{path} is not a U-Net checkpoint of this kit (no head.conv.weight)")
    model = build_model(cfg, int(weights["head.conv.weight"].shape[0]))
    load_pretrained(model, weights, reinit_head=False, origin=path)  # strict: a preset mismatch names the keys
    return model.eval(), cfg, path
