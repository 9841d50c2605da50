"""Ingest source `type: s3`: read a published dataset (`siamdiff publish`) back through boto3.

params.yaml:
    ingest:
      sources:
        - type: s3
          url: s3://BUCKET/siamese-data   # where `siamdiff publish --to` wrote it
          remote: s3data                  # optional: a DVC remote whose endpointurl + keys to use
          endpoint_url: null              # optional: else the remote's endpointurl / $AWS_ENDPOINT_URL / AWS
          splits: null                    # optional: e.g. [train]; default all splits
          datasets: null                  # optional: e.g. [kvasir-seg]; default all datasets
          jobs: 8                         # parallel downloads
          limit: null                     # optional: at most this many items (after the filters)

No secret ever goes into params.yaml (DVC records it in dvc.lock and the run cache, ingest in
data/raw/manifest-v1.json, which `siamdiff publish` uploads): keys come from the environment or
`.dvc/config.local` (siamdiff.storage.credentials). `check_source` refuses, before anything is read or
written, a source config with a key the params schema's `S3Source` does not have, any credential-looking key or value
(`aws_secret_access_key`, `secret_key`, `token`, `password`, ...), or an endpoint/URL with user info.

Before anything is yielded, the manifest is read and every key it lists is checked against the layout
(`..`/absolute keys refused) and against a listing of the prefix (a missing object is an error naming its
key). Every downloaded object is then hashed: a SHA-256 different from the manifest's is an error naming
the key. The stage reruns only when objects change because dvc.yaml declares the prefix as an external
dependency (`remote://<remote>/siamese-data`, see docs/S3.md).
"""
from __future__ import annotations

import hashlib
import json
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

from siamdiff.data.item import Item
from siamdiff.storage import layout
from siamdiff.storage.credentials import (
    S3Settings,
    check_endpoint_url,
    check_no_secrets,
    client_error_code,
    make_client,
    resolve,
    s3_errors,
)
from siamdiff.storage.publish import list_objects
from siamdiff.utils import SiamdiffError, log

STAGE = "ingest"


def check_source(cfg, where: str = "ingest s3 source") -> dict:
    """Refuse a bad `type: s3` source config with one line naming the key; return it unchanged.

    Credentials first (named by key, never by value), then what the params schema cannot say: `url` an
    s3:// URL without user info and with a valid bucket name, `endpoint_url` a plain http(s)://host[:port],
    `remote` a DVC remote name, `datasets` non-empty names; then the schema's `S3Source`
    (siamdiff/params_schema.py): unknown keys (with the nearest valid one), types, `splits`, `jobs`, `limit`.
    """
    if not isinstance(cfg, dict):
        raise SiamdiffError(f"params.yaml: {where} must be a mapping (type: s3, url: s3://BUCKET/siamese-data)")
    check_no_secrets(cfg, where)
    url = cfg.get("url")
    if not url or not isinstance(url, str):
        raise SiamdiffError(f"params.yaml: {where}.url is missing; the s3 ingest source needs "
                            "`url: s3://BUCKET/siamese-data`")
    try:
        layout.parse_s3_url(url)
    except SiamdiffError as e:
        raise SiamdiffError(f"params.yaml: {where}.url: {e}") from None
    check_endpoint_url(cfg.get("endpoint_url"), f"params.yaml: {where}.endpoint_url")
    remote = cfg.get("remote")
    if remote is not None and (not isinstance(remote, str) or not remote.strip() or any(c.isspace() for c in remote)):
        raise SiamdiffError(f"params.yaml: {where}.remote must be the name of a DVC remote (`dvc remote list`) "
                            f"or null, got {remote!r}")
    datasets = cfg.get("datasets")
    if isinstance(datasets, list) and not all(isinstance(x, str) and x for x in datasets):
        raise SiamdiffError(f"params.yaml: {where}.datasets must be a list of names or null, got {datasets!r}")
    _check_schema(cfg, where)
    return cfg


def _check_schema(cfg: dict, where: str) -> None:
    """`cfg` against the params schema's `S3Source` (its `type` may be left out), messages as `siamdiff check`'s."""
    from siamdiff.params_schema import S3Source, check_model

    check_model(S3Source, {"type": "s3", **cfg}, where)


def settings_for(cfg: dict, where: str = "ingest s3 source") -> S3Settings:
    return resolve(endpoint_url=cfg.get("endpoint_url"), remote=cfg.get("remote"),
                   endpoint_origin=f"params.yaml: {where}.endpoint_url")


