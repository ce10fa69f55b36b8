"""Masking strategies (issue 28): each on a tiny case whose expected mask is written out by hand,
every strategy hiding exactly floor(0.5 n) patches, and the engine option that chooses one."""

import pytest
import torch
from torch import nn

from smir_lib.data.transforms import resize_nearest
from smir_lib.engine.config import ConfigValueError, load_config
from smir_lib.patches import PatchGrid, patch_grid
from smir_lib.selective import (
    STRATEGIES,
    block_mask,
    choose_masks,
    foreground_share,
    forward_passes,
    oracle_mask,
    ramp_mask,
    ramp_share,
    selective_mask,
    strategy_mask,
)

pytestmark = pytest.mark.unit

GRID = patch_grid(4, 4, 4)  # a 2x2 grid of 2x2 px patches: 2 of 4 hidden
SCORES = torch.tensor([[[0.1, 0.9], [0.5, 0.3]]])  # (1, 2, 2)
RANDOM = torch.tensor([[[[True, False], [False, True]], [[False, True], [True, False]]]])  # (1, K=2, 2, 2)


class Blur(nn.Module):
    """Reproduces flat regions and fails on texture (a 3x3 box blur); counts its forward passes."""

    def __init__(self):
        super().__init__()
        self.pool, self.calls = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False), []

    def forward(self, x):
        self.calls.append(x.shape[0])
        return self.pool(x)


def textured_corner(n: int = 2) -> torch.Tensor:
    """64x64 images, flat 0.0 except noise in the top-left 32x32 quarter (4 of 16 patches of a 4x4 grid)."""
    images = torch.zeros(n, 3, 64, 64)
    images[:, :, :32, :32] = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return images


def test_random_hides_the_first_of_the_k_random_masks():
    assert strategy_mask("random", RANDOM, None, GRID).tolist() == [[[True, False], [False, True]]]


def test_selective_hides_the_top_half_and_easiest_the_bottom_half():
    assert strategy_mask("selective", RANDOM, SCORES, GRID).tolist() == [[[False, True], [True, False]]]
    assert strategy_mask("easiest", RANDOM, SCORES, GRID).tolist() == [[[True, False], [False, True]]]


