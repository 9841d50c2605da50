"""The `polyps` profile end to end on a small subset of the real data: every stage under `dvc repro`.

A temp copy of the project (dvc.yaml, params.yaml, configs/, stages/, siamdiff/) gets the profile applied
with `python -m siamdiff.profile polyps` (the real CLI), its `../shared/data/polyps-train/...` source
paths pointed at the `polyps_dir` fixture (skips with a reason where the data is absent), and everything
shrunk by params edits only: 12 Kvasir-SEG + 55 CVC-ClinicDB frames (the first 55 frames span three
video sequences: seq01 -> test, seq02/seq03 -> train under the published hash split; Kvasir's 12 images
give train, val and test), 16 px, a few optimiser steps per model. Then: all stages ran, the metrics are
finite numbers, `dvc status` is clean, and the split kept every CVC sequence in one partition.
"""
import json
import math
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from project_copy import BIN, copy_project, subprocess_env  # noqa: E402

STAGES = ("ingest", "split", "preprocess", "autoencoder", "encode", "backbone", "train", "sample", "evaluate",
          "segment")
SHARED = "../shared/data/polyps-train/"
LIMITS = {"kvasir-seg": 12, "cvc-clinicdb": 55}

TINY = {
    "preprocess": {"size": 16},
    "autoencoder": {"steps": 5, "widths": [8, 8, 8], "batch_size": 4},
    "encode": {"views": 2},
    "backbone": {"steps": 3, "widths": [16, 16], "cross_attention_dim": 16, "text_width": 16, "text_layers": 1,
                 "text_heads": 2, "attention_head_dim": 2, "batch_size": 4, "preview_samples": 2,
                 "preview_steps": 2},
    # preview_every 0 = the final preview only (plots/train/preview.png is a declared output)
    "train": {"steps": 3, "batch_size": 2, "checkpoint_every": 3, "preview_every": 0, "preview_images": 1,
              "preview_steps": 2},
    "sample": {"steps": 2, "k": 2, "seeds": [0, 1], "train_fraction": 0.1, "batch_size": 16},
    "segment": {"epochs": 1, "unet": {"channels": [4, 8], "num_res_units": 0}, "batch_size": 8},
}


def _run(args, cwd, env):
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    return proc.stdout + proc.stderr


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@pytest.mark.slow
def test_polyps_profile_end_to_end(tmp_path, polyps_dir):
    proj = copy_project(tmp_path / "proj")
    env = subprocess_env()
    dvc = BIN / "dvc"
    _run(["git", "init", "-q"], proj, env)
    _run([dvc, "init", "-q"], proj, env)

    # 1. the profile, through its CLI
    _run([sys.executable, "-m", "siamdiff.profile", "polyps"], proj, env)
    params = yaml.safe_load((proj / "params.yaml").read_text())
    assert params["profile"] == "polyps"
    sources = params["ingest"]["sources"]
    assert sorted(s["type"] for s in sources) == ["cvc-clinicdb", "kvasir-seg"], sources
    profile_train = dict(params["train"])

    # 2. the real data: the profile's project-relative paths -> the fixture's absolute path
    for s in sources:
        assert str(s["path"]).startswith(SHARED), s
        s["path"] = str(Path(polyps_dir) / str(s["path"])[len(SHARED):])
        assert Path(s["path"]).is_dir(), s
        s["limit"] = LIMITS[s["type"]]
    assert params["ingest"]["input_path"] == SHARED.rstrip("/")
    params["ingest"]["input_path"] = str(polyps_dir)  # what DVC tracks: the real data, read in place

    # 3. tiny: params edits only
    for section, over in TINY.items():
        for k in over:
            assert k in params[section], f"{section}.{k} is not a params.yaml key"
        params[section].update(over)
    assert params["train"]["loss"] == profile_train["loss"]
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "add", "-A"], proj, env)
    _run(["git", "commit", "-q", "-m", "tiny polyps project"], proj, env)  # dvclive needs a commit

    # 4. every stage under DVC
    out = _run([dvc, "repro"], proj, env)
    for stage in STAGES:
        assert f"Running stage '{stage}'" in out, f"stage {stage} did not run:\n{out[-4000:]}"

    # the split: patient-disjoint, CVC sequences whole, every partition non-empty
    import csv

    from siamdiff.data.sources import CVC_SEQUENCES, cvc_sequence

    with open(proj / "data/split.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(LIMITS.values())
    where = defaultdict(set)
    for r in rows:
        where[(r["dataset"], r["patient"])].add(r["split"])
    assert all(len(v) == 1 for v in where.values()), {k: v for k, v in where.items() if len(v) > 1}
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    cvc = [r for r in rows if r["dataset"] == "cvc-clinicdb"]
    seqs = {r["patient"] for r in cvc}
    assert len(seqs) >= 2, seqs
    for r in cvc:  # patient = the README's video sequence of the frame number
        assert r["patient"] == f"seq{cvc_sequence(int(r['frame']), CVC_SEQUENCES):02d}", r
    cvc_splits = {next(iter(where[("cvc-clinicdb", s)])) for s in seqs}
    assert len(cvc_splits) >= 2, f"all CVC sequences in {cvc_splits}: the test would not see a split boundary"

    # the metrics
    fid = json.loads((proj / "metrics/fidelity.json").read_text())
    seg = json.loads((proj / "metrics/segmentation.json").read_text())
    for proto in ("protocol_a", "protocol_b"):
        assert _finite(fid[proto]["fid"]) and _finite(fid[proto]["kid"]), fid[proto]
    assert _finite(fid["protocol_a"]["lpips_diversity"])
    assert fid["protocol_a"]["k"] == 2 and fid["protocol_a"]["n_masks"] == sum(r["split"] == "test" for r in rows)
    down = seg["downstream"]
    for arm in ("real_only", "real_plus_synthetic"):
        assert _finite(down[arm]["mdice"]) and 0 <= down[arm]["mdice"] <= 1, down
        assert _finite(down[arm]["miou"]), down
    assert _finite(seg["adherence"]["dice"])
    assert (proj / "plots/train/preview.png").stat().st_size > 0
    assert (proj / "plots/evaluate/grid.png").stat().st_size > 0

    # 5. nothing left to do
    status = _run([dvc, "status"], proj, env)
    assert "up to date" in status.lower(), status
    out = _run([dvc, "repro"], proj, env)
    assert "Running stage" not in out, out
