"""The built-in synthetic source: counts, sizes, determinism, coverage statistics, a learnable polyp."""
import numpy as np
import pytest

from siamdiff.data import synthetic
from siamdiff.data.preprocess import preprocess_pair
from siamdiff.data.sources import iter_source
from siamdiff.utils import SiamdiffError


def _items(**cfg):
    return list(iter_source({"type": "synthetic", **cfg}, "ingest.sources[0]"))


def test_counts_sizes_and_ids():
    items = _items(seed=0, patients=2, frames_per_patient=3)
    assert len(items) == 2 * 2 * 3
    by_ds = {}
    for it in items:
        by_ds.setdefault(it.dataset, []).append(it)
        h, w = it.mask.shape
        assert (w, h) == synthetic.DATASETS[it.dataset]
        assert it.image.shape == (h, w, 3) and it.image.dtype == np.uint8
        assert set(np.unique(it.mask)) <= {0, 1}
    assert sorted(by_ds) == ["synth-a", "synth-b"]
    assert {it.patient for it in by_ds["synth-a"]} == {"p000", "p001"}
    assert len({it.id for it in items}) == len(items)
    assert items[0].id == "synth-a-p000-00"


def test_deterministic_and_independent_of_counts():
    a = _items(seed=3, patients=2, frames_per_patient=2, datasets=["synth-b"])
    b = _items(seed=3, patients=2, frames_per_patient=2, datasets=["synth-b"])
    for x, y in zip(a, b):
        assert np.array_equal(x.image, y.image) and np.array_equal(x.mask, y.mask)
    # a frame does not depend on how many patients / frames are generated
    c = _items(seed=3, patients=1, frames_per_patient=1, datasets=["synth-b"])
    assert np.array_equal(c[0].image, a[0].image)
    # another seed gives other data
    d = _items(seed=4, patients=1, frames_per_patient=1, datasets=["synth-b"])
    assert not np.array_equal(d[0].image, a[0].image)


def test_sequence_frames_differ_but_share_the_patient():
    items = _items(seed=0, patients=3, frames_per_patient=3, datasets=["synth-b"])
    f0, f1 = items[0], items[1]
    assert f0.patient == f1.patient and not np.array_equal(f0.mask, f1.mask)
    # mucosa colour: closer within a patient than between patients (on average)
    def bg_mean(it):
        return it.image[it.mask == 0].reshape(-1, 3).mean(0)
    means = np.array([bg_mean(it) for it in items]).reshape(3, 3, 3)
    within = np.mean([np.abs(m - m.mean(0)).mean() for m in means])
    between = np.abs(means.mean(1) - means.mean((0, 1))).mean()
    assert within < between


@pytest.fixture(scope="module")
def coverage_sample():
    # coverage is relative to the frame, so the small sub-dataset has the same distribution
    return _items(seed=0, patients=30, frames_per_patient=4, datasets=["synth-b"])


def test_mask_coverage_is_long_tailed(coverage_sample):
    cov = np.array([it.mask.mean() for it in coverage_sample])
    mean, p10, p90 = cov.mean(), np.percentile(cov, 10), np.percentile(cov, 90)
    assert 0.06 <= mean <= 0.13, mean          # target ~9%
    assert 0.008 <= p10 <= 0.035, p10           # target ~2%
    assert 0.13 <= p90 <= 0.32, p90             # target ~21%
    assert np.median(cov) < mean                # long right tail
    assert (cov > 0).all()                      # empty_fraction defaults to 0


def test_polyp_is_distinct_at_64px(coverage_sample):
    """What a tiny diffusion model sees at 64 px: polyp pixels differ clearly from the mucosa around them."""
    import cv2

    gaps = []
    for it in coverage_sample[::4]:
        img, m = preprocess_pair(it.image, it.mask, 64)
        if m.sum() < 6:
            continue
        lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB).astype(float)
        ring = cv2.dilate(m, np.ones((7, 7), np.uint8)) - m
        inner = cv2.erode(m, np.ones((3, 3), np.uint8))
        inner = inner if inner.any() else m
        gaps.append(np.linalg.norm(lab[inner > 0].mean(0) - lab[ring > 0].mean(0)))
    assert len(gaps) >= 5
    assert np.median(gaps) > 20, gaps  # colour/brightness difference in OpenCV's 8-bit Lab units


def test_empty_fraction_and_bad_params():
    items = _items(seed=0, patients=1, frames_per_patient=3, datasets=["synth-b"], empty_fraction=1.0)
    assert all(not it.mask.any() for it in items)
    for bad in ({"patients": 0}, {"frames_per_patient": -1}, {"datasets": ["nope"]}, {"empty_fraction": 2}):
        with pytest.raises(SiamdiffError, match="params.yaml: ingest.sources"):
            _items(**{"seed": 0, "patients": 1, "frames_per_patient": 1, **bad})
