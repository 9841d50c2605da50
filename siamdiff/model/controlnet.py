"""`SiameseControlNet`: a diffusers `ControlNetModel` whose hint encoder is the Dense Hint Input (DHI).

One ControlNet serves both Siamese branches (same weights): the mask branch gets the mask repeated to three
channels, the image branch gets the image `x~` (three channels, no mask), both `[B, 3, S, S]` in [0, 1].

The DHI's widths are stored in the standard config field `conditioning_embedding_out_channels`
(`(16, 32, 64, 128, 256)` for SD's 8x autoencoder; one PatchMerging stage per entry after the first two), so the
model round-trips through `save_pretrained` / `from_pretrained` with the stock diffusers machinery.

`controlnet_residuals(controlnet, z_t, t, text_emb, hint_embedding)` runs the ControlNet from a precomputed hint
embedding (`controlnet.controlnet_cond_embedding(cond)`), so callers can compute the embedding once: for both
branches in one batch during training, and once per image (not per step) during sampling.
"""
from __future__ import annotations

import functools
import math

import torch
from diffusers import ControlNetModel, ModelMixin, UNet2DConditionModel  # noqa: F401  ModelMixin: diffusers'

# pipeline loader looks the base class up in the module a component is declared in (model_index.json:
# ["siamdiff.model.controlnet", "SiameseControlNet"]) to find its from_pretrained
from siamdiff.model.dhi import DenseHintInput


def dhi_widths(downsample_factor: int) -> tuple[int, ...]:
    """DHI stage widths for an autoencoder downsampling factor: 8 -> (16, 32, 64, 128, 256)."""
    stages = int(round(math.log2(downsample_factor)))
    if downsample_factor < 2 or 2**stages != downsample_factor:
        raise ValueError(f"autoencoder downsampling factor must be a power of two >= 2, got {downsample_factor}")
    return (16, 32) + tuple(64 * 2**k for k in range(stages))


class SiameseControlNet(ControlNetModel):
    """ControlNetModel with `controlnet_cond_embedding` = DenseHintInput (DESIGN.md section 1)."""

    @functools.wraps(ControlNetModel.__init__)  # same config signature, so from_pretrained sees every field
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        widths = tuple(self.config.conditioning_embedding_out_channels)
        factor = 2 ** (len(widths) - 2)
        if widths != dhi_widths(factor):
            raise ValueError(f"SiameseControlNet: conditioning_embedding_out_channels {widths} are not DHI widths "
                             f"(expected e.g. {dhi_widths(8)})")
        self.controlnet_cond_embedding = DenseHintInput(
            out_channels=self.config.block_out_channels[0], downsample_factor=factor,
            in_channels=self.config.conditioning_channels)

    @property
    def downsample_factor(self) -> int:
        return self.controlnet_cond_embedding.downsample_factor

    @classmethod
    def from_unet(cls, unet: UNet2DConditionModel, downsample_factor: int = 8,
                  load_weights_from_unet: bool = True, **kwargs) -> "SiameseControlNet":
        """A copy of `unet`'s time embedding, conv_in, encoder and middle block; zero-initialised output convs
        and DHI zero conv. `downsample_factor` = the autoencoder's (image size / latent size)."""
        if unet.config.class_embed_type is not None or unet.config.addition_embed_type is not None:
            raise ValueError("SiameseControlNet supports text-conditioned UNets without class/addition embeddings")
        return super().from_unet(unet, conditioning_embedding_out_channels=dhi_widths(downsample_factor),
                                 load_weights_from_unet=load_weights_from_unet, conditioning_channels=3, **kwargs)


def run_encoder(down_blocks, mid_block, sample: torch.Tensor, emb: torch.Tensor, text_emb: torch.Tensor
                ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """Down blocks then middle block, as diffusers' UNet/ControlNet forward: `(skips incl. the input, output)`."""
    skips = (sample,)
    for block in down_blocks:
        if getattr(block, "has_cross_attention", False):
            sample, res = block(hidden_states=sample, temb=emb, encoder_hidden_states=text_emb)
        else:
            sample, res = block(hidden_states=sample, temb=emb)
        skips += res
    if mid_block is not None:
        if getattr(mid_block, "has_cross_attention", False):
            sample = mid_block(sample, emb, encoder_hidden_states=text_emb)
        else:
            sample = mid_block(sample, emb)
    return skips, sample


def controlnet_residuals(controlnet: ControlNetModel, z_t: torch.Tensor, t: torch.Tensor, text_emb: torch.Tensor,
                         hint_embedding: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """ControlNet residuals `(down_residuals, mid_residual)` from a precomputed hint embedding.

    Equals `controlnet(z_t, t, text_emb, controlnet_cond=cond, return_dict=False)` with
    `hint_embedding = controlnet.controlnet_cond_embedding(cond)` (conditioning scale 1, no guess mode).
    """
    if controlnet.class_embedding is not None or controlnet.config.addition_embed_type is not None:
        raise ValueError("controlnet_residuals: class/addition embeddings are not supported")
    # 1. time (as ControlNetModel.forward)
    timesteps = t if torch.is_tensor(t) else torch.tensor([t], dtype=torch.int64, device=z_t.device)
    if timesteps.ndim == 0:
        timesteps = timesteps[None].to(z_t.device)
    timesteps = timesteps.expand(z_t.shape[0])
    emb = controlnet.time_embedding(controlnet.time_proj(timesteps).to(dtype=z_t.dtype))
    # 2. pre-process: the hint enters once, after conv_in
    sample = controlnet.conv_in(z_t) + hint_embedding
    # 3-4. down blocks, middle block
    down_samples, sample = run_encoder(controlnet.down_blocks, controlnet.mid_block, sample, emb, text_emb)
    # 5. zero-initialised 1x1 output convs
    down_residuals = [zero_conv(h) for h, zero_conv in zip(down_samples, controlnet.controlnet_down_blocks)]
    mid_residual = controlnet.controlnet_mid_block(sample)
    return down_residuals, mid_residual
