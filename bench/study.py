"""Issue 16: does Siamese-Diffusion beat mask-only ControlNet? Three arms, paired over training seeds.

    python -m siamdiff.profile polyps && git commit -qam "polyps profile"   # once: the committed baseline
    python bench/study.py queue [--seeds 0 1 2 3 4] [--run]      # print (--run: run) the study's commands
    dvc exp show --json > exps.json
    python bench/study.py table exps.json --csv docs/results/polyps-study.csv --md docs/results/polyps-study.md
    python bench/study.py grids exps.json --seed 0 --out docs/results/polyps-study-grid.png

Arms (everything else as in params.yaml, the `polyps` profile; the same `train.seed`s in every arm, the
sampling seeds `sample.seeds` fixed):
    siamese       train.loss=siamese, no warm-ups, constant lr (the released L0-L3 recipe)
    mask-only     train.loss=mask-only, no warm-ups, constant lr (L0 only: ControlNet + DHI, the baseline)
    siamese-seed  train.loss=siamese, lambda_c_warmup 600, lr_warmup 500, cosine (the seed document's schedule)

`queue`: queued experiments run in copies under `.dvc/tmp/exps/`, where a data path relative to the project
(`../shared/data/polyps-train`) does not resolve, so every command carries the same absolute-path
`ingest.input_path` / `ingest.sources` overrides. The ingest manifest records the source paths, so all runs
(and any reproduction) must carry the same overrides for `ingest` .. `backbone` to have identical params and
output hashes. The first run (`siamese-s<first seed>`) runs in the workspace, in the foreground: it computes
`ingest` .. `backbone` once and fills DVC's run-cache; the other runs are queued and reuse those outputs
(only `train`, `sample`, `evaluate`, `segment` run per experiment). `--all-queued` queues that run too (when
the run-cache already holds the upstream stages for these params).

`table`: reads `dvc exp show --json` (DVC 3.x: a list of baseline rows, each with `experiments`, a list of
ranges `{"name", "revs": [{"name", "rev", "data": {"params": {"params.yaml": {"data": ...}}, "metrics":
{"metrics/x.json": {"data": ...}}, "outs": {...}}, "error"}], "executor": {"state": ...} | null}`). Only
experiments count: the workspace and commit rows are left out (their metrics may predate their params). A
failed or running experiment carries the params of its queue entry and *stale* metrics (those of the state it
was queued from; a queued one has none), so it is recognised by `error` / `executor.state` ("failed",
"queued", "running"; null for a finished workspace `dvc exp run`), listed by name and never averaged; so are
runs missing a metric. Runs that match no arm (another profile or schedule) are listed as
`other`. The CSV holds one row per complete run of the three arms, sorted by arm (in the order above) then
seed. The markdown has the per-arm table (mean and 95% t-interval) and, matched on `train.seed`, the paired
differences siamese - mask-only and siamese - siamese-seed with their 95% t-intervals and one verdict each.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

ARMS = {  # arm -> the train params that define it (all must match; any other value -> "other")
    "siamese": {"loss": "siamese", "lambda_c_warmup": 0, "lr_warmup": 0, "lr_schedule": "constant"},
    "mask-only": {"loss": "mask-only", "lambda_c_warmup": 0, "lr_warmup": 0, "lr_schedule": "constant"},
    "siamese-seed": {"loss": "siamese", "lambda_c_warmup": 600, "lr_warmup": 500, "lr_schedule": "cosine"},
}
ARM_KEYS = ("loss", "lambda_c_warmup", "lr_warmup", "lr_schedule")
PROFILE = "polyps"
COMPARISONS = (("siamese", "mask-only"), ("siamese", "siamese-seed"))

METRICS = [  # CSV column, metrics file, dotted key, label
    ("fid_a", "metrics/fidelity.json", "protocol_a.fid", "FID A"),
    ("kid_a", "metrics/fidelity.json", "protocol_a.kid", "KID A"),
    ("fid_b", "metrics/fidelity.json", "protocol_b.fid", "FID B"),
    ("kid_b", "metrics/fidelity.json", "protocol_b.kid", "KID B"),
    ("lpips_div", "metrics/fidelity.json", "protocol_a.lpips_diversity", "LPIPS diversity"),
    ("adherence", "metrics/segmentation.json", "adherence.dice", "adherence Dice"),
    ("adherence_chance", "metrics/segmentation.json", "adherence.chance_dice", "adherence chance Dice"),
    ("mdice_real", "metrics/segmentation.json", "downstream.real_only.mdice", "mDice real-only"),
    ("mdice_real_syn", "metrics/segmentation.json", "downstream.real_plus_synthetic.mdice", "mDice real+syn"),
    ("miou_real", "metrics/segmentation.json", "downstream.real_only.miou", "mIoU real-only"),
    ("miou_real_syn", "metrics/segmentation.json", "downstream.real_plus_synthetic.miou", "mIoU real+syn"),
    ("train_seconds", "metrics/train.json", "seconds", "train seconds"),
]
CSV_COLUMNS = ["arm", "seed"] + [m[0] for m in METRICS]
DERIVED = [  # name, label, function of a run's metrics; also the paired-difference quantities
    ("adherence_excess", "adherence − chance", lambda m: m["adherence"] - m["adherence_chance"]),
    ("delta_mdice", "Δ mDice (real+syn − real)", lambda m: m["mdice_real_syn"] - m["mdice_real"]),
]
PAIRED = [  # quantity, label, +1 if higher is better / -1 if lower is better
    ("fid_a", "FID A", -1),
    ("adherence_excess", "adherence − chance", +1),
    ("delta_mdice", "downstream Δ mDice", +1),
]
# outputs of ingest .. backbone: identical in every run when the arms share one backbone
UPSTREAM_OUTS = ("data/raw", "data/split.csv", "data/prep", "models/autoencoder", "data/encoded.csv",
                 "models/backbone")

# Student t 0.975 quantiles, df 1..30 (used where scipy is not installed; scipy is in the test extra)
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788,
         2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639,
         2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom (two-sided 95% interval)."""
    try:
        from scipy.stats import t
    except ImportError:
        if df <= len(_T975):
            return _T975[df - 1]
        z = 1.959964  # Cornish-Fisher expansion in 1/df: < 1e-4 off for df > 30
        return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
    return float(t.ppf(0.975, df))


