"""Siamese-Diffusion: the two branches and the four loss terms (DESIGN.md section 1).

Notation as in DESIGN.md: `U` the denoising UNet (time embedding, conv_in, encoder and middle block frozen;
decoder trainable), `C` the SiameseControlNet (one set of weights for both branches), `m` the binary mask
repeated to 3 channels, `x~` the image in [0, 1] (3 channels, no mask), `s` / `S` the optimizer step / total.

    r_m  = C(z_t, t, c, m);                  eps_m   = U(z_t, t, c, r_m)           Mask-Diffusion
    r_i  = C(z_t, t, c, x~);  r_mix = sg(r_m) + (s/S) r_i;
                                              eps_mix = U_sg(z_t, t, c, r_mix)      Image-Diffusion
    L0 = ||eps_m - eps||^2     L1 = ||eps_mix - eps||^2     L2 = ||eps_m - sg(eps_mix)||^2
    L3 (s > S/3, per sample t <= 200):
        x0_hat = (z_t - sqrt(1-abar_t) eps_mix) / sqrt(abar_t);  z'_t = sg(sqrt(abar_t) x0_hat + sqrt(1-abar_t) eps)
        L3 = ||U(z'_t, t, c, C(z'_t, t, c, m)) - eps||^2
    loss = batch mean of (L0 + L1 + lambda_c L2 + L3)         (released: lambda_c = 1)

`U_sg` is `U` with its parameters detached: gradients reach `r_i` through U's activations, never U's weights.

Two implementations of one step, equal to 1e-5 in losses and gradients (tests/test_siamese_fused.py):
- `naive_step`: a transcription of the authors' released code structure (ControlLDM.apply_model/p_losses):
  deep copies of U and C at every step, the mask ControlNet recomputed under no_grad inside the image branch,
  full UNet passes for each branch, L3 computed for the whole batch and weighted by the t-gate.
- `fused_step`: no copies; the frozen part of U (time embedding, conv_in, encoder, middle block) runs once per
  distinct input and is shared by both branches (ControlNet residuals only enter at the skip connections and
  the middle block's output); r_m is reused; the DHI and the ControlNet run once on the batch [m; x~]; the
  mask hint embedding is reused by L3; L3 only runs on the samples whose gate is open; the two trainable
  decoder passes (Mask-Diffusion and L3) are batched; U_sg is `torch.func.functional_call` with detached
  decoder parameters.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from siamdiff.model.controlnet import controlnet_residuals, run_encoder
from siamdiff.train.schedules import augmentation_active, image_weight

LOSS_MODES = ("siamese", "mask-only")
TERMS = ("mask_diffusion", "image_diffusion", "noise_consistency", "online_augmentation")  # L0, L1, L2, L3


@dataclass(frozen=True)
class StepConfig:
    loss: str = "siamese"          # siamese (L0-L3) | mask-only (L0 only)
    lambda_c: float = 1.0          # weight of L2 at this step (annealing is the caller's: schedules.lambda_c)
    augment_t_max: int = 200       # L3 only for samples with t <= augment_t_max ...
    augment_after: float = 1 / 3   # ... and only once s > augment_after * S

    def __post_init__(self):
        if self.loss not in LOSS_MODES:
            raise ValueError(f"train.loss must be one of {LOSS_MODES}, got {self.loss!r}")


@dataclass
class SiameseBatch:
    z0: torch.Tensor        # [B, C, h, w] latents (scaled by the autoencoder's scaling factor)
    noise: torch.Tensor     # [B, C, h, w] eps ~ N(0, I)
    t: torch.Tensor         # [B] int64 in {0..T-1}
    text_emb: torch.Tensor  # [B, L, D] (prompt already dropped to "" where drawn)
    mask: torch.Tensor      # [B, 1, S, S] float in {0, 1}
    image: torch.Tensor     # [B, 3, S, S] x~ in [0, 1]: three channels, no mask

    def shard(self, rank: int, world: int) -> "SiameseBatch":
        """This process's contiguous slice of a global batch (data parallel)."""
        if world == 1:
            return self
        n = self.z0.shape[0] // world
        return SiameseBatch(*(getattr(self, f)[rank * n:(rank + 1) * n] for f in
                              ("z0", "noise", "t", "text_emb", "mask", "image")))


