"""metrics/*.json are DVC metrics (numbers only, so `dvc metrics show` stays narrow); text, flags and provenance go
in metrics/*.info.json beside them, without this machine's paths."""
from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from siamdiff.utils import info_path, portable_path, read_metrics, split_metrics, write_metrics

ROOT = Path(__file__).resolve().parents[1]
STAGE_METRICS = {"autoencoder": "autoencoder", "backbone": "backbone", "train": "train", "evaluate": "fidelity",
                 "segment": "segmentation"}


def _numbers_only(d: dict) -> bool:
    def ok(v):
        if isinstance(v, dict):
            return all(ok(x) for x in v.values())
        if isinstance(v, list):
            return all(ok(x) for x in v)
        return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
    return ok(d)


def _strings(d):
    if isinstance(d, dict):
        for v in d.values():
            yield from _strings(v)
    elif isinstance(d, list):
        for v in d:
            yield from _strings(v)
    elif isinstance(d, str):
        yield d


def test_split_write_read_round_trip(tmp_path):
    record = {"a": {"fid": 1.5, "per_seed": [1.0, 2.0], "clip": None, "description": "text", "flag": True},
              "n": 3, "mode": "demo", "shape": [4, 8, 8], "only_text": {"note": "x"}}
    numbers, rest = split_metrics(record)
    assert numbers == {"a": {"fid": 1.5, "per_seed": [1.0, 2.0], "clip": None}, "n": 3, "shape": [4, 8, 8]}
    assert rest == {"a": {"description": "text", "flag": True}, "mode": "demo", "only_text": {"note": "x"}}
    path = tmp_path / "metrics/x.json"
    merged = write_metrics(path, record, info={"assets": {"w": {"sha256": "ab"}}})
    assert info_path(path) == tmp_path / "metrics/x.info.json"
    assert json.loads(path.read_text()) == numbers
    assert json.loads(info_path(path).read_text()) == {**rest, "assets": {"w": {"sha256": "ab"}}}
    assert read_metrics(path) == merged == {**record, "assets": {"w": {"sha256": "ab"}}}
    assert read_metrics(tmp_path / "missing.json") is None


def test_portable_path(tmp_path, monkeypatch):
    import sysconfig

    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    assert portable_path(project / "data/x.pt", project) == "data/x.pt"
    site = Path(sysconfig.get_paths()["purelib"])
    assert portable_path(site / "pkg/w.pt", project) == "site-packages/pkg/w.pt"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert portable_path(tmp_path / "home/.cache/siamdiff/assets/w.safetensors", project) == \
        "~/.cache/siamdiff/assets/w.safetensors"
    assert portable_path("/elsewhere/w.bin", project) == "w.bin"


def test_committed_metrics_are_numbers_and_info_is_portable():
    for name in STAGE_METRICS.values():
        metrics, info = ROOT / f"metrics/{name}.json", ROOT / f"metrics/{name}.info.json"
        if not metrics.exists():
            continue
        assert _numbers_only(json.loads(metrics.read_text())), f"{metrics} holds more than numbers"
        assert info.is_file(), f"{info} missing beside {metrics}"
        home = str(Path.home())
        for s in _strings(json.loads(info.read_text())):
            assert not os.path.isabs(s) and home not in s, f"{info}: machine path {s!r}"


def test_dvc_yaml_declares_info_files_as_plain_outs():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage, name in STAGE_METRICS.items():
        s = stages[stage]
        metrics = [next(iter(m)) if isinstance(m, dict) else m for m in s.get("metrics", [])]
        assert metrics == [f"metrics/{name}.json"], (stage, metrics)
        outs = {next(iter(o)): o[next(iter(o))] for o in s["outs"] if isinstance(o, dict)}
        assert outs.get(f"metrics/{name}.info.json") == {"cache": False}, (stage, s["outs"])