def interval(values: list[float]) -> tuple[float, float | None, float | None]:
    """(mean, low, high) of the 95% t-interval of the mean; low/high None for fewer than 2 values."""
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, None, None
    half = t975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return m, m - half, m + half


# ------------------------------------------------------------------ reading `dvc exp show --json`
def _get(d, dotted: str):
    for k in dotted.split("."):
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _flat(d, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v, sort_keys=True)
    return out


def experiments(shown: list) -> list[dict]:
    """Every experiment in `dvc exp show --json` as {name, state, error, params, metrics, outs}."""
    out = []
    for baseline in shown:
        for rng in baseline.get("experiments") or []:
            head = (rng.get("revs") or [{}])[0]
            data = head.get("data") or {}
            executor = rng.get("executor") or {}
            state = executor.get("state") or "success"  # null executor: a `dvc exp run` in the workspace
            error = head.get("error")
            params = ((data.get("params") or {}).get("params.yaml") or {})
            out.append({
                "name": rng.get("name") or head.get("name") or head.get("rev"),
                "rev": head.get("rev"),
                "state": "failed" if error and state == "success" else state,
                "error": (error or {}).get("msg") if isinstance(error, dict) else error,
                "params": params.get("data") or {},
                "params_error": params.get("error"),
                "metrics": {f: (m or {}).get("data") for f, m in (data.get("metrics") or {}).items()},
                "outs": {p: (o or {}).get("hash") for p, o in (data.get("outs") or {}).items()},
            })
    return out


