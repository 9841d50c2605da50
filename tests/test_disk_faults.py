"""Issue 14, item 7: disk and permission faults are one-line messages naming the path, and the previous
output stays whole: a file-size limit (EFBIG, real, via RLIMIT_FSIZE in a subprocess) while writing the
latent cache, a full disk while writing a checkpoint, a full LMDB map, a read-only / unwritable output folder.
"""
from __future__ import annotations

import errno
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from project_params import section  # noqa: E402
from siamdiff.utils import SiamdiffError, sha256_file, sha256_tree  # noqa: E402
from test_faults import split_project_with_outputs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _yaml(name: str, params: dict) -> str:
    return f"{name}:\n" + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in params.items())


def _entries(db: Path) -> dict:
    from siamdiff.data.latent_cache import LatentCache

    with LatentCache(db, readonly=True) as cache:
        out = {k: cache.get(k) for k in cache.keys()}
        assert cache.corrupt == 0
    return out


def test_file_size_limit_while_writing_the_latent_cache(tmp_path):
    """A real EFBIG: `encode` runs under RLIMIT_FSIZE just above data.mdb's size. main_guard ignores SIGXFSZ
    (else the kernel kills the stage silently), so the write fails: one line naming data/latents.lmdb,
    exit 1, the cache's earlier entries whole, data/encoded.csv unchanged; the rerun then completes."""
    from stages.encode import run
    from test_latent_cache import make_autoencoder
    from tiny_sd import make_prep

    make_prep(tmp_path, n_train=4, n_val=1, n_test=1, size=16)
    make_autoencoder(tmp_path)
    first = run(section("encode", views=1, batch_size=4), tmp_path, progress=False)
    db, csv_path = tmp_path / "data/latents.lmdb", tmp_path / "data/encoded.csv"
    before, csv_before = _entries(db), sha256_file(csv_path)
    assert len(before) == first["entries"] == 6

    params = section("encode", views=3, batch_size=4)
    (tmp_path / "params.yaml").write_text(_yaml("encode", params))
    limit = (db / "data.mdb").stat().st_size + 1024

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    res = subprocess.run([sys.executable, "-m", "stages.encode"], cwd=tmp_path, env=env, preexec_fn=limited,
                         capture_output=True, text=True, timeout=300)
    errors = [line for line in res.stderr.splitlines() if "error" in line.lower()]
    assert res.returncode == 1, f"rc {res.returncode} (-25 = killed by SIGXFSZ):\n{res.stderr[-2000:]}"
    assert "Traceback" not in res.stderr and len(errors) == 1, res.stderr[-2000:]
    assert errors[0].startswith("[encode] error: data/latents.lmdb: writing the latent cache failed"), errors
    assert "file-size limit" in errors[0] and "the entries written before are kept" in errors[0], errors

    after = _entries(db)
    assert after.keys() == before.keys() and all(
        all(torch.equal(after[k][n], before[k][n]) for n in before[k]) for k in before)
    assert sha256_file(csv_path) == csv_before
    again = run(params, tmp_path, progress=False)  # the limit lifted: the rerun reuses the whole entries
    assert again["hits"] == 6 and again["encoded"] == 8 and again["corrupt"] == 0


