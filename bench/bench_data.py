"""Benchmark the data half: ingest + split + preprocess of the real polyp pairs, then no-op DVC calls.

    python bench/bench_data.py [--data ../shared/data/polyps-train] [--out bench/out/bench_data]

Builds a throw-away copy of the project in --out (dvc.yaml, params.yaml with the Kvasir-SEG + CVC-ClinicDB
sources, stages/, siamdiff/), `git init` + `dvc init`, then times `dvc repro` of each data stage and the
no-op `dvc status` / `dvc repro` afterwards (goal: no-op status < 5 s). Prints the figures and writes them
to --out/bench_data.json. The real data is read in place, never copied into the repository.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(args, cwd, env) -> tuple[float, float, str]:
    c0, t0 = children_cpu(), time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, children_cpu() - c0
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        sys.exit(f"{' '.join(map(str, args))} failed:\n{out}")
    return wall, cpu, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "polyps-train"),
                    help="folder holding Kvasir-SEG/ and CVC-ClinicDB/")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "bench_data"), help="scratch project folder")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the no-op calls (median reported)")
    ap.add_argument("--noop-only", action="store_true", help="reuse the project already built in --out; time the no-op calls only")
    args = ap.parse_args()
    data = Path(args.data).resolve()
    if not (data / "Kvasir-SEG").is_dir() or not (data / "CVC-ClinicDB").is_dir():
        sys.exit(f"{data}: Kvasir-SEG/ and CVC-ClinicDB/ not found; pass --data")

    proj = Path(args.out).resolve()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["ingest"]["sources"] = [{"type": "kvasir-seg", "path": str(data / "Kvasir-SEG")},
                                   {"type": "cvc-clinicdb", "path": str(data / "CVC-ClinicDB")}]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    env.pop("PYTHONPATH", None)
    dvc = str(BIN / "dvc")
    previous = proj / "bench_data.json"
    if args.noop_only:
        if not previous.is_file():
            sys.exit(f"{proj}: no finished benchmark project to reuse; run without --noop-only first")
    else:
        shutil.rmtree(proj, ignore_errors=True)
        proj.mkdir(parents=True)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for name in ("stages", "siamdiff"):
            shutil.copytree(ROOT / name, proj / name, ignore=ignore)
        for name in ("dvc.yaml", ".dvcignore"):
            if (ROOT / name).exists():
                shutil.copy(ROOT / name, proj / name)
        (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        subprocess.run(["git", "init", "-q"], cwd=proj, check=True)
        subprocess.run([dvc, "init", "-q"], cwd=proj, env=env, check=True)

    figures: dict[str, dict] = json.loads(previous.read_text())["figures"] if args.noop_only else {}
    for stage in () if args.noop_only else ("ingest", "split", "preprocess"):
        print(f"dvc repro {stage} ...", flush=True)
        wall, cpu, out = timed([dvc, "repro", stage], proj, env)
        inner = re.findall(r"in (\d+\.\d+)s", out)
        figures[f"repro {stage}"] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                                     "stage_s": float(inner[-1]) if inner else None}
        print(f"  {wall:.1f} s wall, {cpu:.1f} s CPU" + (f" (stage itself {inner[-1]} s)" if inner else ""))
    manifest = json.loads((proj / "data" / "raw" / "manifest-v1.json").read_text())
    counts = {ds: c["items"] for ds, c in manifest["counts"]["datasets"].items()}

    noop = (("no-op dvc status", [dvc, "status", "--with-deps", "preprocess"]),
            ("no-op dvc repro", [dvc, "repro", "preprocess"]),
            ("dvc --version", [dvc, "--version"]))  # DVC's own start-up, for scale
    for name, cmd in noop:
        walls, cpus = [], []
        for _ in range(args.repeats):
            wall, cpu, out = timed(cmd, proj, env)
            if "Running stage" in out or ("status" in cmd and "up to date" not in out):
                sys.exit(f"{name} was not a no-op:\n{out}")
            walls.append(wall)
            cpus.append(cpu)
        figures[name] = {"wall_s": round(statistics.median(walls), 2), "cpu_s": round(statistics.median(cpus), 2),
                         "all_s": [round(w, 2) for w in walls]}

    raw_mb = sum(p.stat().st_size for p in (proj / "data" / "raw").rglob("*") if p.is_file()) / 1e6
    result = {"pairs": counts, "raw_mb": round(raw_mb, 1), "size": params["preprocess"]["size"],
              "cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()], "figures": figures}
    (proj / "bench_data.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\npairs: {counts} (data/raw {raw_mb:.0f} MB), preprocess.size {result['size']}, "
          f"{os.cpu_count()} CPUs, load average {result['load_average']}")
    for name, f in figures.items():
        extra = f" (cpu {f['cpu_s']} s)" + (f", runs {f['all_s']}" if "all_s" in f else "")
        print(f"{name:>20}: {f['wall_s']:7.2f} s{extra}")
    print(f"wrote {proj / 'bench_data.json'}")


if __name__ == "__main__":
    main()
