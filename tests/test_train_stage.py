"""Stage `train` end to end on a tiny in-process project: outputs, generator round trip, resume, preview."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from project_params import section
from siamdiff.utils import SiamdiffError

LATENT, FACTOR = 4, 4
SIZE = LATENT * FACTOR


def make_project(root, n: int = 8):
    from diffusers import AutoencoderKL

    from siamdiff.data.latent_cache import LatentCache
    from siamdiff.model.backbone import build_demo_unet, save_backbone
    from siamdiff.model.schedule import make_train_scheduler
    from siamdiff.model.text import build_demo_text

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                        block_out_channels=(8, 8, 8), layers_per_block=1, norm_num_groups=4, sample_size=SIZE,
                        scaling_factor=0.5)
    vae.save_pretrained(root / "models/autoencoder", safe_serialization=True)
    tok, te = build_demo_text(["a polyp"], width=16, layers=1, heads=2, max_length=8)
    unet = build_demo_unet(4, LATENT, widths=(16, 32), cross_attention_dim=16, attention_head_dim=4, norm_groups=8)
    save_backbone(root / "models/backbone", unet, tok, te, make_train_scheduler())
    (root / "data/prep").mkdir(parents=True)
    (root / "data/prep/color_stats.json").write_text(json.dumps({"space": "rgb"}))
    g = torch.Generator().manual_seed(1)
    cache = LatentCache(root / "data/latents.lmdb")
    with open(root / "data/encoded.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "split", "view", "key", "coverage"])
        for i in range(n):
            mask = (torch.rand(SIZE, SIZE, generator=g) > 0.3 + 0.08 * i).to(torch.uint8)
            key = f"k{i}"
            cache.put(key, {"latent_mean": torch.randn(4, LATENT, LATENT, generator=g),
                            "latent_std": torch.full((4, LATENT, LATENT), 0.05),
                            "image": torch.rand(3, SIZE, SIZE, generator=g) * 2 - 1, "mask": mask})
            w.writerow([f"d-p{i}-0", "train", 0, key, float(mask.float().mean())])
        w.writerow(["d-q-0", "test", 0, "absent-but-not-train", 0.1])
    cache.close()


PARAMS = section("train", steps=4, batch_size=3, lr=1e-3, lr_from_scratch=3e-3, checkpoint_every=2, preview_every=2,
                 preview_images=2, preview_steps=2, preview_guidance=3.0, prompt="a polyp", seed=0)


def test_train_stage_end_to_end(tmp_path):
    from siamdiff.model.generator import load_generator
    from siamdiff.sample.ddim import sample_from_masks
    from stages import train as stage

    make_project(tmp_path)
    summary = stage.run(dict(PARAMS), root=tmp_path, progress=False, stop_after=3)  # interrupted
    assert summary["completed_steps"] == 3 and not (tmp_path / "models/siamese").exists()
    summary = stage.run(dict(PARAMS), root=tmp_path, progress=False)  # resumes from step 2
    assert summary["resumed_from_step"] == 2
    metrics = json.loads((tmp_path / "metrics/train.json").read_text())
    assert metrics["completed_steps"] == 4 and set(metrics["final"]) >= {"loss", "loss_online_augmentation"}
    assert (tmp_path / "plots/train/preview.png").stat().st_size > 0
    assert (tmp_path / "models/checkpoints/step-000004/controlnet.safetensors").is_file()
    gen = load_generator(tmp_path / "models/siamese")
    assert gen.prompt == "a polyp" and gen.size == SIZE and gen.color_stats["space"] == "rgb"
    assert type(gen.controlnet).__name__ == "SiameseControlNet"
    rgb = sample_from_masks(gen, torch.ones(1, 1, SIZE, SIZE), [0], "a polyp", steps=2, guidance=1.0, progress=False)
    assert rgb.shape == (1, SIZE, SIZE, 3)
    # the dvclive curves carry every loss term and the lr
    live = tmp_path / "plots/train/live/plots/metrics"
    names = {p.stem for p in live.rglob("*.tsv")}
    assert {"loss", "loss_mask_diffusion", "loss_image_diffusion", "loss_noise_consistency",
            "loss_online_augmentation", "lr_from_scratch", "lr_controlnet", "lr_unet_decoder"} <= names
    rows = (live / "loss.tsv").read_text().strip().splitlines()
    assert [r.split("\t")[0] for r in rows[1:]] == ["0", "1", "2", "3"]  # resumed history replayed once


def test_load_generator_rejects_other_folders(tmp_path):
    from siamdiff.model.generator import load_generator

    (tmp_path / "x").mkdir()
    with pytest.raises(SiamdiffError, match="not a siamdiff generator"):
        load_generator(tmp_path / "x")
    with pytest.raises(SiamdiffError, match="not found"):
        load_generator(tmp_path / "missing")
