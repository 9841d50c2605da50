"""Procedural endoscopy-like image/mask pairs: the built-in default data.

Each patient is a scene: a mucosa colour and texture (multi-octave noise), a vessel network, a lumen
(the dark tunnel, with ring-like folds around it), a light direction, and one polyp (sometimes two) with
its own shape, colour and surface. Each frame of the patient's sequence moves the camera over that scene
(drift, zoom, slight rotation), so the polyp changes position and size from frame to frame. The polyp is a
lit, shaded dome (diffuse + specular shading from the scope's light), redder and more saturated than the
mucosa (or, for about a quarter of the patients, paler), with a dark contact shadow at its rim: a clear
appearance that a small diffusion model learns at 64 px. The scope's field of view is a rounded frame with
black corners and a vignette; wet-surface specular highlights are scattered over mucosa and polyp.

Mask coverage is long-tailed (log-normal per patient and per frame): mean about 9%, 10th percentile about
2%, 90th percentile about 21%. Two sub-datasets at different native sizes: `synth-a` 768x576 and
`synth-b` 384x288 (width x height).

Deterministic per seed: every (seed, sub-dataset, patient, frame) has its own random stream, so a
frame does not change when the number of patients or frames changes.
"""
from __future__ import annotations

import colorsys
import math
from functools import lru_cache
from typing import Iterator

import cv2
import numpy as np

from siamdiff.utils import SiamdiffError

DATASETS = {"synth-a": (768, 576), "synth-b": (384, 288)}  # name -> (width, height)
COVERAGE_MEDIAN = 0.066     # log-normal coverage per patient ...
COVERAGE_SIGMA_PATIENT = 0.85
COVERAGE_SIGMA_FRAME = 0.3  # ... and per frame around it
COVERAGE_MAX = 0.45
CANVAS_SCALE = 1.5          # the scene is this much larger than the field of view
SCENE_PIXELS = 420          # scene canvas height in pixels (texture resolution), whatever the frame size


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0), 1), min(max(v, 0), 1)), np.float32)


