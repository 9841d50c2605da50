"""DVC against a real S3 server (rclone serve s3), in a temp git+DVC project with two toy stages.

The toy project is the real arrangement in miniature: `ingest` reads the published dataset with the
`type: s3` source and declares the S3 prefix as an external dependency (`remote://s3data/...`);
`train` writes `models/siamese` and a persisted `models/checkpoints`. Outputs go to a DVC remote on the
same server (custom endpoint), keys only in `.dvc/config.local`.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from contextlib import chdir
from pathlib import Path

import pytest

from siamdiff.storage import layout
from siamdiff.storage.credentials import make_client
from siamdiff.storage.publish import publish
from siamdiff.storage.server import free_port, start_server

try:  # tests/ as a package (python -m pytest from the root) or as a plain folder (pytest)
    from tests.s3_fixture import make_raw, s3_server  # noqa: F401  (fixtures)
except ImportError:
    from s3_fixture import make_raw, s3_server  # noqa: F401

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
N_FILES = 60   # objects in the interrupted push (killed after KILL_AT arrived)
KILL_AT = 45

INGEST_PY = """\
from siamdiff.data.sources import ingest
from siamdiff.utils import load_params, main_guard
main_guard("ingest", lambda: ingest(load_params("ingest"), raw_dir="data/raw", plot_path=None))
"""

TRAIN_PY = """\
import hashlib, json, pathlib
from siamdiff.utils import load_params
p = load_params(None)["train"]  # a toy section, not the project's train schema
m = json.loads(pathlib.Path("data/raw/manifest-v1.json").read_text())
h = hashlib.sha256(json.dumps([m["items"], p], sort_keys=True).encode()).digest()
out = pathlib.Path("models/siamese"); (out / "controlnet").mkdir(parents=True, exist_ok=True)
(out / "controlnet" / "weights.safetensors").write_bytes(h * 512)
(out / "siamdiff.json").write_text(json.dumps({"params": p}))
ck = pathlib.Path("models/checkpoints/step-000001"); ck.mkdir(parents=True, exist_ok=True)
(ck / "state.json").write_text(json.dumps({"step": 1}))
pathlib.Path("metrics").mkdir(exist_ok=True)
pathlib.Path("metrics/train.json").write_text(json.dumps({"loss": p["lambda_c"] / 10}))
"""

DVC_YAML = """\
stages:
  ingest:
    cmd: python ingest.py
    deps:
      - remote://s3data/{prefix}
      - ingest.py
    params:
      - ingest
    outs:
      - data/raw
  train:
    cmd: python train.py
    deps:
      - data/raw
      - train.py
    params:
      - train
    outs:
      - models/siamese
      - models/checkpoints:
          persist: true
    metrics:
      - metrics/train.json:
          cache: false
"""


def dvc_env() -> dict:
    """No AWS credentials in the environment (they are in .dvc/config.local); retries bounded."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_EC2_METADATA_DISABLED="true", AWS_MAX_ATTEMPTS="2", AWS_RETRY_MODE="standard",
               DVC_NO_ANALYTICS="1", PYTHONPATH=str(ROOT), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.org", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.org")
    return env


def run(cwd: Path, *args, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "dvc"), *args[1:]] if args[0] == "dvc" else list(args)
    r = subprocess.run(cmd, cwd=cwd, env=dvc_env(), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def write_dvc_config(project: Path, endpoint: str, key: str, secret: str, store: str) -> None:
    """What `dvc remote add/modify` would write: endpoint + timeouts in .dvc/config, keys in config.local."""
    (project / ".dvc" / "config").write_text(
        "[core]\n    remote = storage\n    autostage = true\n"
        f"['remote \"storage\"']\n    url = s3://siamdiff/{store}\n    endpointurl = {endpoint}\n"
        "    connect_timeout = 2\n    read_timeout = 20\n"
        f"['remote \"s3data\"']\n    url = s3://siamdiff\n    endpointurl = {endpoint}\n"
        "    connect_timeout = 2\n    read_timeout = 20\n")
    write_keys(project, key, secret)


def write_keys(project: Path, key: str, secret: str) -> None:
    path = project / ".dvc" / "config.local"
    path.write_text("".join(f"['remote \"{r}\"']\n    access_key_id = {key}\n    secret_access_key = {secret}\n"
                            for r in ("storage", "s3data")))
    path.chmod(0o600)


def tree_hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    """The same environment in-process (for the DVC API calls below) as for the `dvc` subprocesses."""
    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k, raising=False)
    for k, v in dvc_env().items():
        if k.startswith(("AWS_", "DVC_")):
            monkeypatch.setenv(k, v)


