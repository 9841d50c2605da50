"""S3 storage against a real S3 server (rclone serve s3): publish, ingest, verification, faults, keys."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from siamdiff.storage import layout
from siamdiff.storage.credentials import S3Settings, make_client, resolve
from siamdiff.storage.ingest import read_manifest, s3_items, verify_remote
from siamdiff.storage.publish import list_objects, publish
from siamdiff.storage.server import free_port, start_server
from siamdiff.utils import SiamdiffError, sha256_bytes

try:  # tests/ as a package (python -m pytest from the root) or as a plain folder (pytest)
    from tests.s3_fixture import s3_env, s3_server, toy_dataset  # noqa: F401  (fixtures)
except ImportError:
    from s3_fixture import s3_env, s3_server, toy_dataset  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


def _url(request) -> str:
    """A fresh prefix per test, so tests sharing the session server never see each other's objects."""
    return f"s3://siamdiff/t-{request.node.name.replace('_', '-').lower()[:40]}/siamese-data"


# ------------------------------------------------------------------------------------------------ keys
@pytest.mark.parametrize("key", ["../etc/passwd", "a/../../b", "/abs/key", "a//b", "./a", "a/./b", "C:/x",
                                 "a\\b", "", "s3://b/k"])
def test_unsafe_keys_are_refused(key):
    with pytest.raises(SiamdiffError, match="refused"):
        layout.safe_key(key)


def test_layout_keys_and_urls():
    assert layout.image_key("train", "kvasir-seg", "kvasir-seg-p1-0") == "train/kvasir-seg/img/kvasir-seg-p1-0.png"
    assert layout.mask_key("test", "ds", "ds-p-1") == "test/ds/mask/ds-p-1_mask.png"
    assert layout.parse_s3_url("s3://my-bucket/siamese-data/") == ("my-bucket", "siamese-data")
    for bad in ("s3://b/../x", "s3:///x", "http://b/x", "s3://bucket//abs"):
        with pytest.raises(SiamdiffError):
            layout.parse_s3_url(bad)
    with pytest.raises(SiamdiffError):
        layout.image_key("train", "..", "x")
    with pytest.raises(SiamdiffError):
        layout.image_key("holdout", "ds", "x")


def test_publish_refuses_manifest_paths_outside_raw(s3_server, toy_dataset, request):
    raw, split = toy_dataset
    m = json.loads((raw / "manifest-v1.json").read_text())
    m["items"][0]["image"] = "../../etc/passwd"
    (raw / "manifest-v1.json").write_text(json.dumps(m))
    with pytest.raises(SiamdiffError, match="refused"):
        publish(split, raw, _url(request), settings=s3_server.settings(), progress=False)
    m["items"][0]["image"] = "/etc/passwd"
    (raw / "manifest-v1.json").write_text(json.dumps(m))
    with pytest.raises(SiamdiffError, match="refused"):
        publish(split, raw, _url(request), settings=s3_server.settings(), progress=False)


def test_ingest_refuses_crafted_manifest_keys(s3_server, toy_dataset, request):
    raw, split = toy_dataset
    url = _url(request)
    publish(split, raw, url, settings=s3_server.settings(), progress=False)
    bucket, prefix = layout.parse_s3_url(url)
    c = make_client(s3_server.settings())
    key = f"{prefix}/{layout.MANIFEST}"
    good = c.get_object(Bucket=bucket, Key=key)["Body"].read()
    for evil in ("../outside/x.png", "/abs/x.png"):
        m = json.loads(good)
        m["items"][0]["image"] = evil
        c.put_object(Bucket=bucket, Key=key, Body=json.dumps(m).encode())
        with pytest.raises(SiamdiffError, match="refused"):
            list(s3_items({"url": url}, settings=s3_server.settings()))