def fbm(rng: np.random.Generator, h: int, w: int, octaves: int = 5, base: int = 3, persistence: float = 0.55) -> np.ndarray:
    """Smooth multi-octave value noise in [0,1], float32 [h,w]."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        gh = base * 2 ** o + 1
        gw = max(2, round(gh * w / h))
        g = rng.random((gh, gw), dtype=np.float32)
        out += amp * cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= persistence
    out /= total
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / max(hi - lo, 1e-6)


def _vessels(rng: np.random.Generator, h: int, w: int, count: int, width: float) -> np.ndarray:
    """A vessel map in [0,1]: branching random walks drawn anti-aliased."""
    canvas = np.zeros((h, w), np.uint8)
    stack = [(rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0, 2 * math.pi), width, 0) for _ in range(count)]
    while stack:
        x, y, a, wd, depth = stack.pop()
        pts = [(x, y)]
        for _ in range(int(rng.integers(25, 90))):
            a += rng.normal(0, 0.3)
            step = rng.uniform(3, 6)
            x, y = x + step * math.cos(a), y + step * math.sin(a)
            pts.append((x, y))
            if depth < 2 and rng.random() < 0.04:
                stack.append((x, y, a + rng.choice([-1, 1]) * rng.uniform(0.5, 1.1), wd * 0.7, depth + 1))
            if not (-20 < x < w + 20 and -20 < y < h + 20):
                break
        arr = np.round(np.array(pts) * 16).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(canvas, [arr], False, 255, max(1, int(round(wd))), cv2.LINE_AA, shift=4)
    v = canvas.astype(np.float32) / 255.0
    return cv2.GaussianBlur(v, (0, 0), 0.8)


@lru_cache(maxsize=4)
def _field(w: int, h: int, roundness: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Coordinate grids, the scope's field of view (soft-edged, black corners) and its vignette."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = (xx + 0.5 - w / 2) / (w / 2)
    v = (yy + 0.5 - h / 2) / (h / 2)
    n = roundness
    r = (np.abs(u * 0.97) ** n + np.abs(v * 0.97) ** n) ** (1 / n)
    edge = 2.0 / min(w, h)
    fov = np.clip((1.0 - r) / (2 * edge) + 0.5, 0, 1).astype(np.float32)
    rr = np.sqrt(u * u + v * v) / math.sqrt(2)
    vignette = (1.0 - 0.55 * rr ** 2.2).astype(np.float32)
    return xx, yy, fov, vignette


class _Patient:
    """Everything that stays the same over a patient's sequence."""

    def __init__(self, rng: np.random.Generator, w: int, h: int):
        self.w, self.h = w, h
        hue = rng.uniform(-0.01, 0.06)
        sat = rng.uniform(0.35, 0.6)
        val = rng.uniform(0.72, 0.9)
        self.mucosa = _hsv(hue, sat, val)
        self.mucosa2 = _hsv(hue + rng.uniform(-0.03, 0.03), sat + rng.uniform(0.05, 0.2), val * rng.uniform(0.7, 0.85))
        self.vessel_color = _hsv(hue - 0.01, min(sat + 0.35, 0.95), val * 0.45)
        self.pale = rng.random() < 0.25
        if self.pale:  # pale / whitish polyp
            self.polyp = _hsv(hue + rng.uniform(0.0, 0.04), sat * rng.uniform(0.35, 0.55), min(val * 1.12, 0.97))
        else:  # red, more saturated than the mucosa
            self.polyp = _hsv(hue - rng.uniform(0.02, 0.06), min(sat + rng.uniform(0.25, 0.4), 0.95), val * rng.uniform(0.8, 0.95))
        # scene canvas (texture resolution independent of the frame size)
        ch = SCENE_PIXELS
        cw = int(round(ch * w / h))
        self.canvas_hw = (int(ch * CANVAS_SCALE), int(cw * CANVAS_SCALE))
        H, W = self.canvas_hw
        t = fbm(rng, H, W, octaves=5, base=2)
        fine = fbm(rng, H, W, octaves=3, base=24)
        mix = (0.75 * t + 0.25 * fine)[..., None]
        color = self.mucosa * (1 - mix) + self.mucosa2 * mix
        ves = _vessels(rng, H, W, int(rng.integers(6, 16)), rng.uniform(1.2, 2.6))[..., None]
        strength = rng.uniform(0.45, 0.8)
        self.canvas = (color * (1 - strength * ves) + self.vessel_color * (strength * ves)).astype(np.float32)
        self.surface = fbm(rng, 128, 128, octaves=4, base=6)  # polyp surface texture (pit pattern)
        # lumen and folds
        self.lumen = np.array([rng.uniform(0.15, 0.85), rng.uniform(0.15, 0.85)])
        self.lumen_size = rng.uniform(0.12, 0.25)
        self.fold_freq = rng.uniform(6, 12)
        self.fold_phase = rng.uniform(0, 2 * math.pi)
        self.fold_amp = rng.uniform(0.04, 0.1)
        # light: from the scope, slightly off-axis
        la = rng.uniform(0, 2 * math.pi)
        self.light = np.array([0.45 * math.cos(la), 0.45 * math.sin(la), 1.0])
        self.light /= np.linalg.norm(self.light)
        # camera path over the sequence: smooth functions of the frame index
        self.path = rng.uniform(-1, 1, size=(6,))
        self.path_freq = rng.uniform(0.3, 0.9)
        # polyps (centres in field-of-view units [0,1]) and their long-tailed size
        self.coverage = float(min(COVERAGE_MEDIAN * math.exp(rng.normal(0, COVERAGE_SIGMA_PATIENT)), COVERAGE_MAX))
        self.polyps = [self._polyp(rng, 1.0)]
        if rng.random() < 0.15:
            self.polyps.append(self._polyp(rng, rng.uniform(0.1, 0.35)))

    def _polyp(self, rng, rel_size: float) -> dict:
        k = np.arange(2, 6)
        amps = rng.uniform(0, 1, size=k.shape) * np.array([0.22, 0.12, 0.07, 0.04]) * rng.uniform(0.3, 1.0)
        return {
            "rel": rel_size,
            "center": np.array([rng.uniform(0.25, 0.75), rng.uniform(0.25, 0.75)]),
            "k": k, "amps": amps, "phases": rng.uniform(0, 2 * math.pi, size=k.shape),
            "angle": rng.uniform(0, 2 * math.pi),
            "height": rng.uniform(0.6, 1.6),          # dome height relative to its radius: flat .. pedunculated
            "profile": rng.uniform(0.45, 0.8),        # dome exponent
        }


