"""bench/study.py (issue 16): CSV, per-arm and paired tables from a small fake `dvc exp show --json`.

The fake has DVC 3.x's structure, as `dvc exp show --json` (dvc 3.67) wrote it in a scratch repository: a
list of rows (workspace, then the baseline commit) whose `experiments` are ranges `{"revs": [state],
"executor": {"state": ...} | null, "name"}` (null: a finished workspace `dvc exp run`); a failed run carries
`error` and *stale* metrics (those of the state it was queued from), a running one the same stale metrics
without `error`, a queued one no metrics.
"""
import csv
import hashlib
import importlib.util
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("study", ROOT / "bench" / "study.py")
study = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(study)

RELEASED = {"lambda_c_warmup": 0, "lr_warmup": 0, "lr_schedule": "constant"}
SEED_SCHEDULE = {"lambda_c_warmup": 600, "lr_warmup": 500, "lr_schedule": "cosine"}
ARM_TRAIN = {"siamese": {"loss": "siamese", **RELEASED}, "mask-only": {"loss": "mask-only", **RELEASED},
             "siamese-seed": {"loss": "siamese", **SEED_SCHEDULE}}
# per arm, per training seed: FID A, adherence Dice, its chance level, mDice real+syn (mDice real-only: 0.614)
KNOWN = {
    "siamese": {0: (270, 0.60, 0.33, 0.643), 1: (272, 0.52, 0.30, 0.641), 2: (275, 0.58, 0.31, 0.640),
                3: (269, 0.55, 0.32, 0.645)},   # seed 3: its mask-only run failed -> unpaired
    "mask-only": {0: (283, 0.43, 0.28, 0.639), 1: (286, 0.45, 0.29, 0.644), 2: (288, 0.41, 0.27, 0.636)},
    "siamese-seed": {0: (268, 0.57, 0.31, 0.642), 1: (277, 0.55, 0.30, 0.638), 2: (271, 0.50, 0.33, 0.646)},
}
UPSTREAM = {"data/raw": "aa.dir", "models/backbone": "bb.dir"}


def _metrics(fid, adh, chance, mdice_syn, seed):
    return {
        "metrics/fidelity.json": {"protocol_a": {"fid": fid, "kid": fid / 1000, "lpips_diversity": 0.25 + 0.01 * seed},
                                  "protocol_b": {"fid": fid + 10, "kid": fid / 900}},
        "metrics/segmentation.json": {
            "adherence": {"dice": adh, "chance_dice": chance, "iou": adh - 0.1},
            "downstream": {"real_only": {"mdice": 0.614, "miou": 0.492},
                           "real_plus_synthetic": {"mdice": mdice_syn, "miou": mdice_syn - 0.12}}},
        "metrics/train.json": {"seconds": 600.5 + seed, "steps": 400},
    }


def _state(rev, name, train, seed, metrics, error=None, profile="polyps"):
    params = {"profile": profile, "train": {**train, "seed": seed, "steps": 400, "lambda_c": 1.0},
              "sample": {"seeds": [0, 1]}}
    return {"rev": rev, "name": name, "error": error, "experiments": None, "data": {
        "rev": rev, "timestamp": "2026-12-03T13:45:54", "meta": {},
        "params": {"params.yaml": {"data": params}},
        "metrics": {f: {"data": d} for f, d in metrics.items()},
        "deps": {"stages/train.py": {"hash": "9f5c", "size": 271, "nfiles": None}},
        "outs": {**{p: {"hash": h, "size": 1, "nfiles": 3, "use_cache": True, "is_data_source": False}
                    for p, h in UPSTREAM.items()},
                 "models/siamese": {"hash": f"{rev}.dir", "size": 1, "nfiles": 3, "use_cache": True,
                                    "is_data_source": False}}}}


def _range(state, executor):
    ex = None if executor is None else {"state": executor, "name": "dvc-task", "local": {
        "root": None, "log": f"/x/.dvc/tmp/exps/run/{state['rev']}.out", "pid": 1,
        "returncode": 0 if executor == "success" else None, "task_id": state["rev"]}}
    return {"revs": [state], "executor": ex, "name": state["name"]}


