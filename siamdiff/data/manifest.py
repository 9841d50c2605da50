"""`data/raw/manifest-v1.json`: what ingest wrote, with the SHA-256 of every file; and its verification.

Every stage that reads `data/raw` calls `verify(raw_dir)` first: it re-hashes every listed file and
refuses (naming the first changed, missing or unexpected file) before any work is done.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from siamdiff.utils import SiamdiffError, sha256_file

MANIFEST_NAME = "manifest-v1.json"
# major: new raw data layout; minor: preprocessing changes (DESIGN.md section 3).
# 1.1: masks binarised at their own foreground level, alpha-only masks used, EXIF orientation applied.
MANIFEST_VERSION = "1.1"
ITEM_KEYS = ("id", "dataset", "patient", "frame", "image", "mask", "image_sha256", "mask_sha256",
             "width", "height", "empty_mask")


def build(sources: list[dict], items: list[dict], counts: dict) -> dict:
    per_dataset = {ds: dict(c) for ds, c in sorted(counts.items())}
    return {
        "manifest_version": MANIFEST_VERSION,
        "sources": sources,
        "items": sorted(items, key=lambda r: r["id"]),
        "counts": {
            "items": len(items),
            "empty_masks": sum(int(r["empty_mask"]) for r in items),
            **{k: sum(int(c.get(k, 0)) for c in counts.values()) for k in ("full_masks", "mostly_foreground_masks")},
            "datasets": per_dataset,
        },
    }


def write(raw_dir: str | Path, manifest: dict) -> Path:
    path = Path(raw_dir) / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return path


def load(raw_dir: str | Path) -> dict:
    path = Path(raw_dir) / MANIFEST_NAME
    if not path.is_file():
        raise SiamdiffError(f"{path}: manifest not found; run `dvc repro ingest` first")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SiamdiffError(f"{path}: not valid JSON ({e}); run `dvc repro ingest` (or `dvc checkout data/raw`)") from None
    if not str(manifest.get("manifest_version", "")).startswith("1.") or not isinstance(manifest.get("items"), list):
        raise SiamdiffError(f"{path}: not a siamdiff v1 manifest; run `dvc repro ingest`")
    for r in manifest["items"]:
        missing = [k for k in ITEM_KEYS if k not in r]
        if missing:
            raise SiamdiffError(f"{path}: item {r.get('id', '?')} lacks {missing}; run `dvc repro ingest`")
    return manifest


def verify(raw_dir: str | Path) -> dict:
    """Re-hash every file the manifest lists; raise naming the first changed/missing/unexpected file.

    Returns the manifest. Call before doing any work on `data/raw`.
    """
    raw_dir = Path(raw_dir)
    manifest = load(raw_dir)
    fix = "run `dvc checkout data/raw` to restore it, or `dvc repro ingest` to ingest again"
    listed = {MANIFEST_NAME}
    for r in manifest["items"]:
        for key in ("image", "mask"):
            rel = r[key]
            listed.add(rel)
            p = raw_dir / rel
            if not p.is_file():
                raise SiamdiffError(f"{p}: listed in {MANIFEST_NAME} but missing; {fix}")
            if sha256_file(p) != r[f"{key}_sha256"]:
                raise SiamdiffError(f"{p}: changed after {MANIFEST_NAME} was written (SHA-256 differs); {fix}")
    for dirpath, _, files in os.walk(raw_dir):
        for f in files:
            rel = (Path(dirpath) / f).relative_to(raw_dir).as_posix()
            if rel not in listed:
                raise SiamdiffError(f"{raw_dir / rel}: not listed in {MANIFEST_NAME} (added after ingest?); "
                                    f"remove it, or add it through a source and {fix.split(', or ')[1]}")
    return manifest
