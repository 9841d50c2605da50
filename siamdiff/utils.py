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
    if not isinstance(params, dict):
        raise SiamdiffError(f"{path}: must be a mapping of sections (see the project's params.yaml)")
    if section is None:
        return params
    if section not in params:
        raise SiamdiffError(f"{path}: no section '{section}'; add it (see the project's params.yaml)")
    from siamdiff.params_schema import check_top_level, validate_section

    check_top_level(params, str(path))
    return validate_section(section, params[section], str(path))


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
TOO_LARGE = (errno.EFBIG,)
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
FAULTS = DISK_FULL + TOO_LARGE + NOT_WRITABLE


def fault_errno(e: BaseException) -> int | None:
    """The errno of a disk or permission fault behind `e`, else None: an OSError's own; one that a
    SiamdiffError was raised from (a nested atomic write); or the `(os error N)` that Rust libraries
    (safetensors, tokenizers) put in their messages instead of raising OSError."""
    import re

    for _ in range(3):
        if isinstance(e, OSError):
            return e.errno if e.errno in FAULTS else None
        if isinstance(e, SiamdiffError) and e.__cause__ is not None:
            e = e.__cause__
            continue
        m = re.search(r"\(os error (\d+)\)", str(e)) if not isinstance(e, SiamdiffError) else None
        code = int(m.group(1)) if m else None
        return code if code in FAULTS else None
    return None


