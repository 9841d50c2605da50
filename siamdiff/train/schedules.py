"""Step-dependent quantities of the training run (DESIGN.md section 1).

Released recipe: constant lr, `lambda_c = 1`, image weight `s / S`, L3 only when `s > S / 3`.
The seed document's options (linear warm-up then cosine decay; lambda_c annealed linearly from 0) are off by
default (`train.lr_warmup: 0`, `train.lr_schedule: constant`, `train.lambda_c_warmup: 0`).
"""
from __future__ import annotations

import math

import torch


def image_weight(step: int, total_steps: int) -> float:
    """Weight of the image ControlNet's residuals in `r_mix = sg(r_m) + (s/S) r_i`."""
    return float(step) / float(total_steps)


def augmentation_active(step: int, total_steps: int, after: float = 1 / 3) -> bool:
    """L3 (online augmentation) is on only once `s > after * S` (released: S/3)."""
    return step > total_steps * after


def lambda_c(step: int, value: float = 1.0, warmup: int = 0) -> float:
    """Weight of L2 (noise consistency): `value`, or annealed linearly from 0 over `warmup` steps."""
    if warmup and warmup > 0:
        return value * min(1.0, step / warmup)
    return value


def lr_factor(step: int, total_steps: int, warmup: int = 0, schedule: str = "constant") -> float:
    """Multiplier of the base lr at optimizer step `step` (0-based)."""
    if warmup and step < warmup:
        return (step + 1) / warmup  # linear warm-up, never exactly 0
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    raise ValueError(f"unknown lr schedule {schedule!r}: use constant or cosine")


def make_lr_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup: int = 0,
                      schedule: str = "constant") -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR over every param group (separate base lrs keep their ratio)."""
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"unknown lr schedule {schedule!r}: use constant or cosine")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warmup, schedule))
