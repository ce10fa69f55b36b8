"""The data behind the paper's figures: selection step by step, predictions, per-image shares."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from smir_lib.data.transforms import NORM_MEAN, normalize
from smir_lib.engine.config import load_config
from smir_lib.notebook.measure import class_hidden_fraction, object_share_per_image, score_terms
from smir_lib.notebook.showcase import predict_labels, selection_views
from smir_lib.patches import mask_to_pixels, n_hidden, patch_grid
from smir_lib.selective import top_patch_mask

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_thread")]


class Blur(nn.Module):
    """A fixed 'reconstruction model': a 3x3 box blur per channel (no training, deterministic)."""

    def forward(self, x):
        return nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def test_selection_views_follow_selective_mask_step_by_step():
    grid = patch_grid(32, 32, 16)
    image = normalize(torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0)))
    v = selection_views(Blur(), image, grid, k=3, ratio=0.5, generator=torch.Generator().manual_seed(1))
    assert v["masked"].shape == v["reconstructions"].shape == (3, 3, 32, 32)
    assert torch.allclose(v["maps"].mean(0), v["mean_map"], atol=1e-6)  # the score is the average of K
    assert torch.equal(v["selected"], top_patch_mask(v["mean_map"][None], n_hidden(grid, 0.5))[0])
    hidden = mask_to_pixels(v["random_masks"], grid)  # (K, H, W): copy k hides its own mask
    fill = torch.tensor(NORM_MEAN)[:, None]  # (3, 1): the mean colour, in display space
    assert torch.allclose(v["masked"].permute(1, 0, 2, 3)[:, hidden], fill.expand(3, int(hidden.sum())), atol=1e-5)
    shown = mask_to_pixels(v["selected"][None], grid)[0]  # (H, W)
    assert torch.allclose(v["selective_masked"][:, shown], fill.expand(3, int(shown.sum())), atol=1e-5)
    assert torch.allclose(v["selective_masked"][:, ~shown], v["image"][:, ~shown], atol=1e-6)


def test_predict_labels_takes_the_largest_logit_per_pixel():
    images = torch.zeros(2, 3, 4, 5)
    images[0, 2] = 1.0  # image 0: blue channel high -> class 2 after normalising
    images[1, 0] = 1.0  # image 1: red channel high -> class 0
    cfg = load_config("fast", {"image_size": 4, "n_patches": 16, "msssim_win": 1,  # no resize: short side 4
                               "eval_mode": "resize"})
    pred = predict_labels(nn.Identity(), images, cfg)  # logits = the normalised channels
    assert pred.shape == (2, 4, 5) and (pred[0] == 2).all() and (pred[1] == 0).all()


def test_object_share_per_image_by_hand():
    labels = torch.tensor([[[0, 0, 1, 2]], [[0, 255, 0, 0]]])  # (2, 1, 4): class 0 = background
    hidden = torch.tensor([[[True, False, True, True]], [[False, True, False, False]]])
    shares = object_share_per_image(hidden, labels, background=0, num_classes=3)
    assert shares[0].item() == pytest.approx(2 / 3)  # 3 hidden labelled pixels, 2 on objects
    assert torch.isnan(shares[1])  # its only hidden pixel is unlabelled (255)


def test_class_hidden_fraction_by_hand():
    labels = torch.tensor([[[0, 0, 1, 2]], [[0, 255, 0, 1]]])  # (2, 1, 4): class 0 = background
    hidden = torch.tensor([[[True, False, True, True]], [[False, True, False, False]]])
    fraction = class_hidden_fraction(hidden, labels, num_classes=4)
    assert fraction[:3].tolist() == [pytest.approx(1 / 4), pytest.approx(1 / 2), 1.0]  # 255 counts nowhere
    assert torch.isnan(fraction[3])  # class 3 has no pixel


def test_score_terms_split_the_score_of_hidden_visible_and_coarse_patches():
    grid = patch_grid(32, 32, 16)
    x = normalize(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[:, :2] = True  # the top half hidden
    t = score_terms(nn.Identity(), x, grid, mask)  # a model that copies its input
    assert t["visible"] == {"l1": pytest.approx(0, abs=1e-6), "ssim": pytest.approx(0, abs=1e-6)}
    assert t["hidden"]["l1"] > 0.5 and t["hidden"]["ssim"] > 0.5  # the mean-colour fill, against noise
    assert 0.5 < t["coarse"]["ssim"] < t["hidden"]["ssim"]  # 4x4 averages of noise lose most of its structure
