"""Training preview: a grid of (mask | sample | real image) rows -> `plots/train/preview.png`.

Samples come from `siamdiff.sample.ddim.sample_from_masks` (Mask-Diffusion, DDIM, eta 0, CFG with the empty
prompt and the same mask), exactly as the sample stage draws them, from fixed masks and seeds, so previews of
successive steps are comparable. Sampling uses its own per-image generators: it never touches the training RNG.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from siamdiff.utils import atomic_path


def pick_preview_rows(coverage, n: int) -> list[int]:
    """Deterministic rows with a spread of mask coverage (largest, then quantiles down to the smallest > 0)."""
    coverage = np.asarray(coverage, dtype=float)
    order = np.argsort(-coverage, kind="stable")
    nonempty = order[coverage[order] > 0]
    pool = nonempty if len(nonempty) >= n else order
    picks = np.linspace(0, len(pool) - 1, num=min(n, len(pool))).round().astype(int)
    return [int(pool[i]) for i in picks]


def write_png(path: str | os.PathLike, image: np.ndarray, scale: int = 2) -> None:
    from PIL import Image

    img = Image.fromarray(image)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def render_preview(gen, masks: torch.Tensor, real_rgb: np.ndarray | None, path: str | os.PathLike, *,
                   seeds: list[int], prompt: str, steps: int = 50, guidance: float = 9.0) -> np.ndarray:
    """Sample one image per mask and write the grid; returns the samples (uint8 [B,S,S,3])."""
    from siamdiff.data.images import grid
    from siamdiff.sample.ddim import sample_from_masks

    samples = sample_from_masks(gen, masks, seeds, prompt, steps=steps, guidance=guidance, progress=False)
    samples = samples.numpy() if isinstance(samples, torch.Tensor) else np.asarray(samples)
    mask_rgb = (masks[:, 0].cpu().numpy() > 0.5).astype(np.uint8)[..., None].repeat(3, -1) * 255
    columns = [mask_rgb, samples] + ([np.asarray(real_rgb)] if real_rgb is not None else [])
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tiles = [column[i] for i in range(len(mask_rgb)) for column in columns]  # row i = mask | sample | real
    write_png(path, grid(tiles, columns=len(columns), gap=2, border=2))
    return samples
