"""Small helpers every stage uses: params, seeding, atomic writes, hashing, clear errors."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

from ruamel.yaml import YAML


class SiamdiffError(Exception):
    """A user-facing error: the message names the file or parameter and what to do."""


def log(stage: str, msg: str) -> None:
    print(f"[{stage}] {msg}", file=sys.stderr, flush=True)


def load_params(section: str | None = None, path: str | os.PathLike = "params.yaml") -> dict:
    path = Path(path)
    if not path.exists():
        raise SiamdiffError(f"{path}: parameter file not found; run from the project root")
    with open(path) as f:
        # YAML 1.2, as DVC writes it (`dvc exp run -S` turns "no" into a bare no; YAML 1.1 would read False)
        params = YAML(typ="safe", pure=True).load(f) or {}
    if section is None:
        return params
    if section not in params:
        raise SiamdiffError(f"{path}: no section '{section}'; add it (see the project's params.yaml)")
    return params[section]


def require(cond: bool, param: str, msg: str) -> None:
    """Raise a clear parameter error: `require(size > 0, 'preprocess.size', 'must be positive')`."""
    if not cond:
        raise SiamdiffError(f"params.yaml: {param} {msg}")


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_tree(root: str | os.PathLike) -> str:
    """Hash of a folder: relative paths and contents of every file, in sorted order."""
    root = Path(root)
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(p.relative_to(root).as_posix().encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds.

    Works for files and folders; on error the temporary is removed and `target` is left as it was.
    A full disk (ENOSPC/EDQUOT) becomes a SiamdiffError naming `target`.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    shutil.rmtree(tmp)
    try:
        yield tmp
        if target.is_dir() and not target.is_symlink():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            try:
                tmp.rename(target)
            except BaseException:
                old.rename(target)  # put the previous output back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException as e:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        # a full disk (also one reported by a nested atomic write inside this one) names this target
        cause = e if isinstance(e, OSError) else e.__cause__ if isinstance(e, SiamdiffError) else None
        if isinstance(cause, OSError) and cause.errno in DISK_FULL:
            raise SiamdiffError(f"{target}: no space left on device while writing it ({cause.strerror}); free "
                                f"disk space and rerun (the previous {target.name} is unchanged)") from cause
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def main_guard(stage: str, fn) -> None:
    """Run a stage's main(); turn SiamdiffError (and a full disk) into one clear line and exit code 1."""
    try:
        fn()
    except SiamdiffError as e:
        print(f"[{stage}] error: {e}", file=sys.stderr)
        sys.exit(1)
    except OSError as e:
        if e.errno not in DISK_FULL:
            raise
        where = e.filename or "an output file"
        print(f"[{stage}] error: {where}: no space left on device ({e.strerror}); free disk space and rerun",
              file=sys.stderr)
        sys.exit(1)
