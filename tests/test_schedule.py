"""Warm-up + cosine learning-rate schedule and the Adam optimiser of the paper."""

import math

import pytest
import torch

from smir_lib.schedule import build_optimizer, build_scheduler, lr_factor

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
