"""The frozen autoencoder (DESIGN.md sections 1-2).

paper: the VAE of a local diffusers Stable Diffusion folder (`<pretrained>/vae`, local_files_only).
demo: a small diffusers `AutoencoderKL` trained from scratch on the train split (working colour space).
Either way the stage re-saves it with `save_pretrained`, so later stages have one code path; its
`config.scaling_factor` maps latents to ~unit variance (SD: 0.18215; demo: 1/std measured on train).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from siamdiff.utils import SiamdiffError


def factor_of(vae) -> int:
    """Spatial downsampling factor of a diffusers AutoencoderKL: 2^(number of blocks - 1)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def check_factor(factor: int, size: int | None, param: str = "autoencoder.downsample_factor") -> None:
    if not isinstance(factor, int) or factor < 1 or factor & (factor - 1):
        raise SiamdiffError(f"params.yaml: {param} = {factor!r} must be a power of two (1, 2, 4, 8, ...)")
    if size is not None and size % factor:
        raise SiamdiffError(f"params.yaml: {param} = {factor} does not divide the image size {size} "
                            f"(preprocess.size); choose a size that is a multiple of {factor}")


def build_autoencoder(downsample_factor: int = 4, latent_channels: int = 4, widths=(32, 64, 64),
                      norm_groups: int = 2, layers_per_block: int = 1, size: int | None = None, seed: int = 0):
    """A small AutoencoderKL whose number of down blocks is log2(downsample_factor) (+ the last, unscaled)."""
    import torch
    from diffusers import AutoencoderKL

    check_factor(downsample_factor, size)
    n_blocks = int(math.log2(downsample_factor)) + 1
    widths = list(widths)
    if len(widths) != n_blocks:
        raise SiamdiffError(f"params.yaml: autoencoder.widths has {len(widths)} entries but "
                            f"downsample_factor {downsample_factor} needs {n_blocks} (log2(factor) + 1)")
    if any(w % norm_groups for w in widths):
        raise SiamdiffError(f"params.yaml: autoencoder.norm_groups ({norm_groups}) must divide every width {widths}")
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels,
        down_block_types=("DownEncoderBlock2D",) * n_blocks, up_block_types=("UpDecoderBlock2D",) * n_blocks,
        block_out_channels=tuple(widths), layers_per_block=layers_per_block, norm_num_groups=norm_groups,
        sample_size=size or 64,
    )


def load_pretrained_vae(pretrained: str | os.PathLike | None, param: str = "autoencoder.pretrained"):
    """`AutoencoderKL.from_pretrained(pretrained, subfolder="vae", local_files_only=True)` with clear errors."""
    from diffusers import AutoencoderKL

    if not pretrained:
        raise SiamdiffError(f"params.yaml: {param} is empty; paper mode needs a local diffusers Stable "
                            "Diffusion folder (with vae/, unet/, text_encoder/, tokenizer/, scheduler/)")
    root = Path(pretrained).expanduser()
    if not root.exists():
        raise SiamdiffError(f"{root}: pretrained folder not found ({param}); download a diffusers-format "
                            "Stable Diffusion 1.5 folder there or fix the path")
    if not (root / "vae" / "config.json").is_file():
        raise SiamdiffError(f"{root}: not a diffusers Stable Diffusion folder (no vae/config.json); "
                            "convert the checkpoint with diffusers' conversion script or fix the path")
    try:
        vae = AutoencoderKL.from_pretrained(root, subfolder="vae", local_files_only=True)
    except (OSError, ValueError, EnvironmentError) as e:
        raise SiamdiffError(f"{root / 'vae'}: cannot load an AutoencoderKL ({e})") from e
    return vae


def load_autoencoder(folder: str | os.PathLike, verify: bool = True):
    """The stage output `models/autoencoder` (a plain `save_pretrained` folder), frozen, eval mode.

    `verify`: check its files against the SHA-256s in its siamdiff.json first (`registry.verify_model`);
    pass False only when the caller has just verified the folder itself (to read the weights once)."""
    from diffusers import AutoencoderKL

    from siamdiff.model.registry import verify_model

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise SiamdiffError(f"{folder}: no autoencoder here; run `dvc repro autoencoder`")
    if verify:
        verify_model(folder, stage="autoencoder")
    try:
        vae = AutoencoderKL.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as e:
        raise SiamdiffError(f"{folder}: cannot load the autoencoder ({e}); rerun `dvc repro -f -s autoencoder` "
                            f"or restore it with `dvc checkout {folder}`") from e
    return vae.eval().requires_grad_(False)


