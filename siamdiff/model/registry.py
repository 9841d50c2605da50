"""Model registry records: every saved model folder carries the params and input hashes it came from.

`siamdiff.json` sits beside the diffusers `save_pretrained` files. `folder_hash` hashes the weights and
configs only (records excluded), so a record can be rewritten without changing the model's identity.
"""
from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

from siamdiff.utils import SiamdiffError, sha256_file

RECORD = "siamdiff.json"


def folder_hash(folder: str | os.PathLike) -> str:
    """SHA-256 over the relative paths and contents of every file in `folder`, except records."""
    import hashlib

    folder = Path(folder)
    if not folder.is_dir():
        raise SiamdiffError(f"{folder}: model folder not found; run the stage that writes it (dvc repro)")
    h = hashlib.sha256()
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        if p.name == RECORD or any(part.startswith(".") for part in p.relative_to(folder).parts):
            continue
        h.update(p.relative_to(folder).as_posix().encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def write_record(folder: str | os.PathLike, params: dict, inputs: dict[str, str], **extra) -> dict:
    """Write `folder/siamdiff.json`: params, input hashes, the folder's own hash and library versions."""
    folder = Path(folder)
    record = {
        "params": params,
        "inputs": dict(inputs),
        "folder_hash": folder_hash(folder),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
        **extra,
    }
    (folder / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return record


def read_record(folder: str | os.PathLike) -> dict:
    path = Path(folder) / RECORD
    if not path.is_file():
        raise SiamdiffError(f"{path}: no siamdiff record; this folder was not written by a siamdiff stage")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SiamdiffError(f"{path}: unreadable record ({e}); rerun the stage that wrote it") from e


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ("torch", "diffusers", "transformers"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # pragma: no cover - optional
            pass
    return out
