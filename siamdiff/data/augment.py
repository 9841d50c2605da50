"""Paired training augmentation (DESIGN.md section 3), with albumentations.

Intensity (image only), probability `p_intensity` (0.3): gamma +-5% and contrast +-3%.
Geometric (image and mask together), each with probability `p_geometric` (0.2): rot90, horizontal flip,
elastic deformation (alpha 10, sigma 5 pixels; classic uniform-noise displacement fields); masks are
warped with nearest-neighbour interpolation and stay binary.

The encode stage realises augmentation as a fixed number of precomputed views per train image: view 0 is
the identity, view v > 0 is `PairedAugment(params)(rgb, mask, seed=view_seed(seed, item_id, v))`, deterministic per
(seed, item, view). `spec(params, seed)` is what enters the latent-cache key, including the
albumentations version, so an upgrade that changes the views also changes the keys.
"""
from __future__ import annotations

import hashlib

import numpy as np

IMPL = 1  # bump when this module's pipeline changes


def spec(params: dict, seed: int) -> dict:
    import albumentations

    return {**params, "seed": int(seed), "impl": IMPL, "albumentations": albumentations.__version__}


def view_seed(seed: int, item_id: str, view: int) -> int:
    h = hashlib.sha256(f"{int(seed)}:{item_id}:{int(view)}".encode()).digest()
    return int.from_bytes(h[:4], "little")


class PairedAugment:
    """`PairedAugment(params)(rgb uint8 [S,S,3], mask uint8 [S,S], seed) -> (rgb, mask)`."""

    def __init__(self, params: dict):
        import albumentations as A

        gamma = float(params.get("gamma", 0.05))
        contrast = float(params.get("contrast", 0.03))
        p_int = float(params.get("p_intensity", 0.3))
        p_geo = float(params.get("p_geometric", 0.2))
        self.transform = A.Compose([
            A.Sequential([
                A.RandomGamma(gamma_limit=(100 * (1 - gamma), 100 * (1 + gamma)), p=1.0),
                A.RandomBrightnessContrast(brightness_limit=0.0, contrast_limit=contrast, p=1.0),
            ], p=p_int),
            A.RandomRotate90(p=p_geo),
            A.HorizontalFlip(p=p_geo),
            A.ElasticTransform(alpha=float(params.get("elastic_alpha", 10)),
                               sigma=float(params.get("elastic_sigma", 5)), noise_distribution="uniform",
                               border_mode=4, mask_interpolation=0, p=p_geo),  # 4 = cv2.BORDER_REFLECT_101
        ], seed=0)

    def __call__(self, rgb: np.ndarray, mask: np.ndarray, seed: int):
        # one independent stream per transform: albumentations' Compose.set_random_seed gives every
        # transform the same seed, which would make their apply/skip draws identical
        for i, t in enumerate(self.transform.transforms):
            t.set_random_seed(view_seed(seed, "transform", i))
        out = self.transform(image=np.ascontiguousarray(rgb), mask=np.ascontiguousarray(mask))
        return np.ascontiguousarray(out["image"]), (np.ascontiguousarray(out["mask"]) > 0).astype(np.uint8)

