"""Sweeps on several workers: `dvc exp run --queue` + `dvc queue start -j 2` on the `tiny` profile.

A temp copy of the project gets `python -m siamdiff.profile tiny`, runs once (`dvc repro`, committed: the
baseline), then queues two training seeds and starts two workers. Both experiments must succeed, each with
its own trained generator and metrics, while the stages upstream of `train` come from the baseline
(same output hashes in every experiment's dvc.lock: nothing upstream was retrained).
"""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from project_copy import BIN, copy_project, subprocess_env  # noqa: E402

UPSTREAM = ("ingest", "split", "preprocess", "autoencoder", "encode", "backbone")


def _run(args, cwd, env, check=True):
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, f"{' '.join(map(str, args))} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    return proc.stdout + proc.stderr


def _outs(lock: dict, stage: str) -> list:
    return sorted((o["path"], o.get("md5")) for o in lock["stages"][stage]["outs"])


@pytest.mark.slow
def test_queue_two_workers_tiny_profile(tmp_path):
    proj = copy_project(tmp_path / "proj")
    env = subprocess_env()
    dvc = BIN / "dvc"
    _run(["git", "init", "-q"], proj, env)
    _run([dvc, "init", "-q"], proj, env)
    _run([sys.executable, "-m", "siamdiff.profile", "tiny"], proj, env)
    assert yaml.safe_load((proj / "params.yaml").read_text())["profile"] == "tiny"
    _run(["git", "add", "-A"], proj, env)
    _run(["git", "commit", "-qm", "tiny project"], proj, env)
    _run([dvc, "repro"], proj, env)
    _run(["git", "add", "-A"], proj, env)
    _run(["git", "commit", "-qm", "baseline run"], proj, env)
    base = yaml.safe_load((proj / "dvc.lock").read_text())

    out = _run([dvc, "exp", "run", "--queue", "-S", "train.seed=1,2"], proj, env)
    assert out.count("Queued experiment") == 2, out
    try:
        _run([dvc, "queue", "start", "-j", "2"], proj, env)
        deadline, status = time.monotonic() + 900, ""
        while time.monotonic() < deadline:
            status = _run([dvc, "queue", "status"], proj, env)
            if "Queued" not in status and "Running" not in status:
                break
            time.sleep(5)
        else:
            pytest.fail(f"queue not finished after 15 min:\n{status}")
    finally:
        _run([dvc, "queue", "stop", "--kill"], proj, env, check=False)
    assert status.count("Success") == 2 and "Failed" not in status, status

    shown = json.loads(subprocess.run([str(dvc), "exp", "show", "--json"], cwd=proj, env=env, capture_output=True,
                                      text=True, check=True).stdout)
    exps = [e["revs"][0] for rev in shown for e in rev.get("experiments") or []]
    assert len(exps) == 2, shown
    seeds, trained = set(), set()
    for e in exps:
        data = e["data"]
        seeds.add(data["params"]["params.yaml"]["data"]["train"]["seed"])
        train_metrics = data["metrics"]["metrics/train.json"]["data"]
        assert train_metrics["completed_steps"] == 4, train_metrics
        fid = data["metrics"]["metrics/fidelity.json"]["data"]
        assert isinstance(fid["protocol_a"]["fid"], float), fid
        lock = yaml.safe_load(_run(["git", "show", f"{e['rev']}:dvc.lock"], proj, env))
        for stage in UPSTREAM:
            assert _outs(lock, stage) == _outs(base, stage), f"{stage} differs in experiment {e['name']}"
        trained.add(tuple(_outs(lock, "train")))
    assert seeds == {1, 2}
    assert len(trained | {tuple(_outs(base, "train"))}) == 3, "the seeds did not give three different generators"
