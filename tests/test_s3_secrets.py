"""Issue 14 item 6, "Secrets stay out": no credential from params.yaml or a URL reaches a message, the
manifest, or anything published. The S3 round trip uses the real local server of tests/s3_fixture.py.

Secrets are made at run time (tests/test_security.py scans tracked files for key-shaped text).
"""
from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path

import pytest
import yaml

from siamdiff.data.sources import ingest
from siamdiff.params_schema import S3Source
from siamdiff.storage import layout
from siamdiff.storage.credentials import (
    S3Settings,
    check_endpoint_url,
    is_credential_key,
    redact,
    redact_url,
    resolve,
    s3_errors,
)
from siamdiff.storage.publish import list_objects, publish
from siamdiff.storage.server import S3Server
from siamdiff.utils import SiamdiffError

try:  # tests/ as a package (python -m pytest from the root) or as a plain folder (pytest)
    from tests.s3_fixture import s3_env, s3_server, toy_dataset  # noqa: F401  (fixtures)
except ImportError:
    from s3_fixture import s3_env, s3_server, toy_dataset  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
SECRET = "s3cr3t-" + secrets.token_hex(12)
KEY_ID = "AKIA" + "TESTONLY" + secrets.token_hex(4).upper()[:8]
POINTER = "dvc remote modify --local"


def _files_holding(folder: Path, *needles: str) -> list[str]:
    """Every file under `folder` whose bytes contain one of `needles`."""
    hits = []
    for p in folder.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            if any(n.encode() in data for n in needles):
                hits.append(str(p))
    return hits


def _refused(call) -> str:
    with pytest.raises(SiamdiffError) as e:
        call()
    msg = str(e.value)
    assert "\n" not in msg.strip(), msg
    assert SECRET not in msg and KEY_ID not in msg, f"the message leaks the secret: {msg}"
    return msg


@pytest.fixture
def no_aws(monkeypatch, tmp_path):
    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.chdir(tmp_path)


# ------------------------------------------------------------------------------- credentials in params.yaml
PARAMS = """\
ingest:
  sources:
    - type: s3
      url: s3://siamdiff/siamese-data
      remote: s3data
      {key}: {value}
"""


@pytest.mark.parametrize("key", ["aws_access_key_id", "aws_secret_access_key", "aws_session_token",
                                 "access_key_id", "secret_access_key", "session_token", "access_key",
                                 "secret_key", "key", "secret", "token", "password", "credentials",
                                 "AccessKeyId", "secret-key"])
def test_params_yaml_s3_credential_is_refused_with_pointer(key, tmp_path, no_aws):
    (tmp_path / "params.yaml").write_text(PARAMS.format(key=key, value=SECRET))
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    msg = _refused(lambda: ingest(params["ingest"], raw_dir=tmp_path / "data/raw", plot_path=None))
    assert f"ingest.sources[0].{key}" in msg and "credential" in msg, msg
    assert POINTER in msg and "AWS_ACCESS_KEY_ID" in msg, msg
    assert not (tmp_path / "data" / "raw").exists()
    assert _files_holding(tmp_path, SECRET) == [str(tmp_path / "params.yaml")]


def test_ingest_stage_refuses_params_yaml_credentials(tmp_path, no_aws, capsys):
    """The stage as DVC runs it: exit 1, one line with the pointer, the secret nowhere (output, files)."""
    sys.path.insert(0, str(ROOT))
    from siamdiff.utils import main_guard
    from stages import ingest as stage

    # the project's params.yaml (whatever else its schema asks for), with an s3 source holding a key
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["ingest"]["sources"] = yaml.safe_load(PARAMS.format(key="aws_secret_access_key", value=SECRET))[
        "ingest"]["sources"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.raises(SystemExit) as e:
        main_guard("ingest", stage.main)
    assert e.value.code == 1
    out = capsys.readouterr()
    assert POINTER in out.err and "aws_secret_access_key" in out.err, out.err
    assert SECRET not in out.out + out.err
    assert _files_holding(tmp_path, SECRET) == [str(tmp_path / "params.yaml")]
    assert not (tmp_path / "data" / "raw").exists()


def test_credential_key_names():
    for k in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token", "aws_security_token",
              "access_key_id", "secret_access_key", "session_token", "access_key", "secret_key", "key", "secret",
              "token", "password", "passwd", "credentials", "api_key", "client_secret", "sas_token",
              "AccessKeyId", "SecretAccessKey", "secret-key", "SESSION_TOKEN"):
        assert is_credential_key(k), k
    allowed = set(S3Source.model_fields) | {"seed", "patients", "frames_per_patient", "datasets", "empty_fraction", "path",
                                  "dataset", "limit", "patient_pattern", "sort_key", "keys"}
    for k in allowed:
        assert not is_credential_key(k), k