def arm_of(params: dict, profile: str = PROFILE) -> tuple[str, str]:
    """(arm, reason): the arm a run belongs to, or ("other", why not)."""
    train = params.get("train") or {}
    if params.get("profile") != profile:
        return "other", f"profile {params.get('profile')!r}, not {profile!r}"
    for arm, want in ARMS.items():
        if all(train.get(k) == v for k, v in want.items()):
            return arm, ""
    return "other", ", ".join(f"train.{k}={train.get(k)!r}" for k in ARM_KEYS)


def collect(shown: list, profile: str = PROFILE) -> dict:
    """Sort the experiments into complete runs per arm and the runs that are not averaged."""
    runs, failed, incomplete, other, seen = [], [], [], [], {}
    for e in experiments(shown):
        if e["state"] != "success":
            failed.append((e["name"], e["state"] + (f": {e['error']}" if e["error"] else "")))
            continue
        if e["params_error"] or not e["params"]:
            incomplete.append((e["name"], "params.yaml unreadable"))
            continue
        arm, why = arm_of(e["params"], profile)
        seed = (e["params"].get("train") or {}).get("seed")
        if arm == "other":
            other.append((e["name"], why))
            continue
        if isinstance(seed, bool) or not isinstance(seed, int):
            incomplete.append((e["name"], f"train.seed {seed!r} is not an integer"))
            continue
        values, missing = {}, []
        for col, f, key, _ in METRICS:
            v = _get(e["metrics"].get(f) or {}, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                missing.append(f"{f}:{key}")
            else:
                values[col] = float(v)
        if missing:
            incomplete.append((e["name"], "missing " + ", ".join(missing)))
            continue
        if (arm, seed) in seen:
            raise SystemExit(f"two complete runs of arm {arm} seed {seed}: {seen[arm, seed]} and {e['name']}; "
                             f"remove one (`dvc exp remove NAME`)")
        seen[arm, seed] = e["name"]
        for name, _, fn in DERIVED:
            values[name] = fn(values)
        runs.append({"name": e["name"], "rev": e["rev"], "arm": arm, "seed": seed, "values": values,
                     "params": e["params"], "outs": e["outs"]})
    order = list(ARMS)
    runs.sort(key=lambda r: (order.index(r["arm"]), r["seed"]))
    return {"runs": runs, "failed": failed, "incomplete": incomplete, "other": other}


# ------------------------------------------------------------------ outputs
def write_csv(runs: list[dict], path: str | Path | None = None) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in runs:
        w.writerow([r["arm"], r["seed"]] + [repr(r["values"][c]) for c in CSV_COLUMNS[2:]])
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(buf.getvalue())
    return buf.getvalue()


def _num(x: float) -> str:
    return f"{x:.4g}"


def _cell(values: list[float]) -> str:
    if not values:
        return "—"
    m, lo, hi = interval(values)
    return f"{_num(m)} (n=1, no interval)" if lo is None else f"{_num(m)} [{_num(lo)}, {_num(hi)}]"


def paired(runs: list[dict], a: str, b: str) -> dict:
    """Per-seed differences a - b of the PAIRED quantities over the seeds complete in both arms."""
    sa = {r["seed"]: r["values"] for r in runs if r["arm"] == a}
    sb = {r["seed"]: r["values"] for r in runs if r["arm"] == b}
    seeds = sorted(set(sa) & set(sb))
    diffs = {q: [sa[s][q] - sb[s][q] for s in seeds] for q, _, _ in PAIRED}
    return {"seeds": seeds, "diffs": diffs, "unpaired": {a: sorted(set(sa) - set(sb)), b: sorted(set(sb) - set(sa))}}


def verdict(a: str, b: str, label: str, better: int, diffs: list[float]) -> str:
    """One plain-language line on the 95% interval of the mean paired difference a - b."""
    n = len(diffs)
    if n < 2:
        return f"{n} pair(s): no interval, nothing can be said"
    m, lo, hi = interval(diffs)
    ci = f"mean difference {m:+.4g}, 95% interval [{lo:+.4g}, {hi:+.4g}]"
    if lo > 0 or hi < 0:
        higher = lo > 0
        good = "better" if (higher and better > 0) or (not higher and better < 0) else "worse"
        return f"interval excludes 0: {a} {'higher' if higher else 'lower'} {label} than {b} ({good}; {ci}, n={n} pairs)"
    return f"interval includes 0: no detectable difference at this scale (n={n} pairs; {ci})"


def _differing_params(runs: list[dict]) -> dict[str, list[str]]:
    """Params that differ between runs besides the arm keys and train.seed (should be none)."""
    skip = {f"train.{k}" for k in ARM_KEYS} | {"train.seed"}
    flats = [_flat(r["params"]) for r in runs]
    keys = set().union(*flats) - skip if flats else set()
    return {k: sorted({f.get(k, "(absent)") for f in flats}) for k in sorted(keys)
            if len({f.get(k, "(absent)") for f in flats}) > 1}


def markdown(col: dict) -> str:
    runs = col["runs"]
    by_arm = {arm: [r for r in runs if r["arm"] == arm] for arm in ARMS}
    out = ["### Per arm: mean and 95% t-interval over training seeds", ""]
    out.append("Runs: " + "; ".join(
        f"{arm} n={len(rs)} (seeds {', '.join(str(r['seed']) for r in rs) or 'none'})" for arm, rs in by_arm.items()))
    out.append("")
    out.append("| metric | " + " | ".join(f"{arm} (n={len(rs)})" for arm, rs in by_arm.items()) + " |")
    out.append("|---" * (len(ARMS) + 1) + "|")
    for name, label in [(m[0], m[3]) for m in METRICS] + [(d[0], d[1]) for d in DERIVED]:
        out.append(f"| {label} | " + " | ".join(_cell([r["values"][name] for r in rs]) for rs in by_arm.values()) + " |")
    out += ["", "Cells: mean [95% interval] (Student t, n − 1 degrees of freedom, over training seeds)."]

    for a, b in COMPARISONS:
        p = paired(runs, a, b)
        out += ["", f"### Paired: {a} − {b} (matched on train.seed)", ""]
        out.append("| seed | " + " | ".join(label for _, label, _ in PAIRED) + " |")
        out.append("|---" * (len(PAIRED) + 1) + "|")
        for i, s in enumerate(p["seeds"]):
            out.append(f"| {s} | " + " | ".join(f"{p['diffs'][q][i]:+.4g}" for q, _, _ in PAIRED) + " |")
        out.append("| mean [95% interval] | " + " | ".join(
            _cell(p["diffs"][q]) if p["seeds"] else "—" for q, _, _ in PAIRED) + " |")
        out.append("")
        for q, label, better in PAIRED:
            out.append(f"- {label}: {verdict(a, b, label, better, p['diffs'][q])}")
        unpaired = [f"{arm} seed {s}" for arm, ss in p["unpaired"].items() for s in ss]
        if unpaired:
            out.append(f"- unpaired, left out of this table: {', '.join(unpaired)}")

    out += ["", "### Checks", ""]
    diff = _differing_params(runs)
    out.append("- params besides the arm keys and train.seed: " + (
        "identical in all runs" if not diff else
        "DIFFER: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in diff.items())))
    present = [o for o in UPSTREAM_OUTS if any(o in r["outs"] for r in runs)]
    bad = [o for o in present if len({r["outs"].get(o) for r in runs}) > 1]
    out.append("- upstream outputs (ingest .. backbone): " + (
        "not in the JSON" if not present else
        f"identical hashes in all runs ({', '.join(present)})" if not bad else f"DIFFER: {', '.join(bad)}"))
    out.append("- failed or unfinished (not averaged): " + (
        "; ".join(f"{n} ({why})" for n, why in col["failed"]) or "none"))
    out.append("- incomplete (not averaged): " + ("; ".join(f"{n} ({why})" for n, why in col["incomplete"]) or "none"))
    out.append("- other (no arm of this study, not averaged): " + (
        "; ".join(f"{n} ({why})" for n, why in col["other"]) or "none"))
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------ grids
GRID = "plots/evaluate/grid.png"  # per run: mask | real | sample 0 .. k-1 for the same test masks (cache: false,
                                  # so each experiment's commit holds its own copy)


def _git_png(rev: str, path: str = GRID):
    import cv2
    import numpy as np

    got = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True)
    if got.returncode != 0:
        raise SystemExit(f"git show {rev}:{path}: {got.stderr.decode().strip()}; run this in the project that ran "
                         "the experiments (their commits are in its refs/exps)")
    blob = got.stdout
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def arm_grid(runs: list[dict], seed: int, read=_git_png):
    """One picture: mask | real (from the first arm), then each arm's samples of the same test masks, all from
    training seed `seed` (the sampling seeds are fixed), for every arm with a complete run at that seed (at least
    two) -> (picture, the arms shown). Refuses grids whose mask or real columns differ."""
    import numpy as np

    from siamdiff.data.images import label_band
    from siamdiff.metrics.fidelity import GRID_TILE

    by = {(r["arm"], r["seed"]): r for r in runs}
    shown = [arm for arm in ARMS if (arm, seed) in by]
    if len(shown) < 2:
        raise SystemExit(f"train.seed {seed}: complete runs of {', '.join(shown) or 'no arm'} only; a grid compares "
                         "at least two arms")
    pictures = {arm: read(by[arm, seed]["rev"]) for arm in shown}
    cut = 2 * (GRID_TILE + 2)  # the mask and real columns, and the gap after them
    first = next(iter(pictures.values()))
    for arm, pic in pictures.items():
        if pic.shape != first.shape or not np.array_equal(pic[:, :cut], first[:, :cut]):
            raise SystemExit(f"{by[arm, seed]['name']}: its grid shows other masks or real images than "
                             f"{by[shown[0], seed]['name']}'s; the arms must share the data and evaluate")

    band = 22
    gap = np.full((first.shape[0] + band, 8, 3), 255, np.uint8)
    panels = [np.concatenate([label_band(f"train.seed {seed}", cut, band), first[:, :cut]])]
    for arm, pic in pictures.items():
        panels += [gap, np.concatenate([label_band(arm, pic.shape[1] - cut, band), pic[:, cut:]])]
    return np.concatenate(panels, axis=1), shown


# ------------------------------------------------------------------ queue
def _outside(path: str, root: Path) -> bool:
    if "://" in path or os.path.isabs(path):
        return False
    return not (root / path).resolve().is_relative_to(root.resolve())


def path_overrides(params: dict, root: Path) -> list[str]:
    """Hydra overrides that make every ingest path outside the project absolute (unchanged otherwise)."""
    from siamdiff.profile import _hydra_value

    ing = params.get("ingest") or {}
    out = []
    ip = ing.get("input_path")
    if isinstance(ip, str) and _outside(ip, root):
        out.append(f"ingest.input_path={_hydra_value(str((root / ip).resolve()))}")
    sources, changed = [], False
    for s in ing.get("sources") or []:
        s = dict(s)
        if s.get("type") in ("kvasir-seg", "cvc-clinicdb", "folder") and isinstance(s.get("path"), str) \
                and _outside(s["path"], root):
            s["path"], changed = str((root / s["path"]).resolve()), True
        sources.append(s)
    if changed:
        out.append(f"ingest.sources={_hydra_value(sources)}")
    return out


def commands(seeds: list[int], params: dict, root: Path, all_queued: bool = False) -> list[list[str]]:
    paths = [a for o in path_overrides(params, root) for a in ("-S", o)]
    cmds = []
    for i, seed in enumerate(seeds):
        for arm, want in ARMS.items():
            first = i == 0 and arm == "siamese" and not all_queued
            cmd = ["dvc", "exp", "run"] + ([] if first else ["--queue"]) + ["-n", f"{arm}-s{seed}"] + paths
            cmd += [a for k in ARM_KEYS for a in ("-S", f"train.{k}={want[k]}")] + ["-S", f"train.seed={seed}"]
            cmds.append(cmd)
    cmds.sort(key=lambda c: "--queue" in c)  # the workspace run first
    return cmds + [["dvc", "queue", "start", "-j", "2"]]


def _sh(arg: str) -> str:
    """shlex.quote, but a Hydra value with single quotes goes in double quotes (readable, same word)."""
    if "'" in arg and not any(c in arg for c in '"$`\\!'):
        return f'"{arg}"'
    return shlex.quote(arg)


def shell(cmd: list[str]) -> str:
    return " ".join(_sh(a) for a in cmd)


def queue(args) -> None:
    import yaml

    root = Path.cwd()
    params = yaml.safe_load(Path(args.params).read_text())
    if params.get("profile") != PROFILE:
        raise SystemExit(f"{args.params}: profile {params.get('profile')!r}; first `python -m siamdiff.profile "
                         f"{PROFILE}` and commit it (queued experiments start from HEAD)")
    steps = (params.get("train") or {}).get("steps")
    cmds = commands(args.seeds, params, root, args.all_queued)
    print(f"# {len(cmds) - 1} runs: {len(ARMS)} arms x seeds {' '.join(map(str, args.seeds))}; "
          f"the first runs in the workspace (ingest .. backbone once), the rest reuse them")
    if isinstance(steps, int) and steps < ARMS["siamese-seed"]["lambda_c_warmup"]:
        print(f"# note: train.steps={steps} < the seed's warm-ups (lambda_c 600, lr 500): in siamese-seed lambda_c "
              f"ends at {steps / 600:.2f}, the lr at {min(1, steps / 500):.2f} of its peak, and cosine decay never starts")
    for c in cmds:
        print(shell(c))
    print("# any single run, exactly: its command above without --queue (same params: ingest .. backbone from the "
          "run-cache)")
    if args.run:
        for c in cmds:
            print(f"+ {shell(c)}", flush=True)
            subprocess.run(c, check=True)


def table(args) -> None:
    with open(args.exps) as f:
        col = collect(json.load(f), args.profile)
    text = write_csv(col["runs"], args.csv)
    md = markdown(col)
    if args.md:
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md).write_text(md)
    print(md if args.md or args.csv else text + "\n" + md)


def grids(args) -> None:
    import cv2

    with open(args.exps) as f:
        runs = collect(json.load(f), args.profile)["runs"]
    picture, shown = arm_grid(runs, args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
        raise SystemExit(f"could not write {args.out}")
    missing = [arm for arm in ARMS if arm not in shown]
    print(f"wrote {args.out}: {', '.join(shown)} at train.seed {args.seed}, the same test masks and sampling seeds"
          + (f" (no complete run of {', '.join(missing)} at this seed)" if missing else ""))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("queue", help="print (with --run: run) the study's dvc exp run commands")
    q.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    q.add_argument("--params", default="params.yaml")
    q.add_argument("--all-queued", action="store_true", help="queue the first run too (upstream already cached)")
    q.add_argument("--run", action="store_true", help="run the commands (the first in the foreground)")
    t = sub.add_parser("table", help="CSV + markdown tables from `dvc exp show --json`")
    t.add_argument("exps")
    t.add_argument("--csv", help="write the per-run CSV here (e.g. docs/results/polyps-study.csv)")
    t.add_argument("--md", help="write the markdown tables here")
    t.add_argument("--profile", default=PROFILE, help="runs of another profile are reported as other")
    g = sub.add_parser("grids", help="one picture: the same test masks sampled by each arm at one training seed")
    g.add_argument("exps")
    g.add_argument("--seed", type=int, default=0, help="train.seed of the runs to show (default 0)")
    g.add_argument("--out", default="docs/results/polyps-study-grid.png")
    g.add_argument("--profile", default=PROFILE)
    args = p.parse_args(argv)
    {"queue": queue, "table": table, "grids": grids}[args.cmd](args)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # siamdiff, when run as a script
    main()