def status(project: Path, cloud: bool = False) -> dict:
    """`dvc status [-c] --json`, through DVC's API in this process (saves a DVC start-up per call)."""
    from dvc.repo import Repo

    with chdir(project), Repo(".") as repo:
        return repo.status(cloud=cloud)


def dvc_init(project: Path) -> None:
    from dvc.repo import Repo

    Repo.init(str(project)).close()


def checkout(project: Path) -> None:
    from dvc.repo import Repo

    with chdir(project), Repo(".") as repo:
        repo.checkout(force=True)


@pytest.fixture(scope="module")
def project(s3_server, tmp_path_factory):
    """A committed toy project whose pipeline has run once on data published to the S3 server."""
    base = tmp_path_factory.mktemp("dvcproj")
    prefix = f"p-{secrets.token_hex(3)}/siamese-data"
    raw, split = make_raw(base / "publisher")
    publish(split, raw, f"s3://siamdiff/{prefix}", settings=s3_server.settings(), progress=False)

    proj = base / "proj"
    proj.mkdir()
    run(proj, "git", "init", "-q")
    dvc_init(proj)
    write_dvc_config(proj, s3_server.endpoint_url, s3_server.access_key_id, s3_server.secret_access_key,
                     f"dvcstore-{secrets.token_hex(3)}")
    (proj / "ingest.py").write_text(INGEST_PY)
    (proj / "train.py").write_text(TRAIN_PY)
    (proj / "dvc.yaml").write_text(DVC_YAML.format(prefix=prefix))
    (proj / "params.yaml").write_text(
        f"ingest:\n  input_path: remote://s3data/{prefix}\n  sources:\n    - type: s3\n      url: s3://siamdiff/{prefix}\n      remote: s3data\n"
        "train:\n  lambda_c: 1.0\n")
    run(proj, "dvc", "repro")
    run(proj, "git", "add", "-A")
    run(proj, "git", "commit", "-qm", "toy pipeline")
    committed = run(proj, "git", "ls-files").stdout
    assert "config.local" not in committed
    assert s3_server.secret_access_key not in (proj / ".dvc" / "config").read_text()
    return {"path": proj, "prefix": prefix, "raw": raw}


def test_push_fresh_clone_pull_identical(project, s3_server, tmp_path):
    proj = project["path"]
    run(proj, "dvc", "push")
    assert status(proj, cloud=True) == {}

    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(proj), str(clone))
    assert not (clone / ".dvc" / "config.local").exists()      # keys never travel with git
    write_keys(clone, s3_server.access_key_id, s3_server.secret_access_key)   # dvc remote modify --local ...
    run(clone, "dvc", "pull", "models/siamese")                 # just the generator
    assert tree_hashes(clone / "models" / "siamese") == tree_hashes(proj / "models" / "siamese")
    assert not (clone / "models" / "checkpoints").exists()
    run(clone, "dvc", "pull", "train")                          # the train stage's outs: + checkpoints
    assert tree_hashes(clone / "models") == tree_hashes(proj / "models")
    run(clone, "dvc", "pull")
    assert tree_hashes(clone / "data" / "raw") == tree_hashes(proj / "data" / "raw")
    assert status(clone) == {}                                   # up to date: `dvc repro` would run nothing


def test_edited_object_marks_only_ingest_changed(project, s3_server):
    proj, prefix = project["path"], project["prefix"]
    assert status(proj) == {}
    c = make_client(s3_server.settings())
    m = json.loads(c.get_object(Bucket="siamdiff", Key=f"{prefix}/{layout.MANIFEST}")["Body"].read())
    key = f"{prefix}/{m['items'][0]['image']}"
    original = c.get_object(Bucket="siamdiff", Key=key)["Body"].read()
    c.put_object(Bucket="siamdiff", Key=key, Body=original[:-8] + b"\x00" * 8)
    try:
        st = status(proj)
        assert set(st) == {"ingest"}, st
        assert st["ingest"] == [{"changed deps": {f"remote://s3data/{prefix}": "modified"}}]
        r = run(proj, "dvc", "repro", "ingest", check=False)     # the stage refuses the edited object, by key
        assert r.returncode != 0 and f"s3://siamdiff/{key}: SHA-256 differs" in r.stdout + r.stderr
    finally:
        c.put_object(Bucket="siamdiff", Key=key, Body=original)
    checkout(proj)                                              # the failed repro removed data/raw
    assert status(proj) == {}


