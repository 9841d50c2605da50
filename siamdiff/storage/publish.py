"""`siamdiff publish --to s3://BUCKET/siamese-data`: upload the split dataset in the object-store layout.

Reads `data/split.csv` and `data/raw/manifest-v1.json` (ARCHITECTURE.md), checks every local file against
its SHA-256, then uploads

    {prefix}/{split}/{dataset}/img/{id}.png
    {prefix}/{split}/{dataset}/mask/{id}_mask.png
    {prefix}/manifest-v1.json        (last: its presence means the publication is complete)

Idempotent and resumable: objects already present with the right content (ETag = MD5 of the bytes, or
the `sha256` user metadata written at upload) are skipped, so rerunning after an interruption uploads
only what is missing or different, and rerunning after success uploads nothing. Each PUT is atomic in
S3 and carries Content-MD5, so a torn upload never becomes an object.
"""
from __future__ import annotations

import base64
import csv
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from siamdiff.data.manifest import load as load_raw_manifest
from siamdiff.storage import layout
from siamdiff.storage.credentials import KEYS_POINTER, S3Settings, make_client, resolve, s3_errors, secret_paths
from siamdiff.utils import SiamdiffError, log

STAGE = "publish"


@dataclass(frozen=True)
class Obj:
    key: str            # full key in the bucket
    sha256: str
    md5: str
    size: int
    path: Path | None = None
    data: bytes | None = None

    def body(self) -> bytes:
        return self.data if self.data is not None else self.path.read_bytes()


def hash_file(path: Path) -> tuple[str, str, int]:
    """(sha256, md5, size) of a file in one read."""
    sha, md5, size = hashlib.sha256(), hashlib.md5(), 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
            md5.update(block)
            size += len(block)
    return sha.hexdigest(), md5.hexdigest(), size


def list_objects(client, bucket: str, prefix: str) -> dict[str, tuple[str, int]]:
    """{key: (etag without quotes, size)} of every object under `prefix/` (paginated)."""
    out: dict[str, tuple[str, int]] = {}
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/" if prefix else ""):
        for o in page.get("Contents", []):
            out[o["Key"]] = (o.get("ETag", "").strip('"'), int(o.get("Size", -1)))
    return out


