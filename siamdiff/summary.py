"""`siamdiff summary`: where the pipeline's metrics, plots, samples and models are, and the headline numbers.

Printed at the end of `make repro`; reads only what exists (a partial run prints what it has).
"""
from __future__ import annotations

from pathlib import Path

from siamdiff.utils import read_metrics


def _load(path: Path):
    """A metrics file with its `.info.json` (descriptions, reasons) merged in; None if missing."""
    return read_metrics(path)


def _fmt(x, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _count(folder: Path, pattern: str = "*.png") -> int:
    return sum(1 for _ in folder.glob(pattern)) if folder.is_dir() else 0


def headline(root: str | Path = ".") -> list[str]:
    """The headline lines (fidelity and segmentation), empty where a stage has not run."""
    root = Path(root)
    lines = []
    fid = _load(root / "metrics/fidelity.json")
    if fid:
        a, b = fid.get("protocol_a", {}), fid.get("protocol_b", {})
        lines.append(f"protocol A (test masks, K={a.get('k')}): FID {_fmt(a.get('fid'), 2)} +- {_fmt(a.get('fid_std'), 2)}"
                     f"  KID {_fmt(a.get('kid'), 4)} +- {_fmt(a.get('kid_std'), 4)}"
                     f"  LPIPS diversity {_fmt(a.get('lpips_diversity'))}  LPIPS to real {_fmt(a.get('lpips_to_real'))}")
        lines.append(f"protocol B (train masks): FID {_fmt(b.get('fid'), 2)}  KID {_fmt(b.get('kid'), 4)}")
        clip = fid.get("clip", {})
        if a.get("clip_i") is not None:
            lines.append(f"CLIP-I {_fmt(a.get('clip_i'))}  CMMD {_fmt(a.get('cmmd'))}")
        else:
            lines.append(f"CLIP-I / CMMD: null ({clip.get('reason') or 'not computed'})")
    seg = _load(root / "metrics/segmentation.json")
    if seg:
        ad, ds = seg.get("adherence", {}), seg.get("downstream", {})
        lines.append(f"mask adherence (generated vs conditioning mask): Dice {_fmt(ad.get('dice'))}  IoU {_fmt(ad.get('iou'))}")
        ro, rs = ds.get("real_only", {}), ds.get("real_plus_synthetic", {})
        lines.append(f"segmentation on real test: real-only mDice {_fmt(ro.get('mdice'))} mIoU {_fmt(ro.get('miou'))}"
                     f"  |  real+synthetic mDice {_fmt(rs.get('mdice'))} mIoU {_fmt(rs.get('miou'))}")
    return lines


def _stage_order(root: Path) -> list[str]:
    """The stages in dvc.yaml's order (the pipeline's); [] without a readable dvc.yaml."""
    import yaml

    from siamdiff.deps import stage_names

    try:
        return stage_names(root)
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return []


def runtime_lines(root: str | Path = ".") -> list[str]:
    """Wall time per stage and the machine that ran it (metrics/runtime/*.json), in pipeline order."""
    from siamdiff.machine import read_runtimes

    runs = read_runtimes(root)
    if not runs:
        return []
    order = _stage_order(Path(root))
    names = sorted(runs, key=lambda n: order.index(n) if n in order else len(order))
    machines = {(r.get("cpu"), tuple(r.get("isa", ())), r.get("threads")) for r in runs.values()}
    lines = ["wall time per stage (metrics/runtime/*.json): " + ", ".join(
        f"{n} {runs[n].get('seconds', 0) / 60:.1f}" + (f" ({runs[n]['precision']})" if "precision" in runs[n] else "")
        for n in names) + f" min; total {sum(r.get('seconds', 0) for r in runs.values()) / 60:.1f} min"]
    for cpu, isa, threads in sorted(machines, key=str):
        lines.append(f"  machine: {cpu}; {' '.join(isa) or 'no AVX2'}; {threads} torch threads")
    if len(machines) > 1:
        lines.append("  (stages ran on different machines or thread counts: compare per stage, not the total)")
    return lines


def print_summary(root: str | Path = ".") -> None:
    root = Path(root)
    print("siamdiff: results")
    metrics = sorted(p for p in (root / "metrics").glob("*.json") if not p.name.endswith(".info.json")) \
        if (root / "metrics").is_dir() else []
    plots = sorted((root / "plots").rglob("*.png")) if (root / "plots").is_dir() else []
    print(f"  metrics:  {', '.join(str(p) for p in metrics) or '(none yet: run `dvc repro`)'}")
    print(f"  plots:    {', '.join(str(p) for p in plots) or '(none yet)'}")
    samples = root / "data/samples"
    if samples.is_dir():
        parts = [f"{d.name} {_count(d / 'img')}" for d in sorted(samples.iterdir()) if (d / "img").is_dir()]
        print(f"  samples:  {samples}/ ({', '.join(parts)} image/mask pairs)")
    else:
        print("  samples:  (none yet)")
    models = [d for d in ("models/siamese", "models/segmenter") if (root / d).is_dir()]
    if models:
        print(f"  models:   {', '.join(models)}")
    for line in runtime_lines(root):
        print(line)
    lines = headline(root)
    if lines:
        print("headline:")
        for line in lines:
            print("  " + line)
    print("compare runs: `dvc metrics diff`, `dvc plots diff`; your own masks: "
          "`siamdiff generate --model models/siamese --masks DIR --out DIR -k N`")
