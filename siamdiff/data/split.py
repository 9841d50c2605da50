"""Patient-disjoint train/val/test split from the SHA-256 of the patient string (DESIGN.md section 3).

The patient string is `{dataset}-{patient}` (patients are identities within a dataset). For each:
`sha256 = SHA-256(patient string as UTF-8)`, `u = int(sha256, 16) / 2**256`, and with cumulative
thresholds from `split.fractions` (0.8, 0.9 for 80/10/10): `train` if u < 0.8, `val` if u < 0.9, else `test`.
`data/split-hashes.csv` publishes `patient,sha256,u,split` so anyone can reproduce it byte for byte.
"""
from __future__ import annotations

import csv
import hashlib
import io
import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

from siamdiff.utils import SiamdiffError

SPLITS = ("train", "val", "test")


def check_fractions(fractions) -> list[float]:
    """`split.fractions`: three numbers >= 0 summing to 1 (train, val, test)."""
    if not isinstance(fractions, (list, tuple)) or len(fractions) != len(SPLITS):
        raise SiamdiffError(f"params.yaml: split.fractions must be a list of 3 numbers (train, val, test), got {fractions!r}")
    out = []
    for f in fractions:
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not math.isfinite(f) or f < 0:
            raise SiamdiffError(f"params.yaml: split.fractions must all be numbers >= 0, got {fractions!r}")
        out.append(float(f))
    if abs(sum(out) - 1.0) > 1e-6:
        raise SiamdiffError(f"params.yaml: split.fractions must sum to 1, got {fractions!r} (sum {sum(out):g})")
    return out


def patient_string(dataset: str, patient: str) -> str:
    return f"{dataset}-{patient}"


def patient_u(s: str) -> tuple[str, float]:
    """(sha256 hex, u in [0,1)) of a patient string."""
    digest = hashlib.sha256(s.encode("utf-8")).hexdigest()
    return digest, int(digest, 16) / 2 ** 256


def split_of(u: float, fractions: Sequence[float]) -> str:
    edge = 0.0
    for name, f in zip(SPLITS, fractions):
        edge += f
        if u < edge:
            return name
    return SPLITS[-1]  # u beyond the last edge by rounding of the cumulative sum


def assign(items: Iterable[dict], fractions) -> tuple[list[dict], list[dict]]:
    """Items (dicts with id, dataset, patient, frame) -> (split rows, hash rows). Raises on any violation."""
    fractions = check_fractions(fractions)
    items = list(items)
    by_string: dict[str, tuple[str, str]] = {}
    hashes: dict[str, dict] = {}
    rows = []
    for it in items:
        s = patient_string(it["dataset"], it["patient"])
        owner = by_string.setdefault(s, (it["dataset"], it["patient"]))
        if owner != (it["dataset"], it["patient"]):
            raise SiamdiffError(f"patient string '{s}' is shared by dataset {owner[0]!r} patient {owner[1]!r} and "
                                f"dataset {it['dataset']!r} patient {it['patient']!r}; rename one dataset")
        if s not in hashes:
            digest, u = patient_u(s)
            hashes[s] = {"patient": s, "sha256": digest, "u": u, "split": split_of(u, fractions)}
        rows.append({"id": it["id"], "dataset": it["dataset"], "patient": it["patient"], "frame": it["frame"],
                     "split": hashes[s]["split"]})
    rows.sort(key=lambda r: r["id"])
    check(rows, fractions)
    return rows, sorted(hashes.values(), key=lambda r: r["patient"])


def check(rows: list[dict], fractions=None) -> None:
    """Fail loudly if a patient crosses partitions, a partition is empty, or an id repeats."""
    where: dict[tuple[str, str], set] = defaultdict(set)
    ids = set()
    for r in rows:
        if r["id"] in ids:
            raise SiamdiffError(f"split: id '{r['id']}' appears twice; run `dvc repro ingest` again")
        ids.add(r["id"])
        where[(r["dataset"], r["patient"])].add(r["split"])
    crossing = [(k, v) for k, v in where.items() if len(v) > 1]
    if crossing:
        (ds, pt), v = crossing[0]
        raise SiamdiffError(f"split: patient '{pt}' of dataset '{ds}' is in {sorted(v)} ({len(crossing)} patients "
                            "cross partitions); the split must be patient-disjoint")
    counts = {s: 0 for s in SPLITS}
    patients = {s: 0 for s in SPLITS}
    for (ds, pt), v in where.items():
        patients[next(iter(v))] += 1
    for r in rows:
        if r["split"] not in counts:
            raise SiamdiffError(f"split: unknown partition '{r['split']}' for {r['id']}")
        counts[r["split"]] += 1
    empty = [s for s in SPLITS if counts[s] == 0]
    if empty:
        raise SiamdiffError(
            f"split: partition {empty[0]!r} is empty ({len(where)} patients: " +
            ", ".join(f"{s} {patients[s]}" for s in SPLITS) +
            f", fractions {list(fractions) if fractions is not None else '?'}); add patients or change split.fractions")


def to_csv(rows: list[dict], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        r = dict(r)
        if isinstance(r.get("u"), float):
            r["u"] = repr(r["u"])
        w.writerow(r)
    return buf.getvalue()


SPLIT_COLUMNS = ("id", "dataset", "patient", "frame", "split")
HASH_COLUMNS = ("patient", "sha256", "u", "split")


def read_split(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise SiamdiffError(f"{path}: not found; run `dvc repro split` first")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or list(reader.fieldnames) != list(SPLIT_COLUMNS):
            raise SiamdiffError(f"{path}: expected columns {','.join(SPLIT_COLUMNS)}; run `dvc repro split`")
        return list(reader)
