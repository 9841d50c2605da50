import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
POLYPS = Path(os.environ.get("SIAMDIFF_POLYPS", ROOT.parent / "shared" / "data" / "polyps-train"))


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Test models are tiny and overhead-bound: one torch thread is faster, and far faster on a shared CPU
    (two threads per process spin against each other). Subprocesses get OMP_NUM_THREADS=1 too."""
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture
def polyps_dir():
    """The real polyp data (Kvasir-SEG + CVC-ClinicDB); tests using it skip with a reason where absent."""
    if not (POLYPS / "Kvasir-SEG").is_dir():
        pytest.skip(f"real polyp data not found at {POLYPS} (set SIAMDIFF_POLYPS)")
    return POLYPS
