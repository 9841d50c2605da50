"""Print the bad-input matrix as a Markdown table: case | the one-line message it gives now.

    .venv/bin/python bench/bad_input_table.py [FILTER] > /tmp/bad-inputs.md

Runs every case of tests/test_bad_inputs.py (and tests/bad_inputs_*.py) in a temporary folder, as the test does.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path[:0] = [str(TESTS), str(TESTS.parent)]


def main() -> None:
    import pytest

    import test_bad_inputs  # noqa: F401  (registers the cases)
    from bad_input_registry import CASES

    wanted = sys.argv[1] if len(sys.argv) > 1 else ""
    print("| case | message |\n|---|---|")
    cwd = os.getcwd()
    for name, fn in CASES.items():
        if wanted not in name:
            continue
        mp = pytest.MonkeyPatch()
        with tempfile.TemporaryDirectory() as tmp:
            try:
                call, _ = fn(Path(tmp), mp)
                call()
                msg = "(no error)"
            except BaseException as e:  # noqa: BLE001 - we print whatever it was
                msg = f"{type(e).__name__}: {e}" if type(e).__name__ != "SiamdiffError" else str(e)
            finally:
                mp.undo()
                os.chdir(cwd)
        short = msg.replace(tmp, "<tmp>").replace("|", "\\|")
        print(f"| {name} | {short} |")


if __name__ == "__main__":
    main()
