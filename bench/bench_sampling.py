"""Benchmark: hint-once + batched-CFG DDIM sampling vs the naive loop (hint every step, two passes).

    python bench/bench_sampling.py [--model models/siamese] [--batch 8] [--steps 20] [--threads 2] [--json out.json]

Without a trained model it builds a randomly initialised generator with the demo profile's shapes
(params.yaml: preprocess.size, autoencoder, backbone), which is what the timing depends on. Prints the
wall and CPU time of each sampler (CPU time is robust to other load on a shared machine), the speed-ups
and the largest difference between their decoded images
(working space, before quantisation; must be < 1e-4). Exit code 1 if they differ.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def demo_generator(params: dict) -> SimpleNamespace:
    from siamdiff.model.autoencoder import build_autoencoder
    from siamdiff.model.backbone import build_demo_unet
    from siamdiff.model.controlnet import SiameseControlNet
    from siamdiff.model.schedule import make_train_scheduler
    from siamdiff.model.text import build_demo_text

    size = int(params["preprocess"]["size"])
    ae, bb = params["autoencoder"], params["backbone"]
    factor = int(ae["downsample_factor"])
    vae = build_autoencoder(factor, int(ae["latent_channels"]), ae["widths"], int(ae["norm_groups"]), size=size)
    unet = build_demo_unet(int(ae["latent_channels"]), size // factor, bb["widths"], int(bb["layers_per_block"]),
                           int(bb["cross_attention_dim"]), int(bb["attention_head_dim"]), int(bb["norm_groups"]))
    controlnet = SiameseControlNet.from_unet(unet, downsample_factor=factor)
    with torch.no_grad():  # non-zero zero-convs so the ControlNet's output matters
        for p in controlnet.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.02)
    tokenizer, text_encoder = build_demo_text([bb["prompt"]], width=int(bb["text_width"]),
                                              layers=int(bb["text_layers"]))
    for m in (vae, unet, controlnet, text_encoder):
        m.eval()
    return SimpleNamespace(controlnet=controlnet, unet=unet, vae=vae, tokenizer=tokenizer,
                           text_encoder=text_encoder, scheduler=make_train_scheduler(),
                           color_stats={"space": "rgb"}, prompt=bb["prompt"], size=size)


def masks_for(n: int, size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    out = torch.zeros(n, 1, size, size)
    for i in range(n):
        cy, cx, r = (torch.rand(3, generator=g) * torch.tensor([size, size, size / 4])).tolist()
        out[i, 0] = (((yy - cy) ** 2 + (xx - cx) ** 2) < (r + 3) ** 2).float()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a models/siamese folder (default: random demo-shaped model)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=9.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="timed runs of each sampler (best is reported)")
    ap.add_argument("--json", type=Path, default=None, help="also write the result to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from siamdiff.sample.ddim import sample_from_masks, sample_from_masks_naive
    from siamdiff.utils import load_params

    if args.model:
        from siamdiff.model.generator import load_generator

        gen = load_generator(args.model)
    else:
        gen = demo_generator(load_params(None, ROOT / "params.yaml"))
    masks = masks_for(args.batch, int(gen.size))
    seeds = list(range(args.batch))
    kw = dict(steps=args.steps, guidance=args.guidance, output="working")

    sample_from_masks(gen, masks[:1], seeds[:1], gen.prompt, steps=2, progress=False)  # warm-up
    wall = {"hint_once_batched_cfg": [], "naive": []}
    cpu = {"hint_once_batched_cfg": [], "naive": []}
    for _ in range(args.repeats):
        for name, fn in (("hint_once_batched_cfg", lambda: sample_from_masks(gen, masks, seeds, gen.prompt,
                                                                             progress=False, **kw)),
                         ("naive", lambda: sample_from_masks_naive(gen, masks, seeds, gen.prompt, **kw))):
            t, c = time.perf_counter(), time.process_time()
            out = fn()
            wall[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
            if name == "naive":
                naive = out
            else:
                fast = out
    diff = (fast - naive).abs().max().item()
    best_wall = {k: min(v) for k, v in wall.items()}
    best_cpu = {k: min(v) for k, v in cpu.items()}
    result = {"model": args.model or "random, demo profile shapes", "size": int(gen.size), "batch": args.batch,
              "steps": args.steps, "threads": args.threads, "wall_seconds": best_wall, "cpu_seconds": best_cpu,
              "speedup_wall": best_wall["naive"] / best_wall["hint_once_batched_cfg"],
              "speedup_cpu": best_cpu["naive"] / best_cpu["hint_once_batched_cfg"],
              "seconds_per_image_step_cpu": best_cpu["hint_once_batched_cfg"] / (args.batch * args.steps),
              "max_abs_diff": diff}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    sys.exit(0 if diff < 1e-4 else 1)


if __name__ == "__main__":
    main()
