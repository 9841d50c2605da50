"""Dense Hint Input (DHI): the hint encoder of Siamese-Diffusion's ControlNet (DESIGN.md section 1).

    conv3x3 3->16, ResBlock(16); conv3x3 16->32, ResBlock(32)          two full-resolution stages ("dense")
    per downsampling stage k = 0..n-1 (widths 64, 128, 256 for SD's 8x):
        PatchMerging (2x2 space-to-depth -> LayerNorm(4c) -> Linear(4c -> 2c)) -> conv3x3 -> ResBlock
    zero-initialised conv3x3 -> the ControlNet's first block width

ResBlock = conv3x3 -> SiLU -> conv3x3, + skip, -> SiLU (no normalisation). The number of PatchMerging stages
is log2 of the autoencoder's downsampling factor, so the output is at latent resolution.
Input: `[B, 3, S, S]` in [0, 1] (the mask repeated to three channels, or the image `x~`).
"""
from __future__ import annotations

import math

import torch
from torch import nn


class ResBlock(nn.Module):
    """conv3x3 -> SiLU -> conv3x3, + skip, -> SiLU; no normalisation."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.act(self.conv1(x))) + x)


class PatchMerging(nn.Module):
    """2x2 space-to-depth -> LayerNorm(4c) -> Linear(4c -> 2c) (Swin's patch merging), channels-first I/O."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * channels)
        self.reduction = nn.Linear(4 * channels, 2 * channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"PatchMerging needs even height and width, got {h}x{w}")
        x = x.permute(0, 2, 3, 1)  # B H W C
        # Swin's order of the four sub-grids: (0,0), (1,0), (0,1), (1,1)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        x = self.reduction(self.norm(x))
        return x.permute(0, 3, 1, 2).contiguous()


class DenseHintInput(nn.Module):
    """The DHI hint encoder. `out_channels` = the ControlNet's first block width (320 for SD-1.5)."""

    def __init__(self, out_channels: int, downsample_factor: int = 8, in_channels: int = 3):
        super().__init__()
        stages = int(round(math.log2(downsample_factor)))
        if downsample_factor < 2 or 2**stages != downsample_factor:
            raise ValueError(f"DHI: downsample_factor must be a power of two >= 2, got {downsample_factor}")
        self.downsample_factor = downsample_factor
        self.full_res = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1), ResBlock(16),
            nn.Conv2d(16, 32, 3, padding=1), ResBlock(32),
        )
        down = []
        width = 32
        for _ in range(stages):
            down.append(nn.Sequential(PatchMerging(width), nn.Conv2d(2 * width, 2 * width, 3, padding=1),
                                      ResBlock(2 * width)))
            width *= 2
        self.down = nn.Sequential(*down)
        self.zero_conv = nn.Conv2d(width, out_channels, 3, padding=1)
        nn.init.zeros_(self.zero_conv.weight)
        nn.init.zeros_(self.zero_conv.bias)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return self.zero_conv(self.down(self.full_res(cond)))
