"""Loading images and labels from disk, with errors that say what went wrong and how to fix it.

Every real dataset in this kit is a list of ``(image path, label path)`` pairs plus a rule that
turns the label file into class indices. This module holds the parts they share:

- :func:`resolve_root` finds a dataset folder (argument, ``$SMIR_DATA_DIR``, ``./data``) or
  raises :class:`DatasetNotFoundError` carrying the exact download command;
- :func:`load_image` reads any image file as float ``(3, H, W)`` in ``[0, 1]``; grayscale,
  palette and RGBA files are converted, a corrupt file raises :class:`ImageLoadError` naming it;
- :func:`colors_to_index` and :func:`values_to_index` turn colour-coded or value-coded label
  images into class indices with a lookup, and name the file and the value they do not know;
- :class:`SegmentationFiles` is the torch ``Dataset`` every real dataset returns: labelled items
  are ``(image, label)``, pool items (unlabelled pretraining images) are the image alone.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from smir_lib.files import atomic_write

IGNORE_INDEX = 255
REPO_ROOT = Path(__file__).resolve().parents[2]
SPLITS = ("train", "val", "test", "pool")
DOWNLOAD_FIX = "delete it and run the download again"
"""What an unreadable file of a downloaded dataset calls for (own folders pass their own advice)."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset folder is missing or incomplete; the message holds the command that fetches it."""


class ImageLoadError(OSError):
    """An image or label file could not be decoded (truncated, corrupt, not an image)."""


class LabelError(ValueError):
    """A label file holds a colour or value outside the dataset's label table, or has the wrong size."""


def download_command(name: str, data_dir: Path | str | None = None) -> str:
    """The exact shell command that downloads dataset ``name`` (into ``data_dir`` when given)."""
    command = f"smir download {name}"
    if data_dir is not None:
        command += f" --root {data_dir}"
    return command