def test_disk_full_while_writing_a_checkpoint_keeps_the_previous_ones(tmp_path, monkeypatch):
    """ENOSPC inside safetensors (a Rust error, not an OSError) while writing step 3's checkpoint: one line
    naming that checkpoint; steps 1-2 stay whole and the rerun resumes from step 2."""
    from safetensors import SafetensorError

    from siamdiff.train import checkpoints as ckpt
    from stages import train as stage
    from test_train_stage import make_project

    torch.set_num_threads(1)
    make_project(tmp_path)
    params = section("train", steps=3, batch_size=3, checkpoint_every=1, keep_checkpoints=0, preview_every=0,
                     preview_images=1, preview_steps=1, prompt="a polyp", seed=0)
    real, calls = ckpt.save_file, {"n": 0}

    def fills_up(tensors, path, *a, **k):
        if Path(path).parent.name.startswith(".step-000003."):
            calls["n"] += 1
            if calls["n"] == 2:  # one file of the checkpoint written, the disk fills on the next
                raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real(tensors, path, *a, **k)

    monkeypatch.setattr(ckpt, "save_file", fills_up)
    ckdir = tmp_path / "models/checkpoints"
    with pytest.raises(SiamdiffError) as e:
        stage.run(dict(params), root=tmp_path, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{ckdir / 'step-000003'}: no space left on device"), msg
    assert "free disk space" in msg and "no step-000003 was written" in msg, msg
    assert [s for s, _ in ckpt.list_checkpoints(ckdir)] == [1, 2]
    for _, p in ckpt.list_checkpoints(ckdir):
        ckpt.verify_checkpoint(p)
    assert not [p.name for p in ckdir.iterdir() if p.name.startswith(".")], "temporary checkpoint left behind"
    assert not (tmp_path / "models/siamese").exists()

    monkeypatch.setattr(ckpt, "save_file", real)
    out = stage.run(dict(params), root=tmp_path, progress=False)
    assert out["resumed_from_step"] == 2 and (tmp_path / "models/siamese").is_dir()


def test_latent_cache_map_full_is_one_line_and_keeps_entries(tmp_path, monkeypatch):
    import siamdiff.data.latent_cache as lc

    monkeypatch.setattr(lc, "MAP_SIZE", 64 * 1024)
    small = {"latent_mean": torch.zeros(4, 2, 2), "latent_std": torch.ones(4, 2, 2),
             "image": torch.zeros(3, 4, 4), "mask": torch.zeros(4, 4, dtype=torch.uint8)}
    with lc.LatentCache(tmp_path / "db") as cache:
        cache.put("a", small)
        with pytest.raises(SiamdiffError) as e:
            cache.put_many((f"big{i}", {**small, "image": torch.rand(3, 64, 64)}) for i in range(8))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{tmp_path / 'db'}: the latent cache is full (MDB_MAP_FULL"), msg
    assert list(_entries(tmp_path / "db")) == ["a"]


def _unwritable(folder: Path, monkeypatch, code: int) -> None:
    """Make `folder` refuse new files: really (chmod) where permissions apply, else (root, which ignores
    them; or EROFS, which needs a mount) by failing the creation of files in it with `code`."""
    import tempfile

    if code == errno.EACCES and os.geteuid() != 0:
        folder.chmod(0o555)
        return
    real = tempfile.mkdtemp

    def refuse(*a, dir=None, **k):
        if dir is not None and Path(dir).resolve() == folder.resolve():
            raise OSError(code, os.strerror(code), os.path.join(str(dir), ".x.tmp"))
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)


@pytest.mark.parametrize("code, words", [(errno.EACCES, "permission denied"), (errno.EPERM, "permission denied"),
                                         (errno.EROFS, "the file system is read-only")])
def test_unwritable_output_folder_is_one_line_and_keeps_the_output(tmp_path, monkeypatch, capsys, code, words):
    """The split stage under main_guard with data/ not writable: exit 1, one line naming data/split.csv,
    both previous outputs unchanged."""
    from siamdiff.utils import main_guard
    from stages import split

    outs = split_project_with_outputs(tmp_path, monkeypatch)
    before = [sha256_file(p) for p in outs]
    _unwritable(tmp_path / "data", monkeypatch, code)
    capsys.readouterr()
    try:
        with pytest.raises(SystemExit) as e:
            main_guard("split", split.main)
    finally:
        (tmp_path / "data").chmod(0o755)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert e.value.code == 1 and "Traceback" not in err and len(errors) == 1, err
    line = errors[0]
    assert line.startswith(f"[split] error: data/split.csv: cannot write it: {words}"), line
    assert "the previous split.csv is unchanged" in line and "rerun" in line, line
    assert [sha256_file(p) for p in outs] == before


def test_faults_outside_atomic_writes_are_one_line_naming_the_file(capsys):
    """An OSError raised by a library writing in place (EFBIG, EACCES, EROFS), or a Rust library's
    `(os error N)`: one line, exit 1."""
    from safetensors import SafetensorError

    from siamdiff.utils import main_guard

    def raises(exc):
        def fn():
            raise exc
        return fn

    cases = [
        (OSError(errno.EFBIG, os.strerror(errno.EFBIG), "plots/train/live/metrics.json"),
         "[train] error: plots/train/live/metrics.json: file too large to write (File too large): a file-size "
         "limit (`ulimit -f`) or the file system's largest file was reached; raise the limit or write to another "
         "file system and rerun"),
        (PermissionError(errno.EACCES, os.strerror(errno.EACCES), "models/checkpoints/step-000002"),
         "[train] error: models/checkpoints/step-000002: cannot write it: permission denied (Permission denied); "
         "make models/checkpoints and step-000002 writable by this user, and rerun"),
        (OSError(errno.EROFS, os.strerror(errno.EROFS), "metrics/train.json"),
         "[train] error: metrics/train.json: cannot write it: the file system is read-only; remount it "
         "read-write or run from a writable copy of the project, and rerun"),
        (SafetensorError("Error while serializing: I/O error: File too large (os error 27)"),
         "[train] error: an output file: file too large to write (File too large): a file-size limit "
         "(`ulimit -f`) or the file system's largest file was reached; raise the limit or write to another "
         "file system and rerun"),
    ]
    for exc, want in cases:
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            main_guard("train", raises(exc))
        assert e.value.code == 1 and capsys.readouterr().err.strip().splitlines() == [want]
    with pytest.raises(OSError):  # other OSErrors are not disk faults: not disguised as one
        main_guard("train", raises(OSError(errno.ECONNREFUSED, "refused")))
    assert sha256_tree  # (imported for the tests above)
