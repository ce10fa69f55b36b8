"""Confusion matrix, mIoU with the ignore index and absent classes, soft Jaccard loss."""

import math

import pytest
import torch

from smir_lib.metrics import class_map, confusion_matrix, segmentation_loss, segmentation_metrics, soft_jaccard_loss

pytestmark = pytest.mark.unit


def test_confusion_skips_ignore_and_counts_pairs():
    target = torch.tensor([[0, 0, 1, 255], [2, 2, 1, 1]])
    pred = torch.tensor([[0, 1, 1, 2], [2, 0, 1, 0]])
    conf = confusion_matrix(pred, target, 3)
    assert conf.tolist() == [[1, 1, 0], [1, 2, 0], [1, 0, 1]]
    assert conf.sum() == 7  # the ignored pixel is not counted


def test_confusion_equals_torchmetrics_with_ignored_and_out_of_range_targets():
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (3, 17, 19), generator=g)
    target[0, :5] = 255  # ignored
    target[1, 2, :7] = 7  # outside [0, C): skipped as well
    target[2, 3, 3] = -1
    pred = torch.randint(0, 4, (3, 17, 19), generator=g)
    keep = (target >= 0) & (target < 4)
    expected = multiclass_confusion_matrix(pred[keep], target[keep], 4).long()
    assert torch.equal(confusion_matrix(pred, target, 4), expected)
    assert torch.equal(confusion_matrix(pred.to(torch.uint8), target.to(torch.int16), 4), expected)


def test_class_map_is_argmax_first_maximum_on_ties():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 9, 11, generator=g).round()  # rounding makes ties
    logits[0, :, 0, 0] = 3.0  # every class tied: the first wins
    assert torch.equal(class_map(logits), logits.argmax(1))
    assert int(class_map(logits)[0, 0, 0]) == 0
    assert torch.equal(class_map(logits[0], dim=0), logits[0].argmax(0))


def test_metrics_values_absent_class_and_lowest():
    conf = torch.tensor([[8, 2, 0, 0], [1, 3, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    m = segmentation_metrics(conf, ["a", "b", "c", "d"], n_lowest=2)
    assert m["per_class_iou"][0] == pytest.approx(8 / 11)
    assert m["per_class_iou"][1] == pytest.approx(3 / 6)
    assert math.isnan(m["per_class_iou"][2]) and math.isnan(m["per_class_iou"][3])
    assert m["miou"] == pytest.approx((8 / 11 + 0.5) / 2)  # absent classes left out
    assert m["lowest_classes"] == ["b", "a"]
    assert m["pixel_accuracy"] == pytest.approx(11 / 14)


def test_accumulated_confusion_is_not_mean_of_images():
    a = confusion_matrix(torch.tensor([0, 0, 0, 1]), torch.tensor([0, 0, 0, 0]), 2)
    b = confusion_matrix(torch.tensor([1]), torch.tensor([1]), 2)
    assert segmentation_metrics(a + b)["miou"] == pytest.approx((3 / 4 + 1 / 2) / 2)


def test_soft_jaccard_perfect_bad_and_ignored():
    target = torch.randint(0, 3, (2, 8, 8))
    perfect = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 50
    assert soft_jaccard_loss(perfect, target) < 1e-4
    wrong = torch.nn.functional.one_hot((target + 1) % 3, 3).permute(0, 3, 1, 2).float() * 50
    assert soft_jaccard_loss(wrong, target) > 0.99
    ignored = target.clone()
    ignored[:, :4] = 255
    mixed = perfect.clone()
    mixed[:, :, :4] = wrong[:, :, :4]  # wrong only where ignored
    assert soft_jaccard_loss(mixed, ignored) < 1e-4


def test_losses_have_gradients_and_ce_option():
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8))
    target[0, 0, 0] = 255
    for name in ("jaccard", "ce"):
        loss = segmentation_loss(name, logits, target)
        (g,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(loss) and g.abs().sum() > 0
    with pytest.raises(ValueError, match="expected 'jaccard' or 'ce'"):
        segmentation_loss("dice", logits, target)


def test_miou_equals_torchmetrics_jaccard_index_when_every_class_is_present():
    """Over several batches with an ignore label: our accumulated mIoU and per-class IoU against
    torchmetrics' MulticlassJaccardIndex (macro and per class)."""
    from torchmetrics.classification import MulticlassJaccardIndex

    g = torch.Generator().manual_seed(0)
    macro = MulticlassJaccardIndex(4, average="macro", ignore_index=255)
    per_class = MulticlassJaccardIndex(4, average="none", ignore_index=255)
    conf = torch.zeros(4, 4, dtype=torch.long)
    for _ in range(3):
        target = torch.randint(0, 4, (2, 16, 16), generator=g)
        pred = torch.where(torch.rand(2, 16, 16, generator=g) < 0.6, target,
                           torch.randint(0, 4, (2, 16, 16), generator=g))
        target[:, :3] = 255
        conf += confusion_matrix(pred, target, 4)
        macro.update(pred, target), per_class.update(pred, target)
    m = segmentation_metrics(conf)
    assert m["miou"] == pytest.approx(macro.compute().item(), abs=1e-6)
    assert m["per_class_iou"] == pytest.approx(per_class.compute().tolist(), abs=1e-6)


def test_authors_miou_counts_absent_classes_as_zero():
    conf = torch.tensor([[8, 2, 0, 0], [1, 3, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    m = segmentation_metrics(conf)
    assert m["authors_miou"] == pytest.approx((8 / 11 + 3 / 6 + 0 + 0) / 4)
    assert m["miou"] == pytest.approx((8 / 11 + 3 / 6) / 2)


def test_void_output_counts_against_the_true_class_and_is_not_scored():
    """Classes a, b plus a void output (column 2): a pixel of class a predicted void is a false
    negative of a; the void row is empty (void-labelled pixels are skipped), void is not averaged."""
    target = torch.tensor([0, 0, 0, 1, 1, 255, 255])
    pred = torch.tensor([0, 2, 0, 1, 2, 2, 0])  # 2 = void output
    conf = confusion_matrix(pred, target, 3)
    assert conf.tolist() == [[2, 0, 1], [0, 1, 1], [0, 0, 0]]
    m = segmentation_metrics(conf, ["a", "b"], n_scored=2)
    assert m["per_class_iou"] == pytest.approx([2 / 3, 1 / 2])
    assert m["miou"] == m["authors_miou"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m["pixel_accuracy"] == pytest.approx(3 / 5)


def test_jaccard_loss_over_the_scored_classes_only():
    logits = torch.zeros(1, 3, 1, 2)
    logits[0, 0, 0, 0] = logits[0, 2, 0, 1] = 50.0  # pixel 0 -> class 0, pixel 1 -> void (2)
    target = torch.tensor([[[0, 2]]])
    assert soft_jaccard_loss(logits, target, n_scored=2) < 1e-4  # a: IoU 1, b: absent -> 1
    assert soft_jaccard_loss(logits, target) < 1e-4
    wrong = torch.tensor([[[0, 1]]])  # pixel 1 is b but predicted void: b's IoU is 0
    assert soft_jaccard_loss(logits, wrong, n_scored=2) == pytest.approx(0.5, abs=1e-4)
