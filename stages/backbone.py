"""Stage `backbone`: the denoising UNet + CLIP text model + scheduler -> models/backbone (SD layout).

demo: build a tiny CLIP text model with an offline tokenizer, pre-train a small UNet2DConditionModel on
the cached train latents (all views) with the prompt (dropout to "" for CFG), DESIGN.md noise schedule.
paper: load <pretrained>'s unet/text_encoder/tokenizer/scheduler (offline) and re-save them.
Both: a few DDIM samples decoded by the autoencoder -> plots/backbone/samples.png; siamdiff.json record.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from siamdiff.params_schema import validate_section
from siamdiff.utils import (
    SiamdiffError,
    atomic_path,
    load_params,
    log,
    main_guard,
    require,
    seed_everything,
    sha256_file,
    write_metrics,
)

STAGE = "backbone"


def load_train_latents(root: Path, limit: int | None = None):
    """(latent_mean, latent_std) [N,C,h,w] of the train (item, view)s listed in data/encoded.csv."""
    import torch

    from siamdiff.data.latent_cache import read_train_rows

    _, items = read_train_rows(root, limit)
    return torch.stack([it["latent_mean"] for it in items]), torch.stack([it["latent_std"] for it in items])


def run(params: dict, root: str | Path = ".", progress: bool = True) -> dict:
    import torch

    from siamdiff.data.color import from_working, load_stats
    from siamdiff.model import backbone as bb
    from siamdiff.model.autoencoder import decode, load_autoencoder
    from siamdiff.model.registry import folder_hash, verify_model, write_record
    from siamdiff.model.schedule import make_train_scheduler
    from siamdiff.model.text import build_demo_text
    from siamdiff.train.fit import LossCurve, open_live

    root = Path(root)
    ae_dir, out = root / "models/autoencoder", root / "models/backbone"
    metrics_path, plot_path = root / "metrics/backbone.json", root / "plots/backbone/samples.png"
    params = validate_section(STAGE, params)
    mode = params["mode"]
    snr_gamma = _snr_gamma(params["snr_gamma"])
    seed = params["seed"]
    seed_everything(seed)
    prompt = params["prompt"]

    if not (ae_dir / "config.json").is_file():
        raise SiamdiffError(f"{ae_dir}: no autoencoder here; run `dvc repro autoencoder`")
    ae_config = json.loads((ae_dir / "config.json").read_text())
    latent_channels, scaling = int(ae_config["latent_channels"]), float(ae_config["scaling_factor"])
    inputs = {"models/autoencoder": verify_model(ae_dir, stage="autoencoder")}  # refuses a damaged one, by file
    live = open_live(root / "dvclive" / STAGE)
    t0 = time.perf_counter()
    metrics = {"mode": mode}

    if mode == "paper":
        unet, tokenizer, text_encoder, scheduler = bb.load_pretrained_backbone(params.get("pretrained"), latent_channels)
        src = Path(params["pretrained"]).expanduser()
        inputs.update({f"pretrained/{s}": folder_hash(src / s) for s in bb.SUBFOLDERS})
        latent_hw = int(load_train_latents(root, limit=1)[0].shape[-1])  # preview at the pipeline's size
        log(STAGE, f"loaded {src} (unet, text_encoder, tokenizer, scheduler)")
    else:
        mean, std = load_train_latents(root)
        if mean.shape[1] != latent_channels:
            raise SiamdiffError(f"{root / 'data/latents.lmdb'}: cached latents have {mean.shape[1]} channels but "
                                f"{ae_dir} has {latent_channels}; rerun `dvc repro encode`")
        latent_hw = int(mean.shape[-1])
        inputs["data/encoded.csv"] = sha256_file(root / "data/encoded.csv")
        log(STAGE, f"read {len(mean)} train latents {list(mean.shape[1:])} from {root / 'data/latents.lmdb'}")
        width = int(params["text_width"])
        require(int(params["cross_attention_dim"]) == width, "backbone.cross_attention_dim",
                f"({params['cross_attention_dim']}) must equal backbone.text_width ({width}): the UNet attends "
                "to the text encoder's hidden states")
        tokenizer, text_encoder = build_demo_text([prompt], width=width, layers=int(params["text_layers"]),
                                                  heads=params["text_heads"], seed=seed)
        text_encoder.eval().requires_grad_(False)
        unet = bb.build_demo_unet(latent_channels, latent_hw, params["widths"], int(params["layers_per_block"]),
                                  int(params["cross_attention_dim"]), int(params["attention_head_dim"]),
                                  int(params["norm_groups"]), seed=seed)
        cond, uncond = bb.prompt_embeddings(tokenizer, text_encoder, prompt)
        n_par = sum(p.numel() for p in unet.parameters())
        log(STAGE, f"pre-training a {n_par / 1e6:.2f}M-parameter UNet for {params['steps']} steps")
        steps = int(params["steps"])
        curve = LossCurve(live, "train/loss", steps)
        bb.train_backbone(unet, mean, std, cond, uncond, scaling_factor=scaling, steps=steps,
                          batch_size=int(params["batch_size"]), lr=float(params["lr"]),
                          prompt_dropout=params["prompt_dropout"], seed=seed, snr_gamma=snr_gamma,
                          ema_decay=params["ema_decay"], mixed_precision=params["mixed_precision"],
                          on_step=curve, progress=progress, log=lambda m: log(STAGE, m))
        scheduler = make_train_scheduler()
        metrics.update({"final_loss": round(curve.tail_mean(), 5), "steps": steps, "unet_params": n_par})
    metrics["seconds"] = round(time.perf_counter() - t0, 1)
    unet.eval().requires_grad_(False)

    # preview: DDIM samples with classifier-free guidance, decoded by the autoencoder
    n = params["preview_samples"]
    if n > 0:
        stats = load_stats(root / "data/prep/color_stats.json")
        cond, uncond = bb.prompt_embeddings(tokenizer, text_encoder, prompt)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        z = bb.sample_latents(unet.to(device), cond.to(device), uncond.to(device), n=n,
                              shape=(latent_channels, latent_hw, latent_hw),
                              scheduler_config=scheduler.config, steps=params["preview_steps"],
                              guidance=params["preview_guidance"], seed=seed)
        with torch.no_grad():
            rgb = from_working(decode(load_autoencoder(ae_dir, verify=False).to(device), z).cpu(), stats)
        unet.cpu()
        with atomic_path(plot_path) as tmp:
            _row(rgb).save(tmp, format="PNG")
    live.end()

    with atomic_path(out) as tmp:
        bb.save_backbone(tmp, unet, tokenizer, text_encoder, scheduler)
        write_record(tmp, params, inputs, kind="backbone", metrics=metrics)
    write_metrics(metrics_path, metrics)  # the numbers; `mode` in backbone.info.json
    log(STAGE, f"wrote {out}, {metrics_path}" + (f", {plot_path}" if n > 0 else "") + f" ({metrics})")
    return metrics


def _snr_gamma(value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise SiamdiffError(f"params.yaml: backbone.snr_gamma = {value!r}; use a positive number (5 is the "
                            "Min-SNR paper's) or null for plain MSE")
    return float(value)


def _row(rgb):
    from PIL import Image

    from siamdiff.data.images import grid

    return Image.fromarray(grid(list(rgb.numpy()), columns=len(rgb), gap=0))


def main() -> None:
    run(load_params(STAGE))


if __name__ == "__main__":
    main_guard(STAGE, main)
