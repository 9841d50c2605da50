"""Resumable training checkpoints: `models/checkpoints/step-000150/` (safetensors + JSON, no pickle).

    controlnet.safetensors    every ControlNet weight (DHI included)
    unet_decoder.safetensors  U's trainable decoder (the frozen part is the backbone's, checked by hash)
    optimizer.safetensors     AdamW state tensors ("<param index>.<name>")
    rng.safetensors           torch CPU RNG, the training noise generator, numpy's global RNG (per rank)
    state.json                step, fingerprint, optimizer param groups, lr scheduler, sampler, python RNG,
                              the per-step log so far, the SHA-256 of every .safetensors file above

Written atomically (temporary folder, then rename), so a kill never leaves a half checkpoint. A checkpoint
damaged afterwards (truncated, flipped bytes) fails `verify_checkpoint` (the SHA-256s in state.json) and is
refused by name; the run then resumes from the newest older checkpoint that verifies.
A checkpoint is resumed only when its fingerprint (every param that changes the numbers + input hashes)
matches the run's; others are stale, and removed only once this run has a whole checkpoint of its own
(never before: a run that fails early, e.g. on a bad param, leaves the previous run's checkpoints alone).
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from siamdiff.utils import SiamdiffError, atomic_path, sha256_file

PATTERN = re.compile(r"^step-(\d{6,})$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def list_checkpoints(root: str | os.PathLike) -> list[tuple[int, Path]]:
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = PATTERN.match(p.name)
        if m and p.is_dir() and (p / "state.json").is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, torch.Tensor):
        return x.tolist()
    return x


def _optimizer_tensors(optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors = {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            tensors[f"{idx}.{name}"] = (value if isinstance(value, torch.Tensor) else torch.tensor(value)).detach().cpu().contiguous()
    return tensors, _jsonable(sd["param_groups"])


def _load_optimizer(optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _numpy_state() -> tuple[torch.Tensor, dict]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return torch.from_numpy(np.asarray(keys, dtype=np.uint32).astype(np.int64)), {
        "name": name, "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def save_checkpoint(root: str | os.PathLike, step: int, *, controlnet, unet_decoder: dict[str, torch.Tensor],
                    optimizer, lr_scheduler, sampler, generator: torch.Generator, fingerprint: str,
                    history: list[dict], keep: int = 2, rank: int = 0, ema=None) -> Path:
    """Write `root/step-XXXXXX` atomically; keep the newest `keep` checkpoints (0 = all). `ema`: a diffusers
    EMAModel, saved beside the raw weights (ema.safetensors + its counters in state.json)."""
    root = Path(root)
    target = root / checkpoint_name(step)
    opt_tensors, groups = _optimizer_tensors(optimizer)
    np_keys, np_rest = _numpy_state()
    sched_state = {k: v for k, v in lr_scheduler.state_dict().items() if k != "lr_lambdas"}
    state = {
        "step": step, "fingerprint": fingerprint, "optimizer_param_groups": groups,
        "lr_scheduler": _jsonable(sched_state), "sampler": _jsonable(sampler.state_dict()),
        "python_random": _jsonable(random.getstate()), "numpy_random": np_rest, "history": history,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),  # when these weights were made
    }
    if ema is not None:
        state["ema"] = {k: v for k, v in ema.state_dict().items() if k != "shadow_params"}
    with atomic_path(target) as tmp:
        tmp.mkdir(parents=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in controlnet.state_dict().items()},
                  str(tmp / "controlnet.safetensors"))
        save_file({k: v.detach().cpu().contiguous() for k, v in unet_decoder.items()}, str(tmp / "unet_decoder.safetensors"))
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        if ema is not None:
            save_file({str(i): p.detach().cpu().contiguous() for i, p in enumerate(ema.shadow_params)},
                      str(tmp / "ema.safetensors"))
        save_file({"torch_cpu": torch.get_rng_state(), "train_generator": generator.get_state(),
                   "numpy_keys": np_keys}, str(tmp / f"rng-{rank}.safetensors"))
        state["files"] = {f.name: sha256_file(f) for f in sorted(tmp.glob("*.safetensors"))}
        (tmp / "state.json").write_text(json.dumps(state, indent=1) + "\n")  # last: it vouches for the rest
    # Checkpoints past this step can only be ones refused at resume (damaged): a run writes only past the
    # checkpoint it resumed from. They go, so `keep` never prunes a good checkpoint in favour of them.
    ckpts = list_checkpoints(root)
    doomed = [p for s, p in ckpts if s > step]
    if keep and keep > 0:
        doomed += [p for s, p in ckpts if s <= step][:-keep]
    for old in doomed:
        shutil.rmtree(old, ignore_errors=True)
    return target


def read_state(path: str | os.PathLike) -> dict:
    path = Path(path) / "state.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SiamdiffError(f"{path}: unreadable checkpoint state ({e}); delete the folder to start afresh") from e


def verify_checkpoint(path: str | os.PathLike, rank: int = 0) -> dict:
    """Check that a checkpoint is whole before anything is loaded from it; returns its state.

    Raises SiamdiffError naming the first missing, truncated or changed file. Checkpoints written before
    state.json recorded SHA-256s are checked by parsing every safetensors file instead.
    """
    from safetensors import safe_open

    path = Path(path)
    state = read_state(path)
    needed = ["controlnet.safetensors", "unet_decoder.safetensors", "optimizer.safetensors", f"rng-{rank}.safetensors"]
    needed += ["ema.safetensors"] if "ema" in state else []
    recorded = state.get("files")
    for name in needed:
        f = path / name
        if not f.is_file():
            raise SiamdiffError(f"{f}: missing from the checkpoint; it cannot be resumed")
        if recorded is not None:
            if name not in recorded:
                raise SiamdiffError(f"{f}: not listed in {path / 'state.json'}; the checkpoint cannot be trusted")
            if sha256_file(f) != recorded[name]:
                raise SiamdiffError(f"{f}: SHA-256 differs from the one recorded in {path / 'state.json'} "
                                    "(truncated or corrupted checkpoint file)")
        else:
            try:
                with safe_open(str(f), framework="pt") as g:
                    for k in g.keys():
                        g.get_tensor(k)
            except Exception as e:
                raise SiamdiffError(f"{f}: unreadable checkpoint file ({e})") from e
    return state


def resumable_checkpoints(root: str | os.PathLike, fingerprint: str) -> list[Path]:
    """Checkpoints whose fingerprint matches, newest first (not yet verified)."""
    out = []
    for _, path in reversed(list_checkpoints(root)):
        try:
            if read_state(path).get("fingerprint") == fingerprint:
                out.append(path)
        except SiamdiffError:
            continue
    return out


def find_resumable(root: str | os.PathLike, fingerprint: str, rank: int = 0,
                   log=None) -> Path | None:
    """The newest checkpoint whose fingerprint matches and whose files verify, else None.

    A damaged checkpoint is skipped (with its file named through `log`) in favour of the previous one.
    """
    for path in resumable_checkpoints(root, fingerprint):
        try:
            verify_checkpoint(path, rank)
        except SiamdiffError as e:
            if log is not None:
                log(f"refused checkpoint {path}: {e}; trying the previous one")
            continue
        return path
    return None


def remove_temporaries(root: str | os.PathLike) -> None:
    """Clean up after a checkpoint write that was killed: its temporary folder (`.step-XXXXXX.*.tmp`, never
    resumed) goes; a previous checkpoint moved aside (`.step-XXXXXX.old`) whose replacement never arrived is
    put back, else removed."""
    root = Path(root)
    if not root.is_dir():
        return
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith(".step-") and p.name.endswith(".old"):
            home = root / p.name[1:-len(".old")]
            if PATTERN.match(home.name) and not home.exists() and (p / "state.json").is_file():
                p.rename(home)
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith(".step-") and (p.name.endswith(".tmp") or p.name.endswith(".old")):
            shutil.rmtree(p, ignore_errors=True)


def remove_stale(root: str | os.PathLike, fingerprint: str) -> list[Path]:
    """Remove checkpoints of another configuration (they can never be resumed by this run), and the
    leftovers of a killed checkpoint write (`remove_temporaries`). Call it only once this run has a whole
    checkpoint of its own: until then the stale ones may be all the user has."""
    removed = []
    root = Path(root)
    remove_temporaries(root)
    for _, path in list_checkpoints(root):
        try:
            ok = read_state(path).get("fingerprint") == fingerprint
        except SiamdiffError:
            ok = False
        if not ok:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def load_checkpoint(path: str | os.PathLike, *, controlnet, unet, optimizer, lr_scheduler, sampler,
                    generator: torch.Generator, rank: int = 0, ema=None) -> dict:
    """Restore everything `save_checkpoint` wrote; returns the state dict (step, history, ...)."""
    path = Path(path)
    state = read_state(path)
    try:
        controlnet.load_state_dict(load_file(str(path / "controlnet.safetensors")), strict=True)
        decoder = load_file(str(path / "unet_decoder.safetensors"))
        missing = set(decoder) - set(dict(unet.named_parameters()))
        if missing:
            raise SiamdiffError(f"{path}: decoder weights {sorted(missing)[:3]} do not fit the backbone UNet")
        unet.load_state_dict(decoder, strict=False)
        _load_optimizer(optimizer, load_file(str(path / "optimizer.safetensors")), state["optimizer_param_groups"])
        lr_scheduler.load_state_dict({**state["lr_scheduler"], "lr_lambdas": [None] * len(optimizer.param_groups)})
        sampler.load_state_dict(state["sampler"])
        rng = load_file(str(path / f"rng-{rank}.safetensors"))
        if ema is not None:
            shadow = load_file(str(path / "ema.safetensors"))
            ema.load_state_dict({**state["ema"], "shadow_params": [shadow[str(i)] for i in range(len(shadow))]})
    except (OSError, RuntimeError, KeyError, ValueError) as e:
        raise SiamdiffError(f"{path}: cannot resume from this checkpoint ({e}); delete it to start afresh") from e
    torch.set_rng_state(rng["torch_cpu"])
    generator.set_state(rng["train_generator"])
    py = state["python_random"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npr = state["numpy_random"]
    np.random.set_state((npr["name"], rng["numpy_keys"].numpy().astype(np.uint32), npr["pos"], npr["has_gauss"],
                         npr["cached_gaussian"]))
    return state
