"""Your own images as a dataset: ``get_dataset("folder", split, root=DIR)`` (``dataset=folder data_root=DIR``).

Layout::

    DIR/images/IMG_3438.JPG        any format Pillow reads; turned upright by its EXIF orientation
    DIR/masks/IMG_3438_mask.png    the image's stem, optionally + mask_suffix; read as stored
    DIR/classes.yaml               class names, mask values or colours, display colours, ignore
    DIR/splits.yaml                optional: {train: [stems], val: [stems], test: [stems]}
    DIR/pool/*.jpg                 optional: unlabelled images, added to the pretraining pool

Datasets shipped in split folders are read as they are: ``DIR/images/{train,val,test}/`` with
``DIR/masks/{train,val,test}/``, or sibling folders ``DIR/train/`` + ``DIR/trainannot/`` (also
``train_labels/``, ``train_masks/``; see ``ANNOTATION_SUFFIXES``), and so on for val and test.
The folders give the split (a missing val folder is drawn from train, 1 image in 8, seeded);
``splits.yaml`` still overrides it. Stems must be unique across the split folders.

``classes.yaml`` for index masks (pixel value = class)::

    mask_suffix: _mask             # optional (default "_mask"); masks named like the image also match
    classes:
      - {name: soil, value: 0, color: [120, 85, 50]}   # color: display colour (optional)
      - {name: crop, value: 1, color: [0, 200, 0]}
    ignore: [255]                  # mask values scored by nothing (optional)

For colour masks give each class ``mask_color: [r, g, b]`` instead of ``value``, and ignored
colours as ``ignore: [[255, 255, 255]]``.

Splits: ``splits.yaml`` when present, else the split folders, else a split drawn with a fixed
seed (70 / 10 / 20 % of the sorted stems, at least one image each), stated once per process on
stderr; ``check-data --write-splits`` freezes it into ``splits.yaml``. The pool is the train and
val images, the images that have no mask (said once) and ``DIR/pool/``; test images never enter
it unless ``include_eval_in_pool=True``, and a pool file named like a val or test image is an
error (it would leak evaluation images into pretraining).

:func:`scan_folder` collects every problem of a folder without raising (``check-data`` prints
them all); :func:`build` raises :class:`FolderError` listing them. Mask contents and sizes are
checked when an item is read (and by ``check-data`` for all files at once).
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from smir_lib.data.base import (
    LabelError,
    SegmentationFiles,
    check_split,
    colors_to_index,
    open_image_array,
    values_to_index,
)
from smir_lib.files import atomic_write_text, read_yaml
from smir_lib.runtime import seeded_generator

__all__ = ["FolderError", "ClassTable", "FolderLayout", "read_classes", "scan_folder", "build", "class_info",
           "class_entries", "write_splits"]

EVAL_SPLITS = ("train", "val", "test")
SPLIT_SHARES = (0.7, 0.1, 0.2)
SPLIT_SEED = 0
DEFAULT_SUFFIX = "_mask"
SIZE_FIX = "re-export the mask at its image's size (masks are read as stored; images are turned upright by EXIF)"
READ_FIX = "replace the file with a readable copy, or move it out of the folder"
"""What an unreadable file of your own folder calls for (never "download again")."""
LOSSY_MASKS = (".jpg", ".jpeg", ".jfif", ".webp")
JPEG_HINT = ("JPEG is lossy: a two-class mask saved as .jpg holds up to 256 values near its edges; save masks "
             "as PNG (lossless)")
PALETTE = [(120, 85, 50), (0, 200, 0), (230, 30, 30), (30, 90, 230), (240, 200, 0), (160, 60, 200),
           (0, 200, 200), (250, 130, 40), (130, 130, 130), (255, 255, 255)]
"""Display colours of classes whose ``color`` is not given in classes.yaml."""


class FolderError(ValueError):
    """A folder dataset is laid out wrongly; the message lists every problem and its fix."""


def image_files(folder: Path) -> list[Path]:
    """Files of ``folder`` that Pillow can open by extension, sorted by name (hidden files skipped)."""
    from PIL import Image

    known = {ext.lower() for ext in Image.registered_extensions()}
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in known)


@dataclass
class ClassTable:
    """What classes.yaml says: names, display colours and how mask pixels map to class indices.

    ``kind`` is ``"value"`` (index masks) or ``"color"`` (colour masks); ``table`` maps a stored
    value (int) or colour (RGB tuple) to a class index, ignored ones to 255.
    """

    path: Path
    names: list[str]
    colors: list[tuple[int, int, int]]
    kind: str
    table: dict
    mask_suffix: str = DEFAULT_SUFFIX

    def entries(self) -> list[dict]:
        """One dict per class: ``name``, display ``color`` and the stored ``value`` (or ``mask_color``)."""
        stored = {index: key for key, index in self.table.items() if index != 255}
        key = "value" if self.kind == "value" else "mask_color"
        return [{"name": name, "color": list(color), key: stored[i] if self.kind == "value" else list(stored[i])}
                for i, (name, color) in enumerate(zip(self.names, self.colors))]

    def decode(self, mask_path: Path) -> np.ndarray:
        """A mask file -> class indices ``(H, W)``; an unknown value or colour names the file and fix."""
        hint = (f" Add it to {self.path} (as a class's {'value' if self.kind == 'value' else 'mask_color'}"
                f" or under ignore), or correct the mask.")
        if Path(mask_path).suffix.lower() in LOSSY_MASKS:
            hint += f" {JPEG_HINT}."
        try:
            if self.kind == "color":
                return colors_to_index(open_image_array(mask_path, "RGB", fix=READ_FIX), self.table, mask_path, fix="")
            values = open_image_array(mask_path, None, fix=READ_FIX)  # stored values: palette indices, 8/16 bit
            if values.ndim == 3:  # an RGB(A) file: fine when it is grey (r = g = b)
                if not (values[..., :1] == values[..., 1:3]).all():
                    raise LabelError(f"mask {mask_path} is a colour image but {self.path} gives mask "
                                     f"values: give each class a mask_color: [r, g, b] instead, or save "
                                     f"the masks as single-channel (grey or palette) PNGs.")
                values = values[..., 0]
            return values_to_index(values, self.table, mask_path)
        except LabelError as err:
            if "unknown" in str(err):
                raise LabelError(f"{err}{hint}") from None
            raise


def _check_class_names(path: Path, names: list) -> None:
    """Class names are non-empty strings, each once (a number is taken as its text)."""
    for name in names:
        if not isinstance(name, (str, int)) or isinstance(name, bool) or not str(name).strip():
            raise FolderError(f"{path}: class name {name!r} is not a name: give each class a non-empty name")
    repeated = sorted(n for n, count in Counter(str(n) for n in names).items() if count > 1)  # O(n), not O(n^2)
    if repeated:
        raise FolderError(f"{path}: class name(s) {repeated} appear more than once: give each class its own name")


IGNORE_INDEX = 255
"""The class index of ignored (void) pixels in every label map."""
MAX_CLASSES = IGNORE_INDEX
"""Most classes a ``classes.yaml`` may list: a 256th would get the index of ignored pixels."""


def _mask_value(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise FolderError(f"{where} is {value!r}: expected an integer mask value 0..65535")
    return value


def _rgb(value, where: str) -> tuple[int, int, int]:
    if not (isinstance(value, (list, tuple)) and len(value) == 3 and all(isinstance(c, int) and 0 <= c <= 255
                                                                          for c in value)):
        raise FolderError(f"{where} is {value!r}: expected a colour [r, g, b] of integers 0..255")
    return tuple(value)


def read_classes(folder: str | os.PathLike) -> ClassTable:
    """Parse ``folder/classes.yaml`` (see the module docstring); errors name the entry and the fix."""
    path = Path(folder) / "classes.yaml"
    example = "classes:\n  - {name: soil, value: 0}\n  - {name: crop, value: 1}"
    if not path.is_file():
        raise FolderError(f"{path} is missing: write it with one entry per class, e.g.\n{example}")
    try:
        data = read_yaml(path, "class file") or {}
    except ValueError as err:  # a syntax error, a tag (!!python/...) or an alias: the file and line
        raise FolderError(str(err)) from None
    entries = data.get("classes") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) and "name" in e for e in entries):
        raise FolderError(f"{path} must hold 'classes:', a list of entries with a name each, e.g.\n{example}")
    if len(entries) > MAX_CLASSES:
        raise FolderError(f"{path} lists {len(entries)} classes: at most {MAX_CLASSES} (class indices 0 to "
                          f"{MAX_CLASSES - 1}; {IGNORE_INDEX} marks ignored pixels): merge classes")
    _check_class_names(path, [e["name"] for e in entries])
    kinds = {"value" if "value" in e else "color" if "mask_color" in e else None for e in entries}
    if kinds not in ({"value"}, {"color"}):
        raise FolderError(f"{path}: every class needs a 'value' (index masks) or every class a 'mask_color' "
                          f"(colour masks); found a mix or neither in {[e.get('name') for e in entries]}")
    kind = kinds.pop()
    table: dict = {}
    for index, e in enumerate(entries):
        key = (_mask_value(e["value"], f"{path}: value of {e['name']}") if kind == "value"
               else _rgb(e["mask_color"], f"{path}: mask_color of {e['name']}"))
        if key in table:
            raise FolderError(f"{path}: classes {entries[table[key]]['name']} and {e['name']} share the mask "
                              f"{kind} {key}: give each class its own")
        table[key] = index
    ignore = data.get("ignore") or []
    if not isinstance(ignore, list):
        raise FolderError(f"{path}: ignore is {ignore!r}: expected a list, e.g. ignore: [255]")
    for key in ignore:
        table[_mask_value(key, f"{path}: ignore entry") if kind == "value" else _rgb(key, f"{path}: ignore entry")] = 255
    colors = [_rgb(e["color"], f"{path}: color of {e['name']}") if "color" in e else PALETTE[i % len(PALETTE)]
              for i, e in enumerate(entries)]
    return ClassTable(path, [str(e["name"]) for e in entries], colors, kind, table,
                      str(data.get("mask_suffix", DEFAULT_SUFFIX) or ""))


def class_info(root: str | os.PathLike | None) -> tuple[list[str], list[tuple[int, int, int]]]:
    """Class names and display colours of the folder dataset at ``root`` (only classes.yaml is read)."""
    table = read_classes(_root(root))
    return table.names, table.colors


def class_entries(root: str | os.PathLike | None) -> list[dict]:
    """:meth:`ClassTable.entries` of the folder dataset at ``root`` (only classes.yaml is read)."""
    return read_classes(_root(root)).entries()


@dataclass
class FolderLayout:
    """A scanned folder: its classes, the (image, mask) pairs of each split, the pool, and problems.

    ``kind`` is ``flat`` (``images/`` + ``masks/``), ``split folders`` (``images/train/`` +
    ``masks/train/`` ...) or ``sibling folders`` (``train/`` + ``trainannot/`` ...); ``notes`` are
    lines worth saying that are not problems (images without a mask joining the pool).
    """

    root: Path
    classes: ClassTable | None
    splits: dict[str, list[tuple[Path, Path]]]
    pool: list[Path]
    split_note: str
    problems: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    kind: str = "flat"
    notes: list[str] = field(default_factory=list)


ANNOTATION_SUFFIXES = ("annot", "_annot", "_labels", "labels", "_masks", "masks")
"""Sibling mask folders recognised beside a split folder: ``train/`` + ``trainannot/`` (CamVid's
SegNet layout), ``train_labels/``, ``train_masks/`` ..."""


def find_folders(root: Path, problems: list[str]) -> tuple[str, dict[str, tuple[Path, Path]]]:
    """Where the images and masks of each split are: ``(kind, {split: (image folder, mask folder)})``.

    The flat layout gives one entry under the key ``""`` (its split is drawn or read from splits.yaml).
    """
    if (root / "images").is_dir():
        nested = {s: (root / "images" / s, root / "masks" / s) for s in EVAL_SPLITS if (root / "images" / s).is_dir()}
        if not nested:
            if not (root / "masks").is_dir():
                problems.append(f"{root / 'masks'} is not a folder: put one mask per image there")
            return "flat", {"": (root / "images", root / "masks")}
        loose = image_files(root / "images")
        if loose:
            problems.append(f"{root / 'images'} holds split folders and also {len(loose)} image(s) ({loose[0].name}, ...)"
                            f": move each into images/train, images/val or images/test")
        problems += [f"{masks} is not a folder: put the masks of {images} there"
                     for images, masks in nested.values() if not masks.is_dir()]
        return "split folders", nested
    siblings = {}
    for split in EVAL_SPLITS:
        found = [root / f"{split}{suffix}" for suffix in ANNOTATION_SUFFIXES if (root / f"{split}{suffix}").is_dir()]
        if (root / split).is_dir() and found:
            siblings[split] = (root / split, found[0])
    if siblings:
        return "sibling folders", siblings
    problems.append(f"{root / 'images'} is not a folder: a folder dataset needs DIR/images/ and DIR/masks/ "
                    f"(or images/train/ + masks/train/ ..., or train/ + trainannot/ ...) and DIR/classes.yaml; "
                    f"see docs/own-images.md")
    return "flat", {}


def _pairs(root: Path, images_dir: Path, masks_dir: Path, suffix: str,
           problems: list[str]) -> tuple[dict[str, tuple[Path, Path]], list[Path]]:
    """``stem -> (image, mask)`` for every image with exactly one mask, and the images with none;
    the rest become problems."""
    images, masks = image_files(images_dir), image_files(masks_dir)
    by_stem: dict[str, list[Path]] = {}
    for m in masks:
        by_stem.setdefault(m.stem, []).append(m)
    seen: dict[str, Path] = {}
    pairs, used, unlabelled = {}, set(), []
    for image in images:
        stem = image.stem
        if stem in seen:
            problems.append(f"images {seen[stem].name} and {image.name} share the stem '{stem}': rename one")
            continue
        seen[stem] = image
        found = [m for key in dict.fromkeys((stem, stem + suffix)) for m in by_stem.get(key, [])]
        if not found:
            unlabelled.append(image)
        elif len(found) > 1:
            problems.append(f"image {image} has {len(found)} masks ({', '.join(m.name for m in found)}): keep one")
        else:
            pairs[stem] = (image, found[0])
        used.update(found)
    source = _relative(images_dir, root)
    problems += [f"mask {m} has no image {source}/{m.stem.removesuffix(suffix) if suffix else m.stem}.*: add "
                 f"the image or delete the mask" for m in masks if m not in used]
    return pairs, unlabelled


def _relative(path: Path, root: Path) -> Path:
    return path.relative_to(root) if path.is_relative_to(root) else path


def _drawn_split(root: Path, stems: list[str]) -> tuple[dict[str, list[str]], str]:
    """A seeded 70/10/20 split of ``stems`` (at least one image each), and the note saying so."""
    import torch

    n = len(stems)
    n_val, n_test = (max(1, round(share * n)) for share in SPLIT_SHARES[1:])
    order = torch.randperm(n, generator=seeded_generator("folder-split", SPLIT_SEED)).tolist()
    shuffled = [stems[i] for i in order]
    splits = {"train": sorted(shuffled[n_val + n_test:]), "val": sorted(shuffled[:n_val]),
              "test": sorted(shuffled[n_val:n_val + n_test])}
    note = (f"{root}: no splits.yaml, so the {n} labelled images were split 70/10/20 with seed {SPLIT_SEED}: "
            f"{len(splits['train'])} train / {len(splits['val'])} val / {len(splits['test'])} test "
            f"(freeze it with: smir check-data {root} --write-splits)")
    return splits, note


def _folder_split(root: Path, by_folder: dict[str, list[str]], kind: str) -> tuple[dict[str, list[str]], str]:
    """Splits from split folders; a missing val folder is drawn from train (1 in 8, seeded)."""
    splits = {s: sorted(by_folder.get(s, [])) for s in EVAL_SPLITS}
    note = f"{root}: splits from the {kind} ({', '.join(f'{s} {len(v)}' for s, v in splits.items() if v)})"
    if "val" not in by_folder and len(splits["train"]) > 1:
        import torch

        train = splits["train"]
        n_val = max(1, round(len(train) / 8))
        order = torch.randperm(len(train), generator=seeded_generator("folder-val", SPLIT_SEED)).tolist()
        val = sorted(train[i] for i in order[:n_val])
        splits = {**splits, "train": [x for x in train if x not in val], "val": val}
        note += (f"; no val folder, so {n_val} of the train images were drawn as val with seed {SPLIT_SEED} "
                 f"(freeze it with: smir check-data {root} --write-splits)")
    return splits, note


def _read_splits_yaml(path: Path, stems: list[str], problems: list[str]) -> dict[str, list[str]]:
    """Stems of train / val / test as listed in splits.yaml (unknown stems, aliases, tags and
    entries that are not names become problems)."""
    try:
        data = read_yaml(path, "split file") or {}
    except ValueError as err:  # a syntax error, a tag or an alias (nested aliases blow up to gigabytes)
        problems.append(str(err))
        data = {}
    if not isinstance(data, dict):
        problems.append(f"{path} must map train, val and test to lists of stems; got {type(data).__name__}")
        data = {}
    unknown = sorted(str(k) for k in set(data) - set(EVAL_SPLITS))
    if unknown:
        problems.append(f"{path} has unknown split(s) {unknown}: use only {list(EVAL_SPLITS)}")
    splits = {s: _stems(data.get(s), path, s, problems) for s in EVAL_SPLITS}
    owner: dict[str, str] = {}
    for split, listed in splits.items():
        for stem in listed:
            if stem in owner:
                problems.append(f"{path}: '{stem}' is listed in both {owner[stem]} and {split}: keep it in one")
            owner[stem] = split
            if stem not in stems:
                problems.append(f"{path} lists '{stem}' under {split} but there is no image {stem}.* "
                                f"with a mask: fix the name or add the pair")
    return {s: [x for x in v if x in stems] for s, v in splits.items()}


def scan_folder(root: str | os.PathLike, include_eval_in_pool: bool = False) -> FolderLayout:
    """Read a folder's layout and collect every problem found (nothing raises for content)."""
    root = Path(root).expanduser()
    problems: list[str] = []
    classes = None
    try:
        classes = read_classes(root)
    except FolderError as err:
        problems.append(str(err))
    suffix = classes.mask_suffix if classes else DEFAULT_SUFFIX
    kind, folders = find_folders(root, problems)
    pairs: dict[str, tuple[Path, Path]] = {}
    by_folder: dict[str, list[str]] = {}
    unlabelled: dict[str, list[Path]] = {}
    for split, (images_dir, masks_dir) in folders.items():
        found, unlabelled[split] = _pairs(root, images_dir, masks_dir, suffix, problems)
        for stem, pair in found.items():
            if stem in pairs:
                problems.append(f"images {pairs[stem][0]} and {pair[0]} share the stem '{stem}' (splits.yaml and "
                                f"predictions name images by stem): rename one")
                continue
            pairs[stem] = pair
            by_folder.setdefault(split, []).append(stem)
    stems = sorted(pairs)
    if (root / "splits.yaml").is_file():
        names, note = _read_splits_yaml(root / "splits.yaml", stems, problems), f"splits from {root / 'splits.yaml'}"
    elif kind == "flat":
        names, note = _drawn_split(root, stems)
    else:
        names, note = _folder_split(root, by_folder, kind)
        if "test" not in folders:
            problems.append(f"{root} has split folders but no test folder: add "
                            f"{'images/test + masks/test' if kind == 'split folders' else 'test/ + testannot/'} "
                            f"or write splits.yaml")
    for split, listed in names.items():
        if not listed and folders:
            problems.append(f"split {split} is empty ({len(stems)} labelled images in all): "
                            + ("list stems under it in splits.yaml" if (root / "splits.yaml").is_file()
                               else "add labelled images (at least 3 are needed) or write splits.yaml"))
    splits = {s: [pairs[x] for x in v] for s, v in names.items()}
    listed = {x for v in names.values() for x in v}
    unused = [x for x in stems if x not in listed]
    held_out = set(names["test"]) | set(names["val"])
    pool_extra = image_files(root / "pool")
    if not include_eval_in_pool:
        problems += [f"pool file {p} has the stem of a val/test image: evaluation images must not be "
                     f"pretrained on; remove it from pool/" for p in pool_extra if p.stem in held_out]
    pool_splits = ("train", "val", "test") if include_eval_in_pool else ("train", "val")
    unpaired = [p for split, found in unlabelled.items() for p in found if include_eval_in_pool or split != "test"]
    pool = [image for s in pool_splits for image, _ in splits[s]] + unpaired + pool_extra
    notes = []
    for split, found in unlabelled.items():
        if found:
            masks_dir = _relative(folders[split][1], root)
            joins = ("join the pretraining pool only" if include_eval_in_pool or split != "test"
                     else "are not used (test images stay out of the pool)")
            notes.append(f"{len(found)} image(s) in {_relative(folders[split][0], root)} have no mask and {joins}, "
                         f"e.g. {found[0].name} (expected {masks_dir}/{found[0].stem}{suffix}.png or "
                         f"{masks_dir}/{found[0].stem}.png)")
    lossy = [m for pairs_ in splits.values() for _, m in pairs_ if m.suffix.lower() in LOSSY_MASKS]
    if lossy:
        notes.append(f"{len(lossy)} mask(s) are {lossy[0].suffix} files (e.g. {lossy[0].name}): {JPEG_HINT}")
    return FolderLayout(root, classes, splits, pool, note, problems, unused, kind, notes)


