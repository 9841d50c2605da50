"""A runnable copy of the project for tests that drive `dvc`/`git` in a subprocess."""
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def copy_project(proj: Path) -> Path:
    """configs/, stages/, siamdiff/, dvc.yaml, params.yaml, .dvcignore -> `proj` (created)."""
    proj.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("configs", "stages", "siamdiff"):
        shutil.copytree(ROOT / name, proj / name, ignore=ignore)
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, proj / name)
    return proj


def subprocess_env() -> dict:
    """The venv's tools first on PATH, no analytics, a git identity; OMP_NUM_THREADS comes from conftest."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1",
           "PYTHONDONTWRITEBYTECODE": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    env.pop("PYTHONPATH", None)
    return env