def fake_exp_show() -> list:
    stale = _metrics(999, 0.99, 0.01, 0.99, 0)  # the baseline commit's metrics: must never be averaged
    ranges = []
    for arm, seeds in KNOWN.items():
        for seed, known in seeds.items():
            name = f"{arm}-s{seed}"
            ranges.append(_range(_state(hashlib.sha1(name.encode()).hexdigest(), name, ARM_TRAIN[arm], seed,
                                        _metrics(*known, seed)),
                                 None if name == "siamese-s0" else "success"))  # siamese-s0: a workspace run
    ranges.append(_range(_state("f" * 40, "mask-only-s3", ARM_TRAIN["mask-only"], 3, stale,
                                error={"msg": "Experiment run failed", "type": ""}), "failed"))
    ranges.append(_range(_state("e" * 40, "siamese-seed-s4", ARM_TRAIN["siamese-seed"], 4, {}), "queued"))
    ranges.append(_range(_state("b" * 40, "mask-only-s4", ARM_TRAIN["mask-only"], 4, stale), "running"))
    ranges.append(_range(_state("d" * 40, "warmup200-s0", {**ARM_TRAIN["siamese"], "lambda_c_warmup": 200}, 0,
                                _metrics(250, 0.7, 0.3, 0.65, 0)), "success"))
    ranges.append(_range(_state("c" * 40, "demo-s0", ARM_TRAIN["siamese"], 0, _metrics(100, 0.7, 0.3, 0.65, 0),
                                profile="demo"), "success"))
    workspace = _state("workspace", None, ARM_TRAIN["siamese"], 0, stale)
    baseline = {**_state("a" * 40, "master", ARM_TRAIN["siamese"], 0, stale), "experiments": ranges}
    return [workspace, baseline]


def _ci(x):
    x = np.asarray(x, dtype=float)
    lo, hi = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    return x.mean(), lo, hi


def _cell(x):
    m, lo, hi = _ci(x)
    return f"{m:.4g} [{lo:.4g}, {hi:.4g}]"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("study")
    (d / "exps.json").write_text(json.dumps(fake_exp_show()))
    study.main(["table", str(d / "exps.json"), "--csv", str(d / "results" / "study.csv"), "--md", str(d / "t.md")])
    return (d / "results" / "study.csv").read_text(), (d / "t.md").read_text()


def test_csv_one_row_per_complete_run(built):
    text, _ = built
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ("arm,seed,fid_a,kid_a,fid_b,kid_b,lpips_div,adherence,adherence_chance,mdice_real,"
                             "mdice_real_syn,miou_real,miou_real_syn,train_seconds").split(",")
    assert [(r["arm"], int(r["seed"])) for r in rows] == [(a, s) for a in KNOWN for s in sorted(KNOWN[a])]
    for r in rows:
        fid, adh, chance, syn = KNOWN[r["arm"]][int(r["seed"])]
        m = _metrics(fid, adh, chance, syn, int(r["seed"]))
        assert float(r["fid_a"]) == fid and float(r["fid_b"]) == fid + 10
        assert float(r["kid_a"]) == pytest.approx(fid / 1000) and float(r["kid_b"]) == pytest.approx(fid / 900)
        assert float(r["adherence"]) == adh and float(r["adherence_chance"]) == chance
        assert float(r["mdice_real"]) == 0.614 and float(r["mdice_real_syn"]) == syn
        assert float(r["miou_real"]) == 0.492 and float(r["miou_real_syn"]) == pytest.approx(syn - 0.12)
        assert float(r["lpips_div"]) == m["metrics/fidelity.json"]["protocol_a"]["lpips_diversity"]
        assert float(r["train_seconds"]) == 600.5 + int(r["seed"])
    assert "999" not in text and "demo" not in text and "200" not in text  # no failed/queued/other row


def test_per_arm_means_and_intervals(built):
    _, md = built
    for arm, seeds in KNOWN.items():
        vals = np.array([seeds[s] for s in sorted(seeds)], dtype=float)
        header = md.splitlines()[4]
        assert f"{arm} (n={len(vals)})" in header
        col = 1 + list(KNOWN).index(arm)
        rows = {line.split(" | ")[0].lstrip("| "): line.strip("| ").split(" | ") for line in md.splitlines()
                if line.startswith("| ") and " | " in line}
        assert rows["FID A"][col] == _cell(vals[:, 0])
        assert rows["adherence Dice"][col] == _cell(vals[:, 1])
        assert rows["adherence − chance"][col] == _cell(vals[:, 1] - vals[:, 2])
        assert rows["Δ mDice (real+syn − real)"][col] == _cell(vals[:, 3] - 0.614)
    # the library's interval against scipy, and its no-scipy t table against scipy's quantiles
    x = [1.0, 2.5, 2.0, 4.0, 3.3]
    assert study.interval(x) == pytest.approx(_ci(x))


