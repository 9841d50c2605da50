"""The optimisation loop of the models the demo trains from scratch (autoencoder, backbone), and its curves.

The Siamese stage has its own loop (siamdiff.train.loop: checkpoints, resume, data parallelism).
"""
from __future__ import annotations

from pathlib import Path


def fit(params, step_loss, opt, lr_schedule, *, steps: int, desc: str, ema=None, bf16: bool = False,
        on_step=None, progress: bool = True):
    """`steps` optimiser steps of `loss, shown = step_loss()`: backward, `opt`, `lr_schedule` (and `ema` of
    `params`) step. `on_step(step, shown)` after each; the progress bar shows `shown` every 50 steps."""
    import torch

    from siamdiff.utils import progress as progress_bar

    params = list(params)
    bar = progress_bar(range(steps), desc=desc, disable=not progress, mininterval=5)
    for step in bar:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, shown = step_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lr_schedule.step()
        if ema is not None:
            ema.step(params)
        if on_step is not None:
            on_step(step, shown)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{shown:.5f}")


def open_live(path: Path):
    """A dvclive logger writing only under `path` (no dvc.yaml, report or experiment of its own)."""
    from dvclive import Live

    return Live(dir=str(path), dvcyaml=None, save_dvc_exp=False, report=None)


class LossCurve:
    """`on_step` for `fit`: logs the mean of each window of steps to dvclive as `key` (about `points` points)
    and keeps every value (`tail_mean`)."""

    def __init__(self, live, key: str, steps: int, points: int = 100):
        self.live, self.key, self.every, self.values = live, key, max(1, steps // points), []
        self._window_start = 0

    def __call__(self, step: int, value: float) -> None:
        self.values.append(value)
        if step % self.every == 0:
            window = self.values[self._window_start:]
            self.live.log_metric(self.key, sum(window) / len(window))
            self.live.next_step()
            self._window_start = len(self.values)

    def tail_mean(self, fraction: float = 0.1) -> float:
        tail = self.values[-max(1, int(len(self.values) * fraction)):]
        return sum(tail) / len(tail)
