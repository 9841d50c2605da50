"""The `paper` profile's code path, offline: a tiny SD-1.5-layout folder loaded through the same stages."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from project_params import section  # noqa: E402
from test_latent_cache import ENCODE  # noqa: E402
from tiny_sd import make_prep, make_tiny_sd  # noqa: E402


def test_paper_profile_through_the_stages(tmp_path):
    import torch

    from siamdiff.model.autoencoder import load_autoencoder
    from siamdiff.model.backbone import load_backbone
    from siamdiff.model.registry import read_record
    from siamdiff.model.text import encode_prompts
    from stages.autoencoder import run as run_autoencoder
    from stages.backbone import run as run_backbone
    from stages.encode import run as run_encode

    sd = make_tiny_sd(tmp_path / "sd")
    make_prep(tmp_path, n_train=4, n_val=2, n_test=2, size=16)
    run_autoencoder(section("autoencoder", mode="paper", pretrained=str(sd), downsample_factor=8, latent_channels=4,
                            seed=0), tmp_path, progress=False)
    enc = run_encode(ENCODE, tmp_path, progress=False)
    assert enc["encoded"] == 4 * 3 + 2 + 2
    params = section("backbone", mode="paper", pretrained=str(sd), prompt="an image of a polyp", preview_samples=2,
                     preview_steps=2, seed=0)
    run_backbone(params, tmp_path, progress=False)

    out = tmp_path / "models" / "backbone"
    assert {p.name for p in out.iterdir()} >= {"unet", "text_encoder", "tokenizer", "scheduler", "siamdiff.json"}
    unet, tok, te, sched = load_backbone(out)
    assert type(tok).__name__ == "CLIPTokenizer" and tok.model_max_length == 77
    assert type(sched).__name__ == "DDPMScheduler" and sched.config.beta_end == 0.012
    emb = encode_prompts(tok, te, ["an image of a polyp", ""])
    assert emb.shape == (2, 77, unet.config.cross_attention_dim)
    # the weights are SD's, unchanged
    from diffusers import UNet2DConditionModel

    ref = UNet2DConditionModel.from_pretrained(sd, subfolder="unet")
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), unet.state_dict().values()))
    assert read_record(out)["inputs"]["pretrained/unet"]
    vae = load_autoencoder(tmp_path / "models" / "autoencoder")
    assert vae.config.scaling_factor == pytest.approx(0.18215)
    assert (tmp_path / "plots" / "backbone" / "samples.png").is_file()


@pytest.mark.parametrize("case, match", [
    ("missing", "pretrained folder not found"),
    ("not_diffusers", "not a diffusers Stable Diffusion folder"),
    ("channels", "latent channels"),
])
def test_paper_backbone_bad_inputs(tmp_path, case, match):
    from diffusers import AutoencoderKL

    from siamdiff.utils import SiamdiffError
    from stages.backbone import run

    sd = make_tiny_sd(tmp_path / "sd")
    make_prep(tmp_path, n_train=2, n_val=1, n_test=1, size=16)
    vae = AutoencoderKL.from_pretrained(sd, subfolder="vae")
    if case == "channels":
        from siamdiff.model.autoencoder import build_autoencoder

        vae = build_autoencoder(2, 8, (8, 8), 2, size=16)
    vae.save_pretrained(tmp_path / "models" / "autoencoder")
    pretrained = {"missing": tmp_path / "nowhere", "not_diffusers": tmp_path / "junk", "channels": sd}[case]
    if case == "not_diffusers":
        (pretrained / "unet").mkdir(parents=True)
    with pytest.raises(SiamdiffError, match=match):
        run(section("backbone", mode="paper", pretrained=str(pretrained), prompt="", preview_samples=0), tmp_path,
            progress=False)
