"""The pipeline's working colour space: `rgb` or `lab` (DESIGN.md section 3).

- `rgb`: x = rgb / 127.5 - 1, in [-1, 1].
- `lab`: CIE L*a*b* (sRGB, D65, the same formulas as `skimage.color.rgb2lab`); L* in [0,100] -> L/50 - 1 in
  [-1, 1]; a* and b* z-scored with the **train split's** mean and std (`data/prep/color_stats.json`,
  written by preprocess), so about [-3, 3].

`to_working(rgb uint8 [N,H,W,3], stats) -> float32 [N,3,H,W]` and `from_working(x [N,3,H,W], stats) -> uint8
[N,H,W,3]` accept torch tensors (returned as tensors on the same device) or numpy arrays (returned as numpy).
Round trip rgb -> lab -> rgb is exact to within 1 grey level (tests/test_data_color.py).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from siamdiff.utils import SiamdiffError

SPACES = ("rgb", "lab")
STATS_KEYS = ("a_mean", "a_std", "b_mean", "b_std")

_RGB2XYZ = np.array([[0.412453, 0.357580, 0.180423],
                     [0.212671, 0.715160, 0.072169],
                     [0.019334, 0.119193, 0.950227]])
_XYZ2RGB = np.linalg.inv(_RGB2XYZ)
_WHITE = np.array([0.95047, 1.0, 1.08883])  # D65, 2 degree observer
_EPS = 0.008856


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


class _Ops:
    """The handful of array operations the conversions need, for numpy or torch."""

    def __init__(self, like):
        self.torch = _is_torch(like)
        if self.torch:
            import torch

            self.t = torch
            self.dtype = like.dtype if like.is_floating_point() else torch.float32
            self.device = like.device

    def const(self, a):
        if self.torch:
            return self.t.as_tensor(np.asarray(a), dtype=self.dtype, device=self.device)
        return np.asarray(a, dtype=np.float64)

    def where(self, c, a, b):
        return self.t.where(c, a, b) if self.torch else np.where(c, a, b)

    def clip(self, x, lo=None, hi=None):
        return x.clamp(lo, hi) if self.torch else np.clip(x, lo, hi)

    def stack(self, xs, axis):
        return self.t.stack(xs, dim=axis) if self.torch else np.stack(xs, axis=axis)


def rgb_to_lab(rgb01, ops: _Ops | None = None):
    """sRGB in [0,1], [...,3] -> L*a*b* [...,3] (float; numpy or torch as given)."""
    ops = ops or _Ops(rgb01)
    c = rgb01
    lin = ops.where(c > 0.04045, ((ops.clip(c, 0.04045) + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = (lin @ ops.const(_RGB2XYZ.T)) / ops.const(_WHITE)
    f = ops.where(xyz > _EPS, ops.clip(xyz, _EPS) ** (1 / 3), 7.787 * xyz + 16 / 116)
    fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
    return ops.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], axis=-1)


def lab_to_rgb(lab, ops: _Ops | None = None):
    """L*a*b* [...,3] -> sRGB in [0,1] [...,3] (clipped)."""
    ops = ops or _Ops(lab)
    L, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    fy = (L + 16) / 116
    f = ops.stack([fy + a / 500, fy, fy - b / 200], axis=-1)
    f3 = ops.clip(f, 0) ** 3
    xyz = ops.where(f3 > _EPS, f3, (f - 16 / 116) / 7.787) * ops.const(_WHITE)
    lin = ops.clip(xyz @ ops.const(_XYZ2RGB.T), 0, 1)
    c = ops.where(lin > 0.0031308, 1.055 * ops.clip(lin, 0.0031308) ** (1 / 2.4) - 0.055, 12.92 * lin)
    return ops.clip(c, 0, 1)


def _space(stats) -> str:
    if stats is None:
        return "rgb"
    space = stats.get("space", "rgb")
    if space not in SPACES:
        raise SiamdiffError(f"colour stats: space {space!r} unknown; use one of {SPACES}")
    if space == "lab":
        missing = [k for k in STATS_KEYS if k not in stats]
        if missing:
            raise SiamdiffError(f"colour stats: lab space needs {missing}; re-run `dvc repro preprocess`")
    return space


def to_working(rgb, stats: dict | None):
    """RGB uint8 [N,H,W,3] (or [H,W,3]) -> working-space float32 [N,3,H,W] (or [3,H,W]), about [-1,1]."""
    space = _space(stats)
    if _is_torch(rgb):
        x = rgb.float() / 255.0
    else:
        x = np.asarray(rgb).astype(np.float32) / 255.0
    ops = _Ops(x)
    if space == "rgb":
        w = x * 2 - 1
    else:
        lab = rgb_to_lab(x, ops)
        w = ops.stack([lab[..., 0] / 50 - 1,
                       (lab[..., 1] - stats["a_mean"]) / stats["a_std"],
                       (lab[..., 2] - stats["b_mean"]) / stats["b_std"]], axis=-1)
    w = w.movedim(-1, -3) if _is_torch(w) else np.moveaxis(w, -1, -3)
    return w.contiguous().float() if _is_torch(w) else np.ascontiguousarray(w, dtype=np.float32)


def from_working(x, stats: dict | None):
    """Working-space [N,3,H,W] (or [3,H,W]) -> RGB uint8 [N,H,W,3] (or [H,W,3]); clamps out-of-range values."""
    space = _space(stats)
    t = _is_torch(x)
    if t:
        x = x.detach().float().movedim(-3, -1)
    else:
        x = np.moveaxis(np.asarray(x, dtype=np.float32), -3, -1)
    ops = _Ops(x)
    if space == "rgb":
        c = ops.clip((x + 1) / 2, 0, 1)
    else:
        lab = ops.stack([(x[..., 0] + 1) * 50,
                         x[..., 1] * stats["a_std"] + stats["a_mean"],
                         x[..., 2] * stats["b_std"] + stats["b_mean"]], axis=-1)
        c = lab_to_rgb(lab, ops)
    c = c * 255 + 0.5
    return c.clamp(0, 255).to(dtype=ops.t.uint8).contiguous() if t else np.clip(c, 0, 255).astype(np.uint8)


def compute_stats(rgb: np.ndarray, space: str, chunk: int = 256) -> dict:
    """Mean and std of a*, b* over every pixel of `rgb` uint8 [N,H,W,3] (the train split), float64."""
    if space not in SPACES:
        raise SiamdiffError(f"params.yaml: preprocess.color_space must be one of {SPACES}, got {space!r}")
    n = 0
    s = np.zeros(2)
    ss = np.zeros(2)
    for i in range(0, len(rgb), chunk):
        lab = rgb_to_lab(rgb[i:i + chunk].astype(np.float64) / 255.0)[..., 1:].reshape(-1, 2)
        n += len(lab)
        s += lab.sum(0)
        ss += (lab ** 2).sum(0)
    if n == 0:
        raise SiamdiffError("preprocess: the train split is empty; cannot compute colour statistics")
    mean = s / n
    std = np.sqrt(np.maximum(ss / n - mean ** 2, 0))
    std = np.maximum(std, 1e-3)
    return {"space": space, "a_mean": float(mean[0]), "a_std": float(std[0]),
            "b_mean": float(mean[1]), "b_std": float(std[1])}


def load_stats(path: str | Path) -> dict:
    """`color_stats.json` -> dict (validated)."""
    path = Path(path)
    if not path.is_file():
        raise SiamdiffError(f"{path}: colour statistics not found; run `dvc repro preprocess`")
    try:
        stats = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SiamdiffError(f"{path}: not valid JSON ({e}); run `dvc repro preprocess`") from None
    if not isinstance(stats, dict) or stats.get("space") not in SPACES:
        raise SiamdiffError(f"{path}: `space` must be one of {SPACES}; run `dvc repro preprocess`")
    if stats["space"] == "lab":
        for k in STATS_KEYS:
            if not isinstance(stats.get(k), (int, float)):
                raise SiamdiffError(f"{path}: lab space needs a number `{k}`; run `dvc repro preprocess`")
    return stats