@dataclass
class StepOutput:
    loss: torch.Tensor                          # scalar, with graph
    terms: dict[str, torch.Tensor]              # per-sample L0..L3 [B], with graph
    eps_m: torch.Tensor
    eps_mix: torch.Tensor | None = None
    eps_aug: torch.Tensor | None = None         # [B, ...] (rows whose gate is closed hold eps itself)
    augment_weight: torch.Tensor | None = None  # [B] 0/1 gate of L3


# ----------------------------------------------------------------------------------------------------------
# The loss terms, one function (DESIGN.md section 1, line by line)

def per_sample_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||a - b||^2 per sample: mean over C, H, W."""
    return (a.float() - b.float()).pow(2).flatten(1).mean(1)


def siamese_loss_terms(eps: torch.Tensor, eps_m: torch.Tensor, eps_mix: torch.Tensor | None = None,
                       eps_aug: torch.Tensor | None = None, augment_weight: torch.Tensor | None = None,
                       lambda_c: float = 1.0, loss: str = "siamese") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Return (batch-mean loss, per-sample terms). `loss="mask-only"` keeps L0 alone."""
    zeros = torch.zeros(eps.shape[0], device=eps.device)
    mask_diffusion = per_sample_mse(eps_m, eps)                                  # L0 = ||eps_m - eps||^2
    if loss == "mask-only":
        terms = {"mask_diffusion": mask_diffusion, "image_diffusion": zeros,
                 "noise_consistency": zeros, "online_augmentation": zeros}
        return mask_diffusion.mean(), terms
    image_diffusion = per_sample_mse(eps_mix, eps)                               # L1 = ||eps_mix - eps||^2
    noise_consistency = per_sample_mse(eps_m, eps_mix.detach())                  # L2 = ||eps_m - sg(eps_mix)||^2
    if eps_aug is None:
        online_augmentation = zeros                                              # L3 gate closed (s <= S/3)
    else:
        online_augmentation = augment_weight * per_sample_mse(eps_aug, eps)      # L3, only where t <= 200
    total = mask_diffusion + image_diffusion + lambda_c * noise_consistency + online_augmentation
    terms = {"mask_diffusion": mask_diffusion, "image_diffusion": image_diffusion,
             "noise_consistency": noise_consistency, "online_augmentation": online_augmentation}
    return total.mean(), terms


# ----------------------------------------------------------------------------------------------------------
# Frozen / trainable parts

def unet_frozen_modules(unet) -> list[nn.Module]:
    """Time embedding, conv_in, encoder (down blocks) and middle block (+ any class/addition embeddings)."""
    mods = [unet.time_proj, unet.time_embedding, unet.conv_in, unet.down_blocks, unet.mid_block]
    for name in ("class_embedding", "add_embedding", "encoder_hid_proj", "time_embed_act"):
        if getattr(unet, name, None) is not None:
            mods.append(getattr(unet, name))
    return mods


def unet_decoder_modules(unet) -> list[nn.Module]:
    """Up blocks + output norm/conv: the trainable part of U."""
    return [m for m in (unet.up_blocks, unet.conv_norm_out, unet.conv_out) if m is not None]


def freeze_unet_encoder(unet) -> None:
    """Freeze U's time embedding, encoder and middle block; make its decoder trainable."""
    unet.requires_grad_(False)
    for m in unet_decoder_modules(unet):
        m.requires_grad_(True)


