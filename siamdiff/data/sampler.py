"""Balanced batch sampler: 2:1 foreground/background batches (DESIGN.md section 3).

Rows whose mask coverage is above the median go to the foreground queue, the rest to the background queue.
Each queue is a shuffled permutation that is drawn without replacement and reshuffled when it runs out, so
every row is seen once per queue epoch. A batch takes round(2/3 B) rows from the foreground queue and the
rest from the background queue. Deterministic for a seed; `state_dict()` / `load_state_dict()` make it
resumable (JSON-serialisable state). With `balanced=False` it is one plain shuffled queue.
"""
from __future__ import annotations

import copy

import numpy as np


class _Queue:
    def __init__(self, indices: np.ndarray, rng: np.random.Generator):
        self.indices = np.asarray(indices, dtype=np.int64)
        self.rng = rng
        self.order = self.indices[self.rng.permutation(len(self.indices))]
        self.pos = 0

    def take(self, n: int) -> list[int]:
        out: list[int] = []
        while len(out) < n:
            if self.pos >= len(self.order):
                self.order = self.indices[self.rng.permutation(len(self.indices))]
                self.pos = 0
            k = min(n - len(out), len(self.order) - self.pos)
            out.extend(int(i) for i in self.order[self.pos:self.pos + k])
            self.pos += k
        return out


class BalancedBatchSampler:
    """Infinite, deterministic batch sampler over row indices 0..N-1 given their mask coverages."""

    def __init__(self, coverage, batch_size: int, seed: int = 0, balanced: bool = True,
                 foreground_fraction: float = 2 / 3):
        coverage = np.asarray(coverage, dtype=np.float64)
        if len(coverage) == 0:
            raise ValueError("BalancedBatchSampler: no rows to sample from")
        if batch_size < 1:
            raise ValueError("BalancedBatchSampler: batch_size must be >= 1")
        self.batch_size = int(batch_size)
        self.balanced = bool(balanced)
        self.median = float(np.median(coverage))
        self.rng = np.random.Generator(np.random.PCG64(seed))
        fg = np.flatnonzero(coverage > self.median)
        bg = np.flatnonzero(coverage <= self.median)
        if self.balanced and len(fg) and len(bg):
            self.n_fg = int(round(foreground_fraction * self.batch_size))
            self.queues = [_Queue(fg, self.rng), _Queue(bg, self.rng)]
        else:  # plain shuffling (or every row has the same coverage)
            self.n_fg = self.batch_size
            self.queues = [_Queue(np.arange(len(coverage)), self.rng)]

    def next_batch(self) -> list[int]:
        if len(self.queues) == 1:
            return self.queues[0].take(self.batch_size)
        return self.queues[0].take(self.n_fg) + self.queues[1].take(self.batch_size - self.n_fg)

    def __iter__(self):
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict:
        return {
            "rng": copy.deepcopy(self.rng.bit_generator.state),
            "queues": [{"order": q.order.tolist(), "pos": q.pos} for q in self.queues],
        }

    def load_state_dict(self, state: dict) -> None:
        if len(state["queues"]) != len(self.queues):
            raise ValueError("BalancedBatchSampler: saved state has a different number of queues")
        self.rng.bit_generator.state = state["rng"]
        for q, s in zip(self.queues, state["queues"]):
            q.order = np.asarray(s["order"], dtype=np.int64)
            q.pos = int(s["pos"])
