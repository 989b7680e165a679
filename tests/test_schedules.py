"""shared.train.schedules against diffusers' get_scheduler: equal where the two mean the same, and the measured
differences (warm-up one step ahead, the min_lr_ratio floor, no cosine rebound after total_steps) pinned."""
import pytest
import torch
from diffusers.optimization import get_scheduler

from shared.train.schedules import make_lr_schedule

DIFFUSERS_NAME = {"constant": "constant", "warmup": "constant_with_warmup", "cosine": "cosine", "linear": "linear"}


def _lrs(scheduler, optimizer, n):
    out = []
    for _ in range(n):
        out.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return out


def _ours(name, n, **kw):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    return _lrs(make_lr_schedule(opt, name, **kw), opt, n)


def _diffusers(name, n, total_steps, warmup_steps=0):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    return _lrs(get_scheduler(DIFFUSERS_NAME[name], opt, num_warmup_steps=warmup_steps,
                              num_training_steps=total_steps), opt, n)


@pytest.mark.parametrize("name", sorted(DIFFUSERS_NAME))
def test_equal_to_diffusers_without_warmup_or_floor(name):
    # equal up to rounding: linear computes 1 - step / total where diffusers computes (total - step) / total
    assert _ours(name, 13, total_steps=12) == pytest.approx(_diffusers(name, 13, total_steps=12), rel=0, abs=1e-15)


@pytest.mark.parametrize("name", ["warmup", "cosine", "linear"])
@pytest.mark.parametrize("min_ratio", [0.0, 0.1])
def test_warmup_one_step_ahead_and_floor(name, min_ratio):
    total, warm = 12, 4
    ours = _ours(name, total + 3, total_steps=total, warmup_steps=warm, min_ratio=min_ratio)
    theirs = _diffusers(name, total + 3, total_steps=total, warmup_steps=warm)
    assert theirs[0] == 0.0 and ours[0] == 0.25  # diffusers' first update runs at lr 0; ours does not
    assert ours[:warm] == pytest.approx(theirs[1:warm + 1], rel=0, abs=1e-15)
    floor = min_ratio if name != "warmup" else 0.0
    for step in range(warm, total + 1):
        assert ours[step] == pytest.approx(floor + (1 - floor) * theirs[step], abs=1e-15)
    assert ours[total + 1:] == [ours[total]] * 2  # stays at the final rate after total_steps
    if name == "cosine":
        assert theirs[total + 1] > theirs[total]  # diffusers' cosine rises again past num_training_steps
