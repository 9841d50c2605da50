"""Benchmark: data-parallel gradient averaging per step, one all_reduce per tensor vs bucketed.

The tensors are the trainable ones of Siamese-Diffusion at Stable Diffusion 1.5 scale, in the order training
reduces them: the DHI and zero convs, the ControlNet's copy of U's encoder, U's decoder: 756 tensors,
874 M fp32 elements (3.5 GB), shapes read from models built on the meta device (no weights, no download).
`--scale S` divides every tensor's element count by S (at least one element), keeping the tensor count, so that
2 processes fit a small CPU machine; `--scale 1` is the real size. Every process (gloo, on this machine) fills
its gradients with its own values, then each scheme reduces them `--repeats` times (after one warm-up); the
table gives the median seconds per step (the slowest process) and checks both schemes give the same mean.

    python bench/bench_allreduce.py [--scale 16] [--processes 2] [--repeats 5] [--bucket-mb 25] [--json out.json]

Not a test: numbers depend on the machine and its load. Over NCCL on GPUs the per-collective launch cost is
smaller than gloo's but still paid 756 times; buckets cut it to ~ total size / bucket size.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from siamdiff.net import free_port  # noqa: E402
from siamdiff.train.performance import allreduce_mean_bucketed, allreduce_mean_per_tensor  # noqa: E402


def sd15_trainable_shapes() -> list[tuple[int, ...]]:
    """Shapes of the trainable tensors at SD-1.5 scale (ControlNet with the DHI + U's decoder)."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    from siamdiff.model.controlnet import SiameseControlNet
    from siamdiff.model.siamese import trainable_parameters

    with init_empty_weights():
        unet = UNet2DConditionModel(sample_size=48, cross_attention_dim=768, attention_head_dim=8,
                                    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2)
        controlnet = SiameseControlNet.from_unet(unet, downsample_factor=8)
    return [tuple(p.shape) for g in trainable_parameters(controlnet, unet).values() for p in g]


def _worker(rank: int, world: int, port: int, numels: list[int], repeats: int, bucket_mb: float, queue) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    g = torch.Generator().manual_seed(rank)
    values = [torch.randn(n, generator=g) for n in numels]
    params = [torch.nn.Parameter(torch.empty(n)) for n in numels]
    results, outs = {}, {}
    for name, fn in (("per-tensor", lambda: allreduce_mean_per_tensor(params, world)),
                     ("bucketed", lambda: allreduce_mean_bucketed(params, world, bucket_mb))):
        times = []
        for i in range(repeats + 1):
            for p, v in zip(params, values):
                p.grad = v.clone()
            dist.barrier()
            t0 = time.perf_counter()
            calls = fn()
            dt = time.perf_counter() - t0
            if i:
                times.append(dt)
        results[name] = {"median_s": statistics.median(times), "min_s": min(times), "collectives": calls}
        outs[name] = torch.cat([p.grad for p in params])
    same = bool(torch.equal(outs["per-tensor"], outs["bucketed"]))
    queue.put((rank, results, same))
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=int, default=16, help="divide every tensor's size by this (1 = SD-1.5 size)")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--bucket-mb", type=float, default=25.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import torch.multiprocessing as mp

    shapes = sd15_trainable_shapes()
    numels = [max(1, int(torch.Size(s).numel()) // args.scale) for s in shapes]
    total_mb = 4 * sum(numels) / 2**20
    port = free_port()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, args.processes, port, numels, args.repeats, args.bucket_mb, queue))
             for r in range(args.processes)]
    for p in procs:
        p.start()
    got = [queue.get(timeout=900) for _ in procs]
    for p in procs:
        p.join()
    slowest = {name: max(r[1][name]["median_s"] for r in got) for name in ("per-tensor", "bucketed")}
    calls = {name: got[0][1][name]["collectives"] for name in slowest}
    same = all(r[2] for r in got)
    print(f"gradient all-reduce per step: {len(numels)} fp32 tensors, {total_mb:.1f} MiB "
          f"(SD-1.5 trainable set / {args.scale}), {args.processes} gloo processes, torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs")
    print(f"{'scheme':<12} {'collectives':>11} {'s/step':>9} {'MiB/s':>9}")
    for name in slowest:
        print(f"{name:<12} {calls[name]:>11d} {slowest[name]:>9.4f} {total_mb / slowest[name]:>9.1f}")
    print(f"speed-up {slowest['per-tensor'] / slowest['bucketed']:.2f}x (bucket {args.bucket_mb:g} MiB); "
          f"same result element for element: {same}")
    if args.json:
        args.json.write_text(json.dumps({"tensors": len(numels), "mib": total_mb, "scale": args.scale,
                                         "processes": args.processes, "bucket_mb": args.bucket_mb,
                                         "seconds_per_step": slowest, "collectives": calls, "same": same},
                                        indent=2) + "\n")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
