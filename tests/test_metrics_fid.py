"""FID/KID (torchmetrics + TF-Inception features) against independent numpy/scipy computations."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch


def fid_numpy(x: np.ndarray, y: np.ndarray) -> float:
    """The classic formula with scipy's matrix square root (pytorch-fid / TTUR)."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def fid_numpy_lowrank(x: np.ndarray, y: np.ndarray) -> float:
    """Same quantity for n << d: tr sqrt(S1 S2) from the n x n matrix A1 A2^T A2 A1^T (same non-zero eigenvalues)."""
    a1 = (x - x.mean(0)) / np.sqrt(len(x) - 1)
    a2 = (y - y.mean(0)) / np.sqrt(len(y) - 1)
    m = a1 @ a2.T
    eig = np.linalg.eigvalsh(m @ m.T)
    tr_sqrt = np.sqrt(np.clip(eig, 0, None)).sum()
    return float(((x.mean(0) - y.mean(0)) ** 2).sum() + (a1 ** 2).sum() + (a2 ** 2).sum() - 2 * tr_sqrt)


def kid_numpy(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3 (Binkowski et al. 2018) on the full sets."""
    d = x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    m, n = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def test_fid_kid_match_numpy_on_low_dim_features():
    from siamdiff.metrics.fid import fid_kid

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 16))
    y = rng.normal(size=(200, 16)) @ np.diag(np.linspace(0.5, 1.5, 16)) + 0.3
    got = fid_kid(torch.from_numpy(x), torch.from_numpy(y), kid_subset_size=200, kid_subsets=3)
    assert got["fid"] == pytest.approx(fid_numpy(x, y), rel=1e-6, abs=1e-8)
    assert got["kid_mean"] == pytest.approx(kid_numpy(x, y), rel=1e-8, abs=1e-12)
    assert got["kid_std"] < 1e-12  # every subset is the whole set
    same = fid_kid(torch.from_numpy(x), torch.from_numpy(x), kid_subset_size=200, kid_subsets=2)
    assert abs(same["fid"]) < 1e-6
    assert same["kid_mean"] == pytest.approx(kid_numpy(x, x), abs=1e-12)  # unbiased: not exactly 0


def test_kid_subset_size_capped_for_small_sets():
    from siamdiff.metrics.fid import kid_from_features

    rng = np.random.default_rng(1)
    x, y = torch.from_numpy(rng.normal(size=(12, 8))), torch.from_numpy(rng.normal(size=(20, 8)))
    out = kid_from_features(x, y, subsets=5)
    assert out["kid_subset_size"] == 12


@pytest.fixture(scope="module")
def inception_sets():
    from siamdiff.metrics.assets import ensure_assets
    from siamdiff.metrics.inception import inception_features

    ensure_assets()
    g = torch.Generator().manual_seed(0)
    base = torch.rand(12, 1, 1, 3, generator=g) * 200
    yy = torch.linspace(0, 1, 48).view(1, 48, 1, 1)
    real = (base + 50 * yy + torch.rand(12, 48, 48, 3, generator=g) * 30).clamp(0, 255).to(torch.uint8)
    fake = (real.float() * 0.6 + torch.rand(12, 48, 48, 3, generator=g) * 80).clamp(0, 255).to(torch.uint8)
    return inception_features(real), inception_features(fake)


def test_inception_features_shape_and_fid_vs_numpy(inception_sets):
    from siamdiff.metrics.fid import fid_kid

    fr, ff = inception_sets
    assert fr.shape == (12, 2048) and fr.dtype == torch.float64
    assert (fr >= 0).all()  # pool features after ReLU
    got = fid_kid(fr, ff)
    assert got["kid_subset_size"] == 12
    assert got["fid"] == pytest.approx(fid_numpy_lowrank(fr.numpy(), ff.numpy()), rel=1e-4)
    assert got["kid_mean"] == pytest.approx(kid_numpy(fr.numpy(), ff.numpy()), rel=1e-6)
    assert got["fid"] > 1.0
    # (FID of a set with itself ~ 0 is checked on low-dimensional features above: a second 2048 x 2048
    #  eigendecomposition here would double this test's time)


def test_tf1_resize_matches_reference_formula():
    from siamdiff.metrics.inception import resize_like_tf1

    x = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    y = resize_like_tf1(x, 8)
    # TF1 resize_bilinear (align_corners=False): source = dst * in/out, clamped at the edge
    src = np.arange(8) * 0.5
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, 3)
    w = src - lo
    row = (1 - w) * np.arange(4)[lo] + w * np.arange(4)[hi]
    want = row[:, None] * 4 + row[None, :]
    assert np.allclose(y[0, 0].numpy(), want, atol=1e-5)
