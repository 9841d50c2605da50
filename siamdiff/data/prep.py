"""Reading preprocess's outputs (`data/prep/`): the seam later stages use."""
from __future__ import annotations

import csv
from pathlib import Path

from siamdiff.data.split import SPLITS
from siamdiff.utils import SiamdiffError


def read_index(prep_dir: str | Path) -> list[dict]:
    """All rows of `index.csv`; `row` as int, `coverage` as float."""
    path = Path(prep_dir) / "index.csv"
    if not path.is_file():
        raise SiamdiffError(f"{path}: not found; run `dvc repro preprocess`")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["row"] = int(r["row"])
        r["coverage"] = float(r["coverage"])
    return rows


def load_split(prep_dir: str | Path, split: str, as_numpy: bool = False):
    """-> (rows of index.csv for `split` in row order, rgb uint8 [N,S,S,3], mask uint8 [N,S,S] in {0,1}).

    Arrays are torch tensors (numpy arrays with `as_numpy=True`); row i of the arrays is `rows[i]`.
    """
    if split not in SPLITS:
        raise SiamdiffError(f"unknown split {split!r}; use one of {SPLITS}")
    prep_dir = Path(prep_dir)
    path = prep_dir / f"{split}.safetensors"
    if not path.is_file():
        raise SiamdiffError(f"{path}: not found; run `dvc repro preprocess`")
    rows = sorted((r for r in read_index(prep_dir) if r["split"] == split), key=lambda r: r["row"])
    try:
        if as_numpy:
            from safetensors.numpy import load_file
        else:
            from safetensors.torch import load_file
        arrays = load_file(str(path))
    except Exception as e:  # corrupt or truncated file
        raise SiamdiffError(f"{path}: cannot be read ({e}); run `dvc repro preprocess` or `dvc checkout data/prep`") from None
    rgb, mask = arrays.get("rgb"), arrays.get("mask")
    if rgb is None or mask is None or len(rgb) != len(rows) or len(mask) != len(rows):
        raise SiamdiffError(f"{path}: does not match {prep_dir / 'index.csv'} ({len(rows)} rows); run `dvc repro preprocess`")
    if [r["row"] for r in rows] != list(range(len(rows))):
        raise SiamdiffError(f"{prep_dir / 'index.csv'}: rows of split {split} are not 0..N-1; run `dvc repro preprocess`")
    return rows, rgb, mask