def write_splits(layout: FolderLayout) -> Path:
    """Write the layout's splits to ``root/splits.yaml`` (stems per split), to keep them fixed.

    Written atomically; a ``splits.yaml`` that is a link (even a dangling one) or not a plain
    file is refused, never written through."""
    import yaml

    path = layout.root / "splits.yaml"
    if path.is_symlink() or (path.exists() and not path.is_file()):
        kind = "a symbolic link" if path.is_symlink() else "not a plain file"
        raise FolderError(f"{path} is {kind}: refusing to write the splits through it; delete it "
                          f"(or replace it by a plain file) and run check-data --write-splits again")
    text = yaml.safe_dump({s: [image.stem for image, _ in pairs] for s, pairs in layout.splits.items()},
                          sort_keys=False)
    return atomic_write_text(text, path)


def _stems(listed, path: Path, split: str, problems: list[str]) -> list[str]:
    """The stems listed under ``split`` in splits.yaml; anything but a list of strings is a problem."""
    if listed is None:
        return []
    if not isinstance(listed, list):
        problems.append(f"{path}: {split} is {type(listed).__name__}, not a list of stems")
        return []
    wrong = [x for x in listed if not isinstance(x, str)]
    if wrong:
        problems.append(f"{path}: {split} lists {wrong[0]!r} ({type(wrong[0]).__name__}), not a file stem: write "
                        f"stems as text, quoted when they look like numbers ('001')")
    return [x for x in listed if isinstance(x, str)]