def data_dir_candidates(root: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for datasets, in order: ``root``, else ``$SMIR_DATA_DIR``, else ``./data``
    (the current directory) and ``<repository>/data`` (so notebooks, which run inside
    ``notebooks/``, find the same folder as the command line)."""
    if root is not None:
        return [Path(root).expanduser()]
    env = os.environ.get("SMIR_DATA_DIR")
    if env:
        return [Path(env).expanduser()]
    candidates = [Path("data").resolve(), REPO_ROOT / "data"]
    return list(dict.fromkeys(candidates))


def resolve_root(name: str, root: str | os.PathLike | None, is_complete: Callable[[Path], bool]) -> Path:
    """Find the folder of dataset ``name``.

    ``root`` (or ``$SMIR_DATA_DIR``, or ``./data``) is the *data folder* holding one sub-folder per
    dataset (``data/voc``, ``data/cwfid``, ...); a dataset folder itself is accepted too. The first
    candidate for which ``is_complete(folder)`` holds wins. Nothing found raises
    :class:`DatasetNotFoundError` with the folders tried and the command that downloads it.

    A folder named explicitly (``root``, or ``$SMIR_DATA_DIR``) is the only place looked at: when it
    lacks the dataset the error names it, and ``extra_candidates`` (fallback copies) are never
    used, so a run never trains on another copy than the one asked for.
    """
    tried: list[Path] = []
    for data_dir in data_dir_candidates(root):
        for folder in (data_dir / name, data_dir):
            if folder not in tried:
                tried.append(folder)
                if is_complete(folder):
                    return folder
    target = data_dir_candidates(root)[0]
    explicit = root is not None or bool(os.environ.get("SMIR_DATA_DIR"))
    if explicit:
        given = f"root={root}" if root is not None else f"SMIR_DATA_DIR={os.environ['SMIR_DATA_DIR']}"
        raise DatasetNotFoundError(
            f"dataset '{name}' not found in {target} ({given}); looked in: {', '.join(str(p) for p in tried)}. "
            f"Download it there with:\n    {download_command(name, target)}\n"
            f"or point {'root' if root is not None else 'SMIR_DATA_DIR'} at the data folder that holds '{name}/'.")
    raise DatasetNotFoundError(
        f"dataset '{name}' not found; looked in: {', '.join(str(p) for p in tried)}. "
        f"Download it with:\n    {download_command(name, target)}\n"
        f"or point to an existing copy with get_dataset('{name}', ..., root=DIR) or $SMIR_DATA_DIR.")


def check_split(name: str, split: str, allowed: Sequence[str] = SPLITS) -> None:
    """Raise a ``ValueError`` naming the split and the allowed ones when ``split`` is unknown."""
    if split not in allowed:
        raise ValueError(f"unknown split '{split}' for dataset '{name}': expected one of {list(allowed)}")


def open_image_array(path: str | os.PathLike, mode: str | None = "RGB",
                     exif_transpose: bool = False, fix: str = DOWNLOAD_FIX, near: int | None = None) -> np.ndarray:
    """Decode an image file into a numpy array.

    ``mode="RGB"`` converts grayscale (``L``, ``I;16``...), palette (``P``) and ``RGBA`` files to
    three channels (alpha is dropped); ``mode=None`` keeps the stored values (palette indices,
    16-bit label values). ``exif_transpose=True`` turns a camera photo upright as its EXIF
    orientation tag says (what an image viewer shows). ``near``: the short side the caller will
    resize to; a file more than twice as large is decoded smaller (:func:`decode_near`). A file
    that cannot be decoded raises :class:`ImageLoadError` with its path and ``fix``.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with _opened(path) as img:
            _check_pixels(img, path)
            img = decode_near(img, near)  # decode now, so a truncated file fails here and not later
            if exif_transpose:
                img = ImageOps.exif_transpose(img)
            if mode is not None and img.mode != mode:
                if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                    # 16/32-bit grayscale: scale to 8 bits before making it RGB
                    arr = np.asarray(img, dtype=np.float64)
                    peak = arr.max() if arr.max() > 255 else 255.0
                    img = Image.fromarray(np.clip(arr / peak * 255.0, 0, 255).astype(np.uint8))
                img = img.convert(mode)
            return np.array(img)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as err:  # Pillow refuses it at open: more than 2x its limit
        raise ImageLoadError(_too_many_pixels(path, str(err))) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageLoadError(f"cannot read image file {path}: {err}. The file is corrupt, cut short or "
                             f"not an image; {fix}.") from err


def save_image_file(array: np.ndarray, path: str | os.PathLike, **options) -> Path:
    """Write ``array`` (``(H, W)`` or ``(H, W, 3)`` uint8) as an image file atomically, never through a
    link (``smir_lib.files.atomic_write``); the format follows the suffix, ``options`` go to Pillow."""
    from PIL import Image

    path = Path(path)
    kind = Image.registered_extensions()[path.suffix.lower()]
    return atomic_write(path, lambda handle: Image.fromarray(array).save(handle, format=kind, **options))


def load_image(path: str | os.PathLike, exif_transpose: bool = False, fix: str = DOWNLOAD_FIX,
               near: int | None = None) -> torch.Tensor:
    """Read an image file as float ``(3, H, W)`` in ``[0, 1]`` (grayscale and RGBA converted);
    ``near``: decode a file more than twice that short side smaller (:func:`decode_near`)."""
    arr = open_image_array(path, "RGB", exif_transpose, fix, near)  # (H, W, 3) uint8
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)


EXIF_SWAPS_SIDES = (5, 6, 7, 8)
"""EXIF orientations that rotate by 90 degrees (width and height trade places when applied)."""


