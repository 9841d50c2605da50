import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
POLYPS = Path(os.environ.get("SIAMDIFF_POLYPS", ROOT.parent / "shared" / "data" / "polyps-train"))


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    try:
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    except ImportError:
        pass


@pytest.fixture
def polyps_dir():
    """The real polyp data (Kvasir-SEG + CVC-ClinicDB); tests using it skip with a reason where absent."""
    if not (POLYPS / "Kvasir-SEG").is_dir():
        pytest.skip(f"real polyp data not found at {POLYPS} (set SIAMDIFF_POLYPS)")
    return POLYPS
