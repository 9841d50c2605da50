"""GPU check at paper scale: random-weight Stable Diffusion 1.5-size models, 384 px (48 x 48 latents), batch 6.

Builds, on the GPU and without any download, SD-1.5's UNet (its config written out below), the Siamese
ControlNet copied from it (siamdiff/model/controlnet.py, DHI with 3 PatchMerging stages) and SD-1.5's
autoencoder, then prints one table:

- one training step (forward, backward, AdamW step; the online-augmentation phase s > S/3, where the step is
  heaviest, with 1 of the 6 samples' t <= 200): fused vs naive (the released code's structure) s/step;
- peak GPU memory of the fused step with and without gradient checkpointing (torch.cuda.max_memory_allocated:
  weights + gradients + AdamW state + activations);
- fused fp32 vs fp32 with TF32 matmuls vs bf16 autocast (fp32 master weights) s/step;
- DDIM (50 steps, guidance 9 with the same mask in the unconditional pass, hint embedding once per image,
  both halves in one batch, then the autoencoder's decoder): images/s in fp32 and bf16 autocast.

    python bench/gpu_check.py                 # on a CUDA machine: the table (a few minutes; budget < 8)
    python bench/gpu_check.py --cpu-smoke     # anywhere: the same code path on tiny models, CPU (seconds)
    python bench/gpu_check.py --json out.json

Without CUDA it says so and skips the GPU rows (exit status 0); `--cpu-smoke` then runs every row on a tiny
configuration so the script itself is checked (its numbers mean nothing). A row that runs out of GPU memory
prints `OOM` and the rest still run; rows left when the time budget (`--budget`, 450 s) is spent print
`skipped (time budget)`.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from siamdiff.model.controlnet import SiameseControlNet, controlnet_residuals  # noqa: E402
from siamdiff.model.schedule import make_sampling_scheduler, make_train_scheduler  # noqa: E402
from siamdiff.model.siamese import (  # noqa: E402
    SiameseBatch,
    StepConfig,
    freeze_unet_encoder,
    fused_step,
    naive_step,
    trainable_parameters,
)
from siamdiff.train import performance as perf  # noqa: E402

# Stable Diffusion 1.5's unet/config.json and vae/config.json (diffusers), written out: no download
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True, freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, downsample_padding=1, mid_block_scale_factor=1,
    act_fn="silu", norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=768, attention_head_dim=8)
SD15_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, sample_size=512, layers_per_block=2, act_fn="silu",
    norm_num_groups=32, block_out_channels=(128, 256, 512, 512), scaling_factor=0.18215,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
SD15 = {"unet": SD15_UNET, "vae": SD15_VAE, "factor": 8, "size": 384, "batch": 6, "text_len": 77,
        "ddim_steps": 50, "name": "SD-1.5 size, 384 px, batch 6"}
TINY = {"unet": dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
                     down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                     up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                     attention_head_dim=4, norm_num_groups=8),
        "vae": dict(in_channels=3, out_channels=3, latent_channels=4, sample_size=32, layers_per_block=1,
                    norm_num_groups=8, block_out_channels=(16, 32, 32), scaling_factor=0.18215,
                    down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3),
        "factor": 4, "size": 32, "batch": 2, "text_len": 8, "ddim_steps": 4,
        "name": "CPU SMOKE: tiny models, 32 px, batch 2 (numbers mean nothing)"}


def build(cfg: dict, device: torch.device):
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**cfg["unet"])
        controlnet = SiameseControlNet.from_unet(unet, downsample_factor=cfg["factor"])
        vae = AutoencoderKL(**cfg["vae"]).eval().requires_grad_(False)
    with torch.no_grad():  # non-zero residuals, as after some training (zero convs would hide the DHI's cost)
        for name, p in controlnet.named_parameters():
            if "controlnet_down_blocks" in name or "controlnet_mid_block" in name or "zero_conv" in name:
                p.normal_(0, 0.02)
    freeze_unet_encoder(unet)
    perf.set_attention([unet, controlnet, vae], "sdpa")
    return unet.to(device).train(), controlnet.to(device).train(), vae.to(device)


def make_batch(cfg: dict, device) -> SiameseBatch:
    g = torch.Generator().manual_seed(0)
    b, size = cfg["batch"], cfg["size"]
    latent = size // cfg["factor"]
    t = torch.cat([torch.randint(0, 201, (1,), generator=g), torch.randint(201, 1000, (b - 1,), generator=g)])
    batch = SiameseBatch(
        z0=torch.randn(b, 4, latent, latent, generator=g), noise=torch.randn(b, 4, latent, latent, generator=g),
        t=t, text_emb=torch.randn(b, cfg["text_len"], cfg["unet"]["cross_attention_dim"], generator=g),
        mask=(torch.rand(b, 1, size, size, generator=g) > 0.7).float(), image=torch.rand(b, 3, size, size, generator=g))
    return SiameseBatch(*(getattr(batch, f).to(device) for f in ("z0", "noise", "t", "text_emb", "mask", "image")))


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device, dtype):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def time_train(models, cfg, device, *, impl="fused", dtype=None, checkpointing=False, tf32=False, repeats=3):
    """(median s/step, peak bytes) of forward + backward + AdamW step, after one warm-up step."""
    unet, controlnet, _ = models
    # the optimiser and its state are made here and dropped after the row, so rows do not add up in memory;
    # lr 0: the weights stay as built, so every row times the same models
    params = [p for g in trainable_parameters(controlnet, unet).values() for p in g]
    opt = torch.optim.AdamW(params, lr=0.0, weight_decay=0.0)
    sched, batch = make_train_scheduler(), make_batch(cfg, device)
    fn = {"fused": fused_step, "naive": naive_step}[impl]
    perf.set_gradient_checkpointing([unet, controlnet], checkpointing)
    old_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    times = []
    try:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for i in range(repeats + 1):
            _sync(device)
            t0 = time.perf_counter()
            with _autocast(device, dtype):
                out = fn(unet, controlnet, sched, batch, 700, 900, StepConfig())
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            del out
            _sync(device)
            if i:
                times.append(time.perf_counter() - t0)
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    finally:
        perf.set_gradient_checkpointing([unet, controlnet], False)
        torch.backends.cuda.matmul.allow_tf32 = old_tf32
        opt.zero_grad(set_to_none=True)
        del opt
        _free(device)
    return sorted(times)[len(times) // 2], peak


@torch.inference_mode()
def ddim_images_per_s(models, cfg, device, *, dtype=None, guidance=9.0):
    """DDIM from masks as the sampler does it: hint embedding once, [uncond; cond] in one batch (same mask)."""
    unet, controlnet, vae = models
    b, size = cfg["batch"], cfg["size"]
    latent = size // cfg["factor"]
    g = torch.Generator().manual_seed(1)
    mask3 = (torch.rand(b, 1, size, size, generator=g) > 0.7).float().repeat(1, 3, 1, 1).to(device)
    text = torch.randn(2, cfg["text_len"], cfg["unet"]["cross_attention_dim"], generator=g).to(device)
    text = torch.cat([text[:1].expand(b, -1, -1), text[1:].expand(b, -1, -1)])
    sched = make_sampling_scheduler(make_train_scheduler().config)
    sched.set_timesteps(cfg["ddim_steps"])
    unet.eval(), controlnet.eval()
    try:
        def run():
            z = torch.randn(b, 4, latent, latent, generator=g).to(device)
            with _autocast(device, dtype):
                hint = controlnet.controlnet_cond_embedding(mask3)
                hint2 = torch.cat([hint, hint])
                for t in sched.timesteps:
                    z2 = torch.cat([z, z])
                    tt = t.to(device).expand(2 * b)
                    down, mid = controlnet_residuals(controlnet, z2, tt, text, hint2)
                    eps = unet(z2, tt, encoder_hidden_states=text, down_block_additional_residuals=down,
                               mid_block_additional_residual=mid).sample.float()
                    e_u, e_c = eps.chunk(2)
                    z = sched.step(e_u + guidance * (e_c - e_u), t, z).prev_sample
                x = vae.decode(z / vae.config.scaling_factor).sample.float().clamp(-1, 1)
            return x

        run()  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        run()
        _sync(device)
        return b / (time.perf_counter() - t0)
    finally:
        unet.train(), controlnet.train()
        _free(device)


def _free(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _gib(n):
    return "n/a (CPU)" if n is None else f"{n / 2**30:.1f} GiB"


def run_rows(cfg: dict, device: torch.device, budget: float, repeats: int) -> list[tuple[str, str]]:
    t_start = time.perf_counter()
    models = build(cfg, device)
    unet, controlnet, _ = models
    n_u = sum(p.numel() for p in unet.parameters()) / 1e6
    n_c = sum(p.numel() for p in controlnet.parameters()) / 1e6
    trainable = [p for g in trainable_parameters(controlnet, unet).values() for p in g]
    mem = perf.training_memory([unet, controlnet], trainable)
    rows = [("models", f"UNet {n_u:.0f} M, ControlNet+DHI {n_c:.0f} M params; {len(trainable)} trainable tensors, "
                       f"{sum(p.numel() for p in trainable) / 1e6:.0f} M; weights+grads+AdamW "
                       f"{perf.format_bytes(sum(mem.values()))}; built in {time.perf_counter() - t_start:.0f} s")]
    results = {}

    def row(label, key, fn, fmt):
        if time.perf_counter() - t_start > budget:
            rows.append((label, "skipped (time budget)"))
            return
        t0 = time.perf_counter()
        try:
            results[key] = fn()
            rows.append((label, fmt(results[key])))
        except torch.cuda.OutOfMemoryError:
            _free(device)
            rows.append((label, "OOM"))
        print(f"  [{time.perf_counter() - t0:5.1f} s] {label}: {rows[-1][1]}", file=sys.stderr, flush=True)

    # bf16 autocast; fp16 on GPUs without bf16 (pre-Ampere), labelled as such
    bf16 = torch.float16 if device.type == "cuda" and not torch.cuda.is_bf16_supported() else torch.bfloat16
    half = "bf16" if bf16 == torch.bfloat16 else "fp16"
    row("train fused fp32 (s/step; peak mem)", "fused",
        lambda: time_train(models, cfg, device, repeats=repeats), lambda r: f"{r[0]:.3f} s/step; peak {_gib(r[1])}")
    row("train naive fp32 (released structure)", "naive",
        lambda: time_train(models, cfg, device, impl="naive", repeats=repeats),
        lambda r: f"{r[0]:.3f} s/step; peak {_gib(r[1])}")
    if "fused" in results and "naive" in results:
        rows.append(("fused speed-up over naive", f"{results['naive'][0] / results['fused'][0]:.2f}x"))
    row("train fused fp32 + gradient checkpointing", "ckpt",
        lambda: time_train(models, cfg, device, checkpointing=True, repeats=repeats),
        lambda r: f"{r[0]:.3f} s/step; peak {_gib(r[1])}")
    if "fused" in results and "ckpt" in results and results["fused"][1]:
        rows.append(("peak memory: checkpointing / none",
                     f"{_gib(results['ckpt'][1])} / {_gib(results['fused'][1])} "
                     f"({results['ckpt'][1] / results['fused'][1]:.2f}x)"))
    row("train fused fp32 + TF32 matmuls", "tf32",
        lambda: time_train(models, cfg, device, tf32=True, repeats=repeats),
        lambda r: f"{r[0]:.3f} s/step; peak {_gib(r[1])}")
    row(f"train fused {half} autocast (fp32 weights)", "bf16",
        lambda: time_train(models, cfg, device, dtype=bf16, repeats=repeats),
        lambda r: f"{r[0]:.3f} s/step; peak {_gib(r[1])}")
    row(f"train fused {half} + gradient checkpointing", "bf16_ckpt",
        lambda: time_train(models, cfg, device, dtype=bf16, checkpointing=True, repeats=repeats),
        lambda r: f"{r[0]:.3f} s/step; peak {_gib(r[1])}")
    if "fused" in results and "bf16" in results:
        rows.append((f"{half} speed-up over fp32", f"{results['fused'][0] / results['bf16'][0]:.2f}x"))
    steps = cfg["ddim_steps"]
    row(f"DDIM {steps} steps, cfg 9, fp32 (images/s)", "ddim",
        lambda: ddim_images_per_s(models, cfg, device), lambda r: f"{r:.2f} images/s")
    row(f"DDIM {steps} steps, cfg 9, {half} autocast", "ddim_bf16",
        lambda: ddim_images_per_s(models, cfg, device, dtype=bf16), lambda r: f"{r:.2f} images/s")
    rows.append(("total time", f"{time.perf_counter() - t_start:.0f} s"))
    return rows


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    width = max(len(r[0]) for r in rows)
    print(title)
    print("-" * len(title))
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-smoke", action="store_true", help="without CUDA: run every row on tiny CPU models")
    ap.add_argument("--repeats", type=int, default=3, help="timed training steps per row (after one warm-up)")
    ap.add_argument("--budget", type=float, default=450.0, help="seconds; later rows are skipped past it")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import diffusers

    env = (f"torch {torch.__version__}, diffusers {diffusers.__version__}, python {platform.python_version()}, "
           f"SDPA {'yes' if hasattr(torch.nn.functional, 'scaled_dot_product_attention') else 'no'}")
    out = {"env": env}
    if torch.cuda.is_available():
        device = torch.device("cuda")
        name = torch.cuda.get_device_name(device)
        total = torch.cuda.get_device_properties(device).total_memory
        title = f"gpu_check: {SD15['name']} on {name} ({total / 2**30:.0f} GiB); {env}"
        rows = run_rows(SD15, device, args.budget, args.repeats)
        print_table(title, rows)
        out.update(device=name, rows=rows)
    else:
        print("gpu_check: CUDA is not available on this machine: GPU rows skipped (run it on a CUDA machine for the "
              "SD-1.5-size table)")
        out.update(device=None, rows=[])
        if args.cpu_smoke:
            torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
            rows = run_rows(TINY, torch.device("cpu"), args.budget, max(1, min(args.repeats, 2)))
            print_table(f"gpu_check --cpu-smoke: {TINY['name']}; {env}", rows)
            out.update(device="cpu (smoke)", rows=rows)
        else:
            print("(run with --cpu-smoke to exercise every row on tiny CPU models)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