def image_shape(path: str | os.PathLike, exif_transpose: bool = False, fix: str | None = None) -> tuple[int, int]:
    """``(height, width)`` of an image file from its header alone (no pixels are decoded).

    With ``exif_transpose`` the shape is the upright one :func:`open_image_array` returns. An
    unreadable header raises :class:`ImageLoadError` with ``fix`` (default: advice for own and
    downloaded data alike).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with _opened(path) as img:
            width, height = img.size
            if exif_transpose and img.getexif().get(0x0112, 1) in EXIF_SWAPS_SIDES:
                width, height = height, width
    except Image.DecompressionBombError as err:
        raise ImageLoadError(_too_many_pixels(path, str(err))) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageLoadError(f"cannot read image file {path}: {err}. The file is corrupt or not "
                             f"an image; {fix or UNREADABLE_FIX}.") from err
    return height, width


UNREADABLE_FIX = ("your own data: export or copy that file again, or delete it; a downloaded dataset: "
                  "run the download again")
"""What to do about an image file that does not decode."""

MAX_PIXELS = 100_000_000
"""Largest image (pixels) this kit decodes: 10000 x 10000. Decoding one costs about 0.3 GB as
bytes and 1.2 GB as floats, and a pretraining run measured 6.5 GB for such a pool image; a
larger one (or a file claiming to be, a decompression bomb) is refused naming the file. Pillow's
own limit (``Image.MAX_IMAGE_PIXELS``, 89 M) is left as it is."""


def decode_near(img, short_side: int | None):
    """Decode the opened Pillow image ``img``, by an integer factor smaller when its short side is
    more than twice ``short_side`` (None: at full size), and return it.

    The result keeps a short side of at least ``2 * short_side``, so the antialiased resize that
    follows still has the detail it averages. A JPEG is decoded at 1/2, 1/4 or 1/8 scale directly
    (``draft``: the full image never exists in memory); any other file is decoded whole as 8-bit
    bytes (3 bytes a pixel, not the 12 of floats) and box-averaged (``reduce``). A 10000 x 10000
    pool image read for a 64-px pretraining then costs 0.3 GB where decoding it as floats and
    resizing took 6.2 GB (tests/test_large_photos.py measures it).
    """
    factor = 1 if short_side is None else min(img.size) // (2 * short_side)
    if factor >= 2 and img.format == "JPEG":
        img.draft(None, (img.size[0] // factor, img.size[1] // factor))  # the smallest scale at least this
    img.load()
    factor = 1 if short_side is None else min(img.size) // (2 * short_side)
    if factor >= 2:
        with contextlib.suppress(ValueError):  # a mode reduce() lacks (16-bit): keep the full size
            img = img.reduce(factor)
    return img


@contextlib.contextmanager
def _opened(path: Path):
    """``Image.open(path)`` without Pillow's bomb warning: :func:`_check_pixels` applies the kit's
    own limit (:data:`MAX_PIXELS`), so a 95 M pixel photo is read without a warning about it."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(path)
    with img:
        yield img


def _too_many_pixels(path: Path, detail: str) -> str:
    return (f"image file {path} is too large to decode ({detail}); a photo this large (or a file made "
            f"to look so, a decompression bomb) would fill the memory: downsize or tile it (a side of a "
            f"few thousand pixels is plenty), or delete it")


def _check_pixels(img, path: Path) -> None:
    """Refuse an image of more than :data:`MAX_PIXELS` pixels before decoding it."""
    width, height = img.size
    if width * height > MAX_PIXELS:
        raise ImageLoadError(_too_many_pixels(path, f"{width}x{height} = {width * height:,} pixels, "
                                                    f"above the kit's limit of {MAX_PIXELS:,}"))


@contextlib.contextmanager
def pixel_limit(max_pixels: int | None):
    """Decode images of up to ``max_pixels`` pixels (None: any) inside the block, for a known large
    file (Nassar's orthomosaic); the limits are restored after, never switched off process-wide."""
    global MAX_PIXELS
    from PIL import Image

    saved = MAX_PIXELS, Image.MAX_IMAGE_PIXELS
    MAX_PIXELS, Image.MAX_IMAGE_PIXELS = (max_pixels if max_pixels is not None else float("inf")), max_pixels
    try:
        yield
    finally:
        MAX_PIXELS, Image.MAX_IMAGE_PIXELS = saved


def _describe_values(values: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(str(tuple(int(c) for c in v) if np.ndim(v) else int(v)) for v in values[:limit])
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return shown + more


def colors_to_index(rgb: np.ndarray, colors: Mapping[tuple[int, int, int], int],
                    path: str | os.PathLike = "<array>",
                    fix: str = "Re-download the dataset or check the file.") -> np.ndarray:
    """Map an RGB label image ``(H, W, 3)`` to class indices ``(H, W)`` with a colour table.

    Colours are packed into one 24-bit integer per pixel and looked up with ``np.searchsorted``
    (no loop over pixels). A colour missing from ``colors`` raises :class:`LabelError` naming the
    file and the colour.
    """
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise LabelError(f"label file {path} has shape {rgb.shape}; expected a colour image (H, W, 3)")
    rgb = rgb[..., :3].astype(np.int64)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]  # (H, W)
    keys = np.array([(r << 16) | (g << 8) | b for r, g, b in colors], dtype=np.int64)
    order = np.argsort(keys)
    keys, targets = keys[order], np.array(list(colors.values()), dtype=np.int64)[order]
    pos = np.clip(np.searchsorted(keys, packed), 0, len(keys) - 1)
    known = keys[pos] == packed
    if not known.all():
        bad = np.unique(packed[~known])
        bad_rgb = np.stack([(bad >> 16) & 255, (bad >> 8) & 255, bad & 255], axis=1)
        raise LabelError(f"label file {path} contains unknown colour(s) {_describe_values(bad_rgb)}; "
                         f"expected only {sorted(colors)}. {fix}".rstrip())
    return targets[pos]


