"""Stage `train`: Siamese-Diffusion (DESIGN.md section 1) on the cached latents -> models/siamese.

Reads  data/encoded.csv + data/latents.lmdb (train rows, every view), data/prep/color_stats.json,
       models/autoencoder (scaling factor, downsampling factor; copied into the generator),
       models/backbone (UNet U, CLIP tokenizer/text encoder).
Writes models/siamese (save_generator: a diffusers SiameseDiffusionPipeline, model_index.json controlnet/ unet/
       scheduler/ vae/ text_encoder/ tokenizer/, + color_stats.json README.md (model card) siamdiff.json),
       models/checkpoints/step-XXXXXX (persisted; an interrupted run resumes),
       metrics/train.json (numbers; device, step and loss mode in train.info.json), plots/train/preview.png
       (mask | sample | real), plots/train/live (dvclive curves).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from siamdiff.utils import (
    SiamdiffError,
    atomic_path,
    load_params,
    log,
    main_guard,
    seed_everything,
    sha256_file,
    write_metrics,
)

STAGE = "train"


def _log(msg: str) -> None:
    if int(os.environ.get("RANK", "0") or 0) == 0:  # under a launcher, one log: the main process's
        log(STAGE, msg)


def load_train_data(root: Path):
    """TrainData from the train rows of data/encoded.csv, read from the latent cache."""
    import numpy as np
    import torch

    from siamdiff.data.latent_cache import read_train_rows
    from siamdiff.train.loop import TrainData

    rows, items = read_train_rows(root)
    return TrainData(
        latent_mean=torch.stack([it["latent_mean"].float() for it in items]),
        latent_std=torch.stack([it["latent_std"].float() for it in items]),
        image=torch.stack([it["image"].float() for it in items]),
        mask=torch.stack([it["mask"] for it in items]).to(torch.uint8),
        coverage=np.array([float(r["coverage"]) for r in rows]),
        scaling_factor=1.0, ids=[(r["id"], int(r["view"])) for r in rows])


def check_batch(cfg, processes: int) -> None:
    if int(cfg.batch_size) % processes:
        raise SiamdiffError(f"params.yaml: train.batch_size={cfg.batch_size} must be divisible by the number of "
                            f"processes ({processes}): it is the global batch, split across processes")


def run(params: dict, root: str | Path = ".", progress: bool = True, stop_after: int | None = None) -> dict:
    import torch
    from diffusers import AutoencoderKL

    from siamdiff.data.color import from_working, load_stats
    from siamdiff.model.autoencoder import factor_of
    from siamdiff.model.backbone import load_backbone
    from siamdiff.model.controlnet import SiameseControlNet
    from siamdiff.model.generator import Generator, save_generator
    from siamdiff.model.registry import verify_model
    from siamdiff.model.schedule import make_train_scheduler
    from siamdiff.model.text import encode_prompts
    from siamdiff.train.fit import open_live
    from siamdiff.train.loop import TrainConfig, train
    from siamdiff.train.preview import pick_preview_rows, render_preview

    root = Path(root)
    t0 = time.perf_counter()
    cfg = TrainConfig.from_params(params)
    world = os.environ.get("WORLD_SIZE", "1")  # set by torchrun / accelerate launch / the SIAMDIFF_PROCESSES launcher
    if world.isdigit():
        check_batch(cfg, int(world))  # before loading anything (the loop checks the launched world again)
    stats_path, ae_dir, bb_dir = root / "data/prep/color_stats.json", root / "models/autoencoder", root / "models/backbone"
    stats = load_stats(stats_path)
    if not (ae_dir / "config.json").is_file():
        raise SiamdiffError(f"{ae_dir}: no autoencoder here; run `dvc repro autoencoder`")

    data = load_train_data(root)
    ae_hash = verify_model(ae_dir, stage="autoencoder")  # a damaged model is refused by file, before loading
    try:
        vae = AutoencoderKL.from_pretrained(ae_dir, local_files_only=True).eval().requires_grad_(False)
    except (OSError, ValueError) as e:
        raise SiamdiffError(f"{ae_dir}: cannot load the autoencoder ({e}); rerun `dvc repro -f -s autoencoder` "
                            f"or restore it with `dvc checkout {ae_dir}`") from e
    factor = factor_of(vae)
    data.scaling_factor = float(vae.config.scaling_factor)
    size, latent = int(data.image.shape[-1]), int(data.latent_mean.shape[-1])
    if size != latent * factor:
        raise SiamdiffError(f"{root / 'data/latents.lmdb'}: {size} px images with {latent}x{latent} latents do not "
                            f"match the autoencoder's {factor}x downsampling; rerun `dvc repro encode`")
    bb_hash = verify_model(bb_dir, stage="backbone") if bb_dir.is_dir() else None
    unet, tokenizer, text_encoder, _ = load_backbone(bb_dir, verify=False)  # verified just above
    text_encoder.eval().requires_grad_(False)
    scheduler = make_train_scheduler()
    seed_everything(int(cfg.seed))
    controlnet = SiameseControlNet.from_unet(unet, downsample_factor=factor)
    prompt = cfg.prompt
    with torch.no_grad():
        prompt_emb, empty_emb = encode_prompts(tokenizer, text_encoder, [prompt, ""]).split(1)
    _log(f"read {len(data)} train rows ({size} px, latents {tuple(data.latent_mean.shape[1:])}), "
         f"{bb_dir} (UNet {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M), {ae_dir} ({factor}x, "
         f"scaling {data.scaling_factor:.4f}); ControlNet {sum(p.numel() for p in controlnet.parameters()) / 1e6:.2f} M "
         f"(DHI {sum(p.numel() for p in controlnet.controlnet_cond_embedding.parameters()) / 1e6:.3f} M)")
    inputs = {"backbone": bb_hash, "autoencoder": ae_hash,
              "encoded_csv": sha256_file(root / "data/encoded.csv"), "color_stats": sha256_file(stats_path)}

    # preview: fixed masks (view 0 rows, a spread of coverage), fixed seeds
    view0 = [i for i, (_, v) in enumerate(data.ids) if v == 0] or list(range(len(data)))
    picks = [view0[i] for i in pick_preview_rows(data.coverage[view0], int(cfg.preview_images))]
    preview_masks = data.mask[picks].unsqueeze(1).float()
    preview_real = from_working(data.image[picks], stats)
    preview_real = preview_real.numpy() if hasattr(preview_real, "numpy") else preview_real
    preview_path = root / "plots/train/preview.png"

    def preview(step: int) -> None:
        gen = Generator(controlnet=controlnet, unet=unet, vae=vae, tokenizer=tokenizer, text_encoder=text_encoder,
                        color_stats=stats, scheduler=scheduler, prompt=prompt, size=size)
        t1 = time.perf_counter()
        render_preview(gen, preview_masks, preview_real, preview_path, seeds=list(range(len(picks))),
                       prompt=prompt, steps=int(cfg.preview_steps), guidance=float(cfg.preview_guidance))
        _log(f"step {step}: wrote {preview_path} ({time.perf_counter() - t1:.1f} s)")

    main_process = int(os.environ.get("RANK", "0")) == 0
    live = open_live(root / "plots/train/live") if main_process else None
    try:
        summary = train(cfg, unet=unet, controlnet=controlnet, scheduler=scheduler, data=data,
                        prompt_emb=prompt_emb, empty_emb=empty_emb, checkpoint_dir=root / "models/checkpoints",
                        inputs=inputs, live=live, preview=preview, stop_after=stop_after, log=_log,
                        progress=progress)
    finally:
        if live is not None:
            live.end()
    if stop_after is not None and summary["completed_steps"] < cfg.steps:
        _log(f"stopped after step {summary['completed_steps']} (stop_after); outputs not written")
        return summary
    if not main_process:
        return summary

    out_dir = root / "models/siamese"
    from siamdiff.model.card import dataset_of

    datasets: dict[str, int] = {}
    for row_id, _ in data.ids:  # training rows (every view) per source dataset, for the model card
        datasets[dataset_of(row_id)] = datasets.get(dataset_of(row_id), 0) + 1
    record = {"params": params, "inputs": inputs, "prompt": prompt, "size": size,
              "color_space": stats.get("space"), "downsample_factor": factor, "stage": STAGE,
              "data": {"datasets": datasets}}
    created = _weights_created(root / "models/checkpoints", int(cfg.steps))
    if created:  # the final checkpoint's time: rewriting the same weights (a rerun) gives the same folder
        record["created"] = created
    with atomic_path(out_dir) as tmp:
        save_generator(tmp, controlnet.cpu(), unet.cpu(), vae, tokenizer, text_encoder, stats, record,
                       scheduler=scheduler, metrics=summary.get("final"))
    summary["seconds_total"] = time.perf_counter() - t0
    summary = write_metrics(root / "metrics/train.json", summary)  # numbers; the rest in train.info.json
    _log(f"wrote {out_dir}, {root / 'metrics/train.json'} (+ .info.json), {preview_path} "
         f"({summary['completed_steps']} steps, {summary['seconds_per_step']:.2f} s/step, "
         f"final loss {summary['final'].get('loss', float('nan')):.4f})")
    return summary


def _weights_created(checkpoint_dir: Path, steps: int) -> str | None:
    """When the final weights were made (the final checkpoint's `created`), None if unknown."""
    from siamdiff.train.checkpoints import checkpoint_name, read_state

    try:
        return read_state(checkpoint_dir / checkpoint_name(steps)).get("created")
    except SiamdiffError:
        return None


def launch(processes: int) -> int:
    """Rerun this stage as `processes` data-parallel processes (torchrun; gloo on CPU, NCCL on GPUs)."""
    from siamdiff.net import free_port

    port = free_port()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(processes),
           "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "stages.train"]
    _log(f"launching {processes} processes: {' '.join(cmd[1:])}")
    return subprocess.call(cmd)


def main() -> None:
    """`SIAMDIFF_PROCESSES=N` (env) trains with N data-parallel processes; under an existing launcher
    (`accelerate launch`, `torchrun`, `srun`) the stage just runs as one of its processes."""
    processes = os.environ.get("SIAMDIFF_PROCESSES", "1")
    if not processes.isdigit() or int(processes) < 1:
        raise SiamdiffError(f"SIAMDIFF_PROCESSES={processes!r}: must be a positive integer (processes per node)")
    params = load_params(STAGE)
    if int(processes) > 1 and "WORLD_SIZE" not in os.environ:
        # check the params once, here, rather than as N identical errors from the N launched processes
        from siamdiff.train.loop import TrainConfig

        check_batch(TrainConfig.from_params(params), int(processes))
        sys.exit(launch(int(processes)))
    run(params)


if __name__ == "__main__":
    main_guard(STAGE, main)