def test_t_quantiles_without_scipy(monkeypatch):
    expect = [stats.t.ppf(0.975, df) for df in range(1, 201)]
    monkeypatch.setitem(sys.modules, "scipy.stats", None)  # `from scipy.stats import t` -> ImportError
    got = [study.t975(df) for df in range(1, 201)]
    assert got == pytest.approx(expect, abs=2e-4)


def test_paired_differences_and_verdicts(built):
    _, md = built
    col = study.collect(fake_exp_show())
    a = {s: v for s, v in KNOWN["siamese"].items()}
    for other in ("mask-only", "siamese-seed"):
        b = KNOWN[other]
        p = study.paired(col["runs"], "siamese", other)
        assert p["seeds"] == [0, 1, 2] and p["unpaired"] == {"siamese": [3], other: []}
        fid = [a[s][0] - b[s][0] for s in p["seeds"]]
        excess = [(a[s][1] - a[s][2]) - (b[s][1] - b[s][2]) for s in p["seeds"]]
        dmdice = [(a[s][3] - 0.614) - (b[s][3] - 0.614) for s in p["seeds"]]
        assert p["diffs"]["fid_a"] == pytest.approx(fid)
        assert p["diffs"]["adherence_excess"] == pytest.approx(excess)
        assert p["diffs"]["delta_mdice"] == pytest.approx(dmdice)
        section = md.split(f"### Paired: siamese − {other}")[1].split("###")[0]
        assert f"| mean [95% interval] | {_cell(fid)} | {_cell(excess)} | {_cell(dmdice)} |" in section
        assert "| 3 |" not in section and "unpaired, left out of this table: siamese seed 3" in section
    # siamese - mask-only FID A: -13, -14, -13 -> the interval lies below 0
    m, lo, hi = _ci([-13, -14, -13])
    assert hi < 0
    assert (f"- FID A: interval excludes 0: siamese lower FID A than mask-only (better; mean difference {m:+.4g}, "
            f"95% interval [{lo:+.4g}, {hi:+.4g}], n=3 pairs)") in md
    # siamese - siamese-seed FID A: 2, -5, 4 -> the interval straddles 0
    m, lo, hi = _ci([2, -5, 4])
    assert lo < 0 < hi
    assert (f"- FID A: interval includes 0: no detectable difference at this scale (n=3 pairs; mean difference "
            f"{m:+.4g}, 95% interval [{lo:+.4g}, {hi:+.4g}])") in md


def test_failed_queued_and_other_runs_listed_not_averaged(built):
    _, md = built
    assert "mask-only (n=3)" in md and "siamese-seed (n=3)" in md and "siamese (n=4)" in md
    assert "mask-only-s3 (failed: Experiment run failed)" in md
    assert "siamese-seed-s4 (queued)" in md and "mask-only-s4 (running)" in md
    assert "warmup200-s0 (train.loss='siamese', train.lambda_c_warmup=200" in md
    assert "demo-s0 (profile 'demo', not 'polyps')" in md
    assert "999" not in md  # the stale metrics of the failed and queued runs
    assert "identical hashes in all runs (data/raw, models/backbone)" in md
    assert "params besides the arm keys and train.seed: identical in all runs" in md


