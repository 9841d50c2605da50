"""Cold vs warm `encode` time (goal: warm >= 20x faster than cold).

Builds a ~400-frame 64 px fixture (siamdiff's synthetic renderer) and a demo-size autoencoder in a
temporary folder, then runs the encode stage twice: cold (empty LMDB) and warm (every entry cached).

    python bench/bench_encode.py [--frames 400] [--size 64] [--views 4] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=400)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from siamdiff.model.autoencoder import build_autoencoder
    from siamdiff.utils import load_params
    from stages.encode import run
    from tiny_sd import make_prep

    ae = load_params("autoencoder", ROOT / "params.yaml")
    enc = {**load_params("encode", ROOT / "params.yaml"), "views": args.views}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n_val = n_test = args.frames // 10
        make_prep(tmp, args.frames - n_val - n_test, n_val, n_test, size=args.size, synthetic=True)
        build_autoencoder(ae["downsample_factor"], ae["latent_channels"], ae["widths"], ae["norm_groups"],
                          size=args.size).save_pretrained(tmp / "models" / "autoencoder")
        times = {}
        for name in ("cold", "warm"):
            t, c = time.perf_counter(), cpu()
            stats = run(enc, tmp, progress=False)
            times[name] = (time.perf_counter() - t, cpu() - c, stats)
        size = sum(p.stat().st_size for p in (tmp / "data" / "latents.lmdb").iterdir())
    (cw, cc, cs), (ww, wc, ws) = times["cold"], times["warm"]
    print(f"frames {args.frames} at {args.size}px, {args.views} train views -> {cs['entries']} entries, "
          f"LMDB {size / 2**20:.1f} MiB, torch threads {args.threads}")
    print(f"cold: {cw:7.2f} s wall  {cc:7.2f} s CPU  ({cs['encoded']} encoded)")
    print(f"warm: {ww:7.2f} s wall  {wc:7.2f} s CPU  ({ws['encoded']} encoded, {ws['hits']} hits)")
    print(f"speed-up (wall): {cw / ww:.1f}x   (CPU): {cc / max(wc, 1e-9):.1f}x   goal >= 20x")
    if args.json:
        args.json.write_text(json.dumps({"entries": cs["entries"], "cold_s": cw, "warm_s": ww, "cold_cpu_s": cc,
                                         "warm_cpu_s": wc, "warm_encoded": ws["encoded"]}, indent=2) + "\n")


if __name__ == "__main__":
    main()
