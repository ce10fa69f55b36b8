"""The ResNet U-Net that SMIR pretrains and fine-tunes, and how weights are moved into it.

The authors use ``pytorch_toolbelt``'s ``resnet34_unet64_s4``; this is the same network written
out in plain PyTorch:

* **Encoder**: a torchvision ResNet (``conv1, bn1, relu, maxpool, layer1..layer4``) with
  torchvision's parameter names, so an ImageNet file from torchvision loads into
  ``model.encoder`` as it is. Its ``layer1..layer4`` features (64/128/256/512 channels at strides
  4/8/16/32 for ResNet-34) feed the decoder.
* **Decoder**: 3 blocks, from stride 32 back to stride 4. Each block upsamples x2 (nearest),
  concatenates the encoder feature of that stride and applies 2 x (3x3 conv, BatchNorm, SiLU).
  Widths 256, 128, 64 going up (``decoder_widths=(64, 128, 256)`` is listed finest first).
* **Head**: Dropout2d(0.2), a 1x1 conv at stride 4, bilinear upsampling to the input size.
* The input is reflect-padded to a multiple of 64 (half on each side) and the output cropped.

For reconstruction the head has 3 outputs and no activation: it predicts the normalised image.
For segmentation it has one output per class. Downstream, the *whole* pretrained network is
loaded and only the head is re-initialised when the class count differs (``load_pretrained``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from smir_lib.files import read_torch_file
from smir_lib.runtime import derive_seed, forked_rng

__all__ = ["BasicBlock", "ResNetEncoder", "UNetDecoder", "ResNetUNet", "PRESETS", "build_unet", "build_model",
           "count_parameters", "load_imagenet_encoder", "load_pretrained"]

RESNET_LAYERS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
"""Number of BasicBlocks in layer1..layer4 of torchvision's ResNets."""