# ------------------------------------------------------------------------------- endpoint URLs with user info
def test_redaction():
    url = f"http://{KEY_ID}:{SECRET}@127.0.0.1:9000/x"
    assert redact_url(url) == "http://***@127.0.0.1:9000/x"
    assert redact_url(f"https://{SECRET}/a@host") == "https://***@host"      # a secret holding '/'
    assert redact_url("http://127.0.0.1:9000") == "http://127.0.0.1:9000"
    assert redact(f"at {url} with {SECRET}", SECRET) == "at http://***@127.0.0.1:9000/x with ***"


def _ingest_endpoint(tmp_path, endpoint):
    src = {"type": "s3", "url": "s3://siamdiff/siamese-data", "endpoint_url": endpoint}
    return lambda: ingest({"sources": [src]}, raw_dir=tmp_path / "data/raw", plot_path=None)


@pytest.mark.parametrize("origin", ["params", "env", "dvc-remote", "publish", "settings", "s3-url"])
def test_endpoint_with_userinfo_is_refused_and_never_printed(origin, tmp_path, no_aws, monkeypatch):
    userinfo_url = f"http://{KEY_ID}:{SECRET}@127.0.0.1:9"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    if origin == "params":
        call, named = _ingest_endpoint(tmp_path, userinfo_url), "ingest.sources[0].endpoint_url"
    elif origin == "env":
        monkeypatch.setenv("AWS_ENDPOINT_URL", userinfo_url)
        call, named = _ingest_endpoint(tmp_path, None), "AWS_ENDPOINT_URL"
    elif origin == "dvc-remote":
        (tmp_path / ".dvc").mkdir()
        (tmp_path / ".dvc" / "config").write_text(
            f"['remote \"s3data\"']\n    url = s3://siamdiff/dvcstore\n    endpointurl = {userinfo_url}\n")
        call, named = (lambda: resolve(remote="s3data", project=tmp_path)), "endpointurl"
    elif origin == "publish":
        call = lambda: publish(tmp_path / "split.csv", tmp_path / "raw", "s3://siamdiff/siamese-data",  # noqa
                               endpoint_url=userinfo_url, progress=False)
        named = "--endpoint-url"
    elif origin == "settings":
        call, named = (lambda: S3Settings(endpoint_url=userinfo_url)), "S3 endpoint"
    else:
        src = {"type": "s3", "url": f"s3://{KEY_ID}:{SECRET}@siamdiff/siamese-data"}
        call = lambda: ingest({"sources": [src]}, raw_dir=tmp_path / "data/raw", plot_path=None)  # noqa
        named = "ingest.sources[0].url"
    msg = _refused(call)
    assert named in msg and "user info" in msg and POINTER in msg, msg
    assert not (tmp_path / "data" / "raw").exists()
    written = [p for p in _files_holding(tmp_path, SECRET, KEY_ID) if not p.endswith("/.dvc/config")]
    assert written == [], written


def test_bad_endpoint_urls_name_the_problem():
    for bad in ("127.0.0.1:9000", "ftp://host", "http://", "http://host:notaport"):
        with pytest.raises(SiamdiffError, match="not an http"):
            check_endpoint_url(bad, "test")
    assert check_endpoint_url("https://s3.example.org", "test") == "https://s3.example.org"
    assert check_endpoint_url(None, "test") is None


def test_s3_errors_never_print_userinfo_or_secret():
    """Whatever botocore says, the message redacts URL user info and the configured secret."""
    from botocore.exceptions import HTTPClientError

    s = S3Settings(endpoint_url="http://127.0.0.1:9", access_key_id="k", secret_access_key=SECRET)
    with pytest.raises(SiamdiffError) as e:
        with s3_errors(s, "listing"):
            raise HTTPClientError(error=f"failed http://{KEY_ID}:{SECRET}@127.0.0.1:9/b signed with {SECRET}")
    msg = str(e.value)
    assert SECRET not in msg and KEY_ID not in msg and "http://***@127.0.0.1:9/b" in msg, msg