# ------------------------------------------------------------------------------------------------ publish/ingest
def test_publish_ingest_round_trip_identical_manifest(s3_env, toy_dataset, tmp_path, request):
    """publish -> `type: s3` ingest through the real ingest code -> identical items (ids, hashes, sizes)."""
    from siamdiff.data.sources import ingest

    raw, split = toy_dataset
    url = _url(request)
    out = publish(split, raw, url, progress=False)       # endpoint + keys from the environment
    assert out["uploaded"] == out["objects"] == 16 and out["manifest_uploaded"]

    c = make_client(resolve())
    bucket, prefix = layout.parse_s3_url(url)
    keys = set(list_objects(c, bucket, prefix))
    published = read_manifest(c, bucket, prefix, resolve())
    assert len(keys) == 17 and f"{prefix}/{layout.MANIFEST}" in keys
    for it in published["items"]:                        # every object carries its manifest SHA-256
        for rel, sha in ((it["image"], it["image_sha256"]), (it["mask"], it["mask_sha256"])):
            assert sha256_bytes(c.get_object(Bucket=bucket, Key=f"{prefix}/{rel}")["Body"].read()) == sha

    m2 = ingest({"sources": [{"type": "s3", "url": url}]}, raw_dir=tmp_path / "raw2", plot_path=None)
    m1 = json.loads((raw / "manifest-v1.json").read_text())
    by_id = lambda items: sorted(items, key=lambda x: x["id"])  # noqa: E731
    assert by_id(m1["items"]) == by_id(m2["items"])
    assert m1["counts"] == m2["counts"]
    for it in m1["items"]:
        assert (tmp_path / "raw2" / it["image"]).read_bytes() == (raw / it["image"]).read_bytes()

    # split and dataset filters
    items = list(s3_items({"url": url, "splits": ["train"]}))
    assert items and {i.dataset for i in items} == {"toy"}
    assert len(items) == sum(1 for it in published["items"] if it["split"] == "train")


def test_publish_is_idempotent_and_resumable(s3_server, toy_dataset, request):
    raw, split = toy_dataset
    url, s = _url(request), s3_server.settings()
    first = publish(split, raw, url, settings=s, progress=False)
    again = publish(split, raw, url, settings=s, progress=False)
    assert again["uploaded"] == 0 and again["skipped"] == 16 and not again["manifest_uploaded"]
    assert again["manifest_sha256"] == first["manifest_sha256"]

    # an interrupted publish: some objects and the manifest (written last) never arrived, one is corrupt
    bucket, prefix = layout.parse_s3_url(url)
    c = make_client(s)
    keys = sorted(k for k in list_objects(c, bucket, prefix) if k.endswith(".png"))
    for k in keys[:5]:
        c.delete_object(Bucket=bucket, Key=k)
    c.put_object(Bucket=bucket, Key=keys[6], Body=b"torn")
    c.delete_object(Bucket=bucket, Key=f"{prefix}/{layout.MANIFEST}")
    with pytest.raises(SiamdiffError, match="not found"):
        list(s3_items({"url": url}, settings=s))          # no manifest = not (completely) published
    resumed = publish(split, raw, url, settings=s, progress=False)
    assert resumed["uploaded"] == 6 and resumed["manifest_uploaded"]
    assert verify_remote(url, settings=s)["items"]


def test_ingest_names_missing_and_changed_objects(s3_server, toy_dataset, request):
    raw, split = toy_dataset
    url, s = _url(request), s3_server.settings()
    publish(split, raw, url, settings=s, progress=False)
    bucket, prefix = layout.parse_s3_url(url)
    c = make_client(s)
    m = read_manifest(c, bucket, prefix, s)
    victim = f"{prefix}/{m['items'][3]['mask']}"
    original = c.get_object(Bucket=bucket, Key=victim)["Body"].read()

    c.put_object(Bucket=bucket, Key=victim, Body=original + b"\0")
    with pytest.raises(SiamdiffError, match=f"s3://{bucket}/{victim}: SHA-256 differs"):
        list(s3_items({"url": url}, settings=s))

    c.delete_object(Bucket=bucket, Key=victim)
    with pytest.raises(SiamdiffError, match=f"s3://{bucket}/{victim}: listed in the manifest but missing"):
        list(s3_items({"url": url}, settings=s))

    c.put_object(Bucket=bucket, Key=victim, Body=original)
    assert len(list(s3_items({"url": url}, settings=s))) == 8


# ------------------------------------------------------------------------------------------------ faults
def _timed(fn):
    t = time.monotonic()
    with pytest.raises(SiamdiffError) as e:
        fn()
    return time.monotonic() - t, str(e.value)


