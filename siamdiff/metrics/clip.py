"""CLIP-I and CMMD with a transformers CLIP model from a local folder.

- CLIP-I: mean cosine similarity between the CLIP image embedding of each generated image and that of the
  real image whose mask conditioned it.
- CMMD (Jayasumana et al., CVPR 2024): squared MMD between the L2-normalised CLIP embeddings of the real and
  generated sets with a Gaussian RBF kernel, sigma = 10, times 1000 (the reference implementation's
  estimator: kernel means over all pairs, so identical sets give exactly 0).

Without a configured folder both are written as `null` with the reason; nothing is substituted.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F

from siamdiff.utils import SiamdiffError

CMMD_SIGMA = 10.0
CMMD_SCALE = 1000.0


def load_clip(folder: str | os.PathLike):
    """(model, image_processor) from a local transformers CLIP folder (no download)."""
    from transformers import CLIPImageProcessor, CLIPModel

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise SiamdiffError(f"evaluate.clip_model: {folder} is not a transformers CLIP folder (no config.json); "
                            "point it at a local CLIPModel.save_pretrained folder, or set it to null")
    model = CLIPModel.from_pretrained(str(folder), local_files_only=True).eval()
    if (folder / "preprocessor_config.json").is_file():
        processor = CLIPImageProcessor.from_pretrained(str(folder), local_files_only=True)
    else:
        size = int(model.config.vision_config.image_size)
        processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return model, processor


@torch.inference_mode()
def clip_embeddings(model, processor, rgb: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """uint8 `[N,H,W,3]` -> L2-normalised CLIP image embeddings `[N, D]` (float64)."""
    out = []
    for i in range(0, len(rgb), batch_size):
        batch = [im.numpy() for im in rgb[i:i + batch_size]]
        pixels = processor(images=batch, return_tensors="pt")["pixel_values"]
        emb = model.get_image_features(pixel_values=pixels)
        if not torch.is_tensor(emb):  # newer transformers return a model output
            emb = getattr(emb, "image_embeds", None) if getattr(emb, "image_embeds", None) is not None \
                else emb.pooler_output
        out.append(F.normalize(emb.to(torch.float64), dim=-1))
    return torch.cat(out)


def clip_i(real_emb: torch.Tensor, fake_emb: torch.Tensor) -> float:
    """Mean cosine similarity of paired embeddings (row i of each set belongs to the same mask)."""
    if real_emb.shape != fake_emb.shape:
        raise ValueError(f"CLIP-I needs paired sets, got {tuple(real_emb.shape)} vs {tuple(fake_emb.shape)}")
    return float(F.cosine_similarity(real_emb, fake_emb, dim=-1).mean())


def cmmd(x: torch.Tensor, y: torch.Tensor, sigma: float = CMMD_SIGMA, scale: float = CMMD_SCALE) -> float:
    """CMMD between embedding sets x `[N,D]` and y `[M,D]` (RBF kernel, sigma 10, x1000)."""
    x = x.to(torch.float64)
    y = y.to(torch.float64)
    gamma = 1.0 / (2.0 * sigma**2)

    def k(a, b):
        d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
        return torch.exp(-gamma * d2.clamp_min(0)).mean()

    return float(scale * (k(x, x) + k(y, y) - 2.0 * k(x, y)))


def clip_status(folder) -> tuple[bool, str | None]:
    """(available, reason-if-not) for the `evaluate.clip_model` parameter."""
    if not folder:
        return False, ("evaluate.clip_model is null: no local CLIP model configured, so CLIP-I and CMMD are "
                       "not computed (set it to a transformers CLIP folder)")
    if not Path(folder).is_dir():
        raise SiamdiffError(f"params.yaml: evaluate.clip_model {folder} is not a folder; point it at a local "
                            "transformers CLIP folder, or set it to null")
    return True, None
