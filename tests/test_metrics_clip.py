"""CLIP-I and CMMD through a tiny random transformers CLIPModel saved to disk (the real loading code path)."""
from __future__ import annotations

import numpy as np
import pytest
import torch


def make_tiny_clip(folder):
    """A tiny random transformers CLIPModel + image processor saved with save_pretrained."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32,
                           num_hidden_layers=1, num_attention_heads=2),
        projection_dim=8)
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


def _images(seed: int, n: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 40, 40, 3), dtype=torch.uint8, generator=g)


def test_cmmd_and_clip_i_with_tiny_clip(tiny_clip_dir):
    from siamdiff.metrics.clip import clip_embeddings, clip_i, cmmd, load_clip

    model, processor = load_clip(tiny_clip_dir)
    a, b = _images(0), _images(1)
    ea, eb = clip_embeddings(model, processor, a), clip_embeddings(model, processor, b)
    assert ea.shape == (6, 8)
    assert torch.allclose(ea.norm(dim=-1), torch.ones(6, dtype=torch.float64))
    assert cmmd(ea, ea) == pytest.approx(0.0, abs=1e-9)  # identical sets
    assert cmmd(ea, eb) > 0
    assert clip_i(ea, ea) == pytest.approx(1.0)
    assert clip_i(ea, eb) < 1.0


def test_cmmd_formula_vs_numpy():
    from siamdiff.metrics.clip import cmmd

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 5)), rng.normal(size=(9, 5)) + 0.5
    k = lambda a, b: np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / (2 * 10.0**2)).mean()  # noqa: E731
    want = 1000 * (k(x, x) + k(y, y) - 2 * k(x, y))
    assert cmmd(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(want, rel=1e-9)


def test_no_clip_model_means_null_with_reason(tmp_path):
    from siamdiff.metrics.clip import clip_status, load_clip
    from siamdiff.utils import SiamdiffError

    ok, reason = clip_status(None)
    assert not ok and "clip_model" in reason
    with pytest.raises(SiamdiffError, match="not a folder"):
        clip_status(tmp_path / "missing")
    with pytest.raises(SiamdiffError, match="config.json"):
        load_clip(tmp_path)
