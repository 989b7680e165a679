"""Learning-rate schedules as a small registry of multiplier functions, wrapped in a `LambdaLR`.

Steps count optimizer updates. Warm-up is linear and reaches the full rate at step `warmup_steps - 1`, so the first
update never runs at lr 0. Add a schedule with `@register_schedule("name")`.

Kept hand-written rather than diffusers' `get_scheduler` (0.42.1), which is the same family but lacks three things
the Trainer's runs rely on (measured, tests/test_schedules.py holds the relation):
- its warm-up starts at lr 0 (warmup 4: 0, .25, .5, .75, 1 where ours gives .25, .5, .75, 1), so the first update
  is wasted and every warm-up step runs one step behind ours; after the warm-up the two agree exactly;
- it has no final-rate floor (`min_lr_ratio`) for cosine or linear decay: ours is min + (1 - min) * its shape;
- past `num_training_steps` its cosine rises again (0.0245 at step 11 of 10) where ours stays at the floor.
With no warm-up and no floor, constant / cosine / linear equal diffusers' up to total_steps (to 1e-15: linear
rounds 1 - step / total where diffusers rounds (total - step) / total).
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import torch

ScheduleFn = Callable[..., float]
SCHEDULES: dict[str, ScheduleFn] = {}


def register_schedule(name: str) -> Callable[[ScheduleFn], ScheduleFn]:
    def deco(fn: ScheduleFn) -> ScheduleFn:
        SCHEDULES[name] = fn
        return fn
    return deco


def _warmup(step: int, warmup_steps: int) -> float:
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


@register_schedule("constant")
def constant(step: int, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.0) -> float:
    return 1.0


@register_schedule("warmup")
def warmup(step: int, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.0) -> float:
    """Linear warm-up, then constant."""
    return _warmup(step, warmup_steps)


@register_schedule("cosine")
def cosine(step: int, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.0) -> float:
    """Linear warm-up, then half a cosine from 1 down to `min_ratio` at `total_steps`."""
    if step < warmup_steps:
        return _warmup(step, warmup_steps)
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@register_schedule("linear")
def linear(step: int, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.0) -> float:
    """Linear warm-up, then linear decay to `min_ratio` at `total_steps`."""
    if step < warmup_steps:
        return _warmup(step, warmup_steps)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 1.0 - (1.0 - min_ratio) * progress


def lr_multiplier(name: str) -> ScheduleFn:
    if name not in SCHEDULES:
        raise ValueError(f"unknown lr schedule {name!r}; known: {', '.join(sorted(SCHEDULES))}")
    return SCHEDULES[name]


def make_lr_schedule(optimizer: torch.optim.Optimizer, name: str = "constant", *, total_steps: int,
                     warmup_steps: int = 0, min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """A `LambdaLR` following schedule `name`; its state_dict holds only counters (safe for weights-only loads)."""
    if warmup_steps < 0 or total_steps < 1:
        raise ValueError(f"need total_steps >= 1 and warmup_steps >= 0 (got {total_steps}, {warmup_steps})")
    fn = functools.partial(lr_multiplier(name), total_steps=total_steps, warmup_steps=warmup_steps,
                           min_ratio=min_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
