"""Stage `autoencoder`: the frozen image autoencoder -> models/autoencoder (+ metrics, reconstructions).

demo: train a small AutoencoderKL on the train split (working colour space); paper: load <pretrained>/vae.
Both: reconstruction PSNR/SSIM on the val split (RGB uint8), dvclive log, save_pretrained + siamdiff.json.
"""
from __future__ import annotations

import time
from pathlib import Path

from siamdiff.params_schema import validate_section
from siamdiff.utils import atomic_path, load_params, log, main_guard, seed_everything, sha256_tree, write_metrics

STAGE = "autoencoder"


def run(params: dict, root: str | Path = ".", progress: bool = True) -> dict:
    import torch

    from siamdiff.data.color import from_working, load_stats, to_working
    from siamdiff.data.prep import load_split
    from siamdiff.model import autoencoder as ae
    from siamdiff.model.registry import folder_hash, write_record
    from siamdiff.train.fit import LossCurve, open_live

    root = Path(root)
    prep, out = root / "data/prep", root / "models/autoencoder"
    metrics_path, plot_path = root / "metrics/autoencoder.json", root / "plots/autoencoder/reconstructions.png"
    params = validate_section(STAGE, params)
    mode = params["mode"]
    seed_everything(params["seed"])

    stats = load_stats(prep / "color_stats.json")
    _, rgb_train, _ = load_split(prep, "train", as_numpy=True)
    _, rgb_val, _ = load_split(prep, "val", as_numpy=True)
    size = int(rgb_train.shape[1])
    log(STAGE, f"read {prep}: {len(rgb_train)} train / {len(rgb_val)} val images at {size}px, "
               f"colour space {stats.get('space')}")
    if len(rgb_val) == 0:
        log(STAGE, "warning: the val split is empty; reporting reconstruction metrics on the train split")
        rgb_val = rgb_train
    x_train = to_working(torch.as_tensor(rgb_train), stats).float()
    x_val = to_working(torch.as_tensor(rgb_val), stats).float()
    inputs = {"data/prep": sha256_tree(prep)}

    live = open_live(root / "dvclive" / STAGE)
    t0 = time.perf_counter()
    if mode == "paper":
        vae = ae.load_pretrained_vae(params.get("pretrained"))
        ae.check_vae(vae, params.get("latent_channels"), size, params.get("downsample_factor"),
                     where=str(Path(params["pretrained"]) / "vae"))
        inputs["pretrained/vae"] = folder_hash(Path(params["pretrained"]).expanduser() / "vae")
        log(STAGE, f"loaded {params['pretrained']}/vae (factor {ae.factor_of(vae)}, "
                   f"{vae.config.latent_channels} latent channels, scaling {vae.config.scaling_factor})")
    else:
        vae = ae.build_autoencoder(int(params["downsample_factor"]), int(params["latent_channels"]),
                                   params["widths"], int(params["norm_groups"]),
                                   params["layers_per_block"], size=size, seed=params["seed"])
        n_par = sum(p.numel() for p in vae.parameters())
        log(STAGE, f"training a {n_par / 1e6:.2f}M-parameter AutoencoderKL for {params['steps']} steps")
        ae.train_autoencoder(vae, x_train, steps=int(params["steps"]), batch_size=int(params["batch_size"]),
                             lr=float(params["lr"]), kl_weight=float(params["kl_weight"]),
                             crop=params["crop"], seed=params["seed"],
                             on_step=LossCurve(live, "train/mse", int(params["steps"])), progress=progress)
        sf = ae.measure_scaling_factor(vae, x_train, seed=params["seed"])
        vae.register_to_config(scaling_factor=sf)
        log(STAGE, f"scaling factor (1 / std of train latents) = {sf:.4f}")
    seconds = time.perf_counter() - t0
    vae.eval().requires_grad_(False)

    recon = from_working(ae.reconstruct(vae, x_val), stats)
    real = torch.as_tensor(rgb_val)
    m = ae.psnr_ssim(real, recon)
    latent = [int(vae.config.latent_channels), size // ae.factor_of(vae), size // ae.factor_of(vae)]
    metrics = {"mode": mode, "val_psnr": round(m["psnr"], 3), "val_psnr_min": round(m["psnr_min"], 3),
               "val_ssim": round(m["ssim"], 4), "val_images": len(rgb_val), "seconds": round(seconds, 1),
               "downsample_factor": ae.factor_of(vae), "latent_shape": latent,
               "scaling_factor": float(vae.config.scaling_factor)}
    live.log_metric("val/psnr", m["psnr"], plot=False)
    live.log_metric("val/ssim", m["ssim"], plot=False)
    live.end()
    log(STAGE, f"val reconstruction: PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f} ({len(rgb_val)} images)")

    with atomic_path(out) as tmp:
        vae.save_pretrained(tmp, safe_serialization=True)
        write_record(tmp, params, inputs, kind="autoencoder", metrics=metrics)
    write_metrics(metrics_path, metrics)  # the numbers; `mode` in autoencoder.info.json
    with atomic_path(plot_path) as tmp:
        ae.reconstruction_grid(real, recon).save(tmp, format="PNG")
    log(STAGE, f"wrote {out}, {metrics_path}, {plot_path}")
    return metrics


def main() -> None:
    run(load_params(STAGE))


if __name__ == "__main__":
    main_guard(STAGE, main)