def test_wrong_credentials_and_unreachable_endpoint_fail_fast(s3_server, toy_dataset, request):
    raw, split = toy_dataset
    url = _url(request)
    wrong = s3_server.settings(secret_access_key="not-the-secret", source="test (wrong secret)")
    dead = s3_server.settings(endpoint_url=f"http://127.0.0.1:{free_port()}")
    timings = {}
    for name, s in (("wrong_credentials", wrong), ("unreachable", dead)):
        for op, fn in (("publish", lambda s=s: publish(split, raw, url, settings=s, progress=False)),
                       ("ingest", lambda s=s: list(s3_items({"url": url}, settings=s)))):
            dt, msg = _timed(fn)
            timings[f"{op}/{name}"] = round(dt, 2)
            # bounded retries: ~1-3 s quiet, more on a loaded machine; botocore's default back-off sleeps ~16 s
            # whatever the load (the same bound as test_s3_dvc's, for the same reason)
            assert dt < 11, (op, name, dt)
            if name == "wrong_credentials":
                assert "rejected the credentials" in msg and "not-the-secret" not in msg
            else:
                assert "cannot reach the S3 endpoint" in msg and s.endpoint_url in msg
    print("fault timings (s):", json.dumps(timings))


# ------------------------------------------------------------------------------------------------ credentials
def test_credentials_from_dvc_config_local_never_in_repr(tmp_path, monkeypatch):
    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k, raising=False)
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text(
        "[core]\n    remote = store\n['remote \"store\"']\n    url = s3://b/dvc\n    endpointurl = http://127.0.0.1:9\n"
        "    connect_timeout = 1\n")
    (tmp_path / ".dvc" / "config.local").write_text(
        "['remote \"store\"']\n    access_key_id = AKLOCAL\n    secret_access_key = sup3r-s3cret\n")
    s = resolve(project=tmp_path)
    assert (s.access_key_id, s.secret_access_key, s.endpoint_url) == ("AKLOCAL", "sup3r-s3cret", "http://127.0.0.1:9")
    assert s.connect_timeout == 1 and "sup3r-s3cret" not in repr(s) and "AKLOCAL" not in repr(s)
    assert os.environ["AWS_EC2_METADATA_DISABLED"] == "true"
    assert resolve(remote="store", project=tmp_path).source.startswith("DVC remote 'store'")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    assert resolve(project=tmp_path).access_key_id == "AKENV"              # environment first ...
    assert resolve(remote="store", project=tmp_path).access_key_id == "AKLOCAL"  # ... unless a remote is named
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    (tmp_path / ".dvc" / "config.local").unlink()
    with pytest.raises(SiamdiffError, match="no S3 credentials"):
        resolve(project=tmp_path)


def test_s3_serve_cli_start_status_stop(tmp_path):
    """`siamdiff s3-serve` in a DVC project: detached server, keys only in .dvc/config.local (0600), stop by PID."""
    (tmp_path / ".dvc").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PYTHONPATH"] = str(ROOT)
    run = lambda *a: subprocess.run([sys.executable, "-m", "siamdiff.cli", "s3-serve", *a, "--root", ".s3"],  # noqa: E731
                                    cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    r = run("start")
    assert r.returncode == 0, r.stderr
    try:
        state = json.loads((tmp_path / ".s3.server.json").read_text())
        from siamdiff.storage.credentials import read_dvc_config

        remote = read_dvc_config(tmp_path)["remote"]["local-s3"]
        assert remote["endpointurl"] == state["endpoint_url"]
        secret = remote["secret_access_key"]
        assert (tmp_path / ".dvc" / "config.local").stat().st_mode & 0o077 == 0
        for text in (r.stdout, r.stderr, json.dumps(state), (tmp_path / ".s3.server.log").read_text()):
            assert secret not in text
        assert run("status").returncode == 0
        s = resolve(remote="local-s3", project=tmp_path)
        c = make_client(s)
        c.put_object(Bucket="siamdiff", Key="hello.txt", Body=b"hi")
        assert (tmp_path / ".s3" / "siamdiff" / "hello.txt").read_bytes() == b"hi"
    finally:
        r = run("stop")
    assert r.returncode == 0
    from siamdiff.storage.server import pid_alive

    assert not pid_alive(state["pid"]) and not (tmp_path / ".s3.server.json").exists()
    assert run("status").returncode == 1


def test_server_requires_keys(tmp_path):
    with pytest.raises(SiamdiffError):
        start_server(tmp_path / "r", "", "")
    srv = start_server(tmp_path / "r", "k", "s")
    try:
        anon = S3Settings(endpoint_url=srv.endpoint_url, access_key_id="k", secret_access_key="wrong")
        from botocore.exceptions import ClientError

        with pytest.raises(ClientError):
            make_client(anon).list_buckets()
    finally:
        srv.stop()
    assert not srv.alive()
