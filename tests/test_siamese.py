"""The method itself (DESIGN.md section 1): branches, gates and the four loss terms, on tiny random models."""
from __future__ import annotations

import pytest
import torch

from siamdiff.model.controlnet import SiameseControlNet, controlnet_residuals
from siamdiff.model.schedule import make_train_scheduler
from siamdiff.model.siamese import (
    STEPS,
    SiameseBatch,
    StepConfig,
    freeze_unet_encoder,
    fused_step,
    siamese_loss_terms,
    trainable_parameters,
    unet_frozen_modules,
)

LATENT, FACTOR = 4, 4
SIZE = LATENT * FACTOR




def tiny_unet(seed: int = 0, cross_dim: int = 16):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=LATENT, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_dim, attention_head_dim=4, norm_num_groups=8)


def tiny_models(seed: int = 0, nonzero: bool = True):
    """(unet with frozen encoder, SiameseControlNet from it). `nonzero`: randomise the zero-initialised
    output convs so every residual matters (as after some training)."""
    unet = tiny_unet(seed)
    controlnet = SiameseControlNet.from_unet(unet, downsample_factor=FACTOR)
    if nonzero:
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, p in controlnet.named_parameters():
                if "controlnet_down_blocks" in name or "controlnet_mid_block" in name or "zero_conv" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    freeze_unet_encoder(unet)
    return unet, controlnet


def tiny_batch(b: int = 4, t=(5, 150, 600, 999), seed: int = 0, cross_dim: int = 16) -> SiameseBatch:
    g = torch.Generator().manual_seed(seed)
    return SiameseBatch(
        z0=torch.randn(b, 4, LATENT, LATENT, generator=g), noise=torch.randn(b, 4, LATENT, LATENT, generator=g),
        t=torch.tensor(t[:b]), text_emb=torch.randn(b, 5, cross_dim, generator=g),
        mask=(torch.rand(b, 1, SIZE, SIZE, generator=g) > 0.6).float(), image=torch.rand(b, 3, SIZE, SIZE, generator=g))


@pytest.fixture(scope="module")
def models():
    return tiny_models()


@pytest.fixture(scope="module")
def sched():
    return make_train_scheduler()


def _zero_grads(*modules):
    for m in modules:
        for p in m.parameters():
            p.grad = None


@pytest.mark.parametrize("impl", ["fused", "naive"])
def test_eps_mix_equals_eps_m_at_step_zero(models, sched, impl):
    unet, controlnet = models
    out = STEPS[impl](unet, controlnet, sched, tiny_batch(), 0, 30)
    assert torch.equal(out.eps_mix, out.eps_m) or torch.allclose(out.eps_mix, out.eps_m, atol=1e-6, rtol=0)
    assert float(out.terms["noise_consistency"].detach().abs().max()) < 1e-10


@pytest.mark.parametrize("impl", ["fused", "naive"])
def test_image_loss_sends_no_gradient_into_unet(models, sched, impl):
    unet, controlnet = models
    _zero_grads(unet, controlnet)
    out = STEPS[impl](unet, controlnet, sched, tiny_batch(), 20, 30)  # late: L3 active as well
    out.terms["image_diffusion"].mean().backward()
    assert all(p.grad is None or not p.grad.any() for p in unet.parameters()), "L1 reached U's weights"
    hint_grads = [p.grad for p in controlnet.controlnet_cond_embedding.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in hint_grads), "L1 must train C (through r_i)"
    # whereas L0 does train U's decoder
    _zero_grads(unet, controlnet)
    STEPS[impl](unet, controlnet, sched, tiny_batch(), 20, 30).terms["mask_diffusion"].mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in unet.up_blocks.parameters())
    _zero_grads(unet, controlnet)


@pytest.mark.parametrize("impl", ["fused", "naive"])
def test_noise_consistency_sends_no_gradient_through_eps_mix(models, sched, impl):
    unet, controlnet = models
    batch = tiny_batch()
    batch.image.requires_grad_(True)  # x~ only reaches the loss through eps_mix
    out = STEPS[impl](unet, controlnet, sched, batch, 15, 30)
    (g_l2,) = torch.autograd.grad(out.terms["noise_consistency"].sum(), batch.image, retain_graph=True,
                                  allow_unused=True)
    (g_l1,) = torch.autograd.grad(out.terms["image_diffusion"].sum(), batch.image, allow_unused=True)
    assert g_l2 is None or not g_l2.any()
    assert g_l1 is not None and g_l1.abs().sum() > 0
    # L2 does train the mask branch
    _zero_grads(unet, controlnet)
    out = STEPS[impl](unet, controlnet, sched, tiny_batch(), 15, 30)
    out.terms["noise_consistency"].mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in controlnet.parameters())
    _zero_grads(unet, controlnet)


