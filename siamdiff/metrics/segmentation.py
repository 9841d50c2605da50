"""Segmentation metrics (DESIGN.md section 4): a MONAI UNet trained on real images.

- mask adherence: Dice/IoU of the real-trained network's prediction on each generated image vs the mask
  that conditioned it;
- downstream: the same network trained on real vs real + synthetic (synthetic from train masks only) and
  scored on the real test split: mDice, mIoU (threshold 0.5, mean over images).

Empty masks follow MONAI's `ignore_empty=False`: an empty prediction of an empty mask scores 1, anything
else on an empty mask 0.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from siamdiff.utils import SiamdiffError

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def build_unet(channels=(16, 32, 64, 128), num_res_units: int = 1) -> torch.nn.Module:
    """MONAI 2-D UNet: RGB in, one logit channel out; stride 2 between the `channels` levels."""
    from monai.networks.nets import UNet

    channels = tuple(int(c) for c in channels)
    if len(channels) < 2:
        raise SiamdiffError("params.yaml: segment.channels needs at least two levels, e.g. [16, 32, 64, 128]")
    return UNet(spatial_dims=2, in_channels=3, out_channels=1, channels=channels,
                strides=(2,) * (len(channels) - 1), num_res_units=int(num_res_units))


def to_input(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 `[N,H,W,3]` -> float `[N,3,H,W]` in [0, 1]."""
    return rgb.permute(0, 3, 1, 2).float() / 255.0


def train_segmenter(rgb: torch.Tensor, masks: torch.Tensor, channels=(16, 32, 64, 128), epochs: int = 30,
                    batch_size: int = 16, lr: float = 1e-3, seed: int = 0, progress: bool = True,
                    desc: str = "segmenter", max_steps: int | None = None, num_res_units: int = 1
                    ) -> torch.nn.Module:
    """Train a MONAI UNet on uint8 images `[N,S,S,3]` and {0,1} masks `[N,S,S]` (Dice + BCE loss, Adam).

    `epochs` passes over the data, or exactly `max_steps` optimiser steps when given (epochs then repeat
    as needed). Paired random flips and rot90 as light augmentation; deterministic given `seed`.
    """
    from monai.losses import DiceCELoss

    if len(rgb) == 0:
        raise SiamdiffError("segmentation: no training images")
    g = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))
    model = build_unet(channels, num_res_units)
    loss_fn = DiceCELoss(sigmoid=True)
    opt = torch.optim.Adam(model.parameters(), lr=float(lr))
    x_all = to_input(rgb)
    y_all = masks.float().unsqueeze(1)
    n, bs = len(x_all), int(batch_size)
    per_epoch = (n + bs - 1) // bs
    total = int(max_steps) if max_steps is not None else int(epochs) * per_epoch
    bar = None
    if progress:
        from siamdiff.utils import progress as progress_bar

        bar = progress_bar(total=total, desc=desc, unit="step", leave=False)
    model.train()
    step = 0
    while step < total:
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, bs):
            if step >= total:
                break
            step += 1
            idx = perm[i:i + bs]
            x, y = x_all[idx], y_all[idx]
            if torch.rand(1, generator=g).item() < 0.5:
                x, y = x.flip(-1), y.flip(-1)
            k = int(torch.randint(0, 4, (1,), generator=g))
            if k:
                x, y = torch.rot90(x, k, (-2, -1)), torch.rot90(y, k, (-2, -1))
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return model.eval()


@torch.inference_mode()
def predict(model: torch.nn.Module, rgb: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Foreground probabilities `[N,S,S]` for uint8 images `[N,S,S,3]`."""
    model.eval()
    out = [torch.sigmoid(model(to_input(rgb[i:i + batch_size])))[:, 0] for i in range(0, len(rgb), batch_size)]
    return torch.cat(out) if out else torch.zeros(0)


def dice_iou(prob: torch.Tensor, masks: torch.Tensor, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Per-image Dice and IoU of `prob >= threshold` vs binary masks (MONAI, ignore_empty=False)."""
    from monai.metrics import compute_dice, compute_iou

    pred = (prob >= threshold).float().unsqueeze(1)
    gt = (masks > 0).float().unsqueeze(1)
    dice = compute_dice(pred, gt, include_background=True, ignore_empty=False)[:, 0]
    iou = compute_iou(pred, gt, include_background=True, ignore_empty=False)[:, 0]
    return dice.numpy().astype(float), iou.numpy().astype(float)


def score(model: torch.nn.Module, rgb: torch.Tensor, masks: torch.Tensor, threshold: float = 0.5) -> dict:
    """mDice, mIoU (mean over images) of `model` on images vs masks."""
    dice, iou = dice_iou(predict(model, rgb), masks, threshold)
    return {"mdice": float(dice.mean()), "miou": float(iou.mean()), "n": int(len(dice)),
            "mdice_std": float(dice.std()), "miou_std": float(iou.std())}


def save_segmenter(model: torch.nn.Module, folder: str | os.PathLike, config: dict) -> None:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    from siamdiff.utils import sha256_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / WEIGHTS))
    config = {**config, "weights_sha256": sha256_file(folder / WEIGHTS)}  # checked by load_segmenter
    (folder / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def load_segmenter(folder: str | os.PathLike) -> torch.nn.Module:
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / WEIGHTS).is_file() or not (folder / CONFIG).is_file():
        raise SiamdiffError(f"{folder}: not a segmenter folder ({WEIGHTS} + {CONFIG}); run `dvc repro segment`")
    from siamdiff.utils import sha256_file

    fix = f"rerun `dvc repro -f -s segment` or restore it with `dvc checkout {folder}`"
    try:
        cfg = json.loads((folder / CONFIG).read_text())
        channels = cfg["channels"]
    except (ValueError, KeyError, TypeError) as e:
        raise SiamdiffError(f"{folder / CONFIG}: unreadable segmenter config ({e}); {fix}") from e
    want = cfg.get("weights_sha256")
    if want is not None and sha256_file(folder / WEIGHTS) != want:
        raise SiamdiffError(f"{folder / WEIGHTS}: SHA-256 differs from the one recorded in {folder / CONFIG} "
                            f"(damaged model file); {fix}")
    model = build_unet(channels, cfg.get("num_res_units", 1))
    try:
        model.load_state_dict(load_file(str(folder / WEIGHTS)))
    except Exception as e:  # safetensors' own error type, or a shape mismatch (RuntimeError)
        raise SiamdiffError(f"{folder / WEIGHTS}: cannot load the segmenter ({str(e).splitlines()[0]}); {fix}") from e
    return model.eval()