def test_queue_commands_set_the_arms(tmp_path):
    """The printed `-S` overrides, applied by DVC's own Hydra code, give each arm's params and absolute data paths."""
    from dvc.utils.hydra import apply_overrides

    params = {"profile": "polyps", "ingest": {"input_path": "../shared/data/polyps-train", "sources": [
        {"type": "kvasir-seg", "path": "../shared/data/polyps-train/Kvasir-SEG"},
        {"type": "cvc-clinicdb", "path": "../shared/data/polyps-train/CVC-ClinicDB"}]},
        "train": {"loss": "siamese", "seed": 0, "steps": 400, **RELEASED}}
    root = tmp_path / "proj"
    root.mkdir()
    cmds = study.commands([0, 1], params, root)
    assert cmds[-1] == ["dvc", "queue", "start", "-j", "2"]
    assert [c[:4] for c in cmds[:2]] == [["dvc", "exp", "run", "-n"], ["dvc", "exp", "run", "--queue"]]
    names = [c[c.index("-n") + 1] for c in cmds[:-1]]
    assert sorted(names) == sorted(f"{a}-s{s}" for a in KNOWN for s in (0, 1)) and names[0] == "siamese-s0"
    data = (tmp_path / "shared" / "data" / "polyps-train").as_posix()
    for cmd in cmds[:-1]:
        arm, seed = names[cmds.index(cmd)].rsplit("-s", 1)
        p = tmp_path / f"{arm}-{seed}.yaml"
        p.write_text(yaml.safe_dump(params))
        apply_overrides(p, [cmd[i + 1] for i, a in enumerate(cmd) if a == "-S"])
        got = yaml.safe_load(p.read_text())
        assert got["train"] == {**ARM_TRAIN[arm], "seed": int(seed), "steps": 400}
        assert got["ingest"] == {"input_path": data, "sources": [
            {"type": "kvasir-seg", "path": f"{data}/Kvasir-SEG"}, {"type": "cvc-clinicdb", "path": f"{data}/CVC-ClinicDB"}]}
    # paths inside the project (the demo's synthetic source) are left alone
    demo = {"ingest": {"input_path": "siamdiff/data/synthetic.py", "sources": [{"type": "synthetic", "seed": 0}]}}
    assert study.path_overrides(demo, root) == []


def _fake_grid(arm_value: int, real_value: int = 7):
    """A grid like evaluate's: 2 rows of mask | real | sample 0 | sample 1 tiles, 2 px gaps."""
    from siamdiff.metrics.fidelity import GRID_TILE

    t = GRID_TILE
    pic = np.full((2 * t + 2, 4 * t + 6, 3), 255, np.uint8)
    for c, v in enumerate([200, real_value, arm_value, arm_value + 1]):
        pic[:, c * (t + 2):c * (t + 2) + t] = v
    return pic


def test_grids_put_each_arms_samples_beside_one_mask_column():
    from siamdiff.metrics.fidelity import GRID_TILE

    runs = study.collect(fake_exp_show())["runs"]
    value = {"siamese": 10, "mask-only": 50, "siamese-seed": 90}
    rev_arm = {r["rev"]: r["arm"] for r in runs}
    pic, shown = study.arm_grid(runs, 0, read=lambda rev: _fake_grid(value[rev_arm[rev]]))
    assert shown == list(study.ARMS)
    t, cut = GRID_TILE, 2 * (GRID_TILE + 2)
    assert pic.shape == (22 + 2 * t + 2, cut + 3 * (8 + 2 * t + 2), 3)
    body = pic[22:]
    assert (body[:, :t] == 200).all() and (body[:, t + 2:2 * t + 2] == 7).all()  # mask, real: once
    x = cut
    for arm in study.ARMS:  # then 8 px gap, sample 0, sample 1 of each arm, in the arms' order
        x += 8
        assert (body[:, x:x + t] == value[arm]).all() and (body[:, x + t + 2:x + 2 * t + 2] == value[arm] + 1).all()
        x += 2 * t + 2
    with pytest.raises(SystemExit, match="mask-only-s0: its grid shows other masks"):
        study.arm_grid(runs, 0, read=lambda rev: _fake_grid(value[rev_arm[rev]],
                                                             real_value=8 if rev_arm[rev] == "mask-only" else 7))
    with pytest.raises(SystemExit, match="train.seed 3: complete runs of siamese only; a grid compares at least"):
        study.arm_grid(runs, 3, read=lambda rev: _fake_grid(0))
    # an arm without a run at this seed is left out (mask-only has no seed-3 run; siamese-seed none at seed 3 either)
    two = [r for r in runs if r["arm"] != "siamese-seed"]
    pic, shown = study.arm_grid(two, 0, read=lambda rev: _fake_grid(value[rev_arm[rev]]))
    assert shown == ["siamese", "mask-only"]
    assert pic.shape[1] == cut + 2 * (8 + 2 * t + 2)
    assert (pic[22:, cut + 8:cut + 8 + t] == value["siamese"]).all()
    assert (pic[22:, -(2 * t + 2):-(t + 2)] == value["mask-only"]).all()
