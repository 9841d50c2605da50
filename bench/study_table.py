"""The issue-8 table (mean +- std over training seeds per arm) from `dvc exp show --json`.

    dvc exp show --json > exps.json && python bench/study_table.py exps.json

Arm = (train.loss, train.lambda_c_warmup); one row per arm with the number of seeds it has. Runs that failed
or lack a metric are listed, never averaged in silently.
"""
from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict

COLUMNS = [  # (header, metrics file, dotted key)
    ("A FID", "metrics/fidelity.json", "protocol_a.fid"),
    ("A KID", "metrics/fidelity.json", "protocol_a.kid"),
    ("B FID", "metrics/fidelity.json", "protocol_b.fid"),
    ("B KID", "metrics/fidelity.json", "protocol_b.kid"),
    ("LPIPS div", "metrics/fidelity.json", "protocol_a.lpips_diversity"),
    ("adherence Dice", "metrics/segmentation.json", "adherence.dice"),
    ("chance Dice", "metrics/segmentation.json", "adherence.chance_dice"),
    ("mDice real", "metrics/segmentation.json", "downstream.real_only.mdice"),
    ("mDice real+syn", "metrics/segmentation.json", "downstream.real_plus_synthetic.mdice"),
    ("mIoU real", "metrics/segmentation.json", "downstream.real_only.miou"),
    ("mIoU real+syn", "metrics/segmentation.json", "downstream.real_plus_synthetic.miou"),
]


def _get(d, dotted):
    for k in dotted.split("."):
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def runs(shown: list) -> list[dict]:
    """Every experiment as {name, params, metrics}. Workspace and commit rows are left out: their metrics
    files may predate their params (a committed profile switch that was never reproduced)."""
    out = []
    for rev in shown:
        for r in [e["revs"][0] for e in rev.get("experiments") or []]:
            data = r.get("data") or {}
            if not data.get("metrics"):
                continue
            out.append({"name": r.get("name") or r.get("rev"), "params": data["params"]["params.yaml"]["data"],
                        "metrics": {f: m.get("data", {}) for f, m in data["metrics"].items()}})
    return out


def table(shown: list) -> str:
    arms, seen = defaultdict(list), set()
    for r in runs(shown):
        p = r["params"]["train"]
        key = (p["loss"], p.get("lambda_c_warmup", 0))
        values = tuple(_get(r["metrics"].get(f, {}), k) for _, f, k in COLUMNS)
        if (key, p["seed"]) in seen:
            raise SystemExit(f"two experiments for arm {key} seed {p['seed']} (one is {r['name']}); remove one")
        seen.add((key, p["seed"]))
        arms[key].append((p["seed"], values))
    lines = ["| arm | seeds | " + " | ".join(h for h, _, _ in COLUMNS) + " |", "|---" * (len(COLUMNS) + 2) + "|"]
    for (loss, warm), rows in sorted(arms.items()):
        cells = []
        for i in range(len(COLUMNS)):
            vals = [v[i] for _, v in rows if isinstance(v[i], (int, float))]
            if not vals:
                cells.append("—")
            elif len(vals) == 1:
                cells.append(f"{vals[0]:.3g}")
            else:
                cells.append(f"{statistics.mean(vals):.3g} ± {statistics.stdev(vals):.2g}")
        name = loss + (f" + λc warm-up {warm}" if warm else "")
        lines.append(f"| {name} | {','.join(str(s) for s, _ in sorted(rows))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(table(json.load(f)))