def fault_message(where: str | os.PathLike, code: int, detail: str | None = None) -> str:
    """One line for a disk or permission fault while writing `where`: what happened and what to do."""
    reason = os.strerror(code)
    at = f" ({detail})" if detail and detail != str(where) else ""
    if code in DISK_FULL:
        return f"{where}: no space left on device while writing it ({reason}){at}; free disk space and rerun"
    if code in TOO_LARGE:
        return (f"{where}: file too large to write ({reason}){at}: a file-size limit (`ulimit -f`) or the file "
                "system's largest file was reached; raise the limit or write to another file system and rerun")
    if code == errno.EROFS:
        return (f"{where}: cannot write it: the file system is read-only{at}; remount it read-write or run from "
                "a writable copy of the project, and rerun")
    return (f"{where}: cannot write it: permission denied ({reason}){at}; make {Path(where).parent} and "
            f"{Path(where).name} writable by this user, and rerun")


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds.

    Works for files and folders; on error the temporary is removed and `target` is left as it was.
    A full disk (ENOSPC/EDQUOT), a file-size limit (EFBIG) or a folder that cannot be written (EACCES,
    EPERM, EROFS) becomes a one-line SiamdiffError naming `target` (and saying the previous one is unchanged).
    """
    target = Path(target)
    existed = target.exists()
    kept = f"the previous {target.name} is unchanged" if existed else f"no {target.name} was written"

    def fault(e: BaseException) -> SiamdiffError | None:
        code = fault_errno(e)
        if code is None:
            return None
        cause = e.__cause__ if isinstance(e, SiamdiffError) else e
        name = getattr(cause, "filename", None)
        name = os.fsdecode(name) if isinstance(name, (str, bytes, os.PathLike)) else None
        if code in NOT_WRITABLE and name and not Path(name).resolve().is_relative_to(target.parent.resolve()):
            return None  # a file elsewhere (an input the block read): not a fault of this output
        detail = str(name) if name and Path(name).parent != target.parent else None
        return SiamdiffError(f"{fault_message(target, code, detail)} ({kept})")

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        shutil.rmtree(tmp)
    except OSError as e:
        err = fault(e)
        if err is not None:
            raise err from e
        raise
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
        # a disk or permission fault (also one reported by a nested atomic write inside this one) names this target
        err = fault(e)
        if err is not None:
            raise err from (e.__cause__ if isinstance(e, SiamdiffError) else e)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def safetensors_metadata(metadata: dict[str, str]) -> dict[str, str]:
    """`metadata=` for safetensors' save_file: one sorted-JSON entry ("siamdiff"). safetensors writes a mapping of
    several keys in a random order per call, so the same tensors and metadata would give different bytes, hence
    different DVC hashes, from one run to the next."""
    return {"siamdiff": json.dumps(metadata, sort_keys=True)}


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


# ------------------------------------------------------------------------------- metrics files (DVC metrics)
def _is_number(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _is_metric(v: Any) -> bool:
    """A number, null (not computed) or a list of numbers: what a DVC metrics file holds."""
    return _is_number(v) or (isinstance(v, list) and all(_is_number(x) for x in v))


def split_metrics(record: dict) -> tuple[dict, dict]:
    """(numbers, the rest) of a nested record, each keeping the nesting: numbers, nulls and lists of numbers
    are metrics; text, flags and provenance go to the other dict."""
    numbers, rest = {}, {}
    for k, v in record.items():
        if isinstance(v, dict):
            n, r = split_metrics(v)
            if n:
                numbers[k] = n
            if r:
                rest[k] = r
        elif _is_metric(v):
            numbers[k] = v
        else:
            rest[k] = v
    return numbers, rest


def merge_dicts(a: dict, b: dict) -> dict:
    """`a` updated with `b`, nested dicts merged (a new dict; neither argument changes)."""
    out = dict(a)
    for k, v in b.items():
        out[k] = merge_dicts(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def info_path(metrics_path: str | os.PathLike) -> Path:
    """metrics/NAME.json -> metrics/NAME.info.json (descriptions, notes, provenance: not a DVC metric)."""
    p = Path(metrics_path)
    return p.with_name(p.stem + ".info.json")


def write_metrics(path: str | os.PathLike, record: dict, info: dict | None = None) -> dict:
    """Write `record`'s numbers to `path` (a DVC metrics file: numbers and nulls only, so `dvc metrics show`
    stays narrow) and its text, flags and provenance, plus `info`, to `info_path(path)` beside it.
    Returns everything merged (what `read_metrics` reads back)."""
    numbers, rest = split_metrics(record)
    rest = merge_dicts(rest, info or {})
    write_json(info_path(path), rest)
    write_json(path, numbers)
    return merge_dicts(numbers, rest)


def read_metrics(path: str | os.PathLike) -> dict | None:
    """A metrics file merged with its `.info.json` (None if the metrics file is missing or unreadable)."""
    try:
        numbers = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    try:
        info = json.loads(info_path(path).read_text())
    except (OSError, json.JSONDecodeError):
        info = {}
    return merge_dicts(numbers, info) if isinstance(numbers, dict) and isinstance(info, dict) else numbers


def portable_path(path: str | os.PathLike, root: str | os.PathLike = ".") -> str:
    """A path to record in a committed file, without this machine's layout: relative to the project `root`,
    `site-packages/...` inside an installed package, `~/...` under the home folder, else the file name."""
    import site
    import sysconfig

    p = Path(path).expanduser().resolve()
    bases = [("", Path(root).resolve())]
    bases += [("site-packages/", Path(d).resolve()) for d in
              {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()}]
    bases += [("~/", Path.home().resolve())]
    # the deepest base first (a .venv inside the project is site-packages, not a project path)
    for prefix, base in sorted(bases, key=lambda b: len(b[1].parts), reverse=True):
        if p.is_relative_to(base):
            return prefix + p.relative_to(base).as_posix()
    return p.name


# ------------------------------------------------------------------------------------------- progress bars
class _LineStream:
    """A file for tqdm where the stream is not a terminal: each redraw becomes one whole line (no carriage
    returns or cursor moves that would run into log lines), the same status never twice in a row."""

    def __init__(self, stream):
        self.stream, self.last = stream, None
        self.encoding = getattr(stream, "encoding", None) or "utf-8"

    def write(self, s: str) -> None:
        import re

        for part in re.split(r"[\r\n]", re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", s)):
            part = part.strip()
            if part and part != self.last:
                self.stream.write(part + "\n")
                self.last = part

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable=None, *, desc: str, total: int | None = None, disable: bool = False, file=None,
             every: float = 30.0, **kw):
    """A tqdm bar on `file` (stderr). On a terminal, the usual redrawn bar; elsewhere (a log file, a pipe,
    `dvc repro > log`, Slurm) a plain line `desc: n/total [elapsed<remaining, rate]` at most every `every`
    seconds and at the end, so bars and log lines never run together."""
    file = sys.stderr if file is None else file
    if os.environ.get("TQDM_DISABLE", "").lower() not in ("", "0", "false") and not os.environ.get(_OURS):
        disable = True  # the user's own TQDM_DISABLE=1 turns these bars off too
    try:
        tty = file.isatty()
    except (AttributeError, ValueError):
        tty = False
    if tty:
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, disable=disable, file=file, **kw)
    from tqdm import tqdm

    kw.pop("dynamic_ncols", None)
    kw.update(mininterval=every, maxinterval=max(every, 10.0), leave=True, ascii=True,
              bar_format="{desc}: {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]")
    return tqdm(iterable, desc=desc, total=total, disable=disable, file=_LineStream(file), **kw)


_OURS = "SIAMDIFF_LIBRARY_BARS_OFF"


def quiet_library_bars() -> None:
    """Where stderr is not a terminal, turn off other libraries' tqdm bars (diffusers' "Loading pipeline
    components", transformers' "Writing model shards"): their carriage-return redraws would run into the log
    lines. Takes effect for libraries imported afterwards (tqdm reads `TQDM_*` when imported); the stages'
    own bars (`progress`) pass `disable` themselves and print plain lines instead."""
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):
        tty = False
    if not tty:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        if "TQDM_DISABLE" not in os.environ:
            os.environ["TQDM_DISABLE"] = "1"
            os.environ[_OURS] = "1"  # set here, not by the user: `progress` bars still print their lines


def main_guard(stage: str, fn) -> None:
    """Run a stage's main() and record its wall time and machine (siamdiff.machine); turn SiamdiffError
    and disk or permission faults (a full disk, a file-size limit,
    a read-only or unwritable folder) into one clear line naming the file, and exit code 1."""
    import signal

    if hasattr(signal, "SIGXFSZ"):
        try:  # past a file-size limit the kernel kills the process unless SIGXFSZ is ignored: then writes fail
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # with EFBIG, which is reported below, by name
        except ValueError:  # not the main thread
            pass
    import time

    quiet_library_bars()
    t0 = time.perf_counter()
    try:
        fn()
        if os.environ.get("RANK", "0") == "0":  # one record per run: the single or main process's
            from siamdiff.machine import record_stage

            record_stage(stage, time.perf_counter() - t0)
    except SiamdiffError as e:
        print(f"[{stage}] error: {e}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:
        code = fault_errno(e)
        if code is None:
            raise
        where = getattr(e, "filename", None)
        where = os.fsdecode(where) if isinstance(where, (str, bytes, os.PathLike)) else "an output file"
        if code in DISK_FULL:  # the historical wording
            msg = f"{where}: no space left on device ({os.strerror(code)}); free disk space and rerun"
        else:
            msg = fault_message(where, code)
        print(f"[{stage}] error: {msg}", file=sys.stderr)
        sys.exit(1)