def _render_frame(pt: _Patient, rng: np.random.Generator, f: int, empty: bool) -> tuple[np.ndarray, np.ndarray]:
    w, h = pt.w, pt.h
    # camera: smooth drift/zoom/rotation along the sequence
    s = pt.path_freq * f
    p = pt.path
    drift = np.array([0.12 * math.sin(s + 3 * p[0]) + 0.05 * p[1], 0.10 * math.sin(0.8 * s + 3 * p[2]) + 0.05 * p[3]])
    zoom = math.exp(COVERAGE_SIGMA_FRAME * (0.8 * math.sin(0.7 * s + 3 * p[4]) + 0.6 * rng.normal()))
    rot = 0.15 * math.sin(0.5 * s + 3 * p[5])
    # background: warp the scene canvas into the field of view (frame pixel -> canvas pixel)
    H, W = pt.canvas_hw
    scale = (H / CANVAS_SCALE) / h / math.sqrt(zoom)
    c, si = math.cos(rot) * scale, math.sin(rot) * scale
    cx, cy = W / 2 + drift[0] * W / CANVAS_SCALE, H / 2 + drift[1] * H / CANVAS_SCALE
    M = np.array([[c, -si, cx - c * w / 2 + si * h / 2], [si, c, cy - si * w / 2 - c * h / 2]], np.float32)
    img = cv2.warpAffine(pt.canvas, M, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REFLECT)
    # lumen darkness and irregular folds around it: smooth, so computed at 1/4 resolution and upsampled
    light = _lighting(pt, w, h, drift, zoom)
    cv2.multiply(img, cv2.merge([light, light, light]), dst=img)
    mask = np.zeros((h, w), np.uint8)
    if not empty:
        for k, pol in enumerate(pt.polyps):
            _draw_polyp(pt, rng, img, mask, pol, zoom, drift, rot, light)
    # specular highlights: a few wet glints on the mucosa
    unit = min(w, h) / 288
    for _ in range(int(rng.poisson(7))):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        if light[int(y), int(x)] < 0.55:
            continue
        ax = max(1, int(rng.uniform(1, 5) * unit))
        ay = max(1, int(ax * rng.uniform(0.3, 1.0)))
        _glint(img, int(x), int(y), ax, ay, rng.uniform(0, 180), unit)
    # the scope's field of view: black surround with a soft edge
    fov3, surround = _fov3(w, h)
    cv2.multiply(img, fov3, dst=img)
    cv2.add(img, surround, dst=img)
    mask &= (fov3[:, :, 0] > 0.5).astype(np.uint8)
    return cv2.convertScaleAbs(img, alpha=255.0), mask


def _glint(img: np.ndarray, x: int, y: int, ax: int, ay: int, angle: float, unit: float) -> None:
    """A small white specular glint, drawn and blurred in a local patch only."""
    h, w = img.shape[:2]
    r = ax + int(3 * unit) + 2
    x0, x1, y0, y1 = max(0, x - r), min(w, x + r + 1), max(0, y - r), min(h, y + r + 1)
    patch = np.zeros((y1 - y0, x1 - x0), np.float32)
    cv2.ellipse(patch, (x - x0, y - y0), (ax, ay), angle, 0, 360, 1.0, -1)
    patch = cv2.GaussianBlur(patch, (0, 0), 0.8 * unit)[..., None]
    region = img[y0:y1, x0:x1]
    region += patch * (1 - region)


