"""Image transforms of the SMIR pipeline, built on kornia.

Training (pretraining and fine-tuning) uses one augmentation, :class:`TrainAugment`:
RandomResizedCrop to 256 (scale 0.25..1, aspect ratio 3/4..4/3), a horizontal flip with
probability 0.5, and a colour jitter of 0.2 (brightness, contrast, saturation, hue) applied with
probability 0.5. The *geometry* (crop and flip) is applied identically to the image and to any
extra ``(H, W)`` tensors that belong to it (a segmentation label, a selective pixel mask); those
are resampled with nearest neighbour so class indices and mask bits stay exact. The *colour*
jitter touches the image only.

Evaluation uses :class:`EvalTransform`: the short side resized to 256 (bilinear with antialias
for images, nearest for labels), then a centre crop of 256 for validation; the test split keeps
the whole resized image.

Finally :func:`normalize` / :func:`denormalize` map ``[0, 1]`` images to the normalised space
the networks work in (mean ``NORM_MEAN``, std ``NORM_STD`` for every dataset), where the mask
fill value 0.0 is the mean colour.

Randomness: pass ``generator=torch.Generator`` to make an augmentation reproducible. kornia
draws its parameters from torch's global generator, so a seed taken from ``generator`` is used
inside ``torch.random.fork_rng``; the global random state is left untouched.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from smir_lib.data.base import warn_once
from smir_lib.runtime import forked_rng

NORM_MEAN: tuple[float, float, float] = (0.4529, 0.4317, 0.3999)
NORM_STD: tuple[float, float, float] = (0.4443, 0.4665, 0.4887)


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (3, 1, 1)  # broadcast over (..., 3, H, W)
    mean = torch.tensor(NORM_MEAN, dtype=x.dtype, device=x.device).view(shape)
    std = torch.tensor(NORM_STD, dtype=x.dtype, device=x.device).view(shape)
    return mean, std


def normalize(images: torch.Tensor) -> torch.Tensor:
    """``[0, 1]`` images ``(..., 3, H, W)`` -> normalised images: ``(x - NORM_MEAN) / NORM_STD``."""
    mean, std = _stats(images)
    return (images - mean) / std


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """Normalised images ``(..., 3, H, W)`` -> ``[0, 1]`` range (not clamped): ``x * std + mean``."""
    mean, std = _stats(images)
    return images * std + mean


def _as_batch(x: torch.Tensor) -> torch.Tensor:
    """(C, H, W) or (H, W) -> (1, C, H, W); (B, C, H, W) unchanged."""
    if x.dim() == 2:
        return x[None, None]
    if x.dim() == 3:
        return x[None]
    return x


def warn_if_upscaled(height: int, width: int, size: int) -> None:
    """Warn (once per process) that an image whose short side is below ``size`` gets enlarged.

    Resizing to short side ``size`` and a ``size`` px random crop both upscale such an image:
    a silent change of resolution, said out loud here (issue 18).
    """
    if min(height, width) < size:
        warn_once(f"images smaller than image_size={size} px are upscaled: a {width}x{height} image is "
                  f"enlarged x{size / min(height, width):.2f} to a short side of {size} px. Lower "
                  f"image_size or use larger images if this is not intended.", key="upscaled")


def short_side_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """Output (height, width) when the short side of a ``height x width`` image becomes ``size``.

    The long side is ``round(long * size / short)``, e.g. 966x1296 -> 256x343.
    """
    if height <= width:
        return size, max(1, int(round(width * size / height)))
    return max(1, int(round(height * size / width))), size


def resize_short_side(image: torch.Tensor, size: int = 256, label: torch.Tensor | None = None):
    """Resize so that the short side is ``size``, keeping the aspect ratio.

    Args:
        image: float ``(3, H, W)`` or ``(B, 3, H, W)``; bilinear with antialias (kornia).
        size: the new short side.
        label: optional ``(H, W)`` / ``(B, H, W)`` tensor of any dtype (labels, masks); nearest.

    Returns the resized image, or ``(image, label)`` when a label is given.
    """
    from kornia.geometry.transform import resize

    h, w = image.shape[-2:]
    warn_if_upscaled(h, w, size)
    out_hw = short_side_shape(h, w, size)
    out = image
    if (h, w) != out_hw:
        out = resize(_as_batch(image), out_hw, interpolation="bilinear", antialias=True, align_corners=False)
        out = out.reshape(*image.shape[:-2], *out_hw)
    if label is None:
        return out
    if tuple(label.shape[-2:]) != (h, w):
        raise ValueError(f"label is {tuple(label.shape[-2:])} but image is {(h, w)}: they must match")
    return out, resize_nearest(label, out_hw)


def resize_nearest(label: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of ``(H, W)`` / ``(B, H, W)`` labels or masks of any dtype (kornia)."""
    from kornia.geometry.transform import resize

    if tuple(label.shape[-2:]) == tuple(size):
        return label
    lab = resize(_as_batch(label).float(), size, interpolation="nearest")
    return lab.reshape(*label.shape[:-2], *size).to(label.dtype)


