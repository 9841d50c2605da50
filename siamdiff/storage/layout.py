"""The object-store layout of a published dataset (DESIGN.md section 3).

    s3://<bucket>/<prefix>/{split}/{dataset}/img/{dataset}-{patient}-{frame}.png
    s3://<bucket>/<prefix>/{split}/{dataset}/mask/{dataset}-{patient}-{frame}_mask.png
    s3://<bucket>/<prefix>/manifest-v1.json      (SHA-256 of every object; written last)

`<prefix>` is `siamese-data` by convention. Keys inside the manifest are relative to the prefix.
Every key is checked by `safe_key`: no `..`, no absolute path, no empty or `.` component.
"""
from __future__ import annotations

import re
from urllib.parse import urlparse

from siamdiff.data.split import SPLITS
from siamdiff.utils import SiamdiffError

MANIFEST = "manifest-v1.json"
LAYOUT_VERSION = "siamese-data/1"

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-_]{1,61}[a-z0-9]$")


def safe_key(key: str) -> str:
    """Return `key` if it is a safe relative object key, else raise naming it.

    Refused: absolute keys (`/x`), drive or scheme prefixes, backslashes, `..`, `.` or empty components,
    control characters. Both publish (before uploading) and ingest (before downloading or writing a
    local file named after the key) call this, so a crafted manifest cannot escape the prefix.
    """
    if not isinstance(key, str) or not key:
        raise SiamdiffError(f"S3 key {key!r} refused: empty or not a string")
    if key.startswith("/") or re.match(r"^[A-Za-z]:", key) or "://" in key:
        raise SiamdiffError(f"S3 key {key!r} refused: absolute paths are not allowed (keys are relative to the prefix)")
    if "\\" in key or any(ord(c) < 32 for c in key):
        raise SiamdiffError(f"S3 key {key!r} refused: backslash or control character")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise SiamdiffError(f"S3 key {key!r} refused: '..', '.' or empty path components are not allowed")
    return key


def join_key(prefix: str, rel: str) -> str:
    """`prefix/rel` with both parts checked (prefix may be empty: the dataset is at the bucket root)."""
    safe_key(rel)
    if not prefix:
        return rel
    return f"{safe_key(prefix)}/{rel}"


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> (`bucket`, `some/prefix`) (prefix without slashes at the ends)."""
    from siamdiff.storage.credentials import KEYS_POINTER, redact_url

    shown = redact_url(url)          # never echo user info (s3://KEY:SECRET@bucket) in a message
    u = urlparse(str(url))
    if u.scheme != "s3" or not u.netloc:
        raise SiamdiffError(f"{shown!r} is not an S3 URL; expected s3://BUCKET/siamese-data")
    if "@" in u.netloc:
        raise SiamdiffError(f"{shown!r}: user info (name:password@) in an S3 URL is refused: credentials never "
                            f"go in a URL; use s3://BUCKET/PREFIX and {KEYS_POINTER}")
    bucket = u.netloc
    if not _BUCKET_RE.match(bucket):
        raise SiamdiffError(f"{shown!r}: {bucket!r} is not a valid bucket name (3-63 chars, lower case, digits, . - _)")
    prefix = u.path[1:].rstrip("/") if u.path.startswith("/") else u.path.rstrip("/")
    if prefix:
        safe_key(prefix)
    return bucket, prefix


def item_id(dataset: str, patient: str, frame) -> str:
    return f"{dataset}-{patient}-{frame}"


def _component(name: str, value) -> str:
    value = str(value)
    if not value or "/" in value or "\\" in value or value in (".", ".."):
        raise SiamdiffError(f"{name} {value!r} cannot be used in an S3 key (no slashes, not '.' or '..')")
    return value


def image_key(split: str, dataset: str, id_: str) -> str:
    """Key of an image relative to the prefix: `{split}/{dataset}/img/{id}.png`."""
    if split not in SPLITS:
        raise SiamdiffError(f"split {split!r} is not one of {SPLITS} (data/split.csv)")
    return safe_key(f"{split}/{_component('dataset', dataset)}/img/{_component('id', id_)}.png")


def mask_key(split: str, dataset: str, id_: str) -> str:
    """Key of a mask relative to the prefix: `{split}/{dataset}/mask/{id}_mask.png`."""
    if split not in SPLITS:
        raise SiamdiffError(f"split {split!r} is not one of {SPLITS} (data/split.csv)")
    return safe_key(f"{split}/{_component('dataset', dataset)}/mask/{_component('id', id_)}_mask.png")
