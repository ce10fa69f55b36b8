"""CWFID on the real files in ../shared/data/cwfid (skipped when absent)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import CWFID_ROOT

from smir_lib.data import cwfid, get_dataset

pytestmark = pytest.mark.realdata
ROOT = CWFID_ROOT  # the development copy beside the project (tests/conftest.py)
if not cwfid.is_complete(ROOT):
    pytest.skip(f"CWFID not found at {ROOT} (research-only data, not shipped with the project)",
                allow_module_level=True)


def test_split_sizes_and_duplicate_id_28_kept_in_test_only():
    from smir_lib.data import base

    base._WARNED.clear()  # the duplicate is reported once per process; make this test see it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids = cwfid.split_ids(ROOT)
    assert any("[28]" in str(w.message) and "test" in str(w.message) for w in caught)
    assert {k: len(v) for k, v in ids.items()} == {"train": 35, "val": 4, "test": 21, "pool": 39}
    assert 28 in ids["test"] and 28 not in ids["train"] + ids["val"] + ids["pool"]
    assert ids["val"] == [56, 57, 58, 59]  # the last 10 % of the sorted train ids
    assert not set(ids["train"]) & set(ids["test"])
    assert len(cwfid.split_ids(ROOT, include_eval_in_pool=True)["pool"]) == 60
    assert len(get_dataset("cwfid", "test", ROOT)) == 21


def test_the_library_never_falls_back_to_the_development_copy(monkeypatch, tmp_path):
    from smir_lib.data.base import DatasetNotFoundError

    monkeypatch.setenv("SMIR_DATA_DIR", str(ROOT.parent))
    assert get_dataset("cwfid", "val").root == ROOT  # found where the data folder points
    monkeypatch.delenv("SMIR_DATA_DIR")
    monkeypatch.chdir(tmp_path)  # no ./data/cwfid here, and the copy beside the project is not looked at
    with pytest.raises(DatasetNotFoundError, match="smir download cwfid"):
        get_dataset("cwfid", "val")


def test_class_shares_labels_in_range_and_alignment():
    counts = np.zeros(3)
    for split in ("train", "val", "test"):
        ds = get_dataset("cwfid", split, ROOT)
        for i in range(len(ds)):
            label = ds.load_label(i)
            assert label.shape == (966, 1296) and label.dtype == torch.long
            assert int(label.min()) >= 0 and int(label.max()) <= 2
            counts += np.bincount(label.flatten().numpy(), minlength=3)
    shares = 100 * counts / counts.sum()
    assert abs(shares[0] - 92.6) < 0.3 and abs(shares[1] - 1.6) < 0.3 and abs(shares[2] - 5.8) < 0.3, shares


def test_image_and_label_aligned_with_vegetation_mask():
    """Annotated plants must sit where the dataset's own vegetation mask says plants are."""
    from smir_lib.data.base import open_image_array

    ds = get_dataset("cwfid", "val", ROOT)
    image, label = ds[0]
    assert image.shape == (3, 966, 1296) and 0 <= image.min() and image.max() <= 1
    mask = open_image_array(ROOT / "masks" / f"{ds.ids[0]}_mask.png", mode=None)  # 1 = soil (inverted)
    plant = label > 0
    assert (mask[plant.numpy()] == 0).mean() > 0.9
    green = image[1] - (image[0] + image[2]) / 2  # excess green is higher on plants
    assert green[plant].mean() > green[~plant].mean() + 0.05