# ------------------------------------------------------------------------------- manifest and publication
def test_manifest_from_s3_ingest_holds_no_credential(s3_server: S3Server, toy_dataset, tmp_path, monkeypatch,
                                                    request):
    """Keys only in .dvc/config.local (`remote:`) -> the ingested manifest and data/raw never hold them."""
    raw, split = toy_dataset
    url = f"s3://siamdiff/t-{request.node.name.replace('_', '-').lower()[:40]}/siamese-data"
    publish(split, raw, url, settings=s3_server.settings(), progress=False)

    proj = tmp_path / "proj"
    (proj / ".dvc").mkdir(parents=True)
    (proj / ".dvc" / "config").write_text(
        f"['remote \"s3data\"']\n    url = s3://siamdiff\n    endpointurl = {s3_server.endpoint_url}\n")
    (proj / ".dvc" / "config.local").write_text(
        f"['remote \"s3data\"']\n    access_key_id = {s3_server.access_key_id}\n"
        f"    secret_access_key = {s3_server.secret_access_key}\n")
    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.chdir(proj)
    out = proj / "data" / "raw"
    m = ingest({"sources": [{"type": "s3", "url": url, "remote": "s3data", "jobs": 2}]}, raw_dir=out,
               plot_path=None)
    assert m["counts"]["items"] == 8
    text = (out / layout.MANIFEST).read_text()
    assert s3_server.secret_access_key not in text and s3_server.access_key_id not in text
    assert set(m["sources"][0]["config"]) <= set(S3Source.model_fields)
    assert _files_holding(out, s3_server.secret_access_key, s3_server.access_key_id) == []


def test_publish_refuses_a_manifest_recording_a_credential(s3_server: S3Server, toy_dataset, request):
    """A data/raw manifest written before this fix (source config with a key) is never uploaded."""
    raw, split = toy_dataset
    m = json.loads((raw / layout.MANIFEST).read_text())
    m["sources"][0]["config"]["aws_secret_access_key"] = SECRET
    (raw / layout.MANIFEST).write_text(json.dumps(m))
    url = f"s3://siamdiff/t-{request.node.name.replace('_', '-').lower()[:40]}/siamese-data"
    msg = _refused(lambda: publish(split, raw, url, settings=s3_server.settings(), progress=False))
    assert "sources[0].config.aws_secret_access_key" in msg and POINTER in msg and "rotate" in msg, msg
    from siamdiff.storage.credentials import make_client

    bucket, prefix = layout.parse_s3_url(url)
    assert list_objects(make_client(s3_server.settings()), bucket, prefix) == {}


# ------------------------------------------------------------------------------- dvc.lock and the run cache
def test_dvc_repro_with_params_credentials_records_nothing(s3_server: S3Server, toy_dataset, tmp_path, no_aws,
                                                          request):
    """A project whose ingest would succeed (keys in .dvc/config.local): with a key added to its s3 source in
    params.yaml, `dvc repro` fails and the key reaches no output and no file DVC writes (dvc.lock, the run
    cache, data/raw). Without it, the same run succeeds and records no key either."""
    import subprocess

    raw, split = toy_dataset
    url = f"s3://siamdiff/t-{request.node.name.replace('_', '-').lower()[:40]}/siamese-data"
    publish(split, raw, url, settings=s3_server.settings(), progress=False)
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "ingest.py").write_text(  # params read as given (this test is about ingest, not the schema)
        "import yaml\nfrom siamdiff.data.sources import ingest\nfrom siamdiff.utils import main_guard\n"
        "main_guard('ingest', lambda: ingest(yaml.safe_load(open('params.yaml'))['ingest'], raw_dir='data/raw', "
        "plot_path=None))\n")
    (proj / "dvc.yaml").write_text("stages:\n  ingest:\n    cmd: python ingest.py\n    deps: [ingest.py]\n"
                                   "    params: [ingest]\n    outs: [data/raw]\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), DVC_NO_ANALYTICS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run(dvc + ["init", "--no-scm", "-q"], cwd=proj, env=env, check=True, timeout=120)
    with open(proj / ".dvc" / "config", "a") as f:
        f.write(f"['remote \"s3data\"']\n    url = s3://siamdiff\n    endpointurl = {s3_server.endpoint_url}\n")
    (proj / ".dvc" / "config.local").write_text(
        f"['remote \"s3data\"']\n    access_key_id = {s3_server.access_key_id}\n"
        f"    secret_access_key = {s3_server.secret_access_key}\n")
    good = f"ingest:\n  sources:\n    - type: s3\n      url: {url}\n      remote: s3data\n"

    (proj / "params.yaml").write_text(good + f"      aws_secret_access_key: {SECRET}\n")
    r = subprocess.run(dvc + ["repro"], cwd=proj, env=env, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and POINTER in out and "aws_secret_access_key" in out, out
    assert SECRET not in out
    assert not (proj / "dvc.lock").exists() and not (proj / "data" / "raw").exists()
    assert _files_holding(proj, SECRET) == [str(proj / "params.yaml")]

    (proj / "params.yaml").write_text(good)                  # the keys where they belong: the run succeeds
    r = subprocess.run(dvc + ["repro"], cwd=proj, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (proj / "dvc.lock").exists() and (proj / "data" / "raw" / layout.MANIFEST).exists()
    keys = (s3_server.secret_access_key, s3_server.access_key_id)
    leaked = [p for p in _files_holding(proj, *keys) if not p.endswith("/.dvc/config.local")]
    assert leaked == [], leaked
    assert not any(k in r.stdout + r.stderr for k in keys)
