"""Benchmark: naive (released structure) vs fused Siamese-Diffusion training step.

Measures forward + backward time per step of `siamdiff.model.siamese.naive_step` and `fused_step` at
- the demo size (read from params.yaml: backbone widths/heads, 64 px images, 16x16 latents, train batch), and
- Stable Diffusion 1.5 widths (320, 640, 1280, 1280; 2 layers per block; cross-attention 768; DHI with 3
  PatchMerging stages; random weights; small latent 16x16 = 128 px hint; batch 1),
each in the two phases of training: s <= S/3 (L0-L2) and s > S/3 (L3 on, about 1/5 of the samples with
t <= 200). The step's achieved GFLOP/s (FLOPs counted with torch.utils.flop_counter) is compared with a plain
fp32 matmul measured in the same run.

    python bench/bench_step.py [--sd] [--threads 1] [--repeats 5] [--json out.json]

Not a test: numbers depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from siamdiff.model.controlnet import SiameseControlNet  # noqa: E402
from siamdiff.model.schedule import make_train_scheduler  # noqa: E402
from siamdiff.model.siamese import (  # noqa: E402
    SiameseBatch,
    StepConfig,
    freeze_unet_encoder,
    fused_step,
    naive_step,
    trainable_parameters,
)


def build(widths, layers, cross_dim, head_dim, groups, latent, factor, seed=0):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    n = len(widths)
    unet = UNet2DConditionModel(
        sample_size=latent, in_channels=4, out_channels=4, block_out_channels=tuple(widths),
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        layers_per_block=layers, cross_attention_dim=cross_dim, attention_head_dim=head_dim, norm_num_groups=groups)
    controlnet = SiameseControlNet.from_unet(unet, downsample_factor=factor)
    with torch.no_grad():  # non-zero outputs, as after some training
        for name, p in controlnet.named_parameters():
            if "controlnet_down_blocks" in name or "controlnet_mid_block" in name or "zero_conv" in name:
                p.normal_(0, 0.02)
    freeze_unet_encoder(unet)
    return unet, controlnet


def make_batch(b, latent, factor, text_len, cross_dim, gate_fraction=0.2, seed=0):
    g = torch.Generator().manual_seed(seed)
    size = latent * factor
    n_open = max(1, round(gate_fraction * b))
    t = torch.cat([torch.randint(0, 201, (n_open,), generator=g), torch.randint(201, 1000, (b - n_open,), generator=g)])
    return SiameseBatch(
        z0=torch.randn(b, 4, latent, latent, generator=g), noise=torch.randn(b, 4, latent, latent, generator=g),
        t=t, text_emb=torch.randn(b, text_len, cross_dim, generator=g),
        mask=(torch.rand(b, 1, size, size, generator=g) > 0.7).float(),
        image=torch.rand(b, 3, size, size, generator=g))


def time_steps(fns, unet, controlnet, sched, batch, step, total, params, repeats):
    """Interleaved timing (naive, fused, naive, fused, ...) after one warm-up each; the minimum per
    implementation, since on a shared machine other load only ever adds time."""
    def once(fn):
        for p in params:
            p.grad = None
        t0 = time.perf_counter()
        out = fn(unet, controlnet, sched, batch, step, total, StepConfig())
        out.loss.backward()
        return time.perf_counter() - t0

    for fn in fns:
        once(fn)  # warm-up
    times = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            times[i].append(once(fn))
    return [min(t) for t in times], [sorted(t)[len(t) // 2] for t in times]


def count_flops(fn, unet, controlnet, sched, batch, step, total, params):
    from torch.utils.flop_counter import FlopCounterMode

    for p in params:
        p.grad = None
    with FlopCounterMode(display=False) as fc:
        out = fn(unet, controlnet, sched, batch, step, total, StepConfig())
        out.loss.backward()
    return fc.get_total_flops()


def matmul_gflops(n=1024, repeats=10):
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    dt = (time.perf_counter() - t0) / repeats
    return 2 * n**3 / dt / 1e9


def bench(name, cfg, repeats):
    unet, controlnet = build(cfg["widths"], cfg["layers"], cfg["cross_dim"], cfg["head_dim"], cfg["groups"],
                             cfg["latent"], cfg["factor"])
    params = [p for g in trainable_parameters(controlnet, unet).values() for p in g]
    sched = make_train_scheduler()
    batch = make_batch(cfg["batch"], cfg["latent"], cfg["factor"], cfg["text_len"], cfg["cross_dim"])
    total = 900
    out = {"config": cfg, "params_unet_M": sum(p.numel() for p in unet.parameters()) / 1e6,
           "params_controlnet_M": sum(p.numel() for p in controlnet.parameters()) / 1e6}
    for phase, step in (("early (s<=S/3)", 100), ("late (s>S/3)", 700)):
        (naive, fused), (naive_med, fused_med) = time_steps((naive_step, fused_step), unet, controlnet, sched,
                                                            batch, step, total, params, repeats)
        flops_fused = count_flops(fused_step, unet, controlnet, sched, batch, step, total, params)
        flops_naive = count_flops(naive_step, unet, controlnet, sched, batch, step, total, params)
        out[phase] = {"naive_s": naive, "fused_s": fused, "speedup": naive / fused,
                      "naive_median_s": naive_med, "fused_median_s": fused_med,
                      "fused_gflop": flops_fused / 1e9, "naive_gflop": flops_naive / 1e9,
                      "fused_gflops_per_s": flops_fused / fused / 1e9, "naive_gflops_per_s": flops_naive / naive / 1e9}
        print(f"{name:6s} {phase:15s} naive {naive * 1e3:8.1f} ms  fused {fused * 1e3:8.1f} ms  "
              f"speed-up {naive / fused:4.2f}x (medians {naive_med / fused_med:4.2f}x)  | fused {flops_fused / 1e9:7.2f} GFLOP "
              f"= {flops_fused / fused / 1e9:6.1f} GFLOP/s, naive {flops_naive / 1e9:7.2f} GFLOP "
              f"= {flops_naive / naive / 1e9:6.1f} GFLOP/s", flush=True)
    e, late = out["early (s<=S/3)"], out["late (s>S/3)"]
    # a run spends 1/3 of its steps early and 2/3 late
    out["run_average_speedup"] = (e["naive_s"] + 2 * late["naive_s"]) / (e["fused_s"] + 2 * late["fused_s"])
    print(f"{name:6s} whole run (1/3 early + 2/3 late): speed-up {out['run_average_speedup']:.2f}x", flush=True)
    del unet, controlnet
    return out


def demo_config() -> dict:
    """The demo size from params.yaml (backbone, preprocess, autoencoder, train sections)."""
    import yaml

    p = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    b, factor = p["backbone"], int(p["autoencoder"]["downsample_factor"])
    return {"widths": tuple(b["widths"]), "layers": int(b["layers_per_block"]),
            "cross_dim": int(b["cross_attention_dim"]), "head_dim": int(b["attention_head_dim"]),
            "groups": int(b["norm_groups"]), "latent": int(p["preprocess"]["size"]) // factor, "factor": factor,
            "batch": int(p["train"]["batch_size"]), "text_len": 32}



SD15 = {"widths": (320, 640, 1280, 1280), "layers": 2, "cross_dim": 768, "head_dim": 8, "groups": 32, "latent": 16,
        "factor": 8, "batch": 1, "text_len": 77}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sd", action="store_true", help="also run at SD-1.5 widths (needs ~12 GB RAM)")
    ap.add_argument("--sd-only", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = {"threads": args.threads, "torch": torch.__version__}
    results["matmul_gflops_before"] = matmul_gflops()
    print(f"plain fp32 matmul (1024^3): {results['matmul_gflops_before']:.1f} GFLOP/s, {args.threads} thread(s)")
    if not args.sd_only:
        results["demo"] = bench("demo", demo_config(), args.repeats)
    if args.sd or args.sd_only:
        results["sd15"] = bench("sd1.5", SD15, max(2, args.repeats // 2))
    results["matmul_gflops_after"] = matmul_gflops()
    print(f"plain fp32 matmul (1024^3): {results['matmul_gflops_after']:.1f} GFLOP/s (after)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
