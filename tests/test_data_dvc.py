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
STAGES = ("ingest", "split", "preprocess")
LAZY = {"ingest": ["siamdiff.storage.ingest"]}  # imported only for `type: s3` sources


def _dvc_yaml():
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", STAGES)
def test_code_deps_are_exactly_the_imported_files(stage):
    """Every project .py file the stage imports is a dep, and every code dep is imported."""
    mods = ["stages." + stage] + LAZY.get(stage, [])
    code = ("import sys\n" + "".join(f"import {m}\n" for m in mods) +
            "print('\\n'.join(sorted(m.__file__ for m in list(sys.modules.values()) "
            "if getattr(m, '__file__', None))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    imported = {Path(f).resolve().relative_to(ROOT).as_posix() for f in out.split()
                if Path(f).resolve().is_relative_to(ROOT) and ".venv" not in f}
    imported.discard("stages/__init__.py")  # the launcher package, not library code
    deps = {d for d in _dvc_yaml()[stage]["deps"] if d.endswith(".py") or d in ("siamdiff", "stages")}
    assert imported == deps
    # only its own params: the section, or every key of it (never a key of another section)
    listed = _dvc_yaml()[stage]["params"]
    section = yaml.safe_load((ROOT / "params.yaml").read_text())[stage]
    assert listed == [stage] or sorted(listed) == sorted(f"{stage}.{k}" for k in section), listed


def test_no_param_named_like_dvc_metadata():
    """DVC's run-cache key drops every key named `size` or `nfiles` (treeverse/dvc#10296): a stage that lists
    such a param through its whole section would be restored from a stale run instead of rerunning."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for name, stage in _dvc_yaml().items():
        for entry in stage.get("params", []):
            if isinstance(entry, str) and "." not in entry and isinstance(params.get(entry), dict):
                def keys(d):
                    for k, v in d.items():
                        yield k
                        if isinstance(v, dict):
                            yield from keys(v)
                bad = {"size", "nfiles"} & set(keys(params[entry]))
                assert not bad, f"stage {name}: params section '{entry}' has {bad}; list its keys one by one"


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