def _read_split(split_csv: Path) -> dict[str, dict]:
    if not split_csv.exists():
        raise SiamdiffError(f"{split_csv}: not found; run `dvc repro split` first")
    with open(split_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    need = {"id", "dataset", "patient", "frame", "split"}
    if not rows or not need <= set(rows[0]):
        raise SiamdiffError(f"{split_csv}: expected columns {sorted(need)} (written by the split stage)")
    return {r["id"]: r for r in rows}


def _local(raw_dir: Path, rel: str) -> Path:
    layout.safe_key(rel)
    p = (raw_dir / rel).resolve()
    if raw_dir.resolve() not in p.parents:
        raise SiamdiffError(f"{raw_dir / layout.MANIFEST}: path {rel!r} points outside {raw_dir}")
    return p


def build_publication(split_csv: str | os.PathLike, raw_dir: str | os.PathLike, prefix: str) -> tuple[list[Obj], bytes]:
    """The objects to upload and the bytes of the object-store manifest (deterministic)."""
    split_csv, raw_dir = Path(split_csv), Path(raw_dir)
    splits = _read_split(split_csv)
    raw = load_raw_manifest(raw_dir)
    # Defence in depth: a manifest written before params.yaml credentials were refused may record them in
    # its source configs; never upload one (the key is in dvc.lock and the run cache too: it must be rotated).
    found = secret_paths(raw.get("sources", []), "sources")
    if found:
        raise SiamdiffError(f"{raw_dir / layout.MANIFEST}: {', '.join(p for p, _ in found)} holds a credential "
                            "(copied from params.yaml by an older ingest); refusing to publish it: remove it from "
                            f"params.yaml, {KEYS_POINTER}, rerun `dvc repro ingest`, and rotate the key (it is in "
                            "dvc.lock and DVC's run cache too)")
    items = raw["items"]
    if not items:
        raise SiamdiffError(f"{raw_dir / layout.MANIFEST}: no items")
    missing = sorted(set(splits) - {it["id"] for it in items})
    if missing:
        raise SiamdiffError(f"{split_csv}: ids not in {raw_dir / layout.MANIFEST} (first: {missing[0]}); "
                            "rerun `dvc repro split`")
    objects: list[Obj] = []
    out_items = []
    counts: dict[str, dict[str, int]] = {}
    for it in sorted(items, key=lambda x: x["id"]):
        row = splits.get(it["id"])
        if row is None:
            raise SiamdiffError(f"{split_csv}: no row for id {it['id']!r}; rerun `dvc repro split`")
        split, dataset = row["split"], it["dataset"]
        img_rel, mask_rel = layout.image_key(split, dataset, it["id"]), layout.mask_key(split, dataset, it["id"])
        for rel, local_rel, want in ((img_rel, it["image"], it["image_sha256"]), (mask_rel, it["mask"], it["mask_sha256"])):
            path = _local(raw_dir, local_rel)
            if not path.exists():
                raise SiamdiffError(f"{path}: listed in {raw_dir / layout.MANIFEST} but missing; run `dvc checkout` "
                                    "or `dvc repro ingest`")
            sha, md5, size = hash_file(path)
            if sha != want:
                raise SiamdiffError(f"{path}: SHA-256 differs from {raw_dir / layout.MANIFEST}; the file changed "
                                    "since ingest: run `dvc checkout data/raw` or `dvc repro ingest`")
            objects.append(Obj(layout.join_key(prefix, rel), sha, md5, size, path=path))
        entry = dict(it)
        entry.update(split=split, image=img_rel, mask=mask_rel)
        out_items.append(entry)
        counts.setdefault(split, {}).setdefault(dataset, 0)
        counts[split][dataset] += 1
    manifest = {
        "manifest_version": raw.get("manifest_version", "1.0"),
        "layout": layout.LAYOUT_VERSION,
        "sources": raw.get("sources", []),
        "counts": counts,
        "n_objects": len(objects),
        "items": out_items,
    }
    data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    return objects, data


def _needs_upload(client, bucket: str, obj: Obj, existing: dict[str, tuple[str, int]]) -> bool:
    have = existing.get(obj.key)
    if have is None:
        return True
    etag, size = have
    if size != obj.size:
        return True
    if etag == obj.md5:
        return False
    # multipart or encrypted objects have an ETag that is not the MD5: ask for our sha256 metadata
    head = client.head_object(Bucket=bucket, Key=obj.key)
    meta = {k.lower(): v for k, v in head.get("Metadata", {}).items()}
    return meta.get("sha256") != obj.sha256


def _put(client, bucket: str, obj: Obj) -> None:
    body = obj.body()
    if hashlib.sha256(body).hexdigest() != obj.sha256:
        raise SiamdiffError(f"{obj.path}: changed while publishing; rerun `siamdiff publish`")
    content_type = "application/json" if obj.key.endswith(".json") else "image/png"
    client.put_object(Bucket=bucket, Key=obj.key, Body=body, ContentType=content_type,
                      ContentMD5=base64.b64encode(bytes.fromhex(obj.md5)).decode(),
                      Metadata={"sha256": obj.sha256})


def publish(split_csv: str | os.PathLike = "data/split.csv", raw_dir: str | os.PathLike = "data/raw",
            url: str = "", endpoint_url: str | None = None, *, remote: str | None = None,
            settings: S3Settings | None = None, jobs: int = 8, progress: bool = True) -> dict:
    """Upload the split dataset to `url` (s3://BUCKET/siamese-data). Returns counts of what was done.

    Credentials/endpoint: `settings` if given, else `credentials.resolve(endpoint_url, remote)`.
    """
    bucket, prefix = layout.parse_s3_url(url)
    s = settings or resolve(endpoint_url=endpoint_url, remote=remote)
    objects, manifest_bytes = build_publication(split_csv, raw_dir, prefix)
    log(STAGE, f"read {split_csv} and {Path(raw_dir) / layout.MANIFEST}: {len(objects)} objects, all SHA-256 verified")
    client = make_client(s, max_pool_connections=max(10, jobs))
    with s3_errors(s, f"listing s3://{bucket}/{prefix}"):
        existing = list_objects(client, bucket, prefix)

    def work(obj: Obj) -> bool:
        with s3_errors(s, f"uploading s3://{bucket}/{obj.key}"):
            if not _needs_upload(client, bucket, obj, existing):
                return False
            _put(client, bucket, obj)
            return True

    uploaded = 0
    bar = None
    if progress:
        from siamdiff.utils import progress as progress_bar

        bar = progress_bar(total=len(objects), desc="publish", unit="obj", leave=False)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for did in pool.map(work, objects):
            uploaded += did
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()

    mkey = layout.join_key(prefix, layout.MANIFEST)
    m_sha = hashlib.sha256(manifest_bytes).hexdigest()
    mobj = Obj(mkey, m_sha, hashlib.md5(manifest_bytes).hexdigest(), len(manifest_bytes), data=manifest_bytes)
    manifest_uploaded = work(mobj)

    stale = sorted(k for k in existing if k not in {o.key for o in objects} and k != mkey)
    if stale:
        log(STAGE, f"warning: {len(stale)} objects under s3://{bucket}/{prefix}/ are not in the new manifest "
                   f"(first: {stale[0]}); ingest ignores them, but the DVC external dependency on the prefix "
                   "sees them: delete them if they are leftovers")
    log(STAGE, f"s3://{bucket}/{prefix}: uploaded {uploaded}, already present {len(objects) - uploaded} of "
               f"{len(objects)} objects; manifest {'uploaded' if manifest_uploaded else 'unchanged'} "
               f"(sha256 {m_sha[:12]}) at {s.endpoint_label}")
    return {"objects": len(objects), "uploaded": uploaded, "skipped": len(objects) - uploaded,
            "manifest_uploaded": bool(manifest_uploaded), "manifest_key": mkey, "manifest_sha256": m_sha,
            "stale": len(stale)}
