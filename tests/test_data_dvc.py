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

    # the split stage's code: split reruns, ingest stays cached, and preprocess too, since split's outputs are
    # byte-identical. (siamdiff/data/split.py also holds SPLITS, which ingest's storage layout imports: an edit
    # there reruns ingest as well, as dvc.yaml's deps say)
    with open(proj / "stages" / "split.py", "a") as f:
        f.write("\n# an edit\n")
    out = _run([dvc, "repro", "preprocess"], proj, env)
    assert _ran(out) == {"split"}, out

    # nothing changed: nothing runs
    out = _run([dvc, "repro", "preprocess"], proj, env)
    assert _ran(out) == set(), out
    status = _run([dvc, "status", "ingest", "split", "preprocess"], proj, env)
    assert "up to date" in status.lower() or not status.strip(), status


@pytest.mark.slow
def test_source_folder_outside_the_repo_is_an_ingest_dependency(tmp_path):
    """Editing, adding or removing a pair in a folder source (outside the project) makes `dvc status` report
    ingest changed; a source outside `ingest.input_path` is refused before anything is read."""
    import cv2
    import numpy as np

    from project_copy import copy_project, subprocess_env
    from test_data_ingest import make_folder

    proj = copy_project(tmp_path / "proj")
    source = tmp_path / "shared" / "my-polyps"
    make_folder(source, n=3)
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["ingest"]["input_path"] = "../shared"
    params["ingest"]["sources"] = [{"type": "folder", "path": "../shared/my-polyps", "dataset": "mine"}]
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env, dvc = subprocess_env(), str(BIN / "dvc")
    _run(["git", "init", "-q"], proj, env)
    _run([dvc, "init", "-q"], proj, env)
    assert _ran(_run([dvc, "repro", "ingest"], proj, env)) == {"ingest"}
    assert "up to date" in _run([dvc, "status", "ingest"], proj, env).lower()

    def status():
        return _run([dvc, "status", "ingest"], proj, env)

    mask = cv2.imread(str(source / "mask" / "case1.png"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(source / "mask" / "case1.png"), np.flipud(mask).copy())     # a fixed mask
    assert "ingest" in status() and "modified" in status()
    assert _ran(_run([dvc, "repro", "ingest"], proj, env)) == {"ingest"}
    make_folder(tmp_path / "more", n=4, seed=3)                                   # a pair added
    for sub in ("img", "mask"):
        shutil.copy(tmp_path / "more" / sub / "case3.png", source / sub / "case3.png")
    assert "ingest" in status()
    _run([dvc, "repro", "ingest"], proj, env)
    (source / "img" / "case0.png").unlink()                                       # a pair removed
    (source / "mask" / "case0.png").unlink()
    assert "ingest" in status()

    params["ingest"]["input_path"] = "../shared/elsewhere"
    (tmp_path / "shared" / "elsewhere").mkdir()
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = subprocess.run([dvc, "repro", "ingest"], cwd=proj, env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "is not inside ingest.input_path" in proc.stderr + proc.stdout