@pytest.mark.parametrize("impl", ["fused", "naive"])
def test_online_augmentation_gates(models, sched, impl):
    unet, controlnet = models
    batch = tiny_batch(t=(5, 200, 201, 999))
    total = 30
    for step in (0, 5, 10):  # s <= S/3: L3 exactly zero for every sample
        out = STEPS[impl](unet, controlnet, sched, batch, step, total)
        assert torch.equal(out.terms["online_augmentation"], torch.zeros(4))
    out = STEPS[impl](unet, controlnet, sched, batch, 11, total)  # s > S/3
    l3 = out.terms["online_augmentation"]
    assert l3[0] > 0 and l3[1] > 0  # t <= 200
    assert l3[2] == 0 and l3[3] == 0  # t > 200: exactly zero
    assert torch.equal(out.augment_weight, torch.tensor([1.0, 1.0, 0.0, 0.0]))


def test_online_augmentation_uses_eps_mix_and_same_noise(models, sched):
    """z'_t = sg(sqrt(abar) x0_hat + sqrt(1-abar) eps), x0_hat from eps_mix; L3 = ||U(z'_t, C(z'_t, m)) - eps||^2."""
    unet, controlnet = models
    batch = tiny_batch(t=(5, 100, 150, 200))
    out = fused_step(unet, controlnet, sched, batch, 25, 30)
    with torch.no_grad():
        abar = sched.alphas_cumprod[batch.t].view(-1, 1, 1, 1)
        z_t = abar.sqrt() * batch.z0 + (1 - abar).sqrt() * batch.noise
        x0_hat = (z_t - (1 - abar).sqrt() * out.eps_mix) / abar.sqrt()
        z_aug = abar.sqrt() * x0_hat + (1 - abar).sqrt() * batch.noise
        down, mid = controlnet(z_aug, batch.t, batch.text_emb, controlnet_cond=batch.mask.repeat(1, 3, 1, 1),
                               return_dict=False)
        eps_aug = unet(z_aug, batch.t, batch.text_emb, down_block_additional_residuals=down,
                       mid_block_additional_residual=mid).sample
        l3 = (eps_aug - batch.noise).pow(2).mean((1, 2, 3))
    torch.testing.assert_close(out.terms["online_augmentation"].detach(), l3, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("impl", ["fused", "naive"])
@pytest.mark.parametrize("step", [7, 29])
def test_image_term_ramps_as_s_over_S(models, sched, impl, step):
    unet, controlnet = models
    batch = tiny_batch()
    out = STEPS[impl](unet, controlnet, sched, batch, step, 30)
    with torch.no_grad():
        z_t = sched.add_noise(batch.z0, batch.noise, batch.t)
        dm, mm = controlnet(z_t, batch.t, batch.text_emb, controlnet_cond=batch.mask.repeat(1, 3, 1, 1), return_dict=False)
        di, mi = controlnet(z_t, batch.t, batch.text_emb, controlnet_cond=batch.image, return_dict=False)
        w = step / 30
        eps_mix = unet(z_t, batch.t, batch.text_emb, down_block_additional_residuals=[a + w * b for a, b in zip(dm, di)],
                       mid_block_additional_residual=mm + w * mi).sample
    torch.testing.assert_close(out.eps_mix.detach(), eps_mix, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("impl", ["fused", "naive"])
def test_image_branch_sees_three_channel_image_only(models, sched, impl):
    unet, controlnet = models
    batch = tiny_batch()
    seen = []
    handle = controlnet.controlnet_cond_embedding.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    try:
        STEPS[impl](unet, controlnet, sched, batch, 10, 30)
    finally:
        handle.remove()
    inputs = torch.cat(seen)
    assert inputs.shape[1] == 3  # never a 4th (mask) channel
    mask3 = batch.mask.repeat(1, 3, 1, 1)
    image_rows = [x for x in inputs if any(torch.equal(x, y) for y in batch.image)]
    mask_rows = [x for x in inputs if any(torch.equal(x, y) for y in mask3)]
    assert len(image_rows) == 4 and len(mask_rows) + len(image_rows) == len(inputs)
    # and changing the mask does not change the image branch's residuals r_i
    with torch.no_grad():
        z = torch.randn(4, 4, LATENT, LATENT)
        emb = controlnet.controlnet_cond_embedding(batch.image)
        r1 = controlnet_residuals(controlnet, z, batch.t, batch.text_emb, emb)
        assert emb.shape[1] == controlnet.config.block_out_channels[0]
        assert all(torch.equal(a, b) for a, b in zip(r1[0], controlnet_residuals(controlnet, z, batch.t, batch.text_emb, emb)[0]))


@pytest.mark.parametrize("impl", ["fused", "naive"])
def test_mask_only_loss_is_l0(models, sched, impl):
    unet, controlnet = models
    batch = tiny_batch()
    calls = []
    handle = controlnet.controlnet_cond_embedding.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape))
    try:
        out = STEPS[impl](unet, controlnet, sched, batch, 25, 30, StepConfig(loss="mask-only"))
    finally:
        handle.remove()
    assert calls == [(4, 3, SIZE, SIZE)]  # the image branch is never run
    torch.testing.assert_close(out.loss, out.terms["mask_diffusion"].mean())
    for k in ("image_diffusion", "noise_consistency", "online_augmentation"):
        assert not out.terms[k].any()


