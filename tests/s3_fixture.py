"""A real S3 server for tests: `rclone serve s3` over a temp folder, random keys, a free port, stopped by PID.

Use from a test module: `from tests.s3_fixture import s3_server, toy_dataset` (or `from s3_fixture ...`
when tests/ is not a package: see the try/except in tests/test_s3_storage.py)
(pytest finds fixtures imported into the module's namespace.)
"""
from __future__ import annotations

import csv
import json
import os
import secrets
from pathlib import Path

import numpy as np
import pytest

from siamdiff.storage.server import S3Server, start_server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> S3Server:
    """One S3 server per test session (bucket `siamdiff` exists). Tests use their own key prefixes."""
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    root = tmp_path_factory.mktemp("s3") / "root"
    srv = start_server(root, "test-" + secrets.token_hex(4), secrets.token_urlsafe(18))
    yield srv
    srv.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """The server's endpoint and keys in the environment (as a user would export them); nothing else AWS."""
    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_access_key)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("AWS_RETRY_MODE", "standard")
    return s3_server


def _toy_images(folder: Path, n_patients: int = 4, frames: int = 2, size=(40, 32)) -> None:
    import cv2

    rng = np.random.default_rng(0)
    (folder / "img").mkdir(parents=True)
    (folder / "mask").mkdir(parents=True)
    for p in range(n_patients):
        for f in range(frames):
            img = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
            mask = np.zeros((size[1], size[0]), np.uint8)
            mask[4 + f: 14 + p, 6: 18 + f] = 255
            cv2.imwrite(str(folder / "img" / f"p{p}_f{f}.png"), img[:, :, ::-1])
            cv2.imwrite(str(folder / "mask" / f"p{p}_f{f}.png"), mask)


def make_raw(project: Path, n_patients: int = 4, frames: int = 2) -> tuple[Path, Path]:
    """`data/raw` (through the real ingest code, `folder` source) and a patient-disjoint `data/split.csv`."""
    from siamdiff.data.sources import ingest

    src = project / "toy-src"
    _toy_images(src, n_patients, frames)
    raw = project / "data" / "raw"
    ingest({"sources": [{"type": "folder", "path": str(src), "dataset": "toy",
                         "patient_pattern": r"(?P<patient>p\d+)_(?P<frame>f\d+)"}]},
           raw_dir=raw, plot_path=None)
    manifest = json.loads((raw / "manifest-v1.json").read_text())
    split_csv = project / "data" / "split.csv"
    patients = sorted({it["patient"] for it in manifest["items"]})
    which = {p: ("train", "val", "test")[min(i, 2)] if i < 3 else "train" for i, p in enumerate(patients)}
    with open(split_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "dataset", "patient", "frame", "split"])
        for it in manifest["items"]:
            w.writerow([it["id"], it["dataset"], it["patient"], it["frame"], which[it["patient"]]])
    return raw, split_csv


@pytest.fixture
def toy_dataset(tmp_path) -> tuple[Path, Path]:
    """(raw_dir, split_csv) of 8 small pairs from 4 patients, written by the real ingest code."""
    return make_raw(tmp_path)