def trainable_parameters(controlnet, unet) -> dict[str, list[nn.Parameter]]:
    """AdamW groups: `from_scratch` (the DHI and the ControlNet's zero-initialised output convs),
    `controlnet` (its copy of U's encoder + middle block), `unet_decoder` (U's up blocks + output layers)."""
    scratch = [*controlnet.controlnet_cond_embedding.parameters(), *controlnet.controlnet_down_blocks.parameters(),
               *controlnet.controlnet_mid_block.parameters()]
    scratch_ids = {id(p) for p in scratch}
    return {
        "from_scratch": scratch,
        "controlnet": [p for p in controlnet.parameters() if id(p) not in scratch_ids],
        "unet_decoder": [p for m in unet_decoder_modules(unet) for p in m.parameters()],
    }


# ----------------------------------------------------------------------------------------------------------
# Noise helpers

def add_noise(scheduler, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """z_t = sqrt(abar_t) z0 + sqrt(1 - abar_t) eps (the scheduler's own add_noise)."""
    return scheduler.add_noise(z0, noise, t)


def predict_x0(scheduler, z_t: torch.Tensor, eps_pred: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x0_hat = (z_t - sqrt(1 - abar_t) eps_pred) / sqrt(abar_t)."""
    abar = scheduler.alphas_cumprod.to(device=z_t.device, dtype=z_t.dtype)[t].view(-1, 1, 1, 1)
    return (z_t - (1 - abar).sqrt() * eps_pred) / abar.sqrt()


def augment_weight(t: torch.Tensor, step: int, total_steps: int, cfg: StepConfig) -> torch.Tensor:
    """L3's per-sample gate: 1 where s > S/3 and t <= 200, else 0."""
    if cfg.loss != "siamese" or not augmentation_active(step, total_steps, cfg.augment_after):
        return torch.zeros(t.shape[0], device=t.device)
    return (t <= cfg.augment_t_max).float()


# ----------------------------------------------------------------------------------------------------------
# U split at the ControlNet seam: frozen part once, decoder per branch

@dataclass
class UNetEncoding:
    emb: torch.Tensor
    skips: tuple[torch.Tensor, ...]
    mid: torch.Tensor
    text_emb: torch.Tensor
    upsample_size_needed: bool

    @staticmethod
    def cat(encodings: list["UNetEncoding"]) -> "UNetEncoding":
        if len(encodings) == 1:
            return encodings[0]
        return UNetEncoding(
            emb=torch.cat([e.emb for e in encodings]),
            skips=tuple(torch.cat(s) for s in zip(*[e.skips for e in encodings])),
            mid=torch.cat([e.mid for e in encodings]),
            text_emb=torch.cat([e.text_emb for e in encodings]),
            upsample_size_needed=encodings[0].upsample_size_needed)


def unet_encode(unet, z_t: torch.Tensor, t: torch.Tensor, text_emb: torch.Tensor) -> UNetEncoding:
    """The frozen part of `UNet2DConditionModel.forward`: time embedding, conv_in, down blocks, mid block."""
    if unet.config.class_embed_type is not None or unet.config.addition_embed_type is not None:
        raise ValueError("unet_encode: class/addition embeddings are not supported")
    up_factor = 2**unet.num_upsamplers
    upsample_size_needed = any(d % up_factor for d in z_t.shape[-2:])
    if unet.config.center_input_sample:
        z_t = 2 * z_t - 1.0
    emb = unet.time_embedding(unet.get_time_embed(sample=z_t, timestep=t), None)
    if unet.time_embed_act is not None:
        emb = unet.time_embed_act(emb)
    text_emb = unet.process_encoder_hidden_states(encoder_hidden_states=text_emb, added_cond_kwargs=None)
    skips, sample = run_encoder(unet.down_blocks, unet.mid_block, unet.conv_in(z_t), emb, text_emb)
    return UNetEncoding(emb, skips, sample, text_emb, upsample_size_needed)


def unet_decode(unet, enc: UNetEncoding, down_residuals=None, mid_residual=None) -> torch.Tensor:
    """The trainable part of `UNet2DConditionModel.forward`, with ControlNet residuals added to the skips and
    to the middle block's output exactly as diffusers does."""
    skips = enc.skips
    sample = enc.mid
    if down_residuals is not None:
        skips = tuple(h + r for h, r in zip(skips, down_residuals))
        sample = sample + mid_residual
    upsample_size = None
    for i, block in enumerate(unet.up_blocks):
        is_final = i == len(unet.up_blocks) - 1
        res = skips[-len(block.resnets):]
        skips = skips[:-len(block.resnets)]
        if not is_final and enc.upsample_size_needed:
            upsample_size = skips[-1].shape[2:]
        if getattr(block, "has_cross_attention", False):
            sample = block(hidden_states=sample, temb=enc.emb, res_hidden_states_tuple=res,
                           encoder_hidden_states=enc.text_emb, upsample_size=upsample_size)
        else:
            sample = block(hidden_states=sample, temb=enc.emb, res_hidden_states_tuple=res,
                           upsample_size=upsample_size)
    if unet.conv_norm_out is not None:
        sample = unet.conv_act(unet.conv_norm_out(sample))
    return unet.conv_out(sample)


class _Decoder(nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, enc, down_residuals, mid_residual):
        return unet_decode(self.unet, enc, down_residuals, mid_residual)


def unet_decode_sg(unet, enc: UNetEncoding, down_residuals, mid_residual) -> torch.Tensor:
    """U_sg: the decoder with its parameters detached (gradients flow through activations only)."""
    detached = {f"unet.{n}": p.detach() for n, p in unet.named_parameters()
                if n.startswith(("up_blocks.", "conv_norm_out.", "conv_out."))}
    return functional_call(_Decoder(unet), detached, (enc, down_residuals, mid_residual))


# ----------------------------------------------------------------------------------------------------------
# The fused step (used for training)

def _split(xs, n):
    return [x[:n] for x in xs], [x[n:] for x in xs]


def fused_step(unet, controlnet, scheduler, batch: SiameseBatch, step: int, total_steps: int,
               cfg: StepConfig = StepConfig()) -> StepOutput:
    b = batch.z0.shape[0]
    eps, t, c = batch.noise, batch.t, batch.text_emb
    z_t = add_noise(scheduler, batch.z0, eps, t)
    hint_m_input = batch.mask.expand(-1, 3, -1, -1)  # m repeated to three channels
    with torch.no_grad():
        enc = unet_encode(unet, z_t, t, c)  # frozen: shared by both branches

    if cfg.loss == "mask-only":
        r_m = controlnet_residuals(controlnet, z_t, t, c, controlnet.controlnet_cond_embedding(hint_m_input))
        eps_m = unet_decode(unet, enc, *r_m)
        loss, terms = siamese_loss_terms(eps, eps_m, loss="mask-only")
        return StepOutput(loss, terms, eps_m)

    # C on [m; x~] in one batch: r_m and r_i
    hint_emb = controlnet.controlnet_cond_embedding(torch.cat([hint_m_input, batch.image]))
    down, mid = controlnet_residuals(controlnet, torch.cat([z_t, z_t]), torch.cat([t, t]), torch.cat([c, c]),
                                     hint_emb)
    (down_m, down_i), (mid_m, mid_i) = _split(down, b), _split([mid], b)
    mid_m, mid_i = mid_m[0], mid_i[0]

    # Image-Diffusion: r_mix = sg(r_m) + (s/S) r_i through U_sg
    w = image_weight(step, total_steps)
    down_mix = [rm.detach() + w * ri for rm, ri in zip(down_m, down_i)]
    mid_mix = mid_m.detach() + w * mid_i
    eps_mix = unet_decode_sg(unet, enc, down_mix, mid_mix)

    # L3 inputs, only for the samples whose gate is open
    gate = augment_weight(t, step, total_steps, cfg)
    idx = gate.nonzero().flatten()
    if len(idx):
        with torch.no_grad():
            x0_hat = predict_x0(scheduler, z_t[idx], eps_mix[idx], t[idx])
            z_aug = add_noise(scheduler, x0_hat, eps[idx], t[idx])  # z'_t = sg(...)
            enc_aug = unet_encode(unet, z_aug, t[idx], c[idx])
        down_a, mid_a = controlnet_residuals(controlnet, z_aug, t[idx], c[idx], hint_emb[:b][idx])
        # Mask-Diffusion and L3 decoders batched (both with U's trainable weights)
        eps_both = unet_decode(unet, UNetEncoding.cat([enc, enc_aug]),
                               [torch.cat([x, y]) for x, y in zip(down_m, down_a)], torch.cat([mid_m, mid_a]))
        eps_m, eps_aug_open = eps_both[:b], eps_both[b:]
        eps_aug = eps.clone()
        eps_aug[idx] = eps_aug_open.to(eps_aug.dtype)
    else:
        eps_m = unet_decode(unet, enc, down_m, mid_m)
        eps_aug = None
    loss, terms = siamese_loss_terms(eps, eps_m, eps_mix, eps_aug, gate, cfg.lambda_c)
    return StepOutput(loss, terms, eps_m, eps_mix, eps_aug, gate)


# ----------------------------------------------------------------------------------------------------------
# The naive reference step: the released code's structure, transcribed

def naive_step(unet, controlnet, scheduler, batch: SiameseBatch, step: int, total_steps: int,
               cfg: StepConfig = StepConfig()) -> StepOutput:
    eps, t, c = batch.noise, batch.t, batch.text_emb
    z_t = add_noise(scheduler, batch.z0, eps, t)
    hint_mask = batch.mask.repeat(1, 3, 1, 1)
    hint_image = batch.image

    # apply_model(x_noisy, t, cond_mask)
    down_m, mid_m = controlnet(z_t, t, c, controlnet_cond=hint_mask, return_dict=False)
    eps_m = unet(z_t, t, c, down_block_additional_residuals=down_m, mid_block_additional_residual=mid_m).sample
    if cfg.loss == "mask-only":
        loss, terms = siamese_loss_terms(eps, eps_m, loss="mask-only")
        return StepOutput(loss, terms, eps_m)

    # apply_model(x_noisy, t, cond_image): copies of C (frozen) and U made at every step
    controlnet_mask = copy.deepcopy(controlnet).requires_grad_(False)
    unet_image = copy.deepcopy(unet)
    control_weights_mask = 1.0
    control_weights_image = 1.0 * step / total_steps
    down_i, mid_i = controlnet(z_t, t, c, controlnet_cond=hint_image, return_dict=False)
    with torch.no_grad():
        down_m2, mid_m2 = controlnet_mask(z_t, t, c, controlnet_cond=hint_mask, return_dict=False)
    down_mix = [control_weights_mask * a.detach() + control_weights_image * b for a, b in zip(down_m2, down_i)]
    mid_mix = control_weights_mask * mid_m2.detach() + control_weights_image * mid_i
    eps_mix = unet_image(z_t, t, c, down_block_additional_residuals=down_mix,
                         mid_block_additional_residual=mid_mix).sample

    # L3: whole batch, weighted by the t-gate, once s > S/3
    gate = augment_weight(t, step, total_steps, cfg)
    eps_aug = None
    if augmentation_active(step, total_steps, cfg.augment_after) and bool(gate.any()):
        x0_hat = predict_x0(scheduler, z_t, eps_mix, t)
        z_aug = add_noise(scheduler, x0_hat, eps, t)
        down_a, mid_a = controlnet(z_aug.detach(), t, c, controlnet_cond=hint_mask, return_dict=False)
        eps_aug = unet(z_aug.detach(), t, c, down_block_additional_residuals=down_a,
                       mid_block_additional_residual=mid_a).sample
    loss, terms = siamese_loss_terms(eps, eps_m, eps_mix, eps_aug, gate, cfg.lambda_c)
    return StepOutput(loss, terms, eps_m, eps_mix, eps_aug, gate)


STEPS = {"fused": fused_step, "naive": naive_step}
