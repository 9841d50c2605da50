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


# ----------------------------------------------------------------------------------------------------------
# An independent reference: DESIGN.md section 1 written out in the released code's structure (a deep-copied,
# frozen U for the image branch; the mask ControlNet of the image branch under no_grad; full UNet passes),
# using only diffusers' forward passes -- none of siamdiff.model.siamese's step code.

def _reference_step(unet, controlnet, batch, s: int, S: int, lambda_c: float = 1.0):
    import copy

    T = 1000
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, T, dtype=torch.float64) ** 2   # SD's "scaled linear"
    abar = torch.cumprod(1 - betas, 0).float()[batch.t].view(-1, 1, 1, 1)
    eps, t, c = batch.noise, batch.t, batch.text_emb
    z_t = abar.sqrt() * batch.z0 + (1 - abar).sqrt() * eps
    m = batch.mask.repeat(1, 3, 1, 1)
    mse = lambda a, b: ((a - b) ** 2).mean((1, 2, 3))  # noqa: E731  per sample, mean over C, H, W

    # Mask-Diffusion: r_m = C(z_t, t, c, m); eps_m = U(z_t, t, c, r_m)
    down_m, mid_m = controlnet(z_t, t, c, controlnet_cond=m, return_dict=False)
    eps_m = unet(z_t, t, c, down_block_additional_residuals=down_m, mid_block_additional_residual=mid_m).sample
    # Image-Diffusion: r_i = C(z_t, t, c, x~); the mask residuals again, under no_grad; U a frozen copy
    unet_image = copy.deepcopy(unet).requires_grad_(False)
    down_i, mid_i = controlnet(z_t, t, c, controlnet_cond=batch.image, return_dict=False)
    with torch.no_grad():
        down_ms, mid_ms = controlnet(z_t, t, c, controlnet_cond=m, return_dict=False)
    w = s / S
    eps_mix = unet_image(z_t, t, c, down_block_additional_residuals=[a + w * b for a, b in zip(down_ms, down_i)],
                         mid_block_additional_residual=mid_ms + w * mid_i).sample
    l0, l1, l2 = mse(eps_m, eps), mse(eps_mix, eps), mse(eps_m, eps_mix.detach())
    # online augmentation: s > S/3, per sample t <= 200; z'_t detached
    gate = (t <= 200).float() if s > S / 3 else torch.zeros(len(t))
    if s > S / 3:
        x0_hat = (z_t - (1 - abar).sqrt() * eps_mix) / abar.sqrt()
        z_aug = (abar.sqrt() * x0_hat + (1 - abar).sqrt() * eps).detach()
        down_a, mid_a = controlnet(z_aug, t, c, controlnet_cond=m, return_dict=False)
        eps_aug = unet(z_aug, t, c, down_block_additional_residuals=down_a, mid_block_additional_residual=mid_a).sample
        l3 = gate * mse(eps_aug, eps)
    else:
        l3 = torch.zeros(len(t))
    terms = {"mask_diffusion": l0, "image_diffusion": l1, "noise_consistency": l2, "online_augmentation": l3}
    return (l0 + l1 + lambda_c * l2 + l3).mean(), terms


def _grads(params, scalar):
    """d scalar / d params (zeros where no gradient arrives); the graph is kept for the next term."""
    gs = torch.autograd.grad(scalar, params, retain_graph=True, allow_unused=True)
    return [g if g is not None else torch.zeros_like(p) for g, p in zip(gs, params)]


@pytest.mark.parametrize("impl", ["fused", "naive"])
@pytest.mark.parametrize("step,lambda_c", [(9, 1.0), (25, 1.0), (25, 0.3)])  # L3 off; on; annealed lambda_c
def test_step_equals_an_independent_released_structure_reference(impl, step, lambda_c):
    """One training step's per-term losses, and the gradients of the loss and of each term separately on every
    trainable parameter, equal the reference to 1e-6 (gradients: relative to the largest one where it is > 1)."""
    from siamdiff.model.siamese import STEPS

    unet, controlnet = tiny_models(seed=1)
    sched = make_train_scheduler()
    batch = tiny_batch(t=(3, 150, 700, 200), seed=2)
    abar = torch.cumprod(1 - torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2, 0)
    torch.testing.assert_close(sched.alphas_cumprod.double(), abar, atol=1e-6, rtol=0)  # the same schedule
    cfg, total = StepConfig(lambda_c=lambda_c), 30
    ref_loss, ref_terms = _reference_step(unet, controlnet, batch, step, total, lambda_c)
    out = STEPS[impl](unet, controlnet, sched, batch, step, total, cfg)
    torch.testing.assert_close(out.loss, ref_loss, atol=1e-6, rtol=1e-6)
    assert out.terms.keys() == ref_terms.keys()
    for k in ref_terms:
        torch.testing.assert_close(out.terms[k], ref_terms[k], atol=1e-6, rtol=1e-6, msg=lambda m: f"{k}: {m}")
    late = step > total / 3
    assert bool((ref_terms["online_augmentation"] > 0).any()) == late

    params = [p for g in trainable_parameters(controlnet, unet).values() for p in g]
    scalars = {"loss": (out.loss, ref_loss), **{k: (out.terms[k].mean(), ref_terms[k].mean()) for k in ref_terms
                                                 if late or k != "online_augmentation"}}
    for name, (got_scalar, ref_scalar) in scalars.items():
        got, ref = _grads(params, got_scalar), _grads(params, ref_scalar)
        scale = max(float(g.abs().max()) for g in ref)
        assert scale > 0, name
        for i, (x, y) in enumerate(zip(got, ref)):
            torch.testing.assert_close(x, y, atol=1e-6 * max(1.0, scale), rtol=1e-6,
                                       msg=lambda m: f"gradient of {name}, parameter {i}: {m}")
