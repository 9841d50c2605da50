"""`SiameseDiffusionPipeline`: the trained generator as a standard diffusers `DiffusionPipeline`.

    import siamdiff                      # makes the class known to diffusers
    from diffusers import DiffusionPipeline
    pipe = DiffusionPipeline.from_pretrained("models/siamese")      # or SiameseDiffusionPipeline.from_pretrained
    images = pipe(mask_image=mask, prompt="an endoscopic image of a colon polyp", num_inference_steps=50,
                  guidance_scale=9.0, generator=torch.Generator().manual_seed(0)).images   # PIL, RGB

`models/siamese` (written by `siamdiff.model.generator.save_generator`) is this pipeline's `save_pretrained`
folder: `model_index.json`, `scheduler/` (DDIM), `vae/`, `text_encoder/`, `tokenizer/`, `unet/` (U) and
`controlnet/` (the Siamese ControlNet, DHI hint encoder inside; declared in model_index.json as
`["siamdiff.model.controlnet", "SiameseControlNet"]`, which diffusers resolves from the already imported module),
plus `color_stats.json`, the model card `README.md` and `siamdiff.json` (the SHA-256 of every file).

The sampling loop of DESIGN.md section 1 (Mask-Diffusion only), the one every caller uses:
    DDIM, eta 0, classifier-free guidance `w`:
        eps = eps(z_t, t, "", m) + w * (eps(z_t, t, prompt, m) - eps(z_t, t, "", m))
    the unconditional pass uses the empty prompt and the SAME mask; the hint encoder (DHI) depends only on the
    mask, so its output is computed once per image, not per step; both halves run as one batch.
Images are decoded, clamped and converted from the working colour space (RGB or Lab, `config.color_stats`,
the same numbers as the folder's color_stats.json) back to RGB inside the pipeline.

Noise: a list of generators (one per mask) draws each image's initial latent from its own generator, so an
image does not depend on which other masks share its batch (`siamdiff.sample.ddim.sample_from_masks` passes
`torch.Generator().manual_seed(seed)` per image); one generator draws the whole batch at once, as diffusers does.

Verification: loading a folder that carries a `siamdiff.json` checks every file's SHA-256 first and refuses a
damaged, missing or added file by name (`siamdiff.model.registry.verify_model`). `SiameseDiffusionPipeline
.from_pretrained` checks before any weight is read; `DiffusionPipeline.from_pretrained` gives the pipeline no
hook before its components load, so there the check runs when the pipeline is assembled, before it is returned.
"""
from __future__ import annotations

import contextvars
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils import BaseOutput

from siamdiff.model.controlnet import SiameseControlNet, controlnet_residuals
from siamdiff.utils import SiamdiffError

__all__ = ["SiameseDiffusionPipeline", "SiameseDiffusionPipelineOutput", "load_pipeline", "pipeline_from_parts"]

# (folder, folder hash, record) already verified by SiameseDiffusionPipeline.from_pretrained for the pipeline
# being assembled, so __init__ does not hash the weights a second time
_VERIFIED: contextvars.ContextVar[tuple | None] = contextvars.ContextVar("siamdiff_verified", default=None)


@dataclass
class SiameseDiffusionPipelineOutput(BaseOutput):
    """`images`: a list of RGB `PIL.Image`s, or RGB float in [0, 1] (`np` [B,H,W,3], `pt` [B,3,H,W]), or the
    final latents (`output_type="latent"`)."""

    images: Any


def _record_folder(controlnet) -> Path | None:
    """The siamdiff model folder the ControlNet was loaded from (its parent, when that holds a record)."""
    name = getattr(getattr(controlnet, "config", None), "_name_or_path", None)
    if not name:
        return None
    path = Path(str(name))
    if path.name != "controlnet" or not path.is_dir():
        return None
    folder = path.parent
    if (folder / "model_index.json").is_file() and (folder / "siamdiff.json").is_file():
        return folder.resolve()
    return None