PAD_MULTIPLE = 64


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: two 3x3 convs with BatchNorm, plus a shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:  # shortcut must change shape: 1x1 conv + BN
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                                            nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNetEncoder(nn.Module):
    """A torchvision ResNet-18/34 without ``avgpool`` and ``fc``; returns 4 feature maps.

    ``base_width`` scales every width (64 is torchvision's; the ``tiny`` preset uses 16).
    """

    def __init__(self, name: str = "resnet34", base_width: int = 64):
        super().__init__()
        if name not in RESNET_LAYERS:
            raise ValueError(f"encoder is {name!r}; expected one of {sorted(RESNET_LAYERS)}")
        widths = [base_width * 2 ** i for i in range(4)]  # e.g. 64, 128, 256, 512
        self.conv1 = nn.Conv2d(3, base_width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_channels = base_width
        for i, (width, n_blocks) in enumerate(zip(widths, RESNET_LAYERS[name])):
            stride = 1 if i == 0 else 2
            blocks = [BasicBlock(in_channels, width, stride)]
            blocks += [BasicBlock(width, width) for _ in range(n_blocks - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            in_channels = width
        self.channels = tuple(widths)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, w, H/4, W/4)
        features = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            features.append(x)  # strides 4, 8, 16, 32
        return features


def conv_bn_silu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 conv (no bias: BatchNorm has one), BatchNorm, SiLU (= Swish)."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.SiLU(inplace=True))


class UNetDecoder(nn.Module):
    """Goes from stride 32 up to stride 4, merging one encoder feature per step."""

    def __init__(self, encoder_channels: Sequence[int], widths: Sequence[int] = (64, 128, 256)):
        super().__init__()
        if len(widths) != len(encoder_channels) - 1:
            raise ValueError(f"decoder_widths is {tuple(widths)}; expected "
                             f"{len(encoder_channels) - 1} widths, finest first, "
                             "e.g. (64, 128, 256)")
        blocks = []
        below = encoder_channels[-1]  # channels coming up from the coarser level
        for skip, width in zip(reversed(encoder_channels[:-1]), reversed(widths)):
            blocks.append(nn.Sequential(conv_bn_silu(below + skip, width),
                                        conv_bn_silu(width, width)))
            below = width
        self.blocks = nn.ModuleList(blocks)  # coarse to fine
        self.out_channels = widths[0]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]  # (B, 512, H/32, W/32)
        for block, skip in zip(self.blocks, reversed(features[:-1])):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = block(torch.cat([x, skip], dim=1))
        return x  # (B, widths[0], H/4, W/4)


OUTPUT_STRIDE = 4
"""The head works on the decoder's stride-4 map and is bilinearly upsampled to the input (SPEC)."""


class SegmentationHead(nn.Module):
    """Dropout2d then a 1x1 conv: one output channel per class (or per colour)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.2):
        super().__init__()
        self.dropout = nn.Dropout2d(dropout)
        self.conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.dropout(x))

    def reset_parameters(self) -> None:
        self.conv.reset_parameters()


class ResNetUNet(nn.Module):
    """ResNet encoder + U-Net decoder + 1x1 head; ``(B, 3, H, W) -> (B, out_channels, H, W)``."""

    def __init__(self, out_channels: int, encoder: str = "resnet34",
                 decoder_widths: Sequence[int] = (64, 128, 256), dropout: float = 0.2,
                 base_width: int = 64):
        super().__init__()
        self.out_channels = out_channels
        self.encoder = ResNetEncoder(encoder, base_width)
        self.decoder = UNetDecoder(self.encoder.channels, tuple(decoder_widths))
        self.head = SegmentationHead(self.decoder.out_channels, out_channels, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x, (top, left) = pad_to_multiple(x, PAD_MULTIPLE)  # (B, 3, H', W'), H' % 64 == 0
        y = self.head(self.decoder(self.encoder(x)))  # (B, out, H'/4, W'/4)
        y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return y[..., top:top + height, left:left + width]  # (B, out, H, W)


def pad_to_multiple(x: torch.Tensor, multiple: int = PAD_MULTIPLE):
    """Reflect-pad ``x (..., H, W)`` so both sides are multiples of ``multiple``.

    The padding is split evenly (the extra pixel goes bottom/right), as the authors do. Reflect
    padding needs the pad to be smaller than the side; for tiny inputs we replicate the border
    instead. Returns the padded tensor and the ``(top, left)`` offsets to crop back.
    """
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    top, left = pad_h // 2, pad_w // 2
    pads = (left, pad_w - left, top, pad_h - top)
    if pad_h == 0 and pad_w == 0:
        return x, (0, 0)
    mode = "reflect" if max(pads[2:]) < height and max(pads[:2]) < width else "replicate"
    return F.pad(x, pads, mode=mode), (top, left)


PRESETS: dict[str, dict] = {
    "resnet34": dict(encoder="resnet34", decoder_widths=(64, 128, 256), base_width=64),  # paper
    "resnet18": dict(encoder="resnet18", decoder_widths=(64, 128, 256), base_width=64),
    "tiny": dict(encoder="resnet18", decoder_widths=(16, 32, 64), base_width=16),  # CPU demos
}
"""Model presets. ``resnet34`` is the paper's network (about 24.4 M parameters)."""


def build_unet(preset: str = "resnet34", out_channels: int = 3, **overrides) -> ResNetUNet:
    """A ``ResNetUNet`` from a preset name; ``out_channels=3`` is the reconstruction network."""
    if preset not in PRESETS:
        raise ValueError(f"model preset is {preset!r}; expected one of {sorted(PRESETS)}")
    return ResNetUNet(out_channels, **{**PRESETS[preset], **overrides})


def build_model(cfg, out_channels: int = 3) -> ResNetUNet:
    """The network of ``cfg.model`` (a ``Config``), initialised from ``cfg.seed``.

    The weights depend only on ``(cfg.seed, out_channels)``: the global random state is forked,
    so building a model neither reads nor moves it.
    """

    with forked_rng(derive_seed(cfg.seed, "init", out_channels)):
        return build_unet(cfg.model, out_channels)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (BatchNorm running statistics are not parameters)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------------------------
# Weight loading


def _read_state_dict(source) -> dict[str, torch.Tensor]:
    """A state dict from a file path, a state dict, or a checkpoint ``{"model": state_dict}``.

    Files are read with ``torch.load(weights_only=True)``: tensors only, no pickled code. A
    ``module.`` prefix left by DistributedDataParallel is removed.
    """
    if isinstance(source, (str, os.PathLike)):
        source = read_torch_file(source)  # a corrupt or code-carrying file: one line naming it
    if not isinstance(source, Mapping):
        raise TypeError(f"weights source is a {type(source).__name__}; expected a file path, a "
                        "state dict, or a checkpoint dict with a 'model' state dict")
    for key in ("model", "state_dict"):  # our checkpoints, then Lightning-style ones
        if isinstance(source.get(key), Mapping):
            source = source[key]
            break
    state = dict(source)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _mismatch(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor],
              ignore: Sequence[str] = ()) -> str:
    """Describe how ``given`` differs from ``expected`` (keys and shapes); '' when they agree."""
    def listed(keys: list[str]) -> str:
        return ", ".join(keys[:5]) + (f", ... ({len(keys)} in all)" if len(keys) > 5 else "")

    missing = [k for k in expected if k not in given and not k.startswith(tuple(ignore))]
    unexpected = [k for k in given if k not in expected and not k.startswith(tuple(ignore))]
    wrong = [f"{k} {tuple(given[k].shape)} vs {tuple(expected[k].shape)} expected"
             for k in expected if k in given and given[k].shape != expected[k].shape
             and not k.startswith(tuple(ignore))]
    parts = [f"{len(missing)} missing keys: {listed(missing)}" if missing else "",
             f"{len(unexpected)} unexpected keys: {listed(unexpected)}" if unexpected else "",
             f"{len(wrong)} shape mismatches: {listed(wrong)}" if wrong else ""]
    return "; ".join(p for p in parts if p)


