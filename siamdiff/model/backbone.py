"""The denoising backbone U (DESIGN.md sections 1-2): an SD-layout folder `unet/ text_encoder/ tokenizer/ scheduler/`.

paper: SD-1.5's UNet, CLIP and scheduler, loaded offline and re-saved.
demo: a small text-conditioned `UNet2DConditionModel` pre-trained on the cached latents with the prompt
(dropped to "" with probability `prompt_dropout`, so classifier-free guidance works), on the DESIGN.md
noise schedule (`make_train_scheduler`), epsilon prediction.
"""
from __future__ import annotations

from pathlib import Path

from siamdiff.model.schedule import check_schedule, make_sampling_scheduler, make_train_scheduler
from siamdiff.model.text import encode_prompts, load_text, save_text
from siamdiff.utils import SiamdiffError

SUBFOLDERS = ("unet", "text_encoder", "tokenizer", "scheduler")


def build_demo_unet(latent_channels: int, sample_size: int, widths=(64, 128), layers_per_block: int = 1,
                    cross_attention_dim: int = 64, attention_head_dim: int = 8, norm_groups: int = 8,
                    seed: int = 0):
    """Small UNet2DConditionModel: cross-attention in every block but the deepest (as SD), mid block too."""
    import torch
    from diffusers import UNet2DConditionModel

    widths = tuple(widths)
    if any(w % norm_groups for w in widths):
        raise SiamdiffError(f"params.yaml: backbone.norm_groups ({norm_groups}) must divide every width {widths}")
    if sample_size % 2 ** (len(widths) - 1):
        raise SiamdiffError(f"params.yaml: backbone.widths has {len(widths)} levels; the latent size "
                            f"{sample_size} must be divisible by {2 ** (len(widths) - 1)}")
    n = len(widths)
    down = ("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",)
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1)
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=latent_channels, out_channels=latent_channels,
        down_block_types=down, up_block_types=up, block_out_channels=widths,
        layers_per_block=layers_per_block, cross_attention_dim=cross_attention_dim,
        attention_head_dim=attention_head_dim, norm_num_groups=norm_groups,
    )


def check_sd_folder(pretrained, param: str = "backbone.pretrained") -> Path:
    if not pretrained:
        raise SiamdiffError(f"params.yaml: {param} is empty; paper mode needs a local diffusers Stable "
                            "Diffusion folder (unet/, text_encoder/, tokenizer/, scheduler/)")
    root = Path(pretrained).expanduser()
    if not root.exists():
        raise SiamdiffError(f"{root}: pretrained folder not found ({param}); fix the path")
    missing = [s for s in SUBFOLDERS if not (root / s).is_dir()]
    if missing or not (root / "unet" / "config.json").is_file():
        raise SiamdiffError(f"{root}: not a diffusers Stable Diffusion folder (missing "
                            f"{', '.join(missing) or 'unet/config.json'}); fix {param}")
    return root


def load_pretrained_backbone(pretrained, latent_channels: int | None = None):
    """(unet, tokenizer, text_encoder, scheduler) from a local SD folder, offline, schedule checked."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    root = check_sd_folder(pretrained)
    try:
        unet = UNet2DConditionModel.from_pretrained(root, subfolder="unet", local_files_only=True)
        scheduler = DDPMScheduler.from_pretrained(root, subfolder="scheduler", local_files_only=True)
    except (OSError, ValueError) as e:
        raise SiamdiffError(f"{root}: cannot load the UNet/scheduler ({e})") from e
    check_schedule(scheduler.config, where=str(root / "scheduler"))
    tokenizer, text_encoder = load_text(root)
    check_compatible(unet, text_encoder, latent_channels, where=str(root))
    return unet, tokenizer, text_encoder, scheduler


def check_compatible(unet, text_encoder, latent_channels: int | None, where: str) -> None:
    if latent_channels is not None and unet.config.in_channels != latent_channels:
        raise SiamdiffError(f"{where}: the UNet takes {unet.config.in_channels} latent channels but the "
                            f"autoencoder gives {latent_channels}; use matching autoencoder and backbone")
    if unet.config.cross_attention_dim != text_encoder.config.hidden_size:
        raise SiamdiffError(f"{where}: UNet cross_attention_dim {unet.config.cross_attention_dim} != text "
                            f"encoder width {text_encoder.config.hidden_size}")


def save_backbone(folder, unet, tokenizer, text_encoder, scheduler) -> None:
    folder = Path(folder)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    save_text(folder, tokenizer, text_encoder)
    scheduler.save_pretrained(folder / "scheduler")


def load_backbone(folder, verify: bool = True):
    """(unet, tokenizer, text_encoder, scheduler) from `models/backbone` (or any SD-layout folder).

    `verify`: check its files against the SHA-256s in its siamdiff.json first (`registry.verify_model`);
    pass False only when the caller has just verified the folder itself (to read the weights once)."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    from siamdiff.model.registry import verify_model

    folder = Path(folder)
    if not (folder / "unet" / "config.json").is_file():
        raise SiamdiffError(f"{folder}: no backbone here; run `dvc repro backbone`")
    if verify:
        verify_model(folder, stage="backbone")
    try:
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", local_files_only=True)
        scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler", local_files_only=True)
    except (OSError, ValueError) as e:
        raise SiamdiffError(f"{folder}: cannot load the backbone UNet/scheduler ({e}); rerun "
                            f"`dvc repro -f -s backbone` or restore it with `dvc checkout {folder}`") from e
    tokenizer, text_encoder = load_text(folder)
    return unet, tokenizer, text_encoder, scheduler


