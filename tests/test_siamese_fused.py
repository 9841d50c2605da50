"""The fused step equals the naive (released-structure) step: same losses and gradients to 1e-5."""
from __future__ import annotations

import pytest
import torch

from siamdiff.model.schedule import make_train_scheduler
from siamdiff.model.siamese import StepConfig, fused_step, naive_step, trainable_parameters
from test_siamese import tiny_batch, tiny_models


def _run(fn, unet, controlnet, sched, batch, step, total, cfg):
    params = [p for g in trainable_parameters(controlnet, unet).values() for p in g]
    for p in params:
        p.grad = None
    out = fn(unet, controlnet, sched, batch, step, total, cfg)
    out.loss.backward()
    grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]
    for p in params:
        p.grad = None
    return out, grads


@pytest.mark.parametrize("step,cfg", [
    (0, StepConfig()),                      # s = 0: image weight 0
    (9, StepConfig()),                      # early: L0-L2
    (25, StepConfig()),                     # late: L3 on for t <= 200
    (25, StepConfig(lambda_c=0.3)),         # annealed lambda_c
    (25, StepConfig(loss="mask-only")),     # baseline
])
def test_fused_equals_naive(step, cfg):
    unet, controlnet = tiny_models(seed=1)
    sched = make_train_scheduler()
    batch = tiny_batch(t=(3, 150, 700, 200), seed=2)
    a, ga = _run(naive_step, unet, controlnet, sched, batch, step, 30, cfg)
    b, gb = _run(fused_step, unet, controlnet, sched, batch, step, 30, cfg)
    torch.testing.assert_close(b.loss, a.loss, atol=1e-5, rtol=1e-5)
    for k in a.terms:
        torch.testing.assert_close(b.terms[k], a.terms[k], atol=1e-5, rtol=1e-5)
    scale = max(float(g.abs().max()) for g in ga)
    assert scale > 0
    for x, y in zip(gb, ga):
        torch.testing.assert_close(x, y, atol=1e-5 * max(1.0, scale), rtol=1e-5)


def test_fused_makes_no_copies_and_leaves_no_grads_on_frozen(monkeypatch):
    import copy

    unet, controlnet = tiny_models(seed=1)
    calls = []
    monkeypatch.setattr(copy, "deepcopy", lambda *a, **k: calls.append(1))
    out = fused_step(unet, controlnet, make_train_scheduler(), tiny_batch(), 25, 30)
    out.loss.backward()
    assert not calls
    assert all(p.grad is None for n, p in unet.named_parameters() if not p.requires_grad)
