"""What machine a stage ran on, how long it took, and which precision it chose (measured, not assumed).

Every stage command records `metrics/runtime/<stage>.json` (seconds, threads, CPU model, the ISA flags that
matter, torch version, device, precision chosen), so runs made on different machines can be compared.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Callable

# the ISA flags (as /proc/cpuinfo names them) that decide fp32 vs bf16 speed on a CPU
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
BF16_MIN_SPEEDUP = 1.3  # bf16 only if clearly faster: near 1.0 the choice would flip with the machine's load

_notes: dict[str, object] = {}


def cpu_model_and_flags() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    return model, flags


def describe() -> dict:
    """CPU model, the ISA flags that matter, cores, torch threads and version, the CUDA device if any."""
    import torch

    model, flags = cpu_model_and_flags()
    return {"cpu": model, "isa": [f for f in ISA_FLAGS if f in flags], "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch": torch.__version__.split("+")[0],
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}


def note(**values) -> None:
    """Add to this stage's runtime record (e.g. the precision it chose)."""
    _notes.update(values)


def record_stage(stage: str, seconds: float, root: str | os.PathLike = ".") -> Path:
    """Write metrics/runtime/<stage>.json: the wall time of the stage command and the machine it ran on."""
    from siamdiff.utils import write_json

    path = Path(root) / "metrics" / "runtime" / f"{stage}.json"
    write_json(path, {"stage": stage, "seconds": round(seconds, 1), **describe(), **_notes})
    return path


def read_runtimes(root: str | os.PathLike = ".") -> dict[str, dict]:
    folder = Path(root) / "metrics" / "runtime"
    out = {}
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            out[p.stem] = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
    return out


def choose_cpu_autocast(setting: str, probe: Callable[[], None], *, log: Callable[[str], None],
                        repeats: int = 3, flags: set[str] | None = None) -> str:
    """'no' (fp32) or 'bf16' for a CPU run. `setting`: no | bf16 (used as given) | auto: bf16 only where the CPU
    has AVX512-BF16 or AMX *and* timing `probe` (one forward + backward of the real model) under bf16 autocast
    is at least BF16_MIN_SPEEDUP x faster than fp32. The decision and its timings are logged and recorded."""
    import torch

    if setting != "auto":
        note(precision=setting if setting != "no" else "fp32")
        return setting
    if flags is None:
        flags = cpu_model_and_flags()[1]
    if not flags & set(BF16_FLAGS):
        log("precision auto: fp32 (this CPU has neither AVX512-BF16 nor AMX, where bf16 autocast is slower)")
        note(precision="fp32", precision_reason="no bf16 ISA")
        return "no"

    def timed(dtype: torch.dtype | None) -> float:
        best = float("inf")
        for _ in range(repeats + 1):  # the first is a warm-up
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
                probe()
            best = min(best, time.perf_counter() - t0)
        return best

    rng = torch.get_rng_state()  # the probe must not change what the run draws afterwards
    try:
        fp32, bf16 = timed(None), timed(torch.bfloat16)
    finally:
        torch.set_rng_state(rng)
    choice = "bf16" if fp32 / bf16 >= BF16_MIN_SPEEDUP else "no"
    log(f"precision auto: {'bf16 autocast' if choice == 'bf16' else 'fp32'} (one step: fp32 {fp32 * 1e3:.0f} ms, "
        f"bf16 {bf16 * 1e3:.0f} ms, {fp32 / bf16:.2f}x; bf16 needs >= {BF16_MIN_SPEEDUP}x)")
    note(precision="bf16" if choice == "bf16" else "fp32", precision_speedup=round(fp32 / bf16, 2))
    return choice
