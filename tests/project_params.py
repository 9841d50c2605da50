"""The project's own params.yaml sections, validated, as the base of tests that change one key."""
from __future__ import annotations

from pathlib import Path

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def section(name: str, **changes) -> dict:
    from siamdiff.utils import load_params

    return {**load_params(name, PARAMS), **changes}
