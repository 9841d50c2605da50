"""`siamdiff doctor`: what this installation and machine can do, in a few lines; exit 1 when any check fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REMOTE_TIMEOUT_S = 20  # a non-local remote that does not answer within this is reported as unreachable


def _check(name: str, fn) -> bool:
    try:
        detail = fn()
        print(f"  ok    {name}: {detail}")
        return True
    except Exception as e:  # a doctor reports, it does not stop at the first problem
        print(f"  FAIL  {name}: {e}")
        return False


def _checks() -> list:
    def _torch() -> str:
        import torch

        return (
            f"{torch.__version__}, {torch.get_num_threads()} threads, "
            f"CUDA {'available' if torch.cuda.is_available() else 'not available (CPU: fp32 eager)'}"
        )

    return [
        ("torch", _torch),
        (
            "dvc",
            lambda: subprocess.run(
                [sys.executable, "-m", "dvc", "--version"], capture_output=True, text=True, check=True
            ).stdout.strip(),
        ),
        ("metric assets", _assets),
        ("project", _project),
        ("dvc remote", dvc_remote),
        ("rclone (S3 test server)", _rclone),
        ("cores", lambda: str(os.cpu_count())),
    ]


def run_checks(checks=None) -> bool:
    """Print one line per check; True when all passed."""
    print("siamdiff doctor")
    ok = all([_check(n, f) for n, f in (checks if checks is not None else _checks())])
    print("all checks passed" if ok else "some checks failed (see above)")
    return ok


def run_doctor() -> None:
    if not run_checks():
        sys.exit(1)


def _project() -> str:
    if not (Path("params.yaml").exists() and Path("dvc.yaml").exists()):
        raise FileNotFoundError("params.yaml/dvc.yaml not found: run from the project root")
    return "params.yaml and dvc.yaml found"


# --- DVC remote ----------------------------------------------------------------------------------------------
_SET_ONE = (
    "`dvc remote add -d --local NAME URL` (a folder, s3://BUCKET/PATH, ...; --local keeps it in "
    ".dvc/config.local, out of git)"
)


def dvc_remote(root: str | Path = ".") -> str:
    """The default DVC remote of the project at `root`: configured, and reachable (a local folder must exist)."""
    root = Path(root)
    if not (root / ".dvc").is_dir():
        raise FileNotFoundError(f"no .dvc/ in {root.resolve()}: run from the project root (a DVC repository)")
    from dvc.config import Config

    config = Config(dvc_dir=str(root / ".dvc"))  # every level merged: system, global, repo, local
    name = config["core"].get("remote")
    if not name:
        raise LookupError(f"no default DVC remote: `dvc push`/`dvc pull` have nowhere to go; set one with {_SET_ONE}")
    remote = config["remote"].get(name)
    if remote is None:
        raise LookupError(f"the default DVC remote '{name}' (core.remote) is not defined; set one with {_SET_ONE}")
    url = str(remote["url"])
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme in ("", "file", "local"):
        path = Path(os.path.expanduser(url.split("://", 1)[-1] if scheme else url))
        if not path.is_absolute():  # DVC reads a relative folder relative to .dvc/
            path = (root / ".dvc" / path).resolve()
        if not path.is_dir():
            raise FileNotFoundError(
                f"default remote '{name}' is the local folder {path}, which does not exist on this machine, so "
                f"`dvc pull` finds nothing (DVC says 'Everything is up to date.' then 'failed to pull'). "
                f"Either create it (`mkdir -p {path}`; it fills with `dvc push` after `dvc repro`), or point DVC "
                f"at the copy you want to pull from: {_SET_ONE}"
            )
        if not os.access(path, os.W_OK):
            raise PermissionError(f"default remote '{name}' is {path}: exists but is not writable (`dvc push` fails)")
        n = sum(1 for _ in (path / "files" / "md5").glob("*/*")) if (path / "files" / "md5").is_dir() else 0
        return f"'{name}' = {path} (local folder, {n} objects)"
    return f"'{name}' = {url} ({_reachable(root, name)})"


def _reachable(root: Path, name: str) -> str:
    """Ask the remote's file system whether its root exists (credentials and endpoint as DVC uses them)."""
    import threading

    result: dict = {}

    def probe() -> None:
        try:
            from dvc.repo import Repo

            with Repo(str(root)) as repo:
                odb = repo.cloud.get_remote_odb(name)
                result["exists"] = odb.fs.exists(odb.path)
        except Exception as e:
            result["error"] = e

    t = threading.Thread(target=probe, daemon=True)  # daemon: a hung endpoint does not hold the exit
    t.start()
    t.join(REMOTE_TIMEOUT_S)
    if t.is_alive():
        raise TimeoutError(
            f"remote '{name}' did not answer within {REMOTE_TIMEOUT_S} s: check the endpoint "
            f"and network (`dvc remote modify {name} endpointurl URL`)"
        )
    if "error" in result:
        e = result["error"]
        raise ConnectionError(
            f"remote '{name}' unreachable: {type(e).__name__}: {e}; check the url and "
            f"credentials (`dvc remote modify --local {name} ...`)"
        ) from e
    return "reachable" if result["exists"] else "reachable, empty (nothing pushed yet)"


def _assets() -> str:
    from siamdiff.metrics.assets import ensure_assets

    found = ensure_assets(verbose=False)
    return ", ".join(sorted(found)) if isinstance(found, dict) else "present"


def _rclone() -> str:
    from siamdiff.storage.server import find_rclone

    return find_rclone()