def load_imagenet_encoder(model: ResNetUNet, path) -> None:
    """Load a torchvision ResNet file (e.g. ``resnet34-b627a593.pth``) into ``model.encoder``.

    ``path`` may also be a state dict already in memory. Key names and shapes are checked
    strictly; only the classifier ``fc.*`` is ignored. The decoder and head keep their random
    initialisation (the paper's ImageNet baseline).
    """
    state = _read_state_dict(path)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    problem = _mismatch(model.encoder.state_dict(), state)
    if problem:
        name = str(path) if isinstance(path, (str, os.PathLike)) else "the state dict"
        raise ValueError(f"{name} does not fit the {type(model.encoder).__name__} of this model "
                         f"({problem}): pass a torchvision resnet file matching the preset "
                         "(resnet34 / resnet18; the tiny preset has no ImageNet weights)")
    model.encoder.load_state_dict(state, strict=True)


def load_pretrained(model: ResNetUNet, source, *, reinit_head: bool = True,
                    reset_head: bool = False, origin: str | os.PathLike | None = None) -> None:
    """Load a whole pretrained network (encoder, decoder and head) into ``model``.

    ``source`` is a checkpoint file, a state dict, or a checkpoint dict with a ``"model"`` state
    dict. Every key must match in name and shape, except the head's: when the class count
    differs (e.g. 3 colours pretrained, 21 classes downstream) the head is re-initialised if
    ``reinit_head`` and an error otherwise. The authors keep a head whose shape happens to match
    (3-class datasets get the colour head); ``reset_head=True`` re-initialises it anyway.
    ``origin`` names the file a state dict was read from, for the error message.
    """
    state = _read_state_dict(source)
    expected = model.state_dict()
    head_keys = [k for k in expected if k.startswith("head.")]
    head_differs = any(k not in state or state[k].shape != expected[k].shape for k in head_keys)
    skip_head = reset_head or (head_differs and reinit_head)
    problem = _mismatch(expected, state, ignore=("head.",) if skip_head else ())
    if problem:
        hint = ("pass reinit_head=True to re-initialise the head" if head_differs and not reinit_head
                and origin is None else "load a checkpoint of the same preset and class count")
        origin = source if origin is None and isinstance(source, (str, os.PathLike)) else origin
        where = f" in {origin}" if origin is not None else ""
        raise ValueError(f"pretrained weights{where} do not fit this {type(model).__name__} "
                         f"({problem}): {hint}")
    if skip_head:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        model.load_state_dict(state, strict=False)
        model.head.reset_parameters()
    else:
        model.load_state_dict(state, strict=True)
