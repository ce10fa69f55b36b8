"""Real datasets as they come (issue 30 items 1 and 3): split folders read as they are, every problem of
every file in one pass, own-data wording, images without masks joining the pool, notes said once."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from smir_lib.data import get_dataset
from smir_lib.data.base import ImageLoadError
from smir_lib.data.folder import scan_folder
from smir_lib.data.folder_check import check_folder
from smir_lib.data.folder_example import write_example_folder
from smir_lib.tools.cli import main

pytestmark = pytest.mark.unit

SPLIT_OF = {0: "train", 1: "train", 2: "train", 3: "train", 4: "train", 5: "val", 6: "test", 7: "test"}


def split_folders(root, sibling: bool, splits=("train", "val", "test")):
    """The example folder rearranged as images/{split}/ + masks/{split}/, or {split}/ + {split}annot/
    (CamVid's layout: masks named exactly like their images)."""
    flat = write_example_folder(root.parent / f"{root.name}_flat", n_images=8, n_pool=0)
    root.mkdir()
    shutil.copy(flat / "classes.yaml", root / "classes.yaml")
    for i, split in SPLIT_OF.items():
        if split not in splits:
            split = "train"
        images, masks = (root / split, root / f"{split}annot") if sibling else (root / "images" / split,
                                                                                 root / "masks" / split)
        images.mkdir(parents=True, exist_ok=True)
        masks.mkdir(parents=True, exist_ok=True)
        shutil.copy(flat / "images" / f"field_{i:03d}.jpg", images)
        shutil.copy(flat / "masks" / f"field_{i:03d}_mask.png", masks / (f"field_{i:03d}.png" if sibling else
                                                                          f"field_{i:03d}_mask.png"))
    return root


@pytest.mark.parametrize("sibling", [False, True], ids=["images-split", "sibling-annot"])
def test_split_folders_are_read_as_they_are(tmp_path, capsys, sibling):
    root = split_folders(tmp_path / "set", sibling)
    assert main(["check-data", str(root), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert ("sibling folders" if sibling else "split folders") in out and "train 5, val 1, test 2" in out
    assert "0 problem(s): ready to train" in out
    for split in ("train", "val", "test"):
        ds = get_dataset("folder", split, root=root)
        assert ds.ids == [f"field_{i:03d}" for i, s in SPLIT_OF.items() if s == split]
        image, label = ds[0]
        assert image.shape == (3, 96, 128) and int(label.max()) <= 2
    assert len(get_dataset("folder", "pool", root=root)) == 6  # train + val, never test
    (root / "splits.yaml").write_text("train: [field_000, field_001, field_002]\nval: [field_006]\n"
                                      "test: [field_003, field_007]\n")  # the explicit override still wins
    assert get_dataset("folder", "test", root=root).ids == ["field_003", "field_007"]


def test_split_folders_without_val_draw_it_from_train_and_need_test(tmp_path):
    root = split_folders(tmp_path / "set", sibling=True, splits=("train", "test"))
    layout = scan_folder(root)
    assert not layout.problems and len(layout.splits["val"]) == 1 and len(layout.splits["train"]) == 5
    assert "no val folder, so 1 of the train images were drawn as val" in layout.split_note
    shutil.rmtree(root / "test")
    shutil.rmtree(root / "testannot")
    assert any("no test folder: add test/ + testannot/ or write splits.yaml" in p for p in scan_folder(root).problems)


def test_a_stem_in_two_split_folders_is_a_problem(tmp_path):
    root = split_folders(tmp_path / "set", sibling=False)
    shutil.copy(root / "images" / "train" / "field_000.jpg", root / "images" / "test")
    shutil.copy(root / "masks" / "train" / "field_000_mask.png", root / "masks" / "test")
    (problem,) = scan_folder(root).problems
    assert "share the stem 'field_000'" in problem and "rename one" in problem


def test_check_data_reports_size_and_values_of_a_jpeg_mask_at_once(tmp_path, capsys):
    root = write_example_folder(tmp_path / "horses", n_images=4, n_pool=0)
    (root / "classes.yaml").write_text("classes:\n  - {name: background, value: 0}\n  - {name: horse, value: 1}\n")
    for i in range(4):
        mask = np.zeros((50, 60), np.uint8)
        mask[10:40, 10:50] = 255 if i == 0 else 1  # mask 0: 0/255 saved as JPEG at another size
        (root / "masks" / f"field_{i:03d}_mask.png").unlink()
        if i == 0:
            Image.fromarray(mask).save(root / "masks" / f"field_{i:03d}_mask.jpg", quality=75)
        else:
            Image.fromarray(mask).resize((128, 96), Image.NEAREST).save(root / "masks" / f"field_{i:03d}_mask.png")
    assert main(["check-data", str(root), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "2 problem(s):" in out
    assert "field_000_mask.jpg is 60x50 but its image" in out  # the size, from the header
    assert "field_000_mask.jpg contains unknown label value(s)" in out  # and the values, in the same pass
    assert "JPEG is lossy: a two-class mask saved as .jpg holds up to 256 values" in out
    assert "Re-download" not in out and "download again" not in out


def test_an_unreadable_own_image_never_says_download(tmp_path):
    root = write_example_folder(tmp_path / "f", n_images=4, n_pool=0)
    (root / "images" / "field_001.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    problems = check_folder(root, progress=False).problems
    assert any("field_001.jpg" in p for p in problems) and not any("download" in p.lower() for p in problems)
    (ds, index), = [(ds, i) for split in ("train", "val", "test") for ds in [get_dataset("folder", split, root=root)]
                    for i, p in enumerate(ds.images) if p.name == "field_001.jpg"]
    with pytest.raises(ImageLoadError, match="replace the file with a readable copy"):
        ds[index]


def test_the_drawn_split_is_said_once_per_process(tmp_path, capsys):
    root = write_example_folder(tmp_path / "f", n_images=6, n_pool=0)
    for _ in range(2):
        for split in ("train", "val", "test", "pool"):
            get_dataset("folder", split, root=root)
    said = [line for line in capsys.readouterr().err.splitlines() if "no splits.yaml" in line]
    assert len(said) == 1
