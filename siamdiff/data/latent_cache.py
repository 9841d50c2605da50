"""SHA-256-keyed LMDB latent cache (DESIGN.md section 3).

Key = SHA-256 of everything that changes a cached latent: the raw image's SHA-256, the preprocessing
(params and the preprocessed pixels' own hash), the augmentation view (and, for views > 0, the
augmentation params and seed), and the autoencoder folder hash. A changed input gives a new key, so a
stale latent is never served; an unchanged one is a hit, so a warm rerun encodes nothing.

Value = 32-byte SHA-256 of the payload, then the payload: safetensors bytes of
`{latent_mean, latent_std [C,h,w] f32, image [3,S,S] f32 working space, mask [S,S] u8}`. `get` returns
None for an absent key and for an entry whose checksum does not match (it is then re-encoded).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Iterator

from siamdiff.utils import SiamdiffError

KEY_VERSION = 1  # bump when the payload layout or what the key covers changes
MAP_SIZE = 1 << 40  # virtual address space; the file grows only as entries are written


def latent_key(image_sha256: str, preprocess: dict, view: int, autoencoder_hash: str,
               augment: dict | None = None) -> str:
    """SHA-256 hex key of one (item, view) latent. `augment` (params + seed) matters only for view > 0."""
    spec = {
        "version": KEY_VERSION,
        "image_sha256": image_sha256,
        "preprocess": preprocess,
        "view": int(view),
        "augment": augment if int(view) > 0 else None,
        "autoencoder": autoencoder_hash,
    }
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def pack(tensors: dict) -> bytes:
    """Checksummed safetensors bytes: sha256(payload) || payload."""
    from safetensors.torch import save

    payload = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()})
    return hashlib.sha256(payload).digest() + payload


def unpack(value: bytes) -> dict | None:
    """Inverse of `pack`; None when the checksum does not match or the payload is unreadable."""
    from safetensors.torch import load

    value = bytes(value)
    if len(value) < 33 or hashlib.sha256(value[32:]).digest() != value[:32]:
        return None
    try:
        return load(value[32:])
    except Exception:
        return None


def _write_fault(path: Path, e: Exception) -> str | None:
    """One line for an LMDB write failing on a full map, a full disk, a file-size limit or a read-only
    folder (LMDB reports a short write, as a file-size limit gives, as EIO); None for other errors."""
    import lmdb

    from siamdiff.utils import fault_message

    text = str(e)
    kept = "the entries written before are kept"
    if isinstance(e, lmdb.MapFullError) or "MDB_MAP_FULL" in text:
        return (f"{path}: the latent cache is full (MDB_MAP_FULL: its {MAP_SIZE} byte map is used up); delete "
                f"{path} and rerun `dvc repro encode` ({kept})")
    for code, words in ((errno.ENOSPC, ("No space left", "ENOSPC")), (errno.EDQUOT, ("Disk quota",)),
                        (errno.EFBIG, ("File too large", "EFBIG")), (errno.EROFS, ("Read-only file system",)),
                        (errno.EACCES, ("Permission denied",)), (errno.EPERM, ("Operation not permitted",))):
        if any(w in text for w in words) or (code == errno.EACCES and isinstance(e, lmdb.ReadonlyError)) or (
                code == errno.ENOSPC and isinstance(e, lmdb.DiskError)):
            return f"{fault_message(path, code, str(path / 'data.mdb'))} ({kept})"
    if "Input/output error" in text:
        return (f"{path}: writing the latent cache failed ({text}): usually a full disk or a file-size limit "
                f"(`ulimit -f`); free disk space or raise the limit and rerun `dvc repro encode` ({kept})")
    return None


class LatentCache:
    """`LatentCache(path)`: `.get(key)`, `.put(key, dict)`, `.keys()`; `readonly=True` for trainers."""

    def __init__(self, path: str | os.PathLike, readonly: bool = False):
        import lmdb

        self.path = Path(path)
        self.readonly = readonly
        if readonly and not (self.path / "data.mdb").is_file():
            raise SiamdiffError(f"{self.path}: latent cache not found; run the encode stage (dvc repro encode)")
        if not readonly:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                from siamdiff.utils import fault_errno, fault_message

                if fault_errno(e) is None:
                    raise
                raise SiamdiffError(fault_message(self.path, fault_errno(e), e.filename)) from e
        try:
            # lock=False: no lock.mdb, so the folder's bytes (which DVC hashes as the encode stage's
            # output) change only when entries are written; DVC runs one stage at a time (one writer)
            self.env = lmdb.open(str(self.path), map_size=MAP_SIZE, subdir=True, readonly=readonly,
                                 lock=False, readahead=False, meminit=False, max_readers=256)
        except lmdb.Error as e:
            fault = _write_fault(self.path, e)
            if fault and not readonly:
                raise SiamdiffError(fault) from e
            raise SiamdiffError(f"{self.path}: cannot open the latent cache ({e}); delete the folder "
                                "and rerun `dvc repro encode`") from e
        self.corrupt = 0  # entries found with a bad checksum since opening

    # -- the seam -------------------------------------------------------------------------------
    def get(self, key: str) -> dict | None:
        with self.env.begin(buffers=False) as txn:
            value = txn.get(key.encode())
        if value is None:
            return None
        out = unpack(value)
        if out is None:
            self.corrupt += 1
        return out

    def get_many(self, keys: Iterable[str]) -> list[dict | None]:
        """`get` for many keys in one read transaction."""
        out = []
        with self.env.begin(buffers=False) as txn:
            for key in keys:
                value = txn.get(key.encode())
                item = None if value is None else unpack(value)
                if value is not None and item is None:
                    self.corrupt += 1
                out.append(item)
        return out

    def put(self, key: str, tensors: dict) -> None:
        self.put_many([(key, tensors)])

    def put_many(self, items: Iterable[tuple[str, dict]]) -> None:
        import lmdb

        if self.readonly:
            raise SiamdiffError(f"{self.path}: opened read-only")
        try:  # one transaction: on any error LMDB commits nothing, and the entries written before stay whole
            with self.env.begin(write=True) as txn:
                for key, tensors in items:
                    txn.put(key.encode(), pack(tensors))
        except lmdb.Error as e:
            raise SiamdiffError(_write_fault(self.path, e) or f"{self.path}: cannot write to the latent cache "
                                f"({e}); rerun `dvc repro encode` (the entries written before are kept)") from e

    def keys(self) -> Iterator[str]:
        with self.env.begin() as txn:
            for k in txn.cursor().iternext(keys=True, values=False):
                yield bytes(k).decode()

    def __contains__(self, key: str) -> bool:
        with self.env.begin() as txn:
            return txn.get(key.encode()) is not None

    def __len__(self) -> int:
        return self.env.stat()["entries"]

    def close(self) -> None:
        self.env.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()



def read_train_rows(root: str | os.PathLike, limit: int | None = None) -> tuple[list[dict], list[dict]]:
    """The train rows of <root>/data/encoded.csv (the first `limit`) and their cached entries, in order.

    Refuses, naming the file and the fix, when the table is missing or has no train rows, and when any
    listed latent is absent or corrupt (the trainers never train on a partial cache).
    """
    import csv

    root = Path(root)
    csv_path, db_path = root / "data/encoded.csv", root / "data/latents.lmdb"
    if not csv_path.is_file():
        raise SiamdiffError(f"{csv_path}: not found; run `dvc repro encode`")
    with open(csv_path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "train"][:limit]
    if not rows:
        raise SiamdiffError(f"{csv_path}: no train rows; check the split and rerun `dvc repro encode`")
    with LatentCache(db_path, readonly=True) as cache:
        items = cache.get_many([r["key"] for r in rows])
    bad = [r for r, it in zip(rows, items) if it is None]
    if bad:
        raise SiamdiffError(f"{db_path}: {len(bad)} of {len(rows)} train latents listed in {csv_path} are missing "
                            f"or corrupt (first: {bad[0]['id']} view {bad[0]['view']}); rerun `dvc repro encode` "
                            "(it re-encodes them)")
    return rows, items