def values_to_index(values: np.ndarray, table: Mapping[int, int],
                    path: str | os.PathLike = "<array>") -> np.ndarray:
    """Map a value-coded label image ``(H, W)`` to class indices with a value table.

    ``table`` maps every allowed stored value to a class index (``IGNORE_INDEX`` for ignored
    values). Any other value raises :class:`LabelError` naming the file and the value.
    """
    if values.ndim != 2:
        raise LabelError(f"label file {path} has shape {values.shape}; expected a single-channel "
                         f"(H, W) label image")
    values = values.astype(np.int64)
    keys = np.array(sorted(table), dtype=np.int64)
    targets = np.array([table[int(k)] for k in keys], dtype=np.int64)
    pos = np.clip(np.searchsorted(keys, values), 0, len(keys) - 1)
    known = keys[pos] == values
    if not known.all():
        bad = np.unique(values[~known])
        raise LabelError(f"label file {path} contains unknown label value(s) {_describe_values(bad)}; "
                         f"expected only {_describe_values(keys, 40)}.")
    return targets[pos]


def check_same_size(image: torch.Tensor, label: torch.Tensor, image_path: Path, label_path: Path,
                    fix: str = "re-download the dataset or remove the pair") -> None:
    """Raise :class:`LabelError` naming both files (and ``fix``) when image and label sizes differ."""
    if tuple(image.shape[-2:]) != tuple(label.shape[-2:]):
        raise LabelError(size_mismatch(tuple(image.shape[-2:]), tuple(label.shape[-2:]), image_path,
                                       label_path, fix))


def size_mismatch(image_hw: tuple[int, int], label_hw: tuple[int, int], image_path, label_path,
                  fix: str) -> str:
    """The message of a misaligned image/label pair (sizes given as ``(height, width)``)."""
    return (f"label {label_path} is {label_hw[1]}x{label_hw[0]} but its image {image_path} is "
            f"{image_hw[1]}x{image_hw[0]} (width x height): the pair is misaligned; {fix}.")