def check_vae(vae, latent_channels: int | None, size: int | None, factor: int | None = None,
              where: str = "autoencoder") -> None:
    """Latent channels / factor must match the params; the factor must divide the image size."""
    if latent_channels is not None and vae.config.latent_channels != latent_channels:
        raise SiamdiffError(f"{where}: the autoencoder has {vae.config.latent_channels} latent channels but "
                            f"params.yaml autoencoder.latent_channels = {latent_channels}; set it to "
                            f"{vae.config.latent_channels} (SD-1.x VAEs have 4)")
    actual = factor_of(vae)
    if factor is not None and factor != actual:
        raise SiamdiffError(f"{where}: the autoencoder downsamples by {actual} but params.yaml "
                            f"autoencoder.downsample_factor = {factor}; set it to {actual}")
    check_factor(actual, size)


# -- encode / decode ------------------------------------------------------------------------------

def encode_stats(vae, x):
    """(mean, std) of the posterior for images x [B,3,S,S] in [-1,1] (unscaled latent units)."""
    dist = vae.encode(x).latent_dist
    return dist.mean, dist.std


def decode(vae, z_scaled):
    """Images in [-1,1] from scaled latents (z * scaling_factor)."""
    return vae.decode(z_scaled / vae.config.scaling_factor).sample.clamp(-1, 1)


def reconstruct(vae, x, batch_size: int = 32):
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            mean, _ = encode_stats(vae, x[i:i + batch_size])
            out.append(vae.decode(mean).sample.clamp(-1, 1))
    return torch.cat(out)


def measure_scaling_factor(vae, x, batch_size: int = 64, seed: int = 0) -> float:
    """1 / std of sampled latents over x (SD's recipe for its 0.18215)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    zs = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            mean, std = encode_stats(vae, x[i:i + batch_size])
            zs.append(mean + std * torch.randn(mean.shape, generator=g))
    return float(1.0 / torch.cat(zs).std())


# -- demo training ---------------------------------------------------------------------------------

def train_autoencoder(vae, train_x, *, steps: int, batch_size: int, lr: float, kl_weight: float,
                      crop: int | None = None, seed: int = 0, warmup: int = 50, on_step=None,
                      progress: bool = True):
    """Train `vae` on images train_x [N,3,S,S] in [-1,1] (random flips / rot90 as cheap augmentation).

    crop: train on random crops of this side (the autoencoder is convolutional, so it is applied to
    whole images afterwards); a 32 px crop of a 64 px image makes a step ~4x cheaper.

    Loss per sample = mean squared error over pixels + kl_weight * KL(sum over latent) / pixels
    (LDM's relative weighting); AdamW with linear warm-up then cosine decay. `on_step(step, loss)`.
    """
    import torch

    from siamdiff.train.fit import fit

    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, warmup)) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, steps)))))

    def step_loss():
        x = train_x[torch.randint(len(train_x), (batch_size,), generator=g)]
        if crop and crop < x.shape[-1]:
            y0, x0 = (int(v) for v in torch.randint(x.shape[-1] - crop + 1, (2,), generator=g))
            x = x[..., y0:y0 + crop, x0:x0 + crop]
        if torch.rand((), generator=g) < 0.5:
            x = x.flip(-1)
        x = torch.rot90(x, int(torch.randint(4, (), generator=g)), dims=(-2, -1))
        posterior = vae.encode(x).latent_dist
        rec = (vae.decode(posterior.sample(generator=g)).sample - x).pow(2).mean()
        kl = posterior.kl().mean() / x[0].numel()
        return rec + kl_weight * kl, rec.item()

    vae.train()
    fit(vae.parameters(), step_loss, opt, sched, steps=steps, desc="autoencoder", on_step=on_step,
        progress=progress)
    vae.eval().requires_grad_(False)
    return vae


# -- metrics ---------------------------------------------------------------------------------------

def psnr_ssim(real_rgb, fake_rgb) -> dict:
    """Mean per-image PSNR (dB) and SSIM of uint8 RGB images [N,H,W,3]."""
    import torch
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    a = real_rgb.float().permute(0, 3, 1, 2) / 255.0
    b = fake_rgb.float().permute(0, 3, 1, 2) / 255.0
    mse = (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    psnr = (10 * torch.log10(1.0 / mse))
    s = ssim(b, a, data_range=1.0, reduction="none")
    return {"psnr": float(psnr.mean()), "psnr_min": float(psnr.min()), "ssim": float(s.mean())}


def reconstruction_grid(real_rgb, fake_rgb, n: int = 8):
    """PIL image: top row originals, bottom row reconstructions."""
    from PIL import Image

    from siamdiff.data.images import grid

    n = min(n, len(real_rgb))
    return Image.fromarray(grid(list(real_rgb[:n].numpy()) + list(fake_rgb[:n].numpy()), columns=n, gap=0))

