"""`siamdiff doctor`: what this installation and machine can do, in a few lines."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _check(name: str, fn) -> bool:
    try:
        detail = fn()
        print(f"  ok    {name}: {detail}")
        return True
    except Exception as e:  # a doctor reports, it does not stop at the first problem
        print(f"  FAIL  {name}: {e}")
        return False


def run_doctor() -> None:
    import torch

    print("siamdiff doctor")
    checks = [
        ("torch", lambda: f"{torch.__version__}, {torch.get_num_threads()} threads, "
                          f"CUDA {'available' if torch.cuda.is_available() else 'not available (CPU: fp32 eager)'}"),
        ("dvc", lambda: subprocess.run([sys.executable, "-m", "dvc", "--version"], capture_output=True, text=True,
                                       check=True).stdout.strip()),
        ("metric assets", _assets),
        ("project", _project),
        ("rclone (S3 test server)", _rclone),
        ("cores", lambda: str(os.cpu_count())),
    ]
    ok = all([_check(n, f) for n, f in checks])
    print("all checks passed" if ok else "some checks failed (see above)")


def _project() -> str:
    if not (Path("params.yaml").exists() and Path("dvc.yaml").exists()):
        raise FileNotFoundError("params.yaml/dvc.yaml not found: run from the project root")
    return "params.yaml and dvc.yaml found"


def _assets() -> str:
    from siamdiff.metrics.assets import ensure_assets

    found = ensure_assets(verbose=False)
    return ", ".join(sorted(found)) if isinstance(found, dict) else "present"


def _rclone() -> str:
    from siamdiff.storage.server import find_rclone

    return find_rclone()