def test_loss_terms_match_equations():
    g = torch.Generator().manual_seed(3)
    eps, eps_m, eps_mix, eps_aug = (torch.randn(3, 4, 2, 2, generator=g) for _ in range(4))
    gate = torch.tensor([1.0, 0.0, 1.0])
    loss, terms = siamese_loss_terms(eps, eps_m, eps_mix, eps_aug, gate, lambda_c=0.5)
    mse = lambda a, b: ((a - b) ** 2).mean((1, 2, 3))  # noqa: E731
    torch.testing.assert_close(terms["mask_diffusion"], mse(eps_m, eps))
    torch.testing.assert_close(terms["image_diffusion"], mse(eps_mix, eps))
    torch.testing.assert_close(terms["noise_consistency"], mse(eps_m, eps_mix))
    torch.testing.assert_close(terms["online_augmentation"], gate * mse(eps_aug, eps))
    torch.testing.assert_close(loss, (mse(eps_m, eps) + mse(eps_mix, eps) + 0.5 * mse(eps_m, eps_mix)
                                      + gate * mse(eps_aug, eps)).mean())


def test_frozen_and_trainable_parts():
    unet, controlnet = tiny_models()
    groups = trainable_parameters(controlnet, unet)
    frozen = {id(p) for m in unet_frozen_modules(unet) for p in m.parameters()}
    assert frozen and not any(p.requires_grad for m in unet_frozen_modules(unet) for p in m.parameters())
    decoder = groups["unet_decoder"]
    assert decoder and all(p.requires_grad for p in decoder) and not any(id(p) in frozen for p in decoder)
    n_unet = sum(1 for _ in unet.parameters())
    assert len(frozen) + len(decoder) == n_unet  # every UNet parameter is either frozen or decoder
    assert len(groups["from_scratch"]) + len(groups["controlnet"]) == sum(1 for _ in controlnet.parameters())


# ----------------------------------------------------------------------------------------------------------
# The two stop-gradients whose removal no other test sees (issue 17, item 2)

@pytest.mark.parametrize("impl", ["fused", "naive"])
@pytest.mark.parametrize("step", [9, 25])  # L3 off / on
def test_image_branch_mix_stops_the_gradient_of_r_m(models, sched, impl, step):
    """r_mix = sg(r_m) + (s/S) r_i: the image-branch term L1 reaches the mask only through r_m, so a mask that
    requires grad gets none from L1; it does get one from L0 (positive control). Dropping the sg fails here."""
    unet, controlnet = models
    batch = tiny_batch()
    batch.mask.requires_grad_(True)
    out = STEPS[impl](unet, controlnet, sched, batch, step, 30)
    (g_l1,) = torch.autograd.grad(out.terms["image_diffusion"].sum(), batch.mask, retain_graph=True,
                                  allow_unused=True)
    (g_l0,) = torch.autograd.grad(out.terms["mask_diffusion"].sum(), batch.mask, allow_unused=True)
    assert g_l1 is None or not g_l1.any(), "L1 sent a gradient into r_m (the mask residuals in r_mix need sg)"
    assert g_l0 is not None and g_l0.abs().sum() > 0
    # and, on the weights: L1's gradient on C equals that of r_i's path alone (image weight w = s/S), i.e.
    # it vanishes at s = 0 where r_mix = sg(r_m)
    _zero_grads(unet, controlnet)
    out = STEPS[impl](unet, controlnet, sched, tiny_batch(), 0, 30)
    out.terms["image_diffusion"].mean().backward()
    assert all(p.grad is None or not p.grad.any() for p in controlnet.parameters()), "L1 trained C through r_m"
    _zero_grads(unet, controlnet)


@pytest.mark.parametrize("impl", ["fused", "naive"])
def test_online_augmentation_detaches_the_renoised_latent(models, sched, impl):
    """z'_t = sg(sqrt(abar) x0_hat + sqrt(1-abar) eps): x~ reaches L3 only through eps_mix -> x0_hat -> z'_t,
    so L3 sends no gradient into x~ (while L1 does), and L3's gradient on C is that of the mask path alone."""
    unet, controlnet = models
    batch = tiny_batch(t=(5, 100, 150, 200))  # every gate open
    batch.image.requires_grad_(True)
    out = STEPS[impl](unet, controlnet, sched, batch, 25, 30)
    assert bool(out.augment_weight.all()) and bool((out.terms["online_augmentation"] > 0).all())
    (g_l3,) = torch.autograd.grad(out.terms["online_augmentation"].sum(), batch.image, retain_graph=True,
                                  allow_unused=True)
    (g_l1,) = torch.autograd.grad(out.terms["image_diffusion"].sum(), batch.image, allow_unused=True)
    assert g_l3 is None or not g_l3.any(), "L3 sent a gradient through z'_t into eps_mix (z'_t needs sg)"
    assert g_l1 is not None and g_l1.abs().sum() > 0