def test_dvc_faults_fail_fast_with_clear_message(project, s3_server, tmp_path):
    proj = project["path"]
    shutil.copytree(proj, tmp_path / "p", symlinks=True)
    p = tmp_path / "p"
    timings = {}
    write_keys(p, s3_server.access_key_id, "wrong-secret")
    t = time.monotonic()
    r = run(p, "dvc", "push", check=False)
    timings["dvc push/wrong_credentials"] = round(time.monotonic() - t, 2)
    assert r.returncode != 0 and ("403" in r.stderr or "Forbidden" in r.stderr), r.stderr
    assert "wrong-secret" not in r.stdout + r.stderr

    write_keys(p, s3_server.access_key_id, s3_server.secret_access_key)
    dead = f"http://127.0.0.1:{free_port()}"
    cfg = (p / ".dvc" / "config").read_text().replace(s3_server.endpoint_url, dead)
    (p / ".dvc" / "config").write_text(cfg)
    t = time.monotonic()
    r = run(p, "dvc", "push", check=False)
    timings["dvc push/unreachable"] = round(time.monotonic() - t, 2)
    assert r.returncode != 0 and "Could not connect to the endpoint URL" in r.stderr, r.stderr
    print("dvc fault timings (s):", json.dumps(timings))
    # bounded retries fail in 2.5-3 s on a quiet machine and ~5.5 s with the tests on every core; botocore's
    # default retries (5 attempts with back-off, mostly sleeping) take ~16 s whatever the load
    assert all(v < 11 for v in timings.values()), timings


def test_server_killed_mid_push_then_rerun_is_clean(tmp_path):
    """SIGKILL the S3 server while `dvc push` uploads; restart it; push again -> `dvc status -c` clean, all intact."""
    srv = start_server(tmp_path / "s3", "kill-" + secrets.token_hex(3), secrets.token_urlsafe(16))
    try:
        proj = tmp_path / "proj"
        proj.mkdir()
        run(proj, "git", "init", "-q")
        dvc_init(proj)
        write_dvc_config(proj, srv.endpoint_url, srv.access_key_id, srv.secret_access_key, "dvcstore")
        data = proj / "data" / "many"
        data.mkdir(parents=True)
        for i in range(N_FILES):
            (data / f"f{i:04d}.bin").write_bytes(os.urandom(16 << 10))
        from dvc.repo import Repo

        with chdir(proj), Repo(".") as repo:
            repo.add("data/many")
        store = tmp_path / "s3" / "siamdiff" / "dvcstore"

        def uploaded() -> int:
            return sum(1 for q in store.rglob("*") if q.is_file() and not q.name.startswith(".rclone"))

        killed = {}

        def killer():
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if store.exists() and uploaded() >= KILL_AT:
                    killed["at"] = uploaded()
                    srv.kill()
                    return
                time.sleep(0.01)

        th = threading.Thread(target=killer)
        th.start()
        t0 = time.monotonic()
        r = run(proj, "dvc", "push", "-j", "2", check=False)
        th.join()
        print(f"interrupted push took {time.monotonic() - t0:.1f}s")
        assert "at" in killed, "the push finished before the server could be killed"
        assert r.returncode != 0, r.stdout + r.stderr            # the push saw the server die
        assert 0 < uploaded() < N_FILES + 1

        t0 = time.monotonic()
        srv.restart()
        st = status(proj, cloud=True)
        print(f"restart+status {time.monotonic() - t0:.1f}s")
        assert st, "dvc status -c should report objects missing from the remote after the interrupted push"
        t0 = time.monotonic()
        run(proj, "dvc", "push", "-j", "2")
        print(f"push2 {time.monotonic() - t0:.1f}s")
        assert status(proj, cloud=True) == {}
        objects = [q for q in store.rglob("*") if q.is_file() and not q.name.startswith(".rclone")]
        assert len(objects) == N_FILES + 1                         # the files + the .dir listing
        for q in objects:                                          # every object intact: content == its name
            assert hashlib.md5(q.read_bytes()).hexdigest() == q.parent.name + q.name.removesuffix(".dir")
        print(f"killed the server after {killed['at']} of {N_FILES + 1} objects; rerun pushed the rest")
    finally:
        srv.stop()


def test_exp_run_set_param(project):
    """`dvc exp run -S train.lambda_c=...` reruns only train and records the metric; the workspace is kept."""
    proj = project["path"]
    r = run(proj, "dvc", "exp", "run", "-S", "train.lambda_c=2", "--name", "lc2")
    assert "Running stage 'train'" in r.stdout and "Running stage 'ingest'" not in r.stdout
    diff = json.loads(run(proj, "dvc", "metrics", "diff", "--json", "HEAD").stdout or "{}")
    assert diff["metrics/train.json"]["loss"]["new"] == pytest.approx(0.2)
    run(proj, "git", "checkout", "--", "params.yaml", "dvc.lock", "metrics/train.json")
    checkout(proj)
    assert status(proj) == {}
