"""Manifest verification: a file changed after ingest is caught, and the split stage refuses before any work."""
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from siamdiff.data import manifest as mf
from siamdiff.data.sources import ingest
from siamdiff.utils import SiamdiffError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path):
    """A project folder holding a small ingested data/raw and a params.yaml."""
    (tmp_path / "params.yaml").write_text("split:\n  fractions: [0.8, 0.1, 0.1]\n")
    ingest({"sources": [{"type": "synthetic", "seed": 0, "patients": 2, "frames_per_patient": 2,
                         "datasets": ["synth-b"]}]}, raw_dir=tmp_path / "data" / "raw", plot_path=None)
    return tmp_path


def test_verify_passes_on_untouched_data(project):
    m = mf.verify(project / "data" / "raw")
    assert m["counts"]["items"] == 4
    assert {r["id"] for r in m["items"]} == {f"synth-b-p00{p}-0{f}" for p in range(2) for f in range(2)}


def test_verify_names_the_changed_file(project):
    raw = project / "data" / "raw"
    victim = raw / "synth-b" / "img" / "synth-b-p001-00.png"
    img = cv2.imread(str(victim))
    img[0, 0] = 255 - img[0, 0]
    cv2.imwrite(str(victim), img)
    with pytest.raises(SiamdiffError, match="changed after manifest-v1.json was written") as e:
        mf.verify(raw)
    assert str(victim) in str(e.value)


def test_verify_catches_missing_and_unexpected_files(project):
    raw = project / "data" / "raw"
    extra = raw / "synth-b" / "img" / "stray.png"
    extra.write_bytes(b"x")
    with pytest.raises(SiamdiffError, match="not listed") as e:
        mf.verify(raw)
    assert "stray.png" in str(e.value)
    extra.unlink()
    (raw / "synth-b" / "mask" / "synth-b-p000-01_mask.png").unlink()
    with pytest.raises(SiamdiffError, match="missing"):
        mf.verify(raw)
    (raw / mf.MANIFEST_NAME).unlink()
    with pytest.raises(SiamdiffError, match="dvc repro ingest"):
        mf.verify(raw)


def test_split_stage_refuses_before_any_work(project):
    raw = project / "data" / "raw"
    victim = raw / "synth-b" / "mask" / "synth-b-p000-00_mask.png"
    victim.write_bytes(victim.read_bytes()[:-1] + b"\x00")
    env_path = f"{project}:{ROOT}"
    proc = subprocess.run([sys.executable, "-m", "stages.split"], cwd=project, capture_output=True, text=True,
                          env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1
    assert "error:" in proc.stderr and "synth-b-p000-00_mask.png" in proc.stderr and "Traceback" not in proc.stderr
    assert not (project / "data" / "split.csv").exists() and not (project / "data" / "split-hashes.csv").exists()