def center_crop(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """The central ``size`` window of ``(..., H, W)``, any dtype.

    A centre crop is an integer slice (no resampling), so it is a view rather than a kornia warp;
    that keeps label values and mask bits exact. Raises when the tensor is smaller than ``size``.
    """
    th, tw = (size, size) if isinstance(size, int) else size
    h, w = x.shape[-2:]
    if th > h or tw > w:
        raise ValueError(f"cannot centre-crop {h}x{w} to {th}x{tw}: resize the short side to at "
                         f"least {max(th, tw)} first (resize_short_side)")
    top, left = (h - th) // 2, (w - tw) // 2
    return x[..., top:top + th, left:left + tw]


class EvalTransform:
    """Validation / test preprocessing: short side to ``size``, then (validation) a centre crop.

    ``EvalTransform(256)`` is the validation transform; ``EvalTransform(256, crop=False)`` is the
    test transform (whole image, short side 256). ``for_split("test")`` picks for you.
    Called as ``t(image (3, H, W), *extras (H, W))`` -> ``(image, *extras)``.
    """

    def __init__(self, size: int = 256, crop: bool = True) -> None:
        self.size, self.crop = size, crop

    @classmethod
    def for_split(cls, split: str, size: int = 256) -> EvalTransform:
        """The paper's transform for ``split``: centre crop for ``val`` (and ``train``), none for ``test``."""
        return cls(size, crop=split != "test")

    def __call__(self, image: torch.Tensor, *extras: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h, w = image.shape[-2:]
        for extra in extras:
            if tuple(extra.shape[-2:]) != (h, w):
                raise ValueError(f"extra tensor is {tuple(extra.shape[-2:])} but image is {(h, w)}: they must match")
        image = resize_short_side(image, self.size)
        out_extras = [resize_nearest(e, tuple(image.shape[-2:])) for e in extras]
        if self.crop:
            image = center_crop(image, self.size)
            out_extras = [center_crop(e, self.size) for e in out_extras]
        return (image, *out_extras)

    def __repr__(self) -> str:
        return f"EvalTransform(size={self.size}, crop={self.crop})"


def unit_float(image: torch.Tensor) -> torch.Tensor:
    """An image in ``[0, 1]``: ``uint8`` as ``x / 255`` (the floats ``load_image`` makes), float as it is."""
    return image.float().div_(255.0) if image.dtype == torch.uint8 else image


@functools.lru_cache(maxsize=4096)
def nearest_exact_index(n_in: int, n_out: int) -> torch.Tensor:
    """The source index of each of ``n_out`` outputs when ``n_in`` values are resized with
    ``interpolate(mode="nearest-exact")``, computed by that very function (one axis at a time, as
    it works), so that gathering with them gives its result exactly, for any dtype. Kept per
    size pair (crop sides repeat from item to item): read it, never modify it."""
    import torch.nn.functional as F

    ramp = torch.arange(n_in, dtype=torch.float32).view(1, 1, n_in, 1)  # exact below 2**24
    return F.interpolate(ramp, size=(n_out, 1), mode="nearest-exact").view(n_out).long()


class TrainAugment:
    """The training augmentation: random resized crop + flip on everything, jitter on the image.

    Args:
        size: output side (square crop), 256 in the paper.
        scale, ratio: RandomResizedCrop area fraction and aspect-ratio ranges.
        hflip: probability of a horizontal flip.
        jitter: brightness, contrast, saturation and hue strength of the colour jitter (0 = off).
        jitter_p: probability that the jitter is applied to a sample.
        jitter_target: ``True`` (default): the caller uses the jittered image both as input and as
            reconstruction target, so one image comes back. ``False``: the authors' quirk, where
            the jitter reaches the input only; the call then also returns the geometrically
            augmented but un-jittered image, to serve as the target.

    Call: ``aug(image (3, H, W), *extras (H, W), generator=None)`` returns
    ``(image, *extras)``, or ``(image, unjittered_image, *extras)`` when ``jitter_target=False``.
    ``image`` is float in ``[0, 1]`` or ``uint8`` (read as ``x / 255``). Extras keep their dtype
    (long labels, bool masks) and are resampled with nearest neighbour. Batched inputs
    ``(B, 3, H, W)`` with extras ``(B, H, W)`` get independent parameters per sample. The inputs
    are never modified and no output shares memory with them.

    **How it runs.** kornia's ``RandomResizedCrop``, ``RandomHorizontalFlip`` and ``ColorJitter``
    draw the parameters, in that order. The crop is then applied by kornia's own crop function to
    the crop's box only, so a full-resolution frame (CWFID: 1296x966) is never copied, converted
    or scanned whole; the extras are gathered at the nearest-neighbour indices; an item the jitter
    did not draw skips its computation. The result is the same, bit for bit, as kornia's
    ``AugmentationSequential`` of the same modules on the whole image
    (``benchmarks.reference.augment_whole_image``; the tests check it), and 2.5x faster per CWFID
    frame, 1.8x per 256 px image, than that pipeline with the copy of the cached item it needed
    (one thread; ``benchmarks/data_pipeline.py``).
    """

    def __init__(self, size: int = 256, scale: tuple[float, float] = (0.25, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), hflip: float = 0.5, jitter: float = 0.2,
                 jitter_p: float = 0.5, jitter_target: bool = True) -> None:
        self.size, self.scale, self.ratio = size, tuple(scale), tuple(ratio)
        self.hflip, self.jitter, self.jitter_p, self.jitter_target = hflip, jitter, jitter_p, jitter_target
        self._built: tuple | None = None

    def modules(self) -> tuple:
        """kornia's ``(crop, flip, jitter)`` modules (``jitter`` None when off), built on first use."""
        if self._built is None:
            import kornia.augmentation as K

            jitter = None
            if self.jitter > 0 and self.jitter_p > 0:
                j = self.jitter
                jitter = K.ColorJitter(brightness=j, contrast=j, saturation=j, hue=j, p=self.jitter_p)
            self._built = (K.RandomResizedCrop((self.size, self.size), scale=self.scale, ratio=self.ratio),
                           K.RandomHorizontalFlip(p=self.hflip), jitter)
        return self._built

    def _geometry(self, img: torch.Tensor, masks: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Crop and flip of ``img (B, 3, H, W)`` and ``masks (B, H, W)``, as the kornia modules do."""
        crop, flip, _ = self.modules()
        params = crop.forward_parameters(img.shape)
        flipped = flip.forward_parameters((img.shape[0], img.shape[1], self.size, self.size))["batch_prob"]
        src = params["src"]  # (B, 4, 2) box corners (x, y); kornia's crop truncates them to ints
        box = src.long()
        left, top = box[:, 0, 0].tolist(), box[:, 0, 1].tolist()  # inclusive corners, as the crop reads them
        right, bottom = box[:, 1, 0].tolist(), box[:, 3, 1].tolist()
        x0, y0, x1, y1 = min(left), min(top), max(right) + 1, max(bottom) + 1
        region = unit_float(img[..., y0:y1, x0:x1])  # only the boxes' pixels, as floats
        shifted = {**params, "src": src - torch.tensor([x0, y0], dtype=src.dtype)}
        out = [crop.apply_transform(region, shifted, crop.flags)]
        if masks:  # nearest neighbour = a gather at the rows and columns it picks, per sample
            rows = torch.stack([y + nearest_exact_index(y2 + 1 - y, self.size) for y, y2 in zip(top, bottom)])
            cols = torch.stack([x + nearest_exact_index(x2 + 1 - x, self.size) for x, x2 in zip(left, right)])
            at = torch.arange(len(img))[:, None, None], rows[:, :, None], cols[:, None, :]  # (B, S, S)
            out += [mask[at] for mask in masks]  # (B, S, S), each mask's dtype
        chosen = (flipped > 0.5).view(-1, 1, 1, 1)  # kornia applies a transform where p > 0.5
        return [torch.where(chosen if t.dim() == 4 else chosen[:, 0], t.flip(-1), t) for t in out]

    def _jitter(self, images: torch.Tensor) -> torch.Tensor:
        """The colour jitter of ``images (B, 3, S, S)``, clamped to [0, 1], as kornia's module does.

        kornia computes the jitter for every sample and keeps it where it applies (2.5 ms per
        128 px item); with none of the samples drawn (``1 - jitter_p`` of the items) the images
        come back unchanged, so the computation is skipped."""
        jitter = self.modules()[2]
        if jitter is None:
            return images
        params = jitter.forward_parameters(images.shape)
        if not bool((params["batch_prob"] > 0.5).any()):
            return images.clamp(0.0, 1.0)
        return jitter(images, params=params).clamp_(0.0, 1.0)

    def _apply(self, image: torch.Tensor, extras: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        if image.dtype != torch.uint8 and not image.is_floating_point():
            raise TypeError(f"TrainAugment takes float images in [0, 1] or uint8 ones, not {image.dtype}")
        batched = image.dim() == 4
        img = _as_batch(image)  # (B, 3, H, W)
        masks = [e if batched else e[None] for e in extras]  # (B, H, W)
        for e, m in zip(extras, masks):
            if m.dim() != 3 or m.shape[-2:] != img.shape[-2:] or m.shape[0] != img.shape[0]:
                raise ValueError(f"extra tensor of shape {tuple(e.shape)} does not match image "
                                 f"{tuple(image.shape)}: expected (H, W) per sample")
        geo_img, *geo_masks = self._geometry(img, masks)
        jittered = self._jitter(geo_img)
        unbatch = (lambda t: t) if batched else (lambda t: t[0])
        result = [unbatch(jittered)]
        if not self.jitter_target:
            result.append(unbatch(geo_img))
        result += [unbatch(m) for m in geo_masks]
        return tuple(result)

    def __call__(self, image: torch.Tensor, *extras: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        warn_if_upscaled(*image.shape[-2:], self.size)
        if generator is None:
            return self._apply(image, extras)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        with forked_rng(seed):
            return self._apply(image, extras)

    def __repr__(self) -> str:
        return (f"TrainAugment(size={self.size}, scale={self.scale}, ratio={self.ratio}, hflip={self.hflip}, "
                f"jitter={self.jitter}, jitter_p={self.jitter_p}, jitter_target={self.jitter_target})")
