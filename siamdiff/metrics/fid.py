"""FID and KID with torchmetrics, the TF-Inception of `siamdiff.metrics.inception` as feature extractor.

Inception features of an image set are computed once (`inception_features`) and reused by FID and KID
and across sampling seeds: torchmetrics is given `FeaturePassThrough`, a custom feature extractor that runs
the Inception on images and passes already-computed `[N, 2048]` feature rows of that same Inception
through unchanged. The statistics (means, covariances, matrix square root; the unbiased polynomial-kernel
MMD of KID) are torchmetrics' own.

KID on small sets: torchmetrics draws `subsets` random subsets of `subset_size` from each set;
`subset_size` is capped at the smaller set size (the returned dict says which size was used).
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from siamdiff.metrics.inception import NUM_FEATURES

KID_SUBSET_SIZE = 1000  # the usual default; capped at n for small sets
KID_SUBSETS = 100


class FeaturePassThrough(nn.Module):
    """torchmetrics feature extractor: precomputed `[N, F]` features -> themselves; images -> `extractor`.

    Without an extractor, torchmetrics' constructor probe (a dummy 299x299 image) gets zeros of the
    right width, so no network is loaded when the features are already computed.
    """

    def __init__(self, extractor: nn.Module | None = None, num_features: int = NUM_FEATURES):
        super().__init__()
        self.extractor = extractor
        self.num_features = int(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2 and x.is_floating_point():
            return x.to(torch.float64)
        if self.extractor is not None:
            return self.extractor(x)
        if x.ndim == 4:  # torchmetrics' constructor probe
            return torch.zeros(x.shape[0], self.num_features, dtype=torch.float64)
        raise ValueError(f"expected [N, {self.num_features}] features, got {tuple(x.shape)}")


def fid_from_features(real: torch.Tensor, fake: torch.Tensor) -> float:
    """torchmetrics FID between two feature sets `[N, F]`, `[M, F]`."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    fid = FrechetInceptionDistance(feature=FeaturePassThrough(num_features=real.shape[1]))
    fid.update(real.to(torch.float64), real=True)
    fid.update(fake.to(torch.float64), real=False)
    return float(fid.compute())


def kid_from_features(real: torch.Tensor, fake: torch.Tensor, subset_size: int | None = None,
                      subsets: int = KID_SUBSETS, seed: int = 0) -> dict:
    """torchmetrics KID (unbiased MMD^2, cubic polynomial kernel) -> {kid_mean, kid_std, kid_subset_size}."""
    from torchmetrics.image.kid import KernelInceptionDistance

    n = min(len(real), len(fake))
    size = min(int(subset_size or KID_SUBSET_SIZE), n)
    if size < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(real)} real / {len(fake)} fake")
    with warnings.catch_warnings():  # "will save all extracted features in buffer": intended, sets are small
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature=FeaturePassThrough(num_features=real.shape[1]), subsets=int(subsets),
                                      subset_size=size)
    kid.update(real.to(torch.float64), real=True)
    kid.update(fake.to(torch.float64), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        mean, std = kid.compute()
    return {"kid_mean": float(mean), "kid_std": float(std), "kid_subset_size": size,
            "kid_subsets": int(subsets)}


def fid_kid(real: torch.Tensor, fake: torch.Tensor, kid_subset_size: int | None = None,
            kid_subsets: int = KID_SUBSETS, seed: int = 0) -> dict:
    """FID and KID between two Inception feature sets; KID subset size capped at the smaller set."""
    out = {"fid": fid_from_features(real, fake), "n_real": int(len(real)), "n_fake": int(len(fake))}
    out.update(kid_from_features(real, fake, kid_subset_size, kid_subsets, seed))
    return out
