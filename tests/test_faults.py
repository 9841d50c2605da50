"""Fault injection (issue 7): real SIGKILLs of `train` and `encode`, a full disk on an output write, a
damaged checkpoint. Each test asserts what the user gets afterwards, not just that nothing crashed.

Subprocesses run with one thread; in-process runs use one thread too (tests/conftest.py), so numbers are
bit-comparable across both.
"""
from __future__ import annotations

import csv
import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from project_params import section  # noqa: E402
from siamdiff.utils import SiamdiffError, sha256_tree  # noqa: E402
from test_latent_cache import ENCODE, make_autoencoder  # noqa: E402
from test_train_stage import make_project  # noqa: E402
from tiny_sd import make_prep  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# checkpoint_every / preview_every / keep_checkpoints do not change the numbers (not in the fingerprint)
# (the final preview is always drawn: keep it to one image, one DDIM step)
TRAIN = section("train", steps=6, batch_size=3, lr=1e-3, lr_from_scratch=3e-3, checkpoint_every=1, keep_checkpoints=2,
                preview_every=0, preview_images=1, preview_steps=1, prompt="a polyp", seed=0)


def _yaml(section: str, params: dict) -> str:
    import json

    return f"{section}:\n" + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in params.items())


def _spawn(project: Path, stage: str, log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    with open(log_path, "w") as log:
        return subprocess.Popen([sys.executable, "-m", f"stages.{stage}"], cwd=project, env=env,
                                stdout=subprocess.DEVNULL, stderr=log)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 240.0) -> dict:
    """SIGKILL `proc` as soon as `ready()` is true (polled from a thread); returns what happened."""
    out = {"killed": False}

    def watch():
        t0 = time.monotonic()
        while proc.poll() is None and time.monotonic() - t0 < timeout:
            if ready():
                os.kill(proc.pid, signal.SIGKILL)
                out["killed"] = True
                return
            time.sleep(0.005)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    out["thread"] = th
    return out


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.rglob("*.safetensors")):
        for k, v in load_file(str(f)).items():
            out[f"{f.relative_to(folder).as_posix()}:{k}"] = v
    return out


_REFERENCE: dict = {}


def _reference(tmp_root: Path) -> dict:
    """An uninterrupted tiny training run (in-process, once per session): models/siamese weights."""
    from stages import train as stage

    if not _REFERENCE:
        torch.set_num_threads(1)
        root = tmp_root / "train-reference"
        make_project(root)
        summary = stage.run(dict(TRAIN), root=root, progress=False)
        assert summary["completed_steps"] == TRAIN["steps"] and summary["resumed_from_step"] is None
        _REFERENCE.update(_tensors(root / "models/siamese"))
    return _REFERENCE


def _assert_same_weights(folder: Path, reference: dict) -> None:
    got = _tensors(folder)
    assert got.keys() == reference.keys()
    diff = [k for k in got if not torch.equal(got[k], reference[k])]
    assert not diff, f"{len(diff)} tensors differ from the uninterrupted run, e.g. {diff[:3]}"


def test_sigkill_during_train_resumes_to_identical_weights(tmp_path):
    from siamdiff.train.checkpoints import list_checkpoints
    from stages import train as stage

    make_project(tmp_path)
    (tmp_path / "params.yaml").write_text(_yaml("train", TRAIN))
    ckdir = tmp_path / "models/checkpoints"
    proc = _spawn(tmp_path, "train", tmp_path / "killed.log")
    # SIGKILL as soon as the first checkpoint folder appears (the next step or checkpoint write is under way)
    watch = _kill_when(proc, lambda: ckdir.is_dir() and any(p.name.startswith("step-") for p in ckdir.iterdir()))
    reference = _reference(tmp_path)  # meanwhile (the subprocess spends most of its time importing)
    rc = proc.wait(timeout=300)
    watch["thread"].join()
    log = (tmp_path / "killed.log").read_text()
    assert watch["killed"] and rc == -signal.SIGKILL, f"the train stage was not killed mid-run (rc {rc}):\n{log[-2000:]}"
    done = [s for s, _ in list_checkpoints(ckdir)]
    assert done and max(done) < TRAIN["steps"] and not (tmp_path / "models/siamese").exists()

    summary = stage.run(dict(TRAIN), root=tmp_path, progress=False)  # the rerun `dvc repro` would do
    assert summary["resumed_from_step"] is not None and summary["resumed_from_step"] >= min(done)
    assert summary["completed_steps"] == TRAIN["steps"]
    _assert_same_weights(tmp_path / "models/siamese", reference)
    leftovers = [p.name for p in ckdir.iterdir() if p.name.startswith(".")]
    assert not leftovers, f"temporary checkpoint folders left behind: {leftovers}"


