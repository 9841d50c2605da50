"""Every benchmark figure of the project in one table.

    python bench/run_all.py [--skip-repro] [--skip-sd] [--data ../shared/data/polyps-train]

Runs, each in its own process: the default `dvc repro` stage by stage in a scratch copy of the project
(wall time and peak RSS per stage), the data bench (1450 real pairs; skipped if the folder is absent), the
encode-cache bench, the training-step bench (naive vs fused) and the sampling bench (hint-once + batched
CFG vs naive). Prints one table; writes bench/out/run_all.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from siamdiff.deps import stage_names

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
BIN = Path(sys.executable).parent
RSS_PROBE = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)")


def env():
    e = dict(os.environ)
    e["PATH"] = f"{BIN}{os.pathsep}{e['PATH']}"
    return e


def run_json(cmd: list[str], json_path: Path, reuse: bool = False, timeout: int = 3600) -> dict:
    if reuse and json_path.is_file():
        return json.loads(json_path.read_text())
    json_path.parent.mkdir(parents=True, exist_ok=True)
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd + ["--json", str(json_path)], cwd=ROOT, env=env(), check=True, timeout=timeout)
    return json.loads(json_path.read_text())


def bench_repro(rows: list, keep: Path | None = None):
    """Default `dvc repro`, one stage at a time, in a scratch copy: wall time and peak RSS of each stage.

    `keep`: run in this (new) folder and keep it (its outputs can be `dvc push`ed, then pulled elsewhere)."""
    scratch = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="siamdiff-repro-"))
    if keep and keep.exists():
        raise SystemExit(f"{keep}: exists; --keep-repro needs a new folder")
    try:
        subprocess.run(["git", "clone", "-q", str(ROOT), str(scratch / "p")], check=True)
        proj = scratch / "p"
        for f in ("params.yaml", "dvc.yaml"):  # bench the working tree, committed or not
            shutil.copy(ROOT / f, proj / f)
        for d in ("siamdiff", "stages"):
            shutil.rmtree(proj / d)
            shutil.copytree(ROOT / d, proj / d, ignore=shutil.ignore_patterns("__pycache__"))
        stages = stage_names(proj)
        total = 0.0
        for stage in stages:
            t0 = time.perf_counter()
            p = subprocess.run([sys.executable, "-c", RSS_PROBE, "dvc", "repro", "-s", stage], cwd=proj,
                               env=env(), capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if p.returncode:
                print(p.stdout[-3000:], p.stderr[-3000:])
                raise SystemExit(f"stage {stage} failed")
            total += wall
            if stage == "train":
                up_to_train = total
            rss_mb = int(p.stdout.strip().splitlines()[-1]) / 1024
            rows.append((f"dvc repro: {stage}", f"{wall:.0f} s, peak {rss_mb:.0f} MB", ""))
        rows.append(("dvc repro: ingest .. train", f"{up_to_train / 60:.1f} min", "<= 22 min"))
        rows.append(("dvc repro: all stages (default demo)", f"{total / 60:.1f} min", "<= 30 min"))
        t0 = time.perf_counter()
        subprocess.run(["dvc", "status"], cwd=proj, env=env(), check=True, capture_output=True)
        rows.append(("dvc status after repro (no-op)", f"{time.perf_counter() - t0:.1f} s", "< 5 s"))
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-repro", action="store_true", help="skip the full default `dvc repro` (~30 min)")
    ap.add_argument("--skip-sd", action="store_true", help="skip the step bench at SD-1.5 widths (~12 GB RAM)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "polyps-train"))
    ap.add_argument("--keep-repro", type=Path, help="run the full `dvc repro` in this new folder and keep it")
    ap.add_argument("--reuse", action="store_true", help="reuse a benchmark's bench/out/*.json where present")
    args = ap.parse_args()
    rows: list[tuple[str, str, str]] = []
    py = sys.executable

    data_json = OUT / "bench_data" / "bench_data.json"
    if Path(args.data, "Kvasir-SEG").is_dir():
        if not (args.reuse and data_json.is_file()):
            subprocess.run([py, "bench/bench_data.py", "--data", args.data], cwd=ROOT, env=env(), check=True)
        figs = json.loads((OUT / "bench_data" / "bench_data.json").read_text())["figures"]
        for name, f in figs.items():
            rows.append((f"data: {name}", f"{f.get('wall_s', f.get('wall', '?'))} s wall",
                         "< 5 s" if "status" in name else ""))
    else:
        rows.append(("data bench", f"skipped: {args.data} absent", ""))

    enc = run_json([py, "bench/bench_encode.py"], OUT / "bench_encode.json", args.reuse)
    rows.append(("encode: cold / warm", f"{enc['cold_s']:.1f} s / {enc['warm_s']:.2f} s", ""))
    rows.append(("encode: warm speed-up", f"{enc['cold_s'] / enc['warm_s']:.0f}x", ">= 20x"))

    step = run_json([py, "bench/bench_step.py"] + ([] if args.skip_sd else ["--sd"]), OUT / "bench_step.json", args.reuse)
    matmul = step["matmul_gflops_before"]
    for size in ("demo", "sd15"):
        if size not in step:
            continue
        for phase, r in step[size].items():
            if not (isinstance(r, dict) and "naive_s" in r):
                continue
            rows.append((f"train step {size} {phase}: naive / fused",
                         f"{r['naive_s']:.3f} s / {r['fused_s']:.3f} s = {r['naive_s'] / r['fused_s']:.2f}x",
                         ">= 1.3x" if size == "demo" else ""))
            rows.append((f"train step {size} {phase}: fused GFLOP/s vs fp32 matmul",
                         f"{r['fused_gflops_per_s']:.1f} vs {matmul:.1f}", ""))
        rows.append((f"train step {size}: whole-run speed-up", f"{step[size]['run_average_speedup']:.2f}x", ""))

    smp = run_json([py, "bench/bench_sampling.py"], OUT / "bench_sampling.json", args.reuse)
    w = smp["wall_seconds"]
    rows.append(("sampling: naive / hint-once + batched CFG",
                 f"{w['naive']:.1f} s / {w['hint_once_batched_cfg']:.1f} s = {smp['speedup_wall']:.2f}x, "
                 f"max diff {smp['max_abs_diff']:.1e}", ">= 1.5x, <= 1e-4"))

    if not args.skip_repro:
        bench_repro(rows, args.keep_repro)

    width = max(len(r[0]) for r in rows)
    print(f"\n{'figure'.ljust(width)} | value | goal")
    print("-" * (width + 40))
    for name, value, goal in rows:
        print(f"{name.ljust(width)} | {value} | {goal}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "run_all.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
