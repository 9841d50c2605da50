"""Segmentation metrics (DESIGN.md section 4): a MONAI segmenter trained on real images.

- mask adherence: Dice/IoU of the real-trained network's prediction on each generated image vs the mask
  that conditioned it;
- downstream: the same network trained on real vs real + synthetic (synthetic from train masks only) and
  scored on the real test split: mDice, mIoU (threshold 0.5, mean over images).

The network is one of `NETWORKS` (MONAI, 2-D, random init: no downloaded weights), RGB in, one logit out.
`size` (segment.input_size) is its own input side: images are resized to it (bilinear, antialiased) and
training masks too (bilinear, then >= 0.5: binary again); at inference the logits are resized back to the
images' own size (bilinear, as the polyp literature upsamples to the ground truth's size) before the sigmoid,
so Dice/IoU are always computed against the unresized masks at the preprocessed size, whatever the segmenter's
size. `size` None (or equal to the images' side) resizes nothing.

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

NETWORKS = ("unet", "attentionunet", "segresnet", "swinunetr")  # params.yaml segment.network (schema: the same)
NAMES = {"unet": "UNet", "attentionunet": "AttentionUnet", "segresnet": "SegResNet", "swinunetr": "SwinUNETR"}


def missing_package(network: str) -> str | None:
    """The Python package `network` needs that is not installed (MONAI imports it lazily), or None."""
    import importlib.util

    need = {"swinunetr": "einops"}.get(network)  # MONAI SwinUNETR permutes with einops.rearrange
    return need if need and importlib.util.find_spec(need) is None else None


def check_network(network: str) -> None:
    """Refuse, before any work, a network whose package is missing here (never a substitute under its name)."""
    need = missing_package(network)
    if need:
        raise SiamdiffError(f"params.yaml: segment.network {network} needs the Python package {need!r} (a MONAI optional "
                            f"dependency), which is not installed; install it (pip install {need}) or choose another "
                            f"segment.network ({', '.join(n for n in NETWORKS if not missing_package(n))})")


def build_unet(channels=(16, 32, 64, 128), num_res_units: int = 1) -> torch.nn.Module:
    """MONAI 2-D UNet: RGB in, one logit channel out; stride 2 between the `channels` levels."""
    from monai.networks.nets import UNet

    channels = tuple(int(c) for c in channels)
    if len(channels) < 2:
        raise SiamdiffError("params.yaml: segment.unet.channels needs at least two levels, e.g. [16, 32, 64, 128]")
    return UNet(spatial_dims=2, in_channels=3, out_channels=1, channels=channels,
                strides=(2,) * (len(channels) - 1), num_res_units=int(num_res_units))


def build_segmenter(network: str = "unet", settings: dict | None = None, size: int | None = None) -> torch.nn.Module:
    """A MONAI 2-D network (`NETWORKS`), RGB in, one logit channel out, random init; `settings` is its
    params.yaml sub-mapping (segment.<network>). The model carries `segmenter_size` (`size`; None = as given)."""
    from monai.networks import nets

    check_network(network)
    s = dict(settings or {})
    try:
        if network == "unet":
            model = build_unet(s["channels"], s["num_res_units"])
        elif network == "attentionunet":
            ch = tuple(int(c) for c in s["channels"])
            model = nets.AttentionUnet(spatial_dims=2, in_channels=3, out_channels=1, channels=ch,
                                       strides=(2,) * (len(ch) - 1))
        elif network == "segresnet":
            model = nets.SegResNet(spatial_dims=2, in_channels=3, out_channels=1, init_filters=int(s["init_filters"]),
                                   blocks_down=tuple(s["blocks_down"]), blocks_up=tuple(s["blocks_up"]))
        elif network == "swinunetr":
            model = nets.SwinUNETR(in_channels=3, out_channels=1, feature_size=int(s["feature_size"]), spatial_dims=2)
        else:
            raise SiamdiffError(f"params.yaml: segment.network must be one of {', '.join(NETWORKS)}, got {network!r}")
    except KeyError as e:
        raise SiamdiffError(f"params.yaml: segment.{network}.{e.args[0]} is missing") from None
    model.segmenter_size = None if size is None else int(size)
    return model


def describe(network: str, settings: dict, size: int | None) -> str:
    """One line for the metrics' info file, e.g. `MONAI SegResNet (init_filters 32, ...) at 352 px`."""
    what = ", ".join(f"{k} {v}" for k, v in settings.items())
    at = f"input {size} px" if size is not None else "input at the preprocessed size"
    return f"MONAI {NAMES.get(network, network)} ({what}), {at}, random init"


