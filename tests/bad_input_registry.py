"""The bad-input matrix's registry: `@case(name)` registers a case; tests/test_bad_inputs.py runs them all.

Cases live in tests/test_bad_inputs.py and in tests/bad_inputs_*.py (one file per area), each a function
`fn(tmp_path, monkeypatch) -> (call, named)`: `call()` must raise one one-line SiamdiffError whose message
contains `named` (the file or parameter at fault).
"""
from __future__ import annotations

import importlib
from pathlib import Path

CASES: dict[str, object] = {}


def case(name: str):
    def deco(fn):
        assert name not in CASES, name
        CASES[name] = fn
        return fn
    return deco


def load_case_modules() -> None:
    for path in sorted(Path(__file__).parent.glob("bad_inputs_*.py")):
        importlib.import_module(path.stem)