def test_corrupted_checkpoint_is_refused_by_name_and_the_previous_one_used(tmp_path, capsys):
    from siamdiff.train.checkpoints import list_checkpoints, verify_checkpoint
    from stages import train as stage

    make_project(tmp_path)
    params = {**TRAIN, "checkpoint_every": 2}
    stage.run(dict(params), root=tmp_path, progress=False, stop_after=4)  # interrupted after step 4
    ckdir = tmp_path / "models/checkpoints"
    assert [s for s, _ in list_checkpoints(ckdir)] == [2, 4]
    victim = ckdir / "step-000004" / "controlnet.safetensors"
    data = bytearray(victim.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 16):  # flip bytes inside the tensor data: still parses
        data[i] ^= 0xFF
    victim.write_bytes(bytes(data))
    reference = _reference(tmp_path)
    capsys.readouterr()

    summary = stage.run(dict(params), root=tmp_path, progress=False)
    err = capsys.readouterr().err
    assert summary["resumed_from_step"] == 2, err[-2000:]
    refused = [line for line in err.splitlines() if "refused checkpoint" in line]
    assert len(refused) == 1 and str(victim) in refused[0] and "SHA-256" in refused[0], err[-2000:]
    assert "resumed from " + str(ckdir / "step-000002") in err
    assert [s for s, _ in list_checkpoints(ckdir)] == [4, 6]  # the damaged one was rewritten, not kept
    _assert_same_weights(tmp_path / "models/siamese", reference)

    # a truncated file is refused by name too
    step6 = ckdir / "step-000006"
    opt = step6 / "optimizer.safetensors"
    opt.write_bytes(opt.read_bytes()[: opt.stat().st_size // 3])
    with pytest.raises(SiamdiffError, match="optimizer.safetensors") as e:
        verify_checkpoint(step6)
    assert str(opt) in str(e.value)


def test_sigkill_during_encode_never_serves_a_half_written_latent(tmp_path):
    from siamdiff.data.latent_cache import LatentCache
    from stages.encode import run

    params = {**ENCODE, "views": 3, "batch_size": 1}
    proj, cold = tmp_path / "killed", tmp_path / "cold"
    make_prep(proj, n_train=30, n_val=4, n_test=4, size=16)
    make_autoencoder(proj)
    for sub in ("data/prep", "models/autoencoder"):
        shutil.copytree(proj / sub, cold / sub)
    (proj / "params.yaml").write_text(_yaml("encode", params))
    total = 30 * 3 + 4 + 4
    db = proj / "data/latents.lmdb" / "data.mdb"
    proc = _spawn(proj, "encode", tmp_path / "killed.log")
    # kill once a few batches are in (each entry is ~4 KB of safetensors), well before the last
    watch = _kill_when(proc, lambda: db.is_file() and db.stat().st_size > 60_000)
    cold_summary = run(params, cold, progress=False)  # meanwhile: the reference, never interrupted
    assert cold_summary["encoded"] == total
    rc = proc.wait(timeout=300)
    watch["thread"].join()
    log = (tmp_path / "killed.log").read_text()
    assert watch["killed"] and rc == -signal.SIGKILL, f"encode was not killed mid-run (rc {rc}):\n{log[-2000:]}"
    assert not (proj / "data/encoded.csv").exists()

    # what the kill left: only whole entries (LMDB commits a batch or nothing), each passing its checksum
    with LatentCache(proj / "data/latents.lmdb", readonly=True) as cache:
        partial = {k: cache.get(k) for k in cache.keys()}
        assert cache.corrupt == 0
    assert 0 < len(partial) < total and all(v is not None for v in partial.values())

    again = run(params, proj, progress=False)  # the rerun reuses the whole entries, encodes the rest
    assert again["hits"] == len(partial) and again["encoded"] == total - len(partial) and again["corrupt"] == 0

    rows = list(csv.DictReader(open(proj / "data/encoded.csv")))
    assert (proj / "data/encoded.csv").read_text() == (cold / "data/encoded.csv").read_text()
    assert len(rows) == total
    with LatentCache(proj / "data/latents.lmdb", readonly=True) as a, \
            LatentCache(cold / "data/latents.lmdb", readonly=True) as b:
        for r in rows:
            got, want = a.get(r["key"]), b.get(r["key"])
            assert got is not None, f"{r['id']} view {r['view']}: unreadable after the rerun"
            assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want), r["id"]
        assert a.corrupt == 0


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_while_writing_a_folder_output(tmp_path, monkeypatch):
    """preprocess writes data/prep (several files) atomically: ENOSPC on the 2nd file -> one clear error,
    the previous data/prep byte-identical, no temporary folder left."""
    import safetensors.numpy

    from siamdiff.data.preprocess import run
    from siamdiff.data.sources import ingest
    from test_data_preprocess import _split_csv

    manifest = ingest({"sources": [{"type": "synthetic", "seed": 0, "patients": 4, "frames_per_patient": 1,
                                    "datasets": ["synth-b"]}]}, raw_dir=tmp_path / "raw", plot_path=None)
    _split_csv(tmp_path / "split.csv", manifest)
    out = tmp_path / "prep"
    kw = dict(raw_dir=tmp_path / "raw", split_csv=tmp_path / "split.csv", out_dir=out)
    run({"size": 16}, **kw)
    before = sha256_tree(out)

    real, calls = safetensors.numpy.save_file, {"n": 0}

    def fills_up(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # the first split file is written, the disk fills on the second
            _enospc()
        return real(*a, **k)

    monkeypatch.setattr(safetensors.numpy, "save_file", fills_up)
    with pytest.raises(SiamdiffError) as e:
        run({"size": 32}, **kw)  # different params: a successful write would have changed data/prep
    msg = str(e.value)
    assert msg.startswith(f"{out}: no space left on device") and "free disk space" in msg, msg
    assert sha256_tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prep", "raw", "split.csv"], "temporary left behind"


def split_project_with_outputs(tmp_path, monkeypatch) -> list:
    """A project in `tmp_path` (the cwd) whose split stage has run once: its two outputs, which a failing rerun
    must leave unchanged. params.yaml then asks for other fractions, so a successful rerun would change them."""
    from siamdiff.data.sources import ingest
    from siamdiff.utils import main_guard
    from stages import split

    ingest({"sources": [{"type": "synthetic", "seed": 0, "patients": 8, "frames_per_patient": 1,
                         "datasets": ["synth-b"]}]}, raw_dir=tmp_path / "data/raw", plot_path=None)
    (tmp_path / "params.yaml").write_text("split:\n  fractions: [0.5, 0.25, 0.25]\n")
    monkeypatch.chdir(tmp_path)
    main_guard("split", split.main)
    outs = [tmp_path / "data/split.csv", tmp_path / "data/split-hashes.csv"]
    (tmp_path / "params.yaml").write_text("split:\n  fractions: [0.4, 0.3, 0.3]\n")
    return outs


def test_disk_full_in_a_stage_gives_one_line_and_keeps_outputs(tmp_path, monkeypatch, capsys):
    """The split stage under main_guard: ENOSPC on its first output -> exit 1 and exactly one error line
    naming data/split.csv; both previous outputs unchanged; a raw ENOSPC elsewhere is one line too."""
    import pathlib

    from siamdiff.utils import main_guard
    from stages import split

    outs = split_project_with_outputs(tmp_path, monkeypatch)
    before = [p.read_bytes() for p in outs]

    real = pathlib.Path.write_text

    def fills_up(self, *a, **k):
        if self.name.startswith(".split"):
            _enospc()
        return real(self, *a, **k)

    monkeypatch.setattr(pathlib.Path, "write_text", fills_up)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main_guard("split", split.main)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert e.value.code == 1 and len(errors) == 1, err
    assert errors[0].startswith("[split] error: data/split.csv: no space left on device"), errors
    assert "Traceback" not in err
    assert [p.read_bytes() for p in outs] == before
    assert not [p.name for p in (tmp_path / "data").iterdir() if p.name.startswith(".")]

    # an ENOSPC raised outside atomic_path (e.g. a library writing in place) is one line naming its file
    def writes_in_place():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "data/latents.lmdb/data.mdb")

    with pytest.raises(SystemExit):
        main_guard("encode", writes_in_place)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["[encode] error: data/latents.lmdb/data.mdb: no space left on device (No space left on "
                   "device); free disk space and rerun"]