# -- demo pre-training ----------------------------------------------------------------------------

def train_backbone(unet, latent_mean, latent_std, cond, uncond, *, scaling_factor: float, steps: int,
                   batch_size: int, lr: float, prompt_dropout: float = 0.05, seed: int = 0,
                   warmup: int = 100, snr_gamma: float | None = None, ema_decay: float | None = None,
                   mixed_precision: str = "no", on_step=None, progress: bool = True, log=print):
    """Epsilon-prediction training of `unet` on z0 = (mean + std * n) * scaling_factor.

    cond / uncond: text embeddings [1, L, D] of the prompt and of "" (the text encoder is frozen).
    AdamW, linear warm-up then cosine decay (diffusers `get_scheduler`). `snr_gamma`: Min-SNR-gamma loss
    weights min(SNR_t, gamma) / SNR_t (Hang et al. 2023; faster convergence, the model still predicts epsilon);
    None = plain MSE as SD. `ema_decay`: keep an exponential moving average of the weights (diffusers
    `EMAModel`) and leave it in `unet` at the end; the raw weights are returned as a state dict (None without
    EMA). `mixed_precision`: no | bf16 | auto (siamdiff.machine: bf16 autocast only where measured faster).
    `on_step(step, loss)`.
    """
    import torch
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel, compute_snr

    from siamdiff.machine import choose_cpu_autocast
    from siamdiff.train.fit import fit

    scheduler = make_train_scheduler()
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.01)
    sched = get_scheduler("cosine", opt, num_warmup_steps=min(warmup, steps // 2), num_training_steps=steps)
    T = scheduler.config.num_train_timesteps
    unet.train()

    def loss_of(idx, noise, eps, t, drop):
        z0 = (latent_mean[idx] + latent_std[idx] * noise) * scaling_factor
        text = torch.where(drop.view(-1, 1, 1), uncond.expand(len(idx), -1, -1), cond.expand(len(idx), -1, -1))
        err = (unet(scheduler.add_noise(z0, eps, t), t, encoder_hidden_states=text).sample - eps).pow(2)
        snr = compute_snr(scheduler, t)
        weight = snr.clamp(max=snr_gamma) / snr if snr_gamma else torch.ones_like(snr)
        return (weight * err.mean(dim=(1, 2, 3))).mean()

    def draw(gen):
        idx = torch.randint(len(latent_mean), (batch_size,), generator=gen)
        noise = torch.randn(latent_mean[idx].shape, generator=gen)
        eps = torch.randn(noise.shape, generator=gen)
        t = torch.randint(0, T, (batch_size,), generator=gen)
        return idx, noise, eps, t, torch.rand(batch_size, generator=gen) < prompt_dropout

    def probe():  # one forward + backward on a batch of its own (the run's generator is not touched)
        loss_of(*draw(torch.Generator().manual_seed(seed + 1))).backward()
        unet.zero_grad(set_to_none=True)

    use_bf16 = (not torch.cuda.is_available() and
                choose_cpu_autocast(mixed_precision, probe, log=log) == "bf16")
    ema = EMAModel(unet.parameters(), decay=ema_decay) if ema_decay else None

    def step_loss():
        loss = loss_of(*draw(g))
        return loss, loss.item()

    fit(unet.parameters(), step_loss, opt, sched, steps=steps, desc="backbone", ema=ema, bf16=use_bf16,
        on_step=on_step, progress=progress)
    raw = None
    if ema is not None:
        raw = {k: v.detach().clone() for k, v in unet.state_dict().items()}
        ema.copy_to(unet.parameters())
    unet.eval().requires_grad_(False)
    return raw


def sample_latents(unet, cond, uncond, *, n: int, shape, scheduler_config=None, steps: int = 50,
                   guidance: float = 3.0, seed: int = 0, progress: bool = False):
    """DDIM (eta 0) with classifier-free guidance; returns scaled latents [n, C, h, w]."""
    import torch

    from siamdiff.utils import progress as progress_bar

    ddim = make_sampling_scheduler(scheduler_config)
    ddim.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn((n, *shape), generator=g) * ddim.init_noise_sigma).to(unet.device)
    text = torch.cat([uncond.expand(n, -1, -1), cond.expand(n, -1, -1)])
    with torch.no_grad():
        for t in progress_bar(ddim.timesteps, desc="ddim", disable=not progress):
            eps_u, eps_c = unet(torch.cat([z, z]), t, encoder_hidden_states=text).sample.chunk(2)
            z = ddim.step(eps_u + guidance * (eps_c - eps_u), t, z).prev_sample
    return z


def prompt_embeddings(tokenizer, text_encoder, prompt: str):
    """(cond, uncond) = embeddings of `prompt` and of "", each [1, L, D]."""
    import torch

    with torch.no_grad():
        both = encode_prompts(tokenizer, text_encoder, [prompt, ""])
    return both[:1], both[1:]