def read_manifest(client, bucket: str, prefix: str, s: S3Settings) -> dict:
    """The published manifest; its items' keys validated against the layout."""
    key = layout.join_key(prefix, layout.MANIFEST)
    url = f"s3://{bucket}/{key}"
    from botocore.exceptions import ClientError

    try:
        with s3_errors(s, f"reading {url}"):
            try:
                body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            except ClientError as e:
                if client_error_code(e) in ("NoSuchKey", "404", "NotFound"):
                    raise KeyError(key) from None
                raise
    except KeyError:
        raise SiamdiffError(f"{url} not found at {s.endpoint_label}: nothing published there; run "
                            f"`siamdiff publish --to s3://{bucket}/{prefix}` first (the manifest is written last, "
                            "so an interrupted publish has none)") from None
    try:
        manifest = json.loads(body)
    except json.JSONDecodeError as e:
        raise SiamdiffError(f"{url}: not valid JSON ({e}); republish with `siamdiff publish`") from None
    version = str(manifest.get("manifest_version", ""))
    if not version.startswith("1."):
        raise SiamdiffError(f"{url}: manifest_version {version!r} is not 1.x; this siamdiff reads manifest-v1 only")
    for it in manifest.get("items", []):
        for field in ("id", "dataset", "patient", "frame", "split", "image", "mask", "image_sha256", "mask_sha256"):
            if field not in it:
                raise SiamdiffError(f"{url}: item {it.get('id')!r} lacks {field!r}; republish with `siamdiff publish`")
        want_img = layout.image_key(it["split"], it["dataset"], it["id"])
        want_mask = layout.mask_key(it["split"], it["dataset"], it["id"])
        for got, want in ((it["image"], want_img), (it["mask"], want_mask)):
            layout.safe_key(got)
            if got != want:
                raise SiamdiffError(f"{url}: key {got!r} of item {it['id']!r} is not the layout's {want!r}; refusing")
        if it["id"] != layout.item_id(it["dataset"], it["patient"], it["frame"]):
            raise SiamdiffError(f"{url}: item id {it['id']!r} is not {{dataset}}-{{patient}}-{{frame}}; refusing")
    return manifest


def _selected(manifest: dict, cfg: dict) -> list[dict]:
    splits, datasets = cfg.get("splits"), cfg.get("datasets")
    items = manifest.get("items", [])
    if splits:  # names checked by check_source
        items = [it for it in items if it["split"] in splits]
    if datasets:
        items = [it for it in items if it["dataset"] in datasets]
    if cfg.get("limit"):
        items = items[: cfg["limit"]]
    return items


def verify_remote(url: str, settings: S3Settings | None = None, endpoint_url: str | None = None,
                  remote: str | None = None, download: bool = True) -> dict:
    """Check a publication: every manifest key present (and, with `download`, every SHA-256). Returns it."""
    cfg = {"url": url, "endpoint_url": endpoint_url, "remote": remote}
    check_endpoint_url(endpoint_url, "the endpoint URL given (--endpoint-url / endpoint_url)")
    n = 0
    for _ in _iter(cfg, settings, verify_only=not download):
        n += 1
    bucket, prefix = layout.parse_s3_url(url)
    s = settings or resolve(endpoint_url=endpoint_url, remote=remote)
    return read_manifest(make_client(s), bucket, prefix, s)


def s3_items(cfg: dict, settings: S3Settings | None = None, where: str = "ingest s3 source") -> Iterator:
    """Yield `siamdiff.data.item.Item`s (PNG bytes as image/mask) for every published, verified pair.

    The config is checked (`check_source`) at the call, before the first item is asked for."""
    check_source(cfg, where)
    return _items(cfg, settings, where)


def _items(cfg: dict, settings: S3Settings | None, where: str) -> Iterator:
    for it, img, mask, img_url, mask_url in _iter(cfg, settings, where=where):
        yield Item(dataset=it["dataset"], patient=str(it["patient"]), frame=str(it["frame"]), image=img,
                   mask=mask, image_name=img_url, mask_name=mask_url)


def _iter(cfg: dict, settings: S3Settings | None, verify_only: bool = False, where: str = "ingest s3 source"):
    check_source(cfg, where)
    bucket, prefix = layout.parse_s3_url(cfg["url"])
    s = settings or settings_for(cfg, where)
    jobs = int(cfg.get("jobs") or 8)
    client = make_client(s, max_pool_connections=max(10, jobs))
    manifest = read_manifest(client, bucket, prefix, s)
    items = _selected(manifest, cfg)
    if not items:
        raise SiamdiffError(f"s3://{bucket}/{prefix}/{layout.MANIFEST}: no items (after splits/datasets filters)")
    with s3_errors(s, f"listing s3://{bucket}/{prefix}"):
        existing = list_objects(client, bucket, prefix)
    for it in items:
        for rel in (it["image"], it["mask"]):
            key = layout.join_key(prefix, rel)
            if key not in existing:
                raise SiamdiffError(f"s3://{bucket}/{key}: listed in the manifest but missing at {s.endpoint_label}; "
                                    "republish with `siamdiff publish` (it uploads only what is missing)")
    log(STAGE, f"s3://{bucket}/{prefix}: manifest {manifest.get('manifest_version')} with {len(items)} selected "
               f"items, all {2 * len(items)} objects present at {s.endpoint_label}")
    if verify_only:
        return

    def fetch(it: dict):
        out = []
        for rel, want in ((it["image"], it["image_sha256"]), (it["mask"], it["mask_sha256"])):
            key = layout.join_key(prefix, rel)
            url = f"s3://{bucket}/{key}"
            with s3_errors(s, f"downloading {url}"):
                data = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            if hashlib.sha256(data).hexdigest() != want:
                raise SiamdiffError(f"{url}: SHA-256 differs from {layout.MANIFEST}; the object was changed after "
                                    "publishing: republish it with `siamdiff publish` or restore the original")
            out.append((data, url))
        return it, out[0][0], out[1][0], out[0][1], out[1][1]

    # ordered, bounded read-ahead: at most 2*jobs pairs in memory
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        pending: deque = deque()
        it_iter = iter(items)
        for it in it_iter:
            pending.append(pool.submit(fetch, it))
            if len(pending) >= 2 * jobs:
                break
        try:
            while pending:
                result = pending.popleft().result()
                nxt = next(it_iter, None)
                if nxt is not None:
                    pending.append(pool.submit(fetch, nxt))
                yield result
        finally:
            for f in pending:
                f.cancel()
