"""Backbone stage (demo), the offline text model and the noise schedule."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_latent_cache import ENCODE, make_autoencoder  # noqa: E402
from tiny_sd import make_prep  # noqa: E402

DEMO = {"mode": "demo", "pretrained": None, "prompt": "an endoscopic image of a colon polyp", "widths": [16, 32],
        "layers_per_block": 1, "cross_attention_dim": 16, "attention_head_dim": 2, "norm_groups": 4,
        "text_width": 16, "text_layers": 1, "text_heads": 4, "steps": 3, "batch_size": 4, "lr": 1e-3, "prompt_dropout": 0.05, "snr_gamma": None,
        "ema_decay": None, "mixed_precision": "no",
        "preview_samples": 2, "preview_steps": 2, "preview_guidance": 3.0, "seed": 0}


def test_train_scheduler_is_the_design_schedule():
    import torch

    from siamdiff.model.schedule import make_sampling_scheduler, make_train_scheduler

    s = make_train_scheduler()
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    assert s.config.num_train_timesteps == 1000 and s.config.prediction_type == "epsilon"
    assert torch.allclose(s.betas.double(), betas, atol=1e-9)
    assert torch.allclose(make_sampling_scheduler(s.config).alphas_cumprod, s.alphas_cumprod)


def test_demo_text_is_offline_and_handles_the_empty_prompt(tmp_path):
    import torch

    from siamdiff.model.text import build_demo_text, encode_prompts, load_text, save_text

    tok, te = build_demo_text(["an endoscopic image of a colon polyp"], width=16, layers=1, max_length=12)
    ids = tok(["an endoscopic image", ""], padding="max_length", max_length=12).input_ids
    assert ids[1][0] == tok.bos_token_id and ids[1][1] == tok.eos_token_id and tok.unk_token_id not in ids[0]
    save_text(tmp_path, tok, te)
    tok2, te2 = load_text(tmp_path)
    emb = encode_prompts(tok2, te2, ["an endoscopic image of a colon polyp", "", "unknown words!"])
    assert emb.shape == (3, 12, 16)
    assert torch.allclose(emb, encode_prompts(tok, te.eval(), ["an endoscopic image of a colon polyp", "", "unknown words!"]), atol=1e-6)
    assert not torch.allclose(emb[0], emb[1])


def test_demo_backbone_stage(tmp_path):
    from PIL import Image

    from siamdiff.model.backbone import load_backbone
    from siamdiff.model.registry import read_record
    from stages.backbone import run
    from stages.encode import run as run_encode

    make_prep(tmp_path, n_train=6, n_val=2, n_test=2, size=16)
    make_autoencoder(tmp_path)
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(tmp_path / "models" / "autoencoder")
    vae.register_to_config(scaling_factor=0.5)
    vae.save_pretrained(tmp_path / "models" / "autoencoder")
    run_encode(ENCODE, tmp_path, progress=False)
    metrics = run(DEMO, tmp_path, progress=False)
    out = tmp_path / "models" / "backbone"
    unet, tok, te, sched = load_backbone(out)
    assert unet.config.in_channels == 4 and unet.config.sample_size == 8 and unet.config.cross_attention_dim == 16
    assert sched.config.beta_schedule == "scaled_linear" and sched.config.num_train_timesteps == 1000
    assert metrics["steps"] == 3 and metrics["final_loss"] > 0
    assert json.loads((tmp_path / "metrics" / "backbone.json").read_text()) == \
        {k: v for k, v in metrics.items() if k != "mode"}
    assert json.loads((tmp_path / "metrics" / "backbone.info.json").read_text()) == {"mode": "demo"}
    assert Image.open(tmp_path / "plots" / "backbone" / "samples.png").size == (2 * 16, 16)
    record = read_record(out)
    assert record["params"] == DEMO and set(record["inputs"]) == {"models/autoencoder", "data/encoded.csv"}
    assert (tmp_path / "dvclive" / "backbone" / "metrics.json").is_file()


def test_backbone_bad_params(tmp_path):
    from siamdiff.utils import SiamdiffError
    from stages.backbone import run

    make_prep(tmp_path, n_train=2, n_val=1, n_test=1, size=16)
    with pytest.raises(SiamdiffError, match="dvc repro autoencoder"):
        run(DEMO, tmp_path, progress=False)
    make_autoencoder(tmp_path)
    with pytest.raises(SiamdiffError, match="dvc repro encode"):
        run(DEMO, tmp_path, progress=False)
    from stages.encode import run as run_encode

    run_encode(ENCODE, tmp_path, progress=False)
    with pytest.raises(SiamdiffError, match="cross_attention_dim"):
        run({**DEMO, "cross_attention_dim": 32}, tmp_path, progress=False)
    with pytest.raises(SiamdiffError, match="backbone.mode"):
        run({**DEMO, "mode": "sd"}, tmp_path, progress=False)


def test_min_snr_weighting():
    """snr_gamma weights each sample's MSE by min(SNR_t, gamma) / SNR_t: a huge gamma is plain MSE (same
    losses, same weights after a step), gamma 1 down-weights every t with SNR_t > 1 (lower loss)."""
    import torch

    from siamdiff.model.backbone import build_demo_unet, train_backbone

    mean, std = torch.randn(6, 4, 8, 8), torch.full((6, 4, 8, 8), 0.1)
    cond, uncond = torch.randn(1, 3, 16), torch.zeros(1, 3, 16)

    def train(gamma):
        unet = build_demo_unet(4, 8, (16, 16), 1, 16, 2, 8, seed=0)
        losses = []
        train_backbone(unet, mean, std, cond, uncond, scaling_factor=1.0, steps=2, batch_size=4, lr=1e-3,
                       snr_gamma=gamma, on_step=lambda s, loss: losses.append(loss), progress=False)
        return losses, unet.state_dict()

    plain, w_plain = train(None)
    huge, w_huge = train(1e12)
    one, _ = train(1.0)
    assert plain == huge and all(torch.equal(w_plain[k], w_huge[k]) for k in w_plain)
    assert one[0] < plain[0]
    from siamdiff.utils import SiamdiffError
    from stages.backbone import _snr_gamma

    for bad in (0, -1, "5", True):
        with pytest.raises(SiamdiffError, match="backbone.snr_gamma"):
            _snr_gamma(bad)


def test_ema_weights_are_saved_and_the_raw_ones_returned():
    """ema_decay: the unet ends with the moving average (diffusers EMAModel), which differs from the raw last
    weights (returned); the same draws either way, so the raw weights equal a run without EMA."""
    import torch

    from siamdiff.model.backbone import build_demo_unet, train_backbone

    mean, std = torch.randn(6, 4, 8, 8), torch.full((6, 4, 8, 8), 0.1)
    cond, uncond = torch.randn(1, 3, 16), torch.zeros(1, 3, 16)

    def train(ema):
        unet = build_demo_unet(4, 8, (16, 16), 1, 16, 2, 8, seed=0)
        raw = train_backbone(unet, mean, std, cond, uncond, scaling_factor=1.0, steps=5, batch_size=4, lr=1e-3,
                             ema_decay=ema, progress=False)
        return raw, unet.state_dict()

    none, plain = train(None)
    raw, averaged = train(0.9)
    assert none is None
    assert all(torch.equal(raw[k], plain[k]) for k in plain)
    changed = [k for k in plain if plain[k].is_floating_point() and not torch.equal(averaged[k], plain[k])]
    assert len(changed) > len(plain) // 2
