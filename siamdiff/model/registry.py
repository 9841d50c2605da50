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


def file_hashes(folder: str | os.PathLike) -> dict[str, str]:
    """{relative path: SHA-256} of every file in `folder` that the model's identity covers (records and
    dot-files excluded), in sorted order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SiamdiffError(f"{folder}: model folder not found; run the stage that writes it (dvc repro)")
    out = {}
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        rel = p.relative_to(folder)
        if p.name == RECORD or any(part.startswith(".") for part in rel.parts):
            continue
        out[rel.as_posix()] = sha256_file(p)
    return out


def folder_hash(folder: str | os.PathLike, files: dict[str, str] | None = None) -> str:
    """SHA-256 over the relative paths and contents of every file in `folder`, except records.

    `files`: the folder's `file_hashes`, when already computed (the folder is then not read again)."""
    import hashlib

    h = hashlib.sha256()
    for rel, digest in (file_hashes(folder) if files is None else files).items():
        h.update(rel.encode())
        h.update(digest.encode())
    return h.hexdigest()


def _fix(folder: Path, record: dict, stage: str | None) -> str:
    stage = stage or record.get("stage") or record.get("kind")
    rerun = f"rerun `dvc repro -f -s {stage}`" if stage else "rewrite it with the stage that made it"
    return f"{rerun} or restore it with `dvc checkout {folder}`"


def verify_model(folder: str | os.PathLike, stage: str | None = None) -> str:
    """Check a model folder against the SHA-256s its `siamdiff.json` records, before anything loads it.

    Returns the folder's hash (`folder_hash`, computed in the same single pass over the files, so callers that
    also need the hash read the weights once). Raises a one-line SiamdiffError naming the first missing,
    added or changed file and what to do. A folder without a record (not written by a siamdiff stage, e.g. a
    hand-made or diffusers folder) cannot be checked: its hash is returned as is. `stage`: the stage that
    writes the folder, for the message (default: the one the record names).
    """
    folder = Path(folder)
    files = file_hashes(folder)
    if not (folder / RECORD).is_file():
        return folder_hash(folder, files)
    record = read_record(folder)
    where = folder / RECORD
    recorded = record.get("files")
    if isinstance(recorded, dict):
        for rel, digest in recorded.items():
            if rel not in files:
                raise SiamdiffError(f"{folder / rel}: missing from the model (listed in {where}); "
                                    f"{_fix(folder, record, stage)}")
            if files[rel] != digest:
                raise SiamdiffError(f"{folder / rel}: SHA-256 differs from the one recorded in {where} (damaged "
                                    f"model file); {_fix(folder, record, stage)}")
        for rel in files:
            if rel not in recorded:
                raise SiamdiffError(f"{folder / rel}: not part of the model recorded in {where} (a file was "
                                    f"added); remove it, or {_fix(folder, record, stage)}")
    digest = folder_hash(folder, files)
    if record.get("folder_hash") not in (None, digest):
        raise SiamdiffError(f"{folder}: its files do not match the folder_hash recorded in {where} (damaged or "
                            f"edited model); {_fix(folder, record, stage)}")
    return digest


def write_record(folder: str | os.PathLike, params: dict, inputs: dict[str, str], created: str | None = None,
                 **extra) -> dict:
    """Write `folder/siamdiff.json`: params, input hashes, the folder's own hash, the SHA-256 of every file
    (checked by `verify_model` on every load) and library versions. `created`: when the weights were made
    (default now); a stage that rewrites the same weights passes their original time, so the record is the same."""
    folder = Path(folder)
    files = file_hashes(folder)
    record = {
        "params": params,
        "inputs": dict(inputs),
        "folder_hash": folder_hash(folder, files),
        "created": created or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
        **extra,
        "files": files,
    }
    (folder / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return record


def read_record(folder: str | os.PathLike) -> dict:
    path = Path(folder) / RECORD
    if not path.is_file():
        raise SiamdiffError(f"{path}: no siamdiff record; this folder was not written by a siamdiff stage")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SiamdiffError(f"{path}: unreadable record ({e}); rerun the stage that wrote it") from e
    if not isinstance(record, dict):
        raise SiamdiffError(f"{path}: unreadable record (not a JSON object); rerun the stage that wrote it")
    return record


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ("torch", "diffusers", "transformers"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # pragma: no cover - optional
            pass
    return out
