"""Benchmark: what one vs two torch threads, and fp32 vs bf16 autocast, buy for each demo stage's inner step.

One representative step per stage at the demo's sizes (params.yaml): autoencoder training (batch 8, 64 px),
backbone training (batch 16), the Siamese fused training step (train batch), one DDIM step of sampling
(16 masks, conditional + unconditional), one segmenter training step (batch 16). Each setting runs in its own
process (torch fixes its thread pool at start). Prints ms/step and the ratios; `lscpu`-style CPU line first.

    python bench/bench_threads.py [--repeats 5] [--json out.json]

Not a test: numbers depend on the machine and its load; compare only within one run.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _steps():
    """name -> a function doing one step (forward + backward where the stage trains)."""
    import torch
    import yaml
    from monai.networks.nets import UNet

    from bench.bench_step import build, demo_config, make_batch
    from siamdiff.model.autoencoder import build_autoencoder
    from siamdiff.model.backbone import build_demo_unet
    from siamdiff.model.schedule import make_train_scheduler
    from siamdiff.model.siamese import StepConfig, fused_step

    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    a, b, s = p["autoencoder"], p["backbone"], p["segment"]
    size = int(p["preprocess"]["size"])
    latent = size // int(a["downsample_factor"])
    vae = build_autoencoder(a["downsample_factor"], a["latent_channels"], a["widths"], a["norm_groups"],
                            a["layers_per_block"], size=size)
    x = torch.randn(int(a["batch_size"]), 3, size, size)
    unet = build_demo_unet(4, latent, b["widths"], b["layers_per_block"], b["cross_attention_dim"],
                           b["attention_head_dim"], b["norm_groups"])
    zb, tb = torch.randn(int(b["batch_size"]), 4, latent, latent), torch.randint(0, 1000, (int(b["batch_size"]),))
    text = torch.randn(int(b["batch_size"]), 8, b["cross_attention_dim"])
    cfg = demo_config()
    su, sc = build(cfg["widths"], cfg["layers"], cfg["cross_dim"], cfg["head_dim"], cfg["groups"], cfg["latent"],
                   cfg["factor"])
    batch = make_batch(cfg["batch"], cfg["latent"], cfg["factor"], 8, cfg["cross_dim"])
    sched = make_train_scheduler()
    step_cfg = StepConfig(loss="siamese", lambda_c=1.0, augment_t_max=200, augment_after=1 / 3)
    ch = s["unet"]["channels"]
    seg = UNet(2, 3, 1, channels=ch, strides=(2,) * (len(ch) - 1), num_res_units=0)
    xs = torch.randn(int(s["batch_size"]), 3, size, size)
    n = int(p["sample"]["batch_size"]) * 2
    zs, ts = torch.randn(n, 4, latent, latent), torch.full((n,), 500)
    hint = torch.rand(n, 3, size, size)  # the mask, repeated to three channels (as the DHI takes it)

    def autoencoder():
        out = vae(x).sample
        (out - x).pow(2).mean().backward()

    def backbone():
        unet(zb, tb, encoder_hidden_states=text).sample.pow(2).mean().backward()

    def train():
        fused_step(su, sc, sched, batch, 400, 600, step_cfg).loss.backward()

    def sample():
        with torch.no_grad():
            down, mid = sc(zs, ts, encoder_hidden_states=torch.randn(n, 8, cfg["cross_dim"]),
                           controlnet_cond=hint, return_dict=False)
            su(zs, ts, encoder_hidden_states=torch.randn(n, 8, cfg["cross_dim"]),
               down_block_additional_residuals=down, mid_block_additional_residual=mid)

    def segment():
        seg(xs).sigmoid().mean().backward()

    return {"autoencoder": autoencoder, "backbone": backbone, "train": train, "sample (1 DDIM step)": sample,
            "segment": segment}


def _child(threads: int, bf16: bool, repeats: int) -> None:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    out = {}
    for name, fn in _steps().items():
        best = float("inf")
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                fn()
            best = min(best, time.perf_counter() - t0)
        out[name] = best * 1e3
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(int(args.child[0]), args.child[1] == "bf16", args.repeats)
        return
    from siamdiff.machine import describe

    info = describe()
    print(f"CPU: {info['cpu']}; ISA: {' '.join(info['isa'])}; {info['cores']} cores; torch {info['torch']}")
    runs = {}
    for threads, prec in ((1, "fp32"), (2, "fp32"), (1, "bf16")):
        res = subprocess.run([sys.executable, __file__, "--repeats", str(args.repeats), "--child", str(threads), prec],
                             capture_output=True, text=True, check=True)
        runs[f"{threads}t {prec}"] = json.loads(res.stdout.strip().splitlines()[-1])
    names = list(runs["1t fp32"])
    print(f"{'step':<22}{'1 thread ms':>12}{'2 threads ms':>14}{'2t speedup':>12}{'bf16 1t ms':>12}{'bf16/fp32':>11}")
    for n in names:
        one, two, bf = runs["1t fp32"][n], runs["2t fp32"][n], runs["1t bf16"][n]
        print(f"{n:<22}{one:>12.1f}{two:>14.1f}{one / two:>11.2f}x{bf:>12.1f}{bf / one:>10.2f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": info, "ms_per_step": runs}, indent=1))


if __name__ == "__main__":
    main()
