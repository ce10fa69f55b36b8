"""Your own data (smir_lib.data.folder, folder_check): pairing, EXIF, classes.yaml, splits, pool, every error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from smir_lib.data import get_dataset
from smir_lib.data.base import LabelError
from smir_lib.data.folder import FolderError, scan_folder
from smir_lib.data.folder_check import check_folder
from smir_lib.data.folder_example import write_example_folder
from smir_lib.data.synthetic import SyntheticFields
from smir_lib.tools.cli import main

pytestmark = pytest.mark.unit

CLASSES = "classes:\n  - {name: soil, value: 0}\n  - {name: plant, value: 1, color: [0, 200, 0]}\nignore: [255]\n"


def write_pair(root, stem, image: np.ndarray, mask: np.ndarray, mask_name: str | None = None, exif=None):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(image)
    if exif is not None:
        tags = Image.Exif()
        tags[0x0112] = exif
        img.save(root / "images" / f"{stem}.JPG", exif=tags, quality=95)
    else:
        img.save(root / "images" / f"{stem}.png")
    Image.fromarray(mask).save(root / "masks" / (mask_name or f"{stem}_mask.png"))


def small_folder(root, n=5, classes=CLASSES):
    rng = np.random.default_rng(0)
    for i in range(n):
        mask = (rng.random((6, 8)) > 0.5).astype(np.uint8)
        write_pair(root, f"IMG_{i}", rng.integers(0, 255, (6, 8, 3), dtype=np.uint8), mask)
    (root / "classes.yaml").write_text(classes)
    return root


def test_example_folder_loads_the_labels_that_were_written(tmp_path):
    root = write_example_folder(tmp_path / "f", n_images=10, n_pool=3, mask_kind="value")
    ds = get_dataset("folder", "train", root=root)
    truth = SyntheticFields("train", n_images=10, seed=0, size=(96, 128))
    for i, stem in enumerate(ds.ids):
        image, label = ds[i]
        assert image.shape == (3, 96, 128) and label.dtype == torch.long
        assert torch.equal(label, truth[int(stem.split("_")[1])][1])  # field_007 is synthetic item 7
    assert ds.class_names == ["soil", "crop", "weed"] and ds.class_colors[1] == (0, 200, 0)


def test_colour_masks_and_ignored_colour(tmp_path):
    root = write_example_folder(tmp_path / "f", n_images=4, n_pool=0, mask_kind="color")
    mask_path = sorted((root / "masks").iterdir())[0]
    rgb = np.array(Image.open(mask_path))
    rgb[0, :5] = (255, 255, 255)  # an ignored colour
    Image.fromarray(rgb).save(mask_path)
    layout = scan_folder(root)
    label = layout.classes.decode(mask_path)
    assert (label[0, :5] == 255).all()
    assert set(np.unique(label[1:])) <= {0, 1, 2}


def test_exif_orientation_applies_to_images_not_masks(tmp_path):
    stored = np.zeros((4, 6, 3), np.uint8)  # stored landscape 6 wide, 4 high
    stored[:, :3] = 255  # left half white
    upright_mask = np.zeros((6, 4), np.uint8)  # drawn on the upright (portrait) photo
    write_pair(tmp_path, "IMG_3438", stored, upright_mask, exif=6)  # 6: the camera was turned 90 degrees
    for i in range(3):
        write_pair(tmp_path, f"other_{i}", np.zeros((6, 4, 3), np.uint8), np.zeros((6, 4), np.uint8))
    (tmp_path / "classes.yaml").write_text(CLASSES)
    image, label = next(get_dataset("folder", s, root=tmp_path)[i] for s in ("train", "val", "test")
                        for i, stem in enumerate(get_dataset("folder", s, root=tmp_path).ids) if stem == "IMG_3438")
    assert tuple(image.shape) == (3, 6, 4) and tuple(label.shape) == (6, 4)
    upright = np.rot90(stored, k=-1)  # orientation 6 = rotate 90 degrees clockwise to view
    assert np.abs(image.permute(1, 2, 0).numpy() * 255 - upright).max() < 40  # JPEG tolerance
    assert check_folder(tmp_path, progress=False).ok


def test_seeded_split_is_stated_and_pool_keeps_out_evaluation_images(tmp_path, capsys):
    root = small_folder(tmp_path, n=10)
    splits = {s: get_dataset("folder", s, root=root).ids for s in ("train", "val", "test")}
    assert [len(splits[s]) for s in ("train", "val", "test")] == [7, 1, 2]
    assert "split 70/10/20 with seed 0" in capsys.readouterr().err
    again = scan_folder(root).splits
    assert splits == {s: [image.stem for image, _ in again[s]] for s in splits}  # the same split every time
    (root / "pool").mkdir()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(root / "pool" / "drone.png")
    pool = get_dataset("folder", "pool", root=root)
    assert sorted(pool.ids) == sorted(splits["train"] + splits["val"] + ["drone"])
    everything = get_dataset("folder", "pool", root=root, include_eval_in_pool=True)
    assert set(splits["test"]) <= set(everything.ids)


def test_splits_yaml_is_used_and_written(tmp_path):
    root = small_folder(tmp_path, n=5)
    assert main(["check-data", str(root), "--write-splits", "--quiet"]) == 0
    assert (root / "splits.yaml").is_file()
    (root / "splits.yaml").write_text("train: [IMG_0, IMG_1, IMG_2]\nval: [IMG_3]\ntest: [IMG_4]\n")
    assert get_dataset("folder", "test", root=root).ids == ["IMG_4"]


def test_image_without_mask_joins_the_pool_with_one_line(tmp_path, capsys):
    root = small_folder(tmp_path)
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(root / "images" / "IMG_9.jpg")
    (root / "splits.yaml").write_text("train: [IMG_0, IMG_1, IMG_2]\nval: [IMG_3]\ntest: [IMG_4]\n")
    pool = get_dataset("folder", "pool", root=root)
    assert [p.name for p in pool.images] == ["IMG_0.png", "IMG_1.png", "IMG_2.png", "IMG_3.png", "IMG_9.jpg"]
    for split in ("train", "val", "test", "pool"):
        get_dataset("folder", split, root=root)
    said = [line for line in capsys.readouterr().err.splitlines() if "have no mask" in line]
    assert said == ["1 image(s) in images have no mask and join the pretraining pool only, e.g. IMG_9.jpg "
                    "(expected masks/IMG_9_mask.png or masks/IMG_9.png)"]  # once, not once per split


def test_unknown_mask_value_names_file_value_and_classes_yaml(tmp_path):
    root = small_folder(tmp_path)
    Image.fromarray(np.full((6, 8), 7, np.uint8)).save(root / "masks" / "IMG_0_mask.png")
    report = check_folder(root, progress=False)
    assert len(report.problems) == 1
    assert "IMG_0_mask.png contains unknown label value(s) 7;" in report.problems[0]
    assert "classes.yaml" in report.problems[0] and "under ignore" in report.problems[0]
    with pytest.raises(LabelError, match="IMG_0_mask.png contains unknown label value"):
        for split in ("train", "val", "test"):  # reading the item fails, in whichever split it landed
            ds = get_dataset("folder", split, root=root)
            for i in range(len(ds)):
                ds[i]


def test_unknown_mask_colour(tmp_path):
    root = write_example_folder(tmp_path / "f", n_images=4, n_pool=0, mask_kind="color")
    mask_path = sorted((root / "masks").iterdir())[0]
    rgb = np.array(Image.open(mask_path))
    rgb[2, 2] = (1, 2, 3)
    Image.fromarray(rgb).save(mask_path)
    (problem,) = check_folder(root, progress=False).problems
    assert "unknown colour" in problem and "(1, 2, 3)" in problem and "mask_color" in problem
    assert "download" not in problem.lower()  # own data: never "Re-download the dataset"


def test_size_mismatch_names_both_files(tmp_path):
    root = small_folder(tmp_path)
    Image.fromarray(np.zeros((5, 8), np.uint8)).save(root / "masks" / "IMG_2_mask.png")
    (problem,) = check_folder(root, progress=False).problems
    assert "IMG_2_mask.png is 8x5" in problem and "IMG_2.png is 8x6" in problem and "re-export the mask" in problem


def test_empty_split_and_leaking_pool_and_bad_splits_yaml(tmp_path):
    root = small_folder(tmp_path)
    (root / "splits.yaml").write_text("train: [IMG_0, IMG_1, IMG_2]\nval: []\ntest: [IMG_4, IMG_3, nope]\n")
    (root / "pool").mkdir()
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(root / "pool" / "IMG_4.jpg")
    with pytest.raises(FolderError) as info:
        get_dataset("folder", "train", root=root)
    message = str(info.value)
    assert "split val is empty" in message and "list stems under it in splits.yaml" in message
    assert "lists 'nope' under test" in message
    assert "pool file" in message and "IMG_4.jpg" in message and "remove it from pool/" in message


def test_too_few_images_is_an_empty_split(tmp_path):
    root = small_folder(tmp_path, n=2)
    with pytest.raises(FolderError, match="split .* is empty .*at least 3 are needed"):
        get_dataset("folder", "train", root=root)


def test_check_data_lists_every_problem_at_once(tmp_path, capsys):
    root = small_folder(tmp_path)
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(root / "images" / "lonely.png")  # no mask
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(root / "masks" / "ghost_mask.png")  # no image
    Image.fromarray(np.full((6, 8), 9, np.uint8)).save(root / "masks" / "IMG_1_mask.png")  # unknown value
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(root / "masks" / "IMG_3_mask.png")  # wrong size
    assert main(["check-data", str(root), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "3 problem(s):" in out
    for needle in ("images have no mask and join the pretraining pool only, e.g. lonely.png",
                   "ghost_mask.png has no image", "IMG_1_mask.png contains unknown", "IMG_3_mask.png is 3x3"):
        assert needle in out


def test_check_data_reports_counts_sizes_and_shares(tmp_path, capsys):
    root = small_folder(tmp_path, n=10)
    assert main(["check-data", str(root), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "train 7, val 1, test 2, pool 8" in out and "8x6 (10)" in out
    report = check_folder(root, progress=False)
    masks = [np.array(Image.open(m)) for _, m in report.layout.splits["train"]]
    plant = sum(int((m == 1).sum()) for m in masks) / sum(m.size for m in masks)
    assert report.class_shares()["train"][1] == pytest.approx(plant)


def test_classes_yaml_errors(tmp_path):
    root = small_folder(tmp_path)
    (root / "classes.yaml").unlink()
    with pytest.raises(FolderError, match="classes.yaml is missing: write it"):
        get_dataset("folder", "train", root=root)
    (root / "classes.yaml").write_text("classes:\n  - {name: a, value: 0}\n  - {name: b, mask_color: [1, 2, 3]}\n")
    with pytest.raises(FolderError, match="every class needs a 'value'"):
        get_dataset("folder", "train", root=root)
    (root / "classes.yaml").write_text("classes:\n  - {name: a, value: 0}\n  - {name: b, value: 0}\n")
    with pytest.raises(FolderError, match="share the mask value 0"):
        get_dataset("folder", "train", root=root)
    with pytest.raises(FolderError, match="needs its folder: set data_root=DIR"):
        get_dataset("folder", "train")
