"""Learning-rate schedules as pure functions of the step (so resuming needs no scheduler state)."""

from __future__ import annotations

import math

from plasticity.config import ScheduleConfig


def lr_at(step: int, total_steps: int, lr: float, min_lr: float, sched: ScheduleConfig) -> float:
    """Learning rate for optimizer step `step` (0-based) of `total_steps`.

    Warmup: linear from lr/W at step 0 to lr at step W-1, W = round(warmup_fraction * total).
    cosine: min_lr + (lr - min_lr) * (1 + cos(pi * p)) / 2 with p = (step - W) / (total - W) going 0 -> 1.
    wsd: constant lr, then the last D = round(decay_fraction * total) steps decay linearly to min_lr.
    constant: lr after warmup.
    """
    total_steps = max(total_steps, 1)
    warmup = int(round(sched.warmup_fraction * total_steps))
    if step < warmup:
        return lr * (step + 1) / warmup
    if sched.kind == "constant":
        return lr
    if sched.kind == "cosine":
        span = max(total_steps - warmup, 1)
        p = min((step - warmup) / span, 1.0)
        return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * p))
    decay = int(round(sched.decay_fraction * total_steps))
    decay_start = total_steps - decay
    if step < decay_start or decay == 0:
        return lr
    p = min((step - decay_start + 1) / decay, 1.0)
    return lr + (min_lr - lr) * p
