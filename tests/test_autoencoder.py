"""Autoencoder stage: demo training outputs, paper loading, and clear errors for bad inputs."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from tiny_sd import make_prep, make_tiny_sd  # noqa: E402

DEMO = {"mode": "demo", "pretrained": None, "downsample_factor": 2, "latent_channels": 4, "widths": [8, 16],
        "layers_per_block": 1, "norm_groups": 2, "steps": 4, "batch_size": 4, "crop": None, "lr": 1e-3, "kl_weight": 1e-6, "seed": 0}


def test_demo_autoencoder_stage(tmp_path):
    from siamdiff.model.autoencoder import factor_of, load_autoencoder
    from siamdiff.model.registry import folder_hash, read_record
    from stages.autoencoder import run

    make_prep(tmp_path, n_train=8, n_val=3, n_test=1, size=16)
    metrics = run(DEMO, tmp_path, progress=False)
    out = tmp_path / "models" / "autoencoder"
    vae = load_autoencoder(out)
    assert factor_of(vae) == 2 and vae.config.latent_channels == 4 and vae.config.norm_num_groups == 2
    assert metrics["latent_shape"] == [4, 8, 8] and metrics["val_images"] == 3
    assert 0 < metrics["val_psnr"] < 100 and -1 <= metrics["val_ssim"] <= 1
    # the metrics file holds the numbers; `mode` (text) is in autoencoder.info.json beside it
    assert json.loads((tmp_path / "metrics" / "autoencoder.json").read_text()) == \
        {k: v for k, v in metrics.items() if k != "mode"}
    assert json.loads((tmp_path / "metrics" / "autoencoder.info.json").read_text()) == {"mode": metrics["mode"]}
    assert (tmp_path / "plots" / "autoencoder" / "reconstructions.png").stat().st_size > 0
    assert (tmp_path / "dvclive" / "autoencoder" / "metrics.json").is_file()
    record = read_record(out)
    assert record["params"] == DEMO and record["inputs"]["data/prep"] and record["folder_hash"] == folder_hash(out)
    # the scaling factor maps the train latents to ~unit variance
    assert vae.config.scaling_factor == pytest.approx(metrics["scaling_factor"]) and vae.config.scaling_factor > 0


def test_paper_mode_loads_the_sd_vae(tmp_path):
    from siamdiff.model.autoencoder import load_autoencoder
    from stages.autoencoder import run

    make_prep(tmp_path, n_train=2, n_val=2, n_test=1, size=16)
    sd = make_tiny_sd(tmp_path / "sd")
    metrics = run({**DEMO, "mode": "paper", "pretrained": str(sd), "downsample_factor": 8}, tmp_path, progress=False)
    vae = load_autoencoder(tmp_path / "models" / "autoencoder")
    assert metrics["downsample_factor"] == 8 and metrics["latent_shape"] == [4, 2, 2]
    assert vae.config.scaling_factor == pytest.approx(0.18215)


@pytest.mark.parametrize("case, match", [
    ("missing", "pretrained folder not found"),
    ("not_diffusers", "not a diffusers Stable Diffusion folder"),
    ("unset", "autoencoder.pretrained is empty"),
    ("channels", "latent channels"),
    ("factor_mismatch", "downsamples by 8"),
])
def test_paper_mode_bad_inputs(tmp_path, case, match):
    from siamdiff.utils import SiamdiffError
    from stages.autoencoder import run

    make_prep(tmp_path, n_train=2, n_val=1, n_test=1, size=16)
    params = {**DEMO, "mode": "paper", "downsample_factor": 8}
    if case == "missing":
        params["pretrained"] = str(tmp_path / "nowhere")
    elif case == "not_diffusers":
        (tmp_path / "junk" / "vae").mkdir(parents=True)
        (tmp_path / "junk" / "model.ckpt").write_bytes(b"not a model")
        params["pretrained"] = str(tmp_path / "junk")
    elif case == "unset":
        params["pretrained"] = None
    else:
        params["pretrained"] = str(make_tiny_sd(tmp_path / "sd"))
        if case == "channels":
            params["latent_channels"] = 8
        else:
            params["downsample_factor"] = 4
    with pytest.raises(SiamdiffError, match=match):
        run(params, tmp_path, progress=False)
    assert not (tmp_path / "models" / "autoencoder").exists()


@pytest.mark.parametrize("factor, widths, match", [
    (4, [8, 8, 8], "does not divide the image size 18"),
    (3, [8, 8], "power of two"),
    (2, [8, 8, 8], "needs 2"),
])
def test_demo_bad_factor(tmp_path, factor, widths, match):
    from siamdiff.utils import SiamdiffError
    from stages.autoencoder import run

    make_prep(tmp_path, n_train=2, n_val=1, n_test=1, size=18)
    with pytest.raises(SiamdiffError, match=match):
        run({**DEMO, "downsample_factor": factor, "widths": widths}, tmp_path, progress=False)


def test_paper_factor_must_divide_size(tmp_path):
    from siamdiff.utils import SiamdiffError
    from stages.autoencoder import run

    make_prep(tmp_path, n_train=2, n_val=1, n_test=1, size=20)
    sd = make_tiny_sd(tmp_path / "sd")
    with pytest.raises(SiamdiffError, match="does not divide the image size 20"):
        run({**DEMO, "mode": "paper", "pretrained": str(sd), "downsample_factor": 8}, tmp_path, progress=False)