def _check_side(network: str, settings: dict, side: int, size: int | None) -> None:
    from siamdiff.params_schema import segment_size_multiple

    m = segment_size_multiple(network, settings)
    if (size or side) % m:
        got = f"segment.input_size is {size}" if size else f"segment.input_size is null and the images are {side} px"
        raise SiamdiffError(f"params.yaml: segment.network {network} needs an input side divisible by {m}, but {got}; "
                            f"set segment.input_size to a multiple of {m} (e.g. {max(m, round((size or side) / m) * m)})")


def _resize(x: torch.Tensor, side: int) -> torch.Tensor:
    """`[N,C,H,W]` float -> `[N,C,side,side]`, bilinear (antialiased when shrinking); unchanged at that size."""
    if x.shape[-2:] == (side, side):
        return x
    return torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=True)


def to_input(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 `[N,H,W,3]` -> float `[N,3,H,W]` in [0, 1]."""
    return rgb.permute(0, 3, 1, 2).float() / 255.0


def train_segmenter(rgb: torch.Tensor, masks: torch.Tensor, channels=(16, 32, 64, 128), epochs: int = 30,
                    batch_size: int = 16, lr: float = 1e-3, seed: int = 0, progress: bool = True,
                    desc: str = "segmenter", max_steps: int | None = None, num_res_units: int = 1,
                    network: str = "unet", settings: dict | None = None, size: int | None = None
                    ) -> torch.nn.Module:
    """Train a MONAI segmenter on uint8 images `[N,S,S,3]` and {0,1} masks `[N,S,S]` (Dice + BCE loss, Adam).

    `network` with its `settings` (segment.<network>); for `unet` without settings, `channels` and
    `num_res_units`. `size`: the network's input side (module docstring; None = S). `epochs` passes over
    the data, or exactly `max_steps` optimiser steps when given (epochs then repeat as needed). Paired random
    flips and rot90 as light augmentation; deterministic given `seed` (on the CPU; on a GPU up to cuDNN).
    """
    from monai.losses import DiceCELoss

    if len(rgb) == 0:
        raise SiamdiffError("segmentation: no training images")
    if settings is None and network == "unet":
        settings = {"channels": list(channels), "num_res_units": num_res_units}
    check_network(network)
    _check_side(network, settings or {}, int(rgb.shape[1]), size)
    g = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = build_segmenter(network, settings, size).to(device)
    loss_fn = DiceCELoss(sigmoid=True)
    opt = torch.optim.Adam(model.parameters(), lr=float(lr))
    x_all = to_input(rgb)
    y_all = masks.float().unsqueeze(1)
    if size is not None:
        x_all = _resize(x_all, int(size))
        y_all = (_resize(y_all, int(size)) >= 0.5).float()  # bilinear, then binary again
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
            x, y = x.to(device), y.to(device)
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
    """Foreground probabilities `[N,S,S]` for uint8 images `[N,S,S,3]`, at the images' size S: resized to
    the model's `segmenter_size` for the network, its logits resized back to S (bilinear) before the sigmoid."""
    model.eval()
    size = getattr(model, "segmenter_size", None)
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(rgb), batch_size):
        x = to_input(rgb[i:i + batch_size])
        side = x.shape[-1]
        logits = model((x if size is None else _resize(x, size)).to(device)).float().cpu()
        out.append(torch.sigmoid(_resize(logits, side) if size is not None else logits)[:, 0])
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

    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(folder / WEIGHTS))
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
        # written before segment.network existed: a UNet from `channels`, `num_res_units`
        network = cfg.get("network", "unet")
        settings = cfg["settings"] if "network" in cfg else {"channels": cfg["channels"],
                                                              "num_res_units": cfg.get("num_res_units", 1)}
        size = cfg.get("size")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise SiamdiffError(f"{folder / CONFIG}: unreadable segmenter config ({e}); {fix}") from e
    want = cfg.get("weights_sha256")
    if want is not None and sha256_file(folder / WEIGHTS) != want:
        raise SiamdiffError(f"{folder / WEIGHTS}: SHA-256 differs from the one recorded in {folder / CONFIG} "
                            f"(damaged model file); {fix}")
    model = build_segmenter(network, settings, size)
    try:
        model.load_state_dict(load_file(str(folder / WEIGHTS)))
    except Exception as e:  # safetensors' own error type, or a shape mismatch (RuntimeError)
        raise SiamdiffError(f"{folder / WEIGHTS}: cannot load the segmenter ({str(e).splitlines()[0]}); {fix}") from e
    return model.eval()
