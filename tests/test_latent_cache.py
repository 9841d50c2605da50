"""Latent cache: keys, checksums, and the encode stage's warm / invalidated / corrupted behaviour."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from tiny_sd import make_prep  # noqa: E402

ENCODE = {"views": 3, "batch_size": 8, "seed": 0,
          "augment": {"gamma": 0.05, "contrast": 0.03, "p_intensity": 0.3, "p_geometric": 0.2,
                      "elastic_alpha": 10, "elastic_sigma": 5}}


def make_autoencoder(root: Path, seed: int = 0, latent_channels: int = 4):
    from siamdiff.model.autoencoder import build_autoencoder

    vae = build_autoencoder(2, latent_channels, (8, 8), 2, size=16, seed=seed)
    vae.save_pretrained(root / "models" / "autoencoder")
    return vae


@pytest.fixture
def encode_counter(monkeypatch):
    """Counts AutoencoderKL.encode calls (forward passes of the encoder)."""
    from diffusers import AutoencoderKL

    calls = {"n": 0}
    orig = AutoencoderKL.encode

    def counting(self, *a, **kw):
        calls["n"] += 1
        return orig(self, *a, **kw)

    monkeypatch.setattr(AutoencoderKL, "encode", counting)
    return calls


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_key_covers_every_input():
    from siamdiff.data.latent_cache import latent_key

    pre = {"size": 64, "color_space": "rgb"}
    aug = {"gamma": 0.05, "seed": 0}
    k = latent_key("a" * 64, pre, 1, "h1", aug)
    assert len(k) == 64 and k == latent_key("a" * 64, dict(pre), 1, "h1", dict(aug))
    assert k != latent_key("b" * 64, pre, 1, "h1", aug)
    assert k != latent_key("a" * 64, {**pre, "size": 32}, 1, "h1", aug)
    assert k != latent_key("a" * 64, pre, 2, "h1", aug)
    assert k != latent_key("a" * 64, pre, 1, "h2", aug)
    assert k != latent_key("a" * 64, pre, 1, "h1", {**aug, "seed": 1})
    # the identity view does not depend on augmentation params
    assert latent_key("a" * 64, pre, 0, "h1", aug) == latent_key("a" * 64, pre, 0, "h1", {**aug, "seed": 1})


def test_checksum_detects_corruption(tmp_path):
    import torch

    from siamdiff.data.latent_cache import LatentCache

    value = {"latent_mean": torch.randn(4, 2, 2), "mask": torch.ones(4, 4, dtype=torch.uint8)}
    with LatentCache(tmp_path / "db") as cache:
        cache.put("k", value)
        got = cache.get("k")
        assert torch.equal(got["latent_mean"], value["latent_mean"]) and got["mask"].dtype == torch.uint8
        assert cache.get("absent") is None and list(cache.keys()) == ["k"]
        with cache.env.begin(write=True) as txn:
            raw = bytearray(txn.get(b"k"))
            raw[-3] ^= 0xFF
            txn.put(b"k", bytes(raw))
        assert cache.get("k") is None and cache.corrupt == 1


def test_paired_augmentation_is_deterministic_and_paired():
    from siamdiff.data.augment import PairedAugment, view_seed

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    mask[4:12, 20:30] = 1
    aug = PairedAugment(ENCODE["augment"])
    outs = [aug(rgb, mask, view_seed(0, "x-1-2", v)) for v in range(1, 40)]
    again = aug(rgb, mask, view_seed(0, "x-1-2", 5))
    assert np.array_equal(outs[4][0], again[0]) and np.array_equal(outs[4][1], again[1])
    assert all(set(np.unique(m)) <= {0, 1} for _, m in outs)
    changed = [i for i, (_, m) in enumerate(outs) if not np.array_equal(m, mask)]
    assert changed, "no view moved the mask: geometric augmentation never applied"
    # pairing: the image's distinctive pixel block moves with the mask (rot90 / flip keep values)
    for _, m in outs:
        assert 0.5 * mask.sum() <= m.sum() <= 1.5 * mask.sum()


def test_encode_warm_invalidate_corrupt(tmp_path, encode_counter):
    from stages.encode import run

    make_prep(tmp_path, n_train=6, n_val=2, n_test=2, size=16)
    make_autoencoder(tmp_path)
    cold = run(ENCODE, tmp_path, progress=False)
    n = 6 * 3 + 2 + 2
    assert cold["entries"] == n and cold["encoded"] == n and cold["hits"] == 0
    assert encode_counter["n"] == 3  # ceil(22 / 8) batches
    rows = read_csv(tmp_path / "data" / "encoded.csv")
    assert len(rows) == n and {r["split"] for r in rows} == {"train", "val", "test"}
    assert sorted({int(r["view"]) for r in rows if r["split"] == "train"}) == [0, 1, 2]
    assert {r["view"] for r in rows if r["split"] != "train"} == {"0"}

    # warm: zero forward passes, same index, the database's bytes untouched (DVC sees no change)
    from siamdiff.utils import sha256_tree

    before = sha256_tree(tmp_path / "data" / "latents.lmdb")
    encode_counter["n"] = 0
    warm = run(ENCODE, tmp_path, progress=False)
    assert encode_counter["n"] == 0 and warm["encoded"] == 0 and warm["hits"] == n
    assert read_csv(tmp_path / "data" / "encoded.csv") == rows
    assert sha256_tree(tmp_path / "data" / "latents.lmdb") == before

    # a corrupted entry is detected and re-encoded (only it)
    from siamdiff.data.latent_cache import LatentCache

    with LatentCache(tmp_path / "data" / "latents.lmdb") as cache:
        with cache.env.begin(write=True) as txn:
            key = rows[5]["key"].encode()
            raw = bytearray(txn.get(key))
            raw[100] ^= 0x55
            txn.put(key, bytes(raw))
    fixed = run(ENCODE, tmp_path, progress=False)
    assert fixed["corrupt"] == 1 and fixed["encoded"] == 1 and encode_counter["n"] == 1
    with LatentCache(tmp_path / "data" / "latents.lmdb", readonly=True) as cache:
        entry = cache.get(rows[5]["key"])
        assert entry is not None and entry["latent_mean"].shape == (4, 8, 8)
        assert entry["image"].shape == (3, 16, 16) and entry["mask"].shape == (16, 16)

    # a changed autoencoder invalidates every entry
    make_autoencoder(tmp_path, seed=1)
    encode_counter["n"] = 0
    changed = run(ENCODE, tmp_path, progress=False)
    assert changed["encoded"] == n and changed["hits"] == 0
    assert not {r["key"] for r in rows} & {r["key"] for r in read_csv(tmp_path / "data" / "encoded.csv")}

    # a changed preprocess.size invalidates every entry
    make_prep(tmp_path, n_train=6, n_val=2, n_test=2, size=24)
    resized = run(ENCODE, tmp_path, progress=False)
    assert resized["encoded"] == n and resized["hits"] == 0


def test_encode_needs_a_matching_factor(tmp_path):
    from siamdiff.utils import SiamdiffError
    from stages.encode import run

    make_prep(tmp_path, n_train=2, n_val=1, n_test=1, size=15)
    make_autoencoder(tmp_path)
    with pytest.raises(SiamdiffError, match="not divisible"):
        run(ENCODE, tmp_path, progress=False)


def test_encode_without_autoencoder_is_a_clear_error(tmp_path):
    from siamdiff.utils import SiamdiffError
    from stages.encode import run

    make_prep(tmp_path, n_train=2, n_val=1, n_test=1, size=16)
    with pytest.raises(SiamdiffError, match="dvc repro autoencoder"):
        run(ENCODE, tmp_path, progress=False)