def _verify(folder: Path) -> tuple[str, dict]:
    from siamdiff.model.registry import read_record, verify_model

    record = read_record(folder)
    return verify_model(folder, stage="train"), record


class SiameseDiffusionPipeline(DiffusionPipeline):
    r"""Siamese-Diffusion (Qiu et al., CVPR 2025): an image from a segmentation mask and a text prompt.

    Components: `vae` (AutoencoderKL), `text_encoder` (CLIPTextModel), `tokenizer` (CLIP tokenizer), `unet`
    (U, UNet2DConditionModel), `controlnet` (SiameseControlNet: a ControlNet with the Dense Hint Input as its
    hint encoder), `scheduler` (DDIMScheduler on the training betas).
    Config: `color_stats` (the working colour space: `{"space": "rgb"}` or Lab with the train split's a*/b*
    statistics), `default_prompt` (the prompt the model was trained with; used when `prompt` is None),
    `image_size` (the training image side; the default height and width).
    """

    model_cpu_offload_seq = "text_encoder->controlnet->unet->vae"

    def __init__(self, vae: AutoencoderKL, text_encoder, tokenizer, unet: UNet2DConditionModel,
                 controlnet: SiameseControlNet, scheduler: KarrasDiffusionSchedulers,
                 color_stats: dict | None = None, default_prompt: str = "", image_size: int | None = None):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                              controlnet=controlnet, scheduler=scheduler)
        self.register_to_config(color_stats=dict(color_stats) if color_stats else None,
                                default_prompt=str(default_prompt or ""),
                                image_size=int(image_size) if image_size else None)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        # the siamdiff record and verified hash of the folder the weights came from (None if built in memory)
        self.record: dict | None = None
        self.folder_hash: str | None = None
        folder = _record_folder(controlnet)
        if folder is not None:
            done = _VERIFIED.get()
            if done is not None and done[0] == folder:
                self.folder_hash, self.record = done[1], done[2]
            else:  # DiffusionPipeline.from_pretrained: checked now, before the pipeline is returned
                self.folder_hash, self.record = _verify(folder)

    # ------------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' `from_pretrained`; a local folder with a `siamdiff.json` is verified (SHA-256 of every
        file) before any weight is read, and a load failure there is a one-line SiamdiffError."""
        folder = Path(pretrained_model_name_or_path)
        if not (folder / "siamdiff.json").is_file():
            if folder.is_dir() and not (folder / "model_index.json").is_file():
                raise SiamdiffError(f"{folder}: no model_index.json; not a SiameseDiffusionPipeline folder (point at "
                                    "the train stage's output models/siamese)")
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        if not (folder / "model_index.json").is_file():
            raise SiamdiffError(f"{folder}: no model_index.json (written before the generator became a diffusers "
                                "pipeline); rerun `dvc repro -f -s train`")
        digest, record = _verify(folder)
        token = _VERIFIED.set((folder.resolve(), digest, record))
        try:
            pipe = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except (OSError, ValueError) as e:
            raise SiamdiffError(f"{folder}: cannot load the generator ({e}); rerun `dvc repro -f -s train`") from e
        finally:
            _VERIFIED.reset(token)
        pipe.record, pipe.folder_hash = record, digest
        return pipe

    # ----------------------------------------------------------------------------------------------- inputs
    def prepare_mask(self, mask_image, height: int | None = None, width: int | None = None) -> torch.Tensor:
        """Masks -> float `[B, 1, H, W]` in {0, 1}, binarised at half their range, resized to (height, width).

        Accepts a PIL image, a numpy array or torch tensor (`[H,W]`, `[B,H,W]`, `[B,1,H,W]`; numpy also
        `[H,W,C]`), or a list of those (one mask each). Integer masks in {0, 1} are used as they are, other
        integer masks are divided by their type's maximum (255 for 8 bit); float masks are read as [0, 1].
        """
        items = list(mask_image) if isinstance(mask_image, (list, tuple)) else [mask_image]
        if not items:
            raise ValueError("mask_image is empty")
        masks = torch.cat([_mask_tensor(m) for m in items])
        h = int(height or self.config.image_size or masks.shape[-2])
        w = int(width or self.config.image_size or masks.shape[-1])
        if h % self.vae_scale_factor or w % self.vae_scale_factor:
            raise ValueError(f"height and width must be divisible by {self.vae_scale_factor} (the autoencoder's "
                             f"downsampling factor), got {h}x{w}")
        if masks.shape[-2:] != (h, w):
            masks = torch.nn.functional.interpolate(masks, size=(h, w), mode="bilinear", antialias=True,
                                                    align_corners=False)
        return (masks > 0.5).float()

    def encode_prompt(self, prompt: list[str], negative_prompt: str, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(unconditional, conditional) embeddings `[B, L, D]`; one text-encoder batch `[negative, *unique]`."""
        from siamdiff.model.text import encode_prompts

        unique = list(dict.fromkeys(prompt))
        emb = encode_prompts(self.tokenizer, self.text_encoder, [negative_prompt, *unique]).to(device)
        index = torch.tensor([1 + unique.index(p) for p in prompt], device=emb.device)
        return emb[:1].expand(len(prompt), -1, -1), emb[index]

    def prepare_latents(self, batch: int, height: int, width: int, dtype, device, generator=None,
                        latents: torch.Tensor | None = None) -> torch.Tensor:
        """Initial noise `[B, C, h, w]`, drawn in float32 on the generator's device, then cast and moved."""
        shape = (batch, int(self.unet.config.in_channels), height // self.vae_scale_factor,
                 width // self.vae_scale_factor)
        if latents is not None:
            if tuple(latents.shape) != shape:
                raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
        elif isinstance(generator, (list, tuple)):
            if len(generator) != batch:
                raise ValueError(f"{len(generator)} generators for {batch} masks; pass one per mask (or one)")
            latents = torch.cat([torch.randn((1, *shape[1:]), generator=g, device=g.device, dtype=torch.float32)
                                 for g in generator])
        else:
            gdev = generator.device if generator is not None else torch.device("cpu")
            latents = torch.randn(shape, generator=generator, device=gdev, dtype=torch.float32)
        return latents.to(dtype).to(device)

    def _step_kwargs(self, generator, eta: float) -> dict:
        params = set(inspect.signature(self.scheduler.step).parameters)
        out = {}
        if "eta" in params:
            out["eta"] = eta
        if "generator" in params and eta > 0 and not isinstance(generator, (list, tuple)):
            out["generator"] = generator
        return out

    # ----------------------------------------------------------------------------------------------- outputs
    def decode_working(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> decoded, clamped working-space images, float `[B, 3, H, W]` on the CPU."""
        x = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        return x.float().clamp(-1.0, 1.0).cpu()

    def to_rgb(self, working: torch.Tensor) -> torch.Tensor:
        """Working-space images `[B,3,H,W]` -> RGB uint8 `[B,H,W,3]` (RGB or Lab per `config.color_stats`)."""
        from siamdiff.data.color import from_working

        stats = self.config.color_stats
        return from_working(working, dict(stats) if stats else None)

    # ------------------------------------------------------------------------------------------------- call
    @torch.no_grad()
    def __call__(self, mask_image, prompt: str | list[str] | None = None, num_inference_steps: int = 50,
                 guidance_scale: float = 9.0, negative_prompt: str | None = None, height: int | None = None,
                 width: int | None = None, eta: float = 0.0, generator=None, latents: torch.Tensor | None = None,
                 output_type: str = "pil", return_dict: bool = True):
        r"""Generate one image per mask.

        Args:
            mask_image: the conditioning mask(s) (see `prepare_mask`): lesion = 1 / white.
            prompt: a prompt, or one per mask; default `config.default_prompt` (the training prompt).
            num_inference_steps: DDIM steps (50 in the paper).
            guidance_scale: classifier-free guidance weight `w` (9 in the paper); 1 skips the unconditional pass.
            negative_prompt: the unconditional prompt; default "" (the method's empty prompt, same mask).
            height, width: output size; default `config.image_size`, else the mask's own size.
            eta: DDIM eta (0 in the paper: deterministic given the initial noise).
            generator: a `torch.Generator`, or a list with one per mask (each image from its own generator).
            latents: initial noise `[B, C, h, w]` instead of drawing it.
            output_type: "pil" (list of RGB PIL images), "np" (float [B,H,W,3] in [0,1]), "pt" (float
                [B,3,H,W] in [0,1]) or "latent". The RGB values are the 8-bit image (what a PNG stores) / 255.
            return_dict: return a `SiameseDiffusionPipelineOutput` (else a tuple `(images,)`).
        """
        if output_type not in ("pil", "np", "pt", "latent"):
            raise ValueError(f"output_type must be 'pil', 'np', 'pt' or 'latent', got {output_type!r}")
        if int(num_inference_steps) < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {num_inference_steps}")
        param = next(self.unet.parameters())
        device, dtype = param.device, param.dtype
        masks = self.prepare_mask(mask_image, height, width)
        b, (h, w) = masks.shape[0], masks.shape[-2:]
        prompt = self.config.default_prompt if prompt is None else prompt
        prompts = [prompt] * b if isinstance(prompt, str) else list(prompt)
        if len(prompts) != b:
            raise ValueError(f"{len(prompts)} prompts for {b} masks; pass one prompt, or one per mask")
        latents = self.prepare_latents(b, h, w, dtype, device, generator, latents)
        mask3 = masks.to(device=device, dtype=dtype).repeat(1, 3, 1, 1)  # DHI input: [B,3,S,S] in {0,1}

        self.scheduler.set_timesteps(int(num_inference_steps))
        latents = latents * self.scheduler.init_noise_sigma
        uncond, cond = self.encode_prompt(prompts, "" if negative_prompt is None else negative_prompt, device)
        hint = self.controlnet.controlnet_cond_embedding(mask3)  # depends only on the mask: once per image
        use_cfg = float(guidance_scale) != 1.0
        if use_cfg:
            text_emb = torch.cat([uncond, cond]).to(dtype)
            hint = torch.cat([hint, hint])
        else:
            text_emb = cond.to(dtype)
        step_kwargs = self._step_kwargs(generator, float(eta))
        for t in self.progress_bar(self.scheduler.timesteps):
            z = torch.cat([latents, latents]) if use_cfg else latents
            z = self.scheduler.scale_model_input(z, t)
            down, mid = controlnet_residuals(self.controlnet, z, t, text_emb, hint)
            eps = self.unet(z, t, encoder_hidden_states=text_emb, down_block_additional_residuals=down,
                            mid_block_additional_residual=mid).sample
            if use_cfg:
                eps_u, eps_c = eps.chunk(2)
                eps = eps_u + guidance_scale * (eps_c - eps_u)
            latents = self.scheduler.step(eps, t, latents, **step_kwargs).prev_sample

        if output_type == "latent":
            images = latents
        else:
            rgb = self.to_rgb(self.decode_working(latents))  # uint8 [B,H,W,3]
            if output_type == "pil":
                from PIL import Image

                images = [Image.fromarray(im) for im in rgb.numpy()]
            elif output_type == "np":
                images = rgb.numpy().astype(np.float32) / 255.0
            else:
                images = rgb.permute(0, 3, 1, 2).float() / 255.0
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return SiameseDiffusionPipelineOutput(images=images)


def _mask_tensor(m) -> torch.Tensor:
    """One item of `mask_image` -> float `[B, 1, H, W]` in [0, 1] (not yet binarised)."""
    if hasattr(m, "convert") and hasattr(m, "size") and not isinstance(m, (np.ndarray, torch.Tensor)):  # PIL
        m = np.asarray(m.convert("L"))
    if isinstance(m, np.ndarray):
        if m.ndim == 3 and m.shape[-1] in (1, 3, 4) and m.shape[0] > 4:  # [H, W, C], as PIL gives it
            m = m[..., :3].max(axis=-1) if m.shape[-1] > 1 else m[..., 0]
        m = torch.from_numpy(np.array(m))  # a writable copy
    if not isinstance(m, torch.Tensor):
        raise TypeError(f"mask_image: expected PIL images, numpy arrays or torch tensors, got {type(m).__name__}")
    if m.ndim == 2:
        m = m[None, None]
    elif m.ndim == 3:
        m = m[:, None]
    if m.ndim != 4 or m.shape[1] != 1:
        raise ValueError(f"mask_image: masks must be [H,W], [B,H,W] or [B,1,H,W], got {tuple(m.shape)}")
    if m.dtype == torch.bool:
        return m.float()
    if not m.is_floating_point():
        top = int(m.max()) if m.numel() else 0
        scale = 1 if top <= 1 else 255 if top <= 255 else 65535 if top <= 65535 else top
        return m.float() / scale
    return m.float()


def load_pipeline(folder, device: str | torch.device = "cpu") -> SiameseDiffusionPipeline:
    """`models/siamese` -> a verified `SiameseDiffusionPipeline` on `device`, progress bar off: what the sample
    stage and `siamdiff generate` use. Every problem is a one-line SiamdiffError naming the folder or file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SiamdiffError(f"{folder}: generator folder not found; run `dvc repro train`")
    parts = ("controlnet", "unet", "scheduler", "vae", "text_encoder", "tokenizer")
    missing = [s for s in parts if not (folder / s).is_dir()]
    missing += [f for f in ("model_index.json", "color_stats.json", "siamdiff.json") if not (folder / f).is_file()]
    if missing:
        raise SiamdiffError(f"{folder}: not a siamdiff generator (missing {', '.join(missing)}); point at the train "
                            "stage's output models/siamese (rerun `dvc repro -f -s train` if it predates "
                            "model_index.json)")
    pipe = SiameseDiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def pipeline_from_parts(gen) -> SiameseDiffusionPipeline:
    """A pipeline around already loaded parts (a `siamdiff.model.generator.Generator`, or any object with
    controlnet, unet, vae, tokenizer, text_encoder, scheduler, color_stats, prompt and size): the sampling
    scheduler is DDIM on the parts' scheduler's betas. Used while training (preview) and by the old API."""
    from siamdiff.model.schedule import make_sampling_scheduler

    if isinstance(gen, SiameseDiffusionPipeline):
        return gen
    pipe = SiameseDiffusionPipeline(
        vae=gen.vae, text_encoder=gen.text_encoder, tokenizer=gen.tokenizer, unet=gen.unet,
        controlnet=gen.controlnet, scheduler=make_sampling_scheduler(gen.scheduler.config),
        color_stats=getattr(gen, "color_stats", None), default_prompt=getattr(gen, "prompt", "") or "",
        image_size=getattr(gen, "size", None) or None)
    pipe.record = getattr(gen, "record", None)
    pipe.folder_hash = getattr(gen, "folder_hash", None)
    return pipe


def register_with_diffusers() -> None:
    """`DiffusionPipeline.from_pretrained` looks a folder's `_class_name` up in the `diffusers` namespace."""
    import diffusers

    if getattr(diffusers, SiameseDiffusionPipeline.__name__, None) is not SiameseDiffusionPipeline:
        setattr(diffusers, SiameseDiffusionPipeline.__name__, SiameseDiffusionPipeline)


register_with_diffusers()
