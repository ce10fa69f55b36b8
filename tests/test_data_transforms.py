"""kornia transforms: identical geometry for image and extras, colour jitter on the image only."""

from __future__ import annotations

import pytest
import torch

from benchmarks.reference import augment_whole_image
from smir_lib.data.transforms import (
    NORM_MEAN,
    NORM_STD,
    EvalTransform,
    TrainAugment,
    center_crop,
    denormalize,
    normalize,
    resize_short_side,
    short_side_shape,
)

pytestmark = pytest.mark.unit


def blocky(h: int = 96, w: int = 128):
    """An image whose red channel encodes a 3-class label in 16 px blocks, so alignment is checkable."""
    label = (torch.arange(h)[:, None] // 16 + torch.arange(w)[None, :] // 16) % 3  # (H, W)
    label[:4, :4] = 255
    image = torch.stack([label.clamp(max=2).float() / 2, torch.full((h, w), 0.5), torch.zeros(h, w)])
    return image, label


def test_normalize_round_trip_and_stats():
    x = torch.rand(2, 3, 5, 5)
    assert torch.allclose(denormalize(normalize(x)), x, atol=1e-6)
    mean = torch.tensor(NORM_MEAN).view(3, 1, 1).expand(3, 4, 4)
    assert normalize(mean).abs().max() < 1e-6  # the mean colour is the mask fill value 0
    assert NORM_STD == (0.4443, 0.4665, 0.4887)


def test_resize_short_side_shapes_and_nearest_labels():
    image, label = blocky(96, 128)
    out, lab = resize_short_side(image, 48, label)
    assert out.shape == (3, 48, 64) and lab.shape == (48, 64) and lab.dtype == torch.long
    assert set(lab.unique().tolist()) <= {0, 1, 2, 255}
    assert short_side_shape(966, 1296, 256) == (256, 343)
    assert resize_short_side(torch.rand(2, 3, 30, 20), 10).shape == (2, 3, 15, 10)


def test_center_crop_and_error():
    x = torch.arange(20).view(4, 5)
    assert center_crop(x, 2).tolist() == [[6, 7], [11, 12]]
    with pytest.raises(ValueError, match="cannot centre-crop 4x5 to 6x6"):
        center_crop(x, 6)


def test_eval_transform_val_and_test():
    image, label = blocky(96, 128)
    v_img, v_lab = EvalTransform(64)(image, label)
    assert v_img.shape == (3, 64, 64) and v_lab.shape == (64, 64)
    t_img, t_lab = EvalTransform.for_split("test", 64)(image, label)
    assert t_img.shape == (3, 64, 85) and t_lab.shape == (64, 85)


def test_train_augment_same_geometry_for_image_label_and_mask():
    image, label = blocky()
    mask = label == 1  # a bool pixel mask derived from the label
    aug = TrainAugment(size=64, jitter=0.0)
    g = torch.Generator().manual_seed(3)
    for _ in range(5):
        img, lab, msk = aug(image, label, mask, generator=g)
        assert img.shape == (3, 64, 64) and lab.dtype == torch.long and msk.dtype == torch.bool
        assert torch.equal(msk, lab == 1)  # mask and label moved together
        valid = lab != 255
        decoded = (img[0] * 2).round().long()  # the label written in the image
        agreement = (decoded[valid] == lab[valid]).float().mean()
        assert agreement > 0.9, agreement  # disagreement only on bilinear block edges


def test_labels_move_unchanged_whatever_their_integer_type():
    image, label = blocky()
    wide = torch.where(label == 2, 70000, label)  # beyond int16: kornia's own checked path
    aug = TrainAugment(size=64, jitter=0.0)
    for labels in (label, label.int(), label.to(torch.uint8), wide):
        out = aug(image, labels, generator=torch.Generator().manual_seed(5))[1]
        ref = aug(image, labels.double(), generator=torch.Generator().manual_seed(5))[1]  # no integer handling
        assert out.dtype == labels.dtype and torch.equal(out.double(), ref)
        assert set(out.unique().tolist()) <= set(labels.unique().tolist())


def test_generator_makes_it_reproducible_and_leaves_global_rng_alone():
    image, label = blocky()
    aug = TrainAugment(size=32)
    state = torch.random.get_rng_state()
    a = aug(image, label, generator=torch.Generator().manual_seed(0))
    b = aug(image, label, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(state, torch.random.get_rng_state())


def test_jitter_reaches_image_only_and_unjittered_copy_on_request():
    image, label = blocky()
    aug = TrainAugment(size=48, jitter=0.4, jitter_p=1.0, jitter_target=False)
    jittered, clean, lab = aug(image, label, generator=torch.Generator().manual_seed(1))
    assert jittered.shape == clean.shape == (3, 48, 48) and lab.shape == (48, 48)
    assert not torch.allclose(jittered, clean)
    geometry_only = TrainAugment(size=48, jitter=0.0, jitter_target=False)
    a, b, _ = geometry_only(image, label, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_batched_input_gets_per_sample_parameters():
    images = torch.rand(4, 3, 40, 60)
    labels = torch.randint(0, 3, (4, 40, 60))
    out, lab = TrainAugment(size=32)(images, labels, generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 32, 32) and lab.shape == (4, 32, 32)


def test_mismatched_extra_is_rejected():
    with pytest.raises(ValueError, match="does not match image"):
        TrainAugment(size=16)(torch.rand(3, 20, 20), torch.zeros(10, 10, dtype=torch.long))


@pytest.mark.parametrize("case", range(12))
def test_train_augment_equals_kornia_on_the_whole_image_bit_for_bit(case):
    """Cropping the box first and gathering the labels is an optimisation, never a change: every
    output equals kornia's pipeline on the whole image exactly, for float and uint8 images,
    batched or not, long / uint8 / bool extras, jitter on or off, the authors' target quirk."""
    g = torch.Generator().manual_seed(case)
    h, w = (int(v) for v in torch.randint(70, 400, (2,), generator=g))
    batch = [None, 1, 3][case % 3]
    shape = (3, h, w) if batch is None else (batch, 3, h, w)
    as_bytes = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
    label = torch.randint(0, 4, shape[:-3] + (h, w), generator=g)
    label[..., :3, :3] = 255
    aug = TrainAugment([64, 48, 100][case % 3], hflip=[0.5, 1.0, 0.0][case % 3 - 1],
                       jitter=0.0 if case % 4 == 3 else 0.3, jitter_target=case % 2 == 0)
    extras = [(), (label,), (label.to(torch.uint8), label == 1)][case % 3]
    image = as_bytes if case % 2 else as_bytes.float() / 255
    for draw in range(4):
        want = augment_whole_image(aug, image, *extras, generator=torch.Generator().manual_seed(draw))
        got = aug(image, *extras, generator=torch.Generator().manual_seed(draw))
        assert len(got) == len(want)
        for a, b in zip(got, want):
            assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), (case, draw)


def test_train_augment_never_returns_or_changes_its_input():
    image = torch.rand(3, 128, 128)  # a crop of the whole image at the output size is a view
    label = torch.randint(0, 3, (128, 128))
    before = image.clone(), label.clone()
    aug = TrainAugment(128, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, jitter=0.0, jitter_target=False)
    out = aug(image, label, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[0], image) and torch.equal(out[2], label)
    for t in out:
        t.add_(1)
    assert torch.equal(image, before[0]) and torch.equal(label, before[1])


def test_train_augment_rejects_integer_images():
    with pytest.raises(TypeError, match="float images in \\[0, 1\\] or uint8"):
        TrainAugment(16)(torch.zeros(3, 20, 20, dtype=torch.long))
