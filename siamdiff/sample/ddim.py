"""DDIM generation from masks: Mask-Diffusion only (DESIGN.md section 1, "Sampling").

    DDIM (diffusers DDIMScheduler on the training betas), eta 0, classifier-free guidance `w`:
        eps = eps(z_t, t, "", m) + w * (eps(z_t, t, prompt, m) - eps(z_t, t, "", m))
    The unconditional pass uses the empty prompt and the SAME mask.

`sample_from_masks` runs the one sampling loop, `SiameseDiffusionPipeline.__call__` (siamdiff/sample/pipeline.py),
on a saved pipeline or on loaded parts (training previews). Two things make it fast without changing a number:
- the hint encoder (DHI) depends only on the mask, so its output is computed once per image, not per step;
- the unconditional and conditional halves run as one batch through the ControlNet and the UNet.

Each image has its own `torch.Generator` seeded with its own seed, and nothing in the networks mixes
samples, so an image does not depend on which other images share its batch.

`sample_from_masks_naive` is the literal reference (hint each step, two separate passes); it exists for the
equivalence test and `bench/bench_sampling.py`.
"""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["sample_from_masks", "sample_from_masks_naive", "initial_noise", "latent_shape"]


def latent_shape(gen, size: int | None = None) -> tuple[int, int, int]:
    """(channels, h, w) of the generator's latents for square images of side `size` (default: gen.size)."""
    size = int(size or gen.size)
    factor = 2 ** (len(gen.vae.config.block_out_channels) - 1)
    if size % factor:
        raise ValueError(f"image size {size} is not divisible by the autoencoder's downsampling factor {factor}")
    return int(gen.unet.config.in_channels), size // factor, size // factor


def initial_noise(seeds: Sequence[int], shape: tuple[int, int, int], dtype=torch.float32) -> torch.Tensor:
    """z_T for each image from its own seed: `[B, C, h, w]`, independent of batch composition."""
    out = []
    for s in seeds:
        g = torch.Generator(device="cpu").manual_seed(int(s))
        out.append(torch.randn(shape, generator=g, dtype=torch.float32))
    return torch.stack(out).to(dtype)


def _scheduler(gen, steps: int):
    from siamdiff.model.schedule import make_sampling_scheduler

    sched = make_sampling_scheduler(gen.scheduler.config)
    sched.set_timesteps(int(steps))
    return sched


def _text(gen, prompt: str, batch: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    from siamdiff.model.text import encode_prompts

    emb = encode_prompts(gen.tokenizer, gen.text_encoder, ["", prompt]).to(device)
    uncond, cond = emb[:1], emb[1:2]
    return uncond.expand(batch, -1, -1), cond.expand(batch, -1, -1)


def _check(masks: torch.Tensor, seeds: Sequence[int]) -> None:
    if masks.ndim != 4 or masks.shape[1] != 1:
        raise ValueError(f"masks must be [B, 1, S, S], got {tuple(masks.shape)}")
    if len(seeds) != masks.shape[0]:
        raise ValueError(f"{len(seeds)} seeds for {masks.shape[0]} masks")


def _prepare(gen, masks: torch.Tensor, seeds: Sequence[int]):
    _check(masks, seeds)
    device = next(gen.unet.parameters()).device
    dtype = next(gen.unet.parameters()).dtype
    mask3 = (masks > 0.5).to(device=device, dtype=dtype).repeat(1, 3, 1, 1)  # DHI input: [B,3,S,S] in {0,1}
    latents = initial_noise(seeds, latent_shape(gen, masks.shape[-1]), dtype).to(device)
    return device, dtype, mask3, latents


def _decode(gen, latents: torch.Tensor, output: str = "rgb") -> torch.Tensor:
    x = gen.vae.decode(latents / gen.vae.config.scaling_factor).sample
    x = x.float().clamp(-1.0, 1.0).cpu()
    if output == "working":
        return x
    if output != "rgb":
        raise ValueError(f"output must be 'rgb' or 'working', got {output!r}")
    from siamdiff.data.color import from_working

    return from_working(x, gen.color_stats)


def _eps(gen, z, t, text_emb, hint_embedding):
    from siamdiff.model.controlnet import controlnet_residuals

    down, mid = controlnet_residuals(gen.controlnet, z, t, text_emb, hint_embedding)
    return gen.unet(z, t, encoder_hidden_states=text_emb, down_block_additional_residuals=down,
                    mid_block_additional_residual=mid).sample


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from siamdiff.utils import progress

    return progress(iterable, desc=desc, leave=False)


@torch.inference_mode()
def sample_from_masks(gen, masks: torch.Tensor, seeds: Sequence[int], prompt: str, steps: int = 50,
                      guidance: float = 9.0, progress: bool = True, output: str = "rgb") -> torch.Tensor:
    """Generate one image per mask. masks `[B,1,S,S]` float in {0,1} -> rgb uint8 `[B,S,S,3]`.

    `gen`: a `SiameseDiffusionPipeline`, or loaded parts (`siamdiff.model.generator.Generator`); the loop is the
    pipeline's (`siamdiff.sample.pipeline`), each image's noise from `torch.Generator().manual_seed(seed)`.
    `output="working"` returns the decoded, clamped working-space images `[B,3,S,S]` float instead
    (before quantisation; used to compare samplers to 1e-4).

    Hint embedding once per image; conditional and unconditional halves as one batch (guidance 1 skips
    the unconditional half, since it then has weight 0).
    """
    from siamdiff.sample.pipeline import pipeline_from_parts

    if output not in ("rgb", "working"):
        raise ValueError(f"output must be 'rgb' or 'working', got {output!r}")
    _check(masks, seeds)
    pipe = pipeline_from_parts(gen)
    pipe.set_progress_bar_config(disable=not progress, desc="DDIM", leave=False)
    generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
    latents = pipe(mask_image=masks, prompt=prompt, num_inference_steps=steps, guidance_scale=guidance,
                   height=masks.shape[-2], width=masks.shape[-1], generator=generators, output_type="latent").images
    working = pipe.decode_working(latents)
    return working if output == "working" else pipe.to_rgb(working)


@torch.inference_mode()
def sample_from_masks_naive(gen, masks: torch.Tensor, seeds: Sequence[int], prompt: str, steps: int = 50,
                            guidance: float = 9.0, progress: bool = False, output: str = "rgb") -> torch.Tensor:
    """Reference sampler: the hint encoder runs every step, conditional and unconditional passes separately."""
    device, dtype, mask3, latents = _prepare(gen, masks, seeds)
    b = latents.shape[0]
    sched = _scheduler(gen, steps)
    latents = latents * sched.init_noise_sigma
    uncond, cond = _text(gen, prompt, b, device)
    for t in _progress(sched.timesteps, progress, "DDIM (naive)"):
        z = sched.scale_model_input(latents, t)
        eps_c = _eps(gen, z, t, cond.to(dtype), gen.controlnet.controlnet_cond_embedding(mask3))
        eps_u = _eps(gen, z, t, uncond.to(dtype), gen.controlnet.controlnet_cond_embedding(mask3))
        eps = eps_u + guidance * (eps_c - eps_u)
        latents = sched.step(eps, t, latents, eta=0.0).prev_sample
    return _decode(gen, latents, output)