@lru_cache(maxsize=4)
def _fov3(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    fov = _field(w, h, 3.0 if w >= 600 else 2.4)[2]
    fov3 = cv2.merge([fov, fov, fov])
    return fov3, (0.015 * (1 - fov3)).astype(np.float32)


def _lighting(pt: _Patient, w: int, h: int, drift, zoom: float) -> np.ndarray:
    sw, sh = w // 4, h // 4
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    xx = (xx + 0.5) * (w / sw)
    yy = (yy + 0.5) * (h / sh)
    lx = (pt.lumen[0] - drift[0]) * w
    ly = (pt.lumen[1] - drift[1]) * h
    d = np.sqrt((xx - lx) ** 2 + (yy - ly) ** 2) / math.hypot(w, h)
    ang = np.arctan2(yy - ly, xx - lx)
    size = pt.lumen_size / math.sqrt(zoom)
    depth = np.exp(-(d / size) ** 2)
    wobble = 0.9 * np.sin(3 * ang + pt.fold_phase) + 0.5 * np.sin(5 * ang + 2 * pt.fold_phase)
    folds = 1 + pt.fold_amp * np.sin(2 * math.pi * pt.fold_freq * np.sqrt(d) + wobble + pt.fold_phase)
    light = ((1 - 0.85 * depth) * folds).astype(np.float32)
    light = cv2.resize(light, (w, h), interpolation=cv2.INTER_LINEAR)
    return light * _field(w, h, 3.0 if w >= 600 else 2.4)[3]


def _draw_polyp(pt, rng, img, mask, pol, zoom, drift, rot, light) -> None:
    w, h = pt.w, pt.h
    a2 = float(np.sum(pol["amps"] ** 2)) / 2
    cov = min(pt.coverage * pol["rel"] * zoom, COVERAGE_MAX)
    R = math.sqrt(cov * w * h / (math.pi * (1 + a2)))
    R = max(R, 3.0)
    c = (pol["center"] - drift * 0.8 + rng.normal(0, 0.015, 2))
    cx = float(np.clip(c[0] * w, 0.6 * R, w - 0.6 * R)) if w > 1.2 * R else w / 2
    cy = float(np.clip(c[1] * h, 0.6 * R, h - 0.6 * R)) if h > 1.2 * R else h / 2
    shadow_w = max(1.5, 0.06 * R)
    rmax = R * (1 + float(np.sum(pol["amps"]))) + 4 * shadow_w + 2
    x0, x1 = max(0, int(cx - rmax)), min(w, int(cx + rmax) + 1)
    y0, y1 = max(0, int(cy - rmax)), min(h, int(cy + rmax) + 1)
    if x1 <= x0 or y1 <= y0:
        return
    table_t = np.linspace(-math.pi, math.pi, 1025, dtype=np.float32) - (pol["angle"] + rot)
    table_r = np.ones_like(table_t)
    for k, a, ph in zip(pol["k"], pol["amps"], pol["phases"]):
        table_r += a * np.cos(k * table_t + ph)
    # the mask: the exact outline r(theta) as a sub-pixel polygon
    th = np.linspace(-math.pi, math.pi, 1025)[:-1]
    poly = np.stack([cx - 0.5 + R * table_r[:-1] * np.cos(th), cy - 0.5 + R * table_r[:-1] * np.sin(th)], axis=1)
    cv2.fillPoly(mask, [np.round(poly * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    # the picture: shading is smooth, so large polyps are shaded on a 2x coarser grid and upsampled
    ds = 2 if R > 60 else 1
    X = np.arange(x0, x1, ds, dtype=np.float32)[None, :] + ds / 2 - cx
    Y = np.arange(y0, y1, ds, dtype=np.float32)[:, None] + ds / 2 - cy
    theta = np.arctan2(Y, X)  # [-pi, pi]; the shape's angle is folded into its radial table
    radial = table_r[((theta + math.pi) * (1024 / (2 * math.pi)) + 0.5).astype(np.int32)]
    rho = np.sqrt(X * X + Y * Y) / (R * radial)
    # dome height field -> normals -> diffuse + specular shading
    hgt = np.clip(1 - rho * rho, 0, 1) ** pol["profile"] * (pol["height"] * R / ds)
    gy, gx = np.gradient(hgt)
    inv = 1 / np.sqrt(gx * gx + gy * gy + 1)
    L = pt.light.astype(np.float32)
    diffuse = np.clip((L[2] - gx * L[0] - gy * L[1]) * inv, 0, 1)
    half = L + np.array([0, 0, 1], np.float32)
    half /= np.linalg.norm(half)
    spec = np.clip((half[2] - gx * half[0] - gy * half[1]) * inv, 0, 1) ** 60
    tex = cv2.resize(pt.surface, (rho.shape[1], rho.shape[0]), interpolation=cv2.INTER_LINEAR)
    shade = (0.3 + 0.85 * diffuse) * (0.9 + 0.2 * tex)
    local_light = light[y0:y1:ds, x0:x1:ds] ** 0.5
    col = pt.polyp[None, None, :] * (shade * local_light)[..., None]
    col += (0.85 * spec * (rho < 0.97))[..., None] * (1 - col)
    # soft ~1.5 px edge for the picture, contact shadow just outside
    edge_px = (1 - rho) * R * radial
    alpha = np.clip(edge_px / 1.5 + 0.5, 0, 1)
    shadow = 0.45 * np.exp(-np.clip(-edge_px, 0, None) / shadow_w) * (rho >= 1)
    if ds > 1:
        size = (x1 - x0, y1 - y0)
        col = cv2.resize(col.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
        alpha = cv2.resize(alpha.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
        shadow = cv2.resize(shadow.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    alpha = alpha[..., None]
    region = img[y0:y1, x0:x1]
    region *= (1 - shadow)[..., None]
    region[:] = region * (1 - alpha) + col * alpha


def render_patient(seed: int, dataset_index: int, patient: int, w: int, h: int, frames: int,
                   empty_fraction: float = 0.0) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(frame, RGB uint8 [h,w,3], mask uint8 [h,w] in {0,1}) for each frame of one patient's sequence."""
    pt = _Patient(_rng(seed, dataset_index, patient), w, h)
    for f in range(frames):
        rng = _rng(seed, dataset_index, patient, 1 + f)
        empty = rng.random() < empty_fraction
        img, mask = _render_frame(pt, rng, f, empty)
        yield f, img, mask


def _validate(cfg: dict, where: str) -> tuple[int, int, int, list[str], float]:
    def integer(key, default, lo):
        v = cfg.get(key, default)
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise SiamdiffError(f"params.yaml: {where}.{key} must be an integer >= {lo}, got {v!r}")
        return v

    seed = integer("seed", 0, 0)
    patients = integer("patients", 40, 1)
    frames = integer("frames_per_patient", 6, 1)
    names = cfg.get("datasets", list(DATASETS))
    if not isinstance(names, list) or not names or any(n not in DATASETS for n in names):
        raise SiamdiffError(f"params.yaml: {where}.datasets must be a non-empty list drawn from {list(DATASETS)}, got {names!r}")
    ef = cfg.get("empty_fraction", 0.0)
    if not isinstance(ef, (int, float)) or not 0 <= ef <= 1:
        raise SiamdiffError(f"params.yaml: {where}.empty_fraction must be in [0, 1], got {ef!r}")
    return seed, patients, frames, names, float(ef)


def synthetic_frames(cfg: dict, where: str = "synthetic") -> Iterator[tuple[str, str, str, np.ndarray, np.ndarray]]:
    """The `synthetic` source: (dataset, patient, frame, RGB uint8 [H,W,3], mask {0,1} [H,W]) for every
    sub-dataset x patient x frame (`siamdiff.data.sources` wraps them into `Item`s)."""
    seed, patients, frames, names, ef = _validate(cfg, where)
    for name in names:
        w, h = DATASETS[name]
        di = list(DATASETS).index(name)
        for p in range(patients):
            for f, img, mask in render_patient(seed, di, p, w, h, frames, ef):
                yield name, f"p{p:03d}", f"{f:02d}", img, mask