class SegmentationFiles(Dataset):
    """A segmentation dataset read from files: ``(image, label)`` items, or images only for a pool.

    Args:
        name: dataset name (for messages).
        split: ``train``, ``val``, ``test`` or ``pool``.
        images: image file paths.
        labels: label file paths, one per image, or ``None`` for an unlabelled pool.
        decode_label: ``(path) -> np.ndarray (H, W)`` of class indices (ignore = ``ignore_index``).
        class_names, class_colors: one entry per class; colours are RGB display colours.
        transform: optional callable applied to ``(image, label)`` (or ``(image,)`` for a pool).
        ids: optional human-readable id per item (file stem by default).
        exif_transpose: turn images upright by their EXIF orientation (camera photos); labels
            are always read as stored.
        size_fix: what a size-mismatch error tells the user to do.
        read_fix: what an unreadable image tells the user to do (own folders: not a download).
        decode_small: let :meth:`read_near` decode a large photo smaller (own folders; the
            built-in datasets keep the paper's full-resolution pipeline, bit for bit).

    Item ``i`` is ``(image float (3, H, W) in [0, 1], label long (H, W))``, or the image alone for
    a pool. ``ignore_index`` is 255 in every dataset.
    """

    def __init__(self, name: str, split: str, images: Sequence[Path], labels: Sequence[Path] | None,
                 decode_label: Callable[[Path], np.ndarray] | None, class_names: Sequence[str],
                 class_colors: Sequence[tuple[int, int, int]], transform: Callable | None = None,
                 ids: Sequence[str] | None = None, root: Path | None = None, exif_transpose: bool = False,
                 size_fix: str = "re-download the dataset or remove the pair", read_fix: str = DOWNLOAD_FIX,
                 decode_small: bool = False) -> None:
        if labels is not None and len(labels) != len(images):
            raise ValueError(f"{name}/{split}: {len(images)} images but {len(labels)} labels")
        self.name, self.split, self.root = name, split, root
        self.images = [Path(p) for p in images]
        self.labels = None if labels is None else [Path(p) for p in labels]
        self.decode_label = decode_label
        self.class_names = list(class_names)
        self.class_colors = [tuple(int(c) for c in rgb) for rgb in class_colors]
        self.ignore_index = IGNORE_INDEX
        self.transform = transform
        self.ids = list(ids) if ids is not None else [p.stem for p in self.images]
        self.exif_transpose, self.size_fix, self.read_fix = exif_transpose, size_fix, read_fix
        self.decode_small = decode_small

    @property
    def labelled(self) -> bool:
        """Whether items carry a label (False for an unlabelled pretraining pool)."""
        return self.labels is not None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.images)

    def image_shape(self, index: int) -> tuple[int, int]:
        """``(height, width)`` of image ``index`` from its file header (nothing decoded)."""
        return image_shape(self.images[index], self.exif_transpose, fix=self.read_fix)

    def item_key(self, index: int) -> tuple | None:
        """What item ``index`` is read from: its files with their size and modification time, and
        how they are decoded (``smir_lib.data.views.item_key``). None with a transform, or when the
        label decoder is not a module-level function (a folder dataset's decoder depends on its
        class table, which the key could not tell apart)."""
        decode = self.decode_label
        named = decode is None or (inspect.isfunction(decode) and "<" not in decode.__qualname__)
        if self.transform is not None or not named:
            return None
        files = [self.images[index]] + ([] if self.labels is None else [self.labels[index]])
        stats = [(str(f.resolve()), st.st_size, st.st_mtime_ns) for f in files for st in [f.stat()]]
        decoder = None if decode is None else f"{decode.__module__}.{decode.__qualname__}"
        return ("files", *stats, decoder, self.exif_transpose)

    def load_label(self, index: int) -> torch.Tensor:
        """Label ``index`` as long ``(H, W)``, without any transform."""
        assert self.labels is not None and self.decode_label is not None
        return torch.from_numpy(np.ascontiguousarray(self.decode_label(self.labels[index]))).long()

    def read_near(self, index: int, short_side: int):
        """Item ``index`` for a reader that resizes it to ``short_side`` next: with ``decode_small``
        (and no transform) a photo more than twice that size is decoded smaller
        (:func:`decode_near`) and its label resized to match (nearest); else ``self[index]``."""
        if not self.decode_small or self.transform is not None:
            return self[index]
        return self._item(index, short_side)

    def __getitem__(self, index: int):
        return self._item(index)

    def _item(self, index: int, near: int | None = None):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {self.name}/{self.split} with {len(self)} items")
        image = load_image(self.images[index], self.exif_transpose, self.read_fix, near)  # (3, H, W)
        if self.labels is None:
            if self.transform is None:
                return image
            out = self.transform(image)
            return out[0] if isinstance(out, tuple) and len(out) == 1 else out
        label = self.load_label(index)  # (H, W)
        if near is not None and tuple(image.shape[-2:]) != tuple(label.shape):  # the photo was decoded smaller
            stored = self.image_shape(index)  # the photo's size from its header
            if stored != tuple(label.shape):
                raise LabelError(size_mismatch(stored, tuple(label.shape), self.images[index],
                                               self.labels[index], self.size_fix))
            label = torch.nn.functional.interpolate(label[None, None].float(), size=tuple(image.shape[-2:]),
                                                    mode="nearest")[0, 0].long()
        check_same_size(image, label, self.images[index], self.labels[index], self.size_fix)
        if self.transform:  # e.g. TrainAugment / EvalTransform: (image, label) -> (image, label)
            return tuple(self.transform(image, label))
        return image, label

    def __repr__(self) -> str:
        kind = "labelled" if self.labelled else "unlabelled pool"
        return (f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"{kind}, classes={self.class_names})")


_WARNED: set[str] = set()


def warn_once(message: str, key: str | None = None) -> None:
    """Emit ``message`` as a ``UserWarning`` once per process per ``key`` (default: the message)."""
    key = message if key is None else key
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, UserWarning, stacklevel=3)
