"""DVC dependency discipline for ingest/split/preprocess: `dvc repro` reruns exactly what changed."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(args, cwd, env):
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def _ran(output):
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.mark.slow
def test_dvc_reruns_only_what_changed(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("stages", "siamdiff"):
        shutil.copytree(ROOT / name, proj / name, ignore=ignore)
    for name in ("dvc.yaml", ".dvcignore"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, proj / name)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["ingest"]["sources"] = [{"type": "synthetic", "seed": 0, "patients": 6, "frames_per_patient": 1,
                                    "datasets": ["synth-b"]}]
    params["split"]["fractions"] = [0.6, 0.2, 0.2]  # no empty partition with 6 patients
    params["preprocess"]["size"] = 16
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1",
           "PYTHONDONTWRITEBYTECODE": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    env.pop("PYTHONPATH", None)
    dvc = str(BIN / "dvc")
    _run(["git", "init", "-q"], proj, env)
    _run([dvc, "init", "-q"], proj, env)
    # the copied code is what runs (not the installed package)
    where = _run([sys.executable, "-c", "import siamdiff; print(siamdiff.__file__)"], proj, env)
    assert str(proj) in where

    out = _run([dvc, "repro", "preprocess"], proj, env)
    assert _ran(out) == {"ingest", "split", "preprocess"}, out
    assert (proj / "data" / "prep" / "train.safetensors").is_file()
    assert (proj / "plots" / "ingest" / "examples.png").is_file()

    # a preprocess param: only preprocess reruns
    params["preprocess"]["size"] = 24
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = _run([dvc, "repro", "preprocess"], proj, env)
    assert _ran(out) == {"preprocess"}, out
    from safetensors.numpy import load_file

    assert load_file(str(proj / "data" / "prep" / "train.safetensors"))["rgb"].shape[1:] == (24, 24, 3)

    # the split code: split and what follows rerun, ingest stays cached
    with open(proj / "siamdiff" / "data" / "split.py", "a") as f:
        f.write("\n# an edit\n")
    out = _run([dvc, "repro", "preprocess"], proj, env)
    assert _ran(out) == {"split", "preprocess"}, out

    # nothing changed: nothing runs
    out = _run([dvc, "repro", "preprocess"], proj, env)
    assert _ran(out) == set(), out
    status = _run([dvc, "status", "ingest", "split", "preprocess"], proj, env)
    assert "up to date" in status.lower() or not status.strip(), status
