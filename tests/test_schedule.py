"""Warm-up + cosine learning-rate schedule and the Adam optimiser of the paper."""

import math

import pytest
import torch

from smir_lib.engine.schedule import build_optimizer, build_scheduler, lr_factor

pytestmark = pytest.mark.unit


def test_warmup_then_cosine_endpoints():
    epochs, warmup = 100, 10
    factors = [lr_factor(e, epochs, warmup) for e in range(epochs)]
    assert factors[0] == pytest.approx(0.01)
    assert factors[5] == pytest.approx(0.505)
    assert factors[10] == pytest.approx(1.0)
    assert factors[-1] == pytest.approx(0.01)
    assert all(a < b for a, b in zip(factors[:10], factors[1:11]))  # rises during warm-up
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))  # then only falls
    mid = 10 + (epochs - 1 - 10) / 2
    assert lr_factor(int(mid), epochs, warmup) == pytest.approx(
        0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (int(mid) - 10) / 89)))


def test_short_runs_do_not_divide_by_zero():
    assert lr_factor(0, 1, 10) == pytest.approx(1.0)
    assert [round(lr_factor(e, 3, 1), 3) for e in range(3)] == [0.01, 1.0, 0.01]
    assert lr_factor(0, 2, 0) == pytest.approx(1.0)


def test_scheduler_steps_per_epoch_and_optimizer_has_no_decay():
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, 3e-3)
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["weight_decay"] == 0.0
    sched = build_scheduler(opt, 20, 5)
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([3e-3 * lr_factor(e, 20, 5) for e in range(20)])
    state = sched.state_dict()
    fresh = build_scheduler(build_optimizer(model, 3e-3), 20, 5)
    fresh.load_state_dict(state)
    assert fresh.last_epoch == 20


@pytest.mark.parametrize("epochs,warmup", [(100, 10), (30, 5), (12, 1)])
def test_schedule_equals_torch_sequential_linear_then_cosine(epochs, warmup):
    """The same schedule built from torch's own pieces: LinearLR from 0.01x over the warm-up, then
    CosineAnnealingLR down to 0.01x at the last epoch, chained by SequentialLR."""
    import warnings

    lr = 3e-3
    ours = build_optimizer(torch.nn.Linear(2, 2), lr)
    theirs = torch.optim.Adam(torch.nn.Linear(2, 2).parameters(), lr=lr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SequentialLR's epoch-argument deprecation notice
        reference = torch.optim.lr_scheduler.SequentialLR(theirs, [
            torch.optim.lr_scheduler.LinearLR(theirs, start_factor=0.01, end_factor=1.0,
                                              total_iters=warmup),
            torch.optim.lr_scheduler.CosineAnnealingLR(theirs, T_max=epochs - 1 - warmup,
                                                       eta_min=0.01 * lr)], milestones=[warmup])
    schedule = build_scheduler(ours, epochs, warmup)
    got, want = [], []
    for _ in range(epochs):
        got.append(ours.param_groups[0]["lr"])
        want.append(theirs.param_groups[0]["lr"])
        ours.step(), theirs.step()
        schedule.step(), reference.step()
    assert got == pytest.approx(want, rel=1e-6, abs=1e-12)