_STATED: set[str] = set()


def _root(root: str | os.PathLike | None) -> Path:
    if root is None:
        raise FolderError("dataset 'folder' needs its folder: set data_root=DIR (command line or config), "
                          "or get_dataset('folder', split, root=DIR)")
    return Path(root).expanduser()


def build(split: str, root: str | os.PathLike | None = None, *, include_eval_in_pool: bool = False,
          transform: Callable | None = None) -> SegmentationFiles:
    """Registry entry: ``get_dataset("folder", split, root=DIR, include_eval_in_pool=False)``."""
    check_split("folder", split)
    layout = scan_folder(_root(root), include_eval_in_pool)
    if layout.problems:
        listed = "\n".join(f"  - {p}" for p in layout.problems)
        raise FolderError(f"folder dataset {layout.root} has {len(layout.problems)} problem(s):\n{listed}\n"
                          f"(smir check-data {layout.root} lists them with pixel statistics)")
    for note in ([] if layout.split_note.endswith("splits.yaml") else [layout.split_note]) + layout.notes:
        if note not in _STATED:  # once per process, however many splits and runs read the folder
            _STATED.add(note)
            print(note, file=sys.stderr)
    classes = layout.classes
    assert classes is not None  # no problems means classes.yaml was read
    if split == "pool":
        return SegmentationFiles("folder", split, layout.pool, None, None, classes.names, classes.colors,
                                 transform=transform, root=layout.root, exif_transpose=True, read_fix=READ_FIX,
                                 decode_small=True)
    pairs = layout.splits[split]
    return SegmentationFiles("folder", split, [i for i, _ in pairs], [m for _, m in pairs], classes.decode,
                             classes.names, classes.colors, transform=transform, root=layout.root,
                             exif_transpose=True, size_fix=SIZE_FIX, read_fix=READ_FIX, decode_small=True)
