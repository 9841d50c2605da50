"""Progress bars and log lines never run together in a non-terminal log (`dvc repro > log`, a pipe, Slurm)."""
from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from siamdiff.utils import progress

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_user_tqdm_setting(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.delenv("SIAMDIFF_LIBRARY_BARS_OFF", raising=False)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_non_terminal_gets_whole_lines():
    log = io.StringIO()  # not a TTY
    bar = progress(total=4, desc="train", file=log, every=0)
    for step in range(4):
        print(f"[train] step {step}: wrote a checkpoint", file=log)
        bar.update(1)
        bar.set_postfix(loss=f"{0.5 / (step + 1):.3f}")
    bar.close()
    for _ in progress(range(3), desc="inception", file=log, every=0, leave=False):
        print("[evaluate] a log line", file=log)
    out = log.getvalue()
    assert "\r" not in out and "\x1b" not in out and out.endswith("\n")
    lines = out.splitlines()
    assert all(line.startswith(("[train] ", "[evaluate] ", "train: ", "inception: ")) for line in lines), lines
    assert sum(line.startswith("[train] step") for line in lines) == 4  # every log line whole, on its own
    assert any(re.fullmatch(r"train: 4/4 \[.*loss=0\.125\]", line) for line in lines), lines
    assert any(line.startswith("inception: 3/3") for line in lines), lines


def test_non_terminal_lines_are_spaced_out():
    log = io.StringIO()
    for _ in progress(range(1000), desc="encode", file=log):  # default: a line at most every 30 s, and the end
        pass
    lines = log.getvalue().splitlines()
    assert 1 <= len(lines) <= 3 and lines[-1].startswith("encode: 1000/1000"), lines


def test_terminal_keeps_the_redrawn_bar():
    tty = _Tty()
    for _ in progress(range(3), desc="sample", file=tty, mininterval=0):
        pass
    assert "\r" in tty.getvalue()


def test_disabled_writes_nothing():
    log = io.StringIO()
    for _ in progress(range(3), desc="x", file=log, disable=True, every=0):
        pass
    assert log.getvalue() == ""


def test_every_bar_goes_through_the_helper():
    """tqdm is created in one place (siamdiff.utils.progress), so no call site redraws into a log file."""
    offenders = [str(p.relative_to(ROOT)) for folder in ("siamdiff", "stages") for p in (ROOT / folder).rglob("*.py")
                 if p.name != "utils.py" and re.search(r"^\s*(from tqdm|import tqdm)", p.read_text(), re.M)]
    assert not offenders, offenders


def test_library_bars_off_but_ours_print_lines(monkeypatch):
    """Not a terminal: other libraries' bars are turned off (TQDM_DISABLE, read when tqdm is imported), the
    stages' own still print their plain lines; a user's own TQDM_DISABLE=1 turns those off too."""
    import os

    from siamdiff.utils import quiet_library_bars

    for name in ("TQDM_DISABLE", "SIAMDIFF_LIBRARY_BARS_OFF", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    quiet_library_bars()
    assert os.environ["TQDM_DISABLE"] == "1" and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    log = io.StringIO()
    for _ in progress(range(2), desc="ours", file=log, every=0):
        pass
    assert log.getvalue().splitlines()[-1].startswith("ours: 2/2")
    monkeypatch.delenv("SIAMDIFF_LIBRARY_BARS_OFF")  # TQDM_DISABLE=1 as the user's own
    log = io.StringIO()
    for _ in progress(range(2), desc="ours", file=log, every=0):
        pass
    assert log.getvalue() == ""