def test_choose_masks_selective_is_the_papers_selective_mask():
    images, grid = textured_corner(), patch_grid(64, 64, 16)
    paper = selective_mask(Blur(), images, grid, k=3, generator=torch.Generator().manual_seed(5))
    ours = choose_masks("selective", Blur(), images, grid, k=3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(paper.mask, ours.mask) and torch.equal(paper.scores, ours.scores)


def test_selective_unmasked_scores_the_unmasked_image_in_one_pass():
    model, grid = Blur(), patch_grid(64, 64, 16)  # 4x4 grid, 8 hidden; texture in patches (0,0),(0,1),(1,0),(1,1)
    out = choose_masks("selective_unmasked", model, textured_corner(), grid, k=5,
                       generator=torch.Generator().manual_seed(0))
    assert model.calls == [2]  # one pass of the 2 unmasked images, not K = 5 masked copies each
    assert out.mask[:, :2, :2].all() and out.mask.flatten(1).sum(1).tolist() == [8, 8]


def test_block_masks_hide_the_count_in_few_compact_blocks():
    grid = patch_grid(128, 128, 256)  # 16x16, 128 hidden
    masks = block_mask(20, grid, generator=torch.Generator().manual_seed(0))
    assert masks.flatten(1).sum(1).tolist() == [128] * 20
    # hidden/visible neighbour pairs: about 240 of the 480 for a random half, far fewer for blocks
    edges = (masks[:, 1:] != masks[:, :-1]).sum((1, 2)) + (masks[:, :, 1:] != masks[:, :, :-1]).sum((1, 2))
    assert edges.float().mean() < 100
    assert torch.equal(masks, block_mask(20, grid, generator=torch.Generator().manual_seed(0)))  # seeded


def test_block_mask_falls_back_to_single_patches_when_no_block_fits():
    strip = PatchGrid(1, 4, (0, 1), (0, 1, 2, 3, 4))  # one row: BEiT's blocks must be strictly inside
    assert block_mask(3, strip, generator=torch.Generator().manual_seed(1)).sum((1, 2)).tolist() == [2, 2, 2]


def test_ramp_share_and_ramp_mask():
    assert [ramp_share(s, 10) for s in (1, 9)] == [0.0, 1.0] and ramp_share(1, 2) == 1.0
    with pytest.raises(ValueError, match="step is 0"):
        ramp_share(0, 10)
    scores = torch.arange(16.0).view(1, 4, 4)  # patch 15 hardest
    for seed in range(5):
        mask = ramp_mask(scores, 8, 0.5, generator=torch.Generator().manual_seed(seed)).flatten()
        assert mask[12:].all() and mask.sum() == 8  # the 4 top patches, then 4 of the 12 others at random
    drawn = torch.stack([ramp_mask(scores, 8, 0.5, generator=torch.Generator().manual_seed(s)).flatten()[:12]
                         for s in range(5)])
    assert len({tuple(d.tolist()) for d in drawn}) > 1  # the rest is random, not the next-hardest
    assert ramp_mask(scores, 8, 1.0).flatten()[8:].all()  # share 1: selective


def test_foreground_share_and_the_oracle():
    labels = torch.tensor([[[1, 1, 2, 0], [1, 2, 0, 0], [0, 0, 255, 2], [0, 0, 1, 0]]])  # (1, 4, 4)
    share = foreground_share(labels, GRID)
    assert share.tolist() == [[[1.0, 0.25], [0.0, 0.5]]]  # 255 is ignored, not foreground
    assert oracle_mask(share, 2).tolist() == [[[True, False], [False, True]]]
    ties = [oracle_mask(torch.zeros(1, 2, 2), 2, generator=torch.Generator().manual_seed(s)) for s in range(8)]
    assert len({tuple(t.flatten().tolist()) for t in ties}) > 1  # ties in a random order, not the top-left
    with pytest.raises(ValueError, match="needs the pool's labels"):
        strategy_mask("objects_oracle", RANDOM, None, GRID)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_hides_exactly_half_of_the_patches(strategy):
    images, grid = textured_corner(3)[..., :60, :60], patch_grid(60, 60, 25)  # 5x5 grid: 12 hidden
    labels = (images[:, 0] > 0).long()  # foreground where the texture is positive
    out = choose_masks(strategy, Blur(), images, grid, k=2, share=0.5, labels=labels,
                       generator=torch.Generator().manual_seed(3))
    assert out.mask.shape == (3, 5, 5) and out.mask.flatten(1).sum(1).tolist() == [12, 12, 12]


def test_forward_passes_and_unknown_names():
    assert {s: forward_passes(s, 5) for s in STRATEGIES} == {
        "random": 0, "selective": 5, "selective_unmasked": 1, "easiest": 5, "block": 0, "hard_ramp": 5,
        "objects_oracle": 0}
    with pytest.raises(ValueError, match="'hardest'; expected one of random, selective"):
        forward_passes("hardest", 5)
    assert load_config("fast").mask_strategy == "selective"  # the paper's recipe stays the default
    with pytest.raises(ConfigValueError, match="mask_strategy='hardest' is invalid"):
        load_config("fast", overrides={"mask_strategy": "hardest"})


@pytest.mark.usefixtures("one_thread")
def test_the_engine_scores_a_partition_with_each_strategy():
    from smir_lib.data import get_dataset
    from smir_lib.engine.pretrain_data import score_partition
    from smir_lib.models import build_model
    from smir_lib.patches import random_patch_mask
    from smir_lib.runtime import seeded_generator

    cfg = load_config("fast", dict(model="tiny", synthetic_size=72, image_size=64, msssim_win=3, n_patches=64,
                                   k=2, partitions=2, pool_size=12, workers=0, score_batch=4, progress=False))
    pool, model, indices = get_dataset("synthetic", "pool", n_images=6, size=72), build_model(cfg), [0, 2, 4, 5]
    found = {s: score_partition(model, pool, indices, cfg.replace(mask_strategy=s), step=1)
             for s in ("selective", "easiest", "random", "block", "selective_unmasked", "hard_ramp")}
    assert torch.equal(found["easiest"]["masks"], ~found["selective"]["masks"])  # 64 patches, 32 each side
    first = torch.stack([random_patch_mask(2, patch_grid(64, 64, 64), generator=seeded_generator(cfg.seed, "score", 1, i))[0]
                         for i in indices])
    assert torch.equal(found["random"]["masks"], first) and found["random"]["scores"].isnan().all()
    assert torch.equal(found["hard_ramp"]["masks"], found["selective"]["masks"])  # 2 partitions: the one step is all-hard
    for s, out in found.items():
        assert out["masks"].flatten(1).sum(1).tolist() == [32] * 4, s
    assert not torch.equal(found["selective_unmasked"]["scores"], found["selective"]["scores"])  # one unmasked pass


def test_the_engine_refuses_the_oracle_in_one_line_when_the_pool_has_no_labels(tmp_path):
    from smir_lib.engine.pretrain import pretrain_selective

    cfg = load_config("fast", {"mask_strategy": "objects_oracle", "pool_size": 12})
    with pytest.raises(ValueError, match=r"objects_oracle needs pool labels; the pool of synthetic has none"):
        pretrain_selective(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "config.json").exists()  # refused before the run is set up


@pytest.mark.usefixtures("one_thread")
def test_the_engine_oracle_reads_the_labels_of_cwfid_pool_tiles(cwfid_root, monkeypatch):
    from smir_lib.data import get_dataset
    from smir_lib.engine.pretrain_data import load_split, pool_label_reader, score_partition, scoring_pool
    from smir_lib.models import build_model

    monkeypatch.setenv("SMIR_DATA_DIR", str(cwfid_root.parent))
    cfg = load_config("fast", dict(dataset="cwfid", pool_size=2, pool_tile_size=512, pool_tile_stride=256,
                                   mask_strategy="objects_oracle", image_size=128, n_patches=64, k=1, workers=0,
                                   cache_images=False, progress=False))
    read = pool_label_reader(cfg)
    frame = get_dataset("cwfid", "train", str(cwfid_root.parent)).load_label(0)  # pool image 0 = train frame 0
    assert torch.equal(read(1), frame[:512, 256:768])  # tile 1 of frame 0: rows 0-512, columns 256-768
    pool = scoring_pool(load_split(cfg, "pool"), cfg)
    out = score_partition(build_model(cfg), pool, [1, 7], cfg, step=1, pool_labels=read)
    grid = patch_grid(128, 128, 64)
    for index, mask in zip([1, 7], out["masks"]):
        share = foreground_share(resize_nearest(read(index), (128, 128))[None], grid)[0]
        assert mask.sum() == 32 and share[mask].min() >= share[~mask].max()  # the most foreground hidden
