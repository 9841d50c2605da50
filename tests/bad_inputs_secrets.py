"""Bad-input cases of issue 14 item 6, "Secrets stay out": credentials in params.yaml, URLs with user info.

Every call here also checks that the secret itself appears nowhere in the message (`_no_secret`). The
secrets are made at run time, so that this file never holds anything that looks like a real key.
"""
from __future__ import annotations

import json
import secrets

from bad_input_registry import case
from siamdiff.utils import SiamdiffError

SECRET = "s3cr3t-" + secrets.token_hex(12)
KEY_ID = "AKIA" + "TESTONLY" + secrets.token_hex(4).upper()[:8]   # the shape of an AWS key id: AKIA + 16


def _no_secret(call):
    """`call`, checking that its SiamdiffError never quotes the secret or the key id."""
    def wrapped():
        try:
            call()
        except SiamdiffError as e:
            assert SECRET not in str(e) and KEY_ID not in str(e), f"the message leaks a secret: {e}"
            raise
    return wrapped


def _clean_aws_env(mp):
    import os

    for k in list(os.environ):
        if k.startswith("AWS_"):
            mp.delenv(k, raising=False)
    mp.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _ingest_s3(tmp, mp, **extra):
    from siamdiff.data.sources import ingest

    _clean_aws_env(mp)
    src = {"type": "s3", "url": "s3://siamdiff/siamese-data", **extra}
    return _no_secret(lambda: ingest({"sources": [src]}, raw_dir=tmp / "data/raw", plot_path=None))


@case("ingest: s3 source with a secret key in params.yaml")
def _(tmp, mp):
    return _ingest_s3(tmp, mp, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET), "aws_secret_access_key"


@case("ingest: s3 source with s3fs-style key/secret/token")
def _(tmp, mp):
    return _ingest_s3(tmp, mp, key=KEY_ID, secret=SECRET, token=SECRET), "ingest.sources[0].secret"


@case("ingest: s3 source with a credential nested in client_kwargs")
def _(tmp, mp):
    return _ingest_s3(tmp, mp, client_kwargs={"aws_session_token": SECRET}), "client_kwargs.aws_session_token"


@case("ingest: s3 source with an AWS key id as a value")
def _(tmp, mp):
    return _ingest_s3(tmp, mp, remote=KEY_ID), "ingest.sources[0].remote"


@case("ingest: s3 source endpoint_url with user info (http://KEY:SECRET@host)")
def _(tmp, mp):
    return _ingest_s3(tmp, mp, endpoint_url=f"http://{KEY_ID}:{SECRET}@127.0.0.1:9"), "endpoint_url"


@case("ingest: s3 source url with user info (s3://KEY:SECRET@bucket)")
def _(tmp, mp):
    from siamdiff.data.sources import ingest

    _clean_aws_env(mp)
    src = {"type": "s3", "url": f"s3://{KEY_ID}:{SECRET}@siamdiff/siamese-data"}
    return _no_secret(lambda: ingest({"sources": [src]}, raw_dir=tmp / "data/raw", plot_path=None)), \
        "ingest.sources[0].url"


@case("ingest: s3 source with an unknown key")
def _(tmp, mp):
    return _ingest_s3(tmp, mp, endpoint="http://127.0.0.1:9"), "ingest.sources[0].endpoint"


@case("ingest: s3 source endpoint_url without a scheme")
def _(tmp, mp):
    return _ingest_s3(tmp, mp, endpoint_url="127.0.0.1:9000"), "endpoint_url"


@case("ingest: s3 source jobs not an integer")
def _(tmp, mp):
    return _ingest_s3(tmp, mp, jobs="eight"), "ingest.sources[0].jobs"


@case("ingest: AWS_ENDPOINT_URL with user info")
def _(tmp, mp):
    call = _ingest_s3(tmp, mp)
    mp.setenv("AWS_ENDPOINT_URL", f"http://{KEY_ID}:{SECRET}@127.0.0.1:9")
    mp.setenv("AWS_ACCESS_KEY_ID", "k")
    mp.setenv("AWS_SECRET_ACCESS_KEY", "s")
    mp.chdir(tmp)                                     # no DVC project: the environment is all there is
    return call, "AWS_ENDPOINT_URL"


@case("ingest: DVC remote endpointurl with user info")
def _(tmp, mp):
    call = _ingest_s3(tmp, mp, remote="s3data")
    (tmp / ".dvc").mkdir()
    (tmp / ".dvc" / "config").write_text(
        f"['remote \"s3data\"']\n    url = s3://siamdiff/dvcstore\n"
        f"    endpointurl = http://{KEY_ID}:{SECRET}@127.0.0.1:9\n")
    mp.chdir(tmp)
    return call, "endpointurl"


@case("publish: --endpoint-url with user info")
def _(tmp, mp):
    from siamdiff.storage.publish import publish

    _clean_aws_env(mp)
    mp.chdir(tmp)
    return _no_secret(lambda: publish(tmp / "split.csv", tmp / "raw", "s3://siamdiff/siamese-data",
                                      endpoint_url=f"https://{KEY_ID}:{SECRET}@s3.example.org",
                                      progress=False)), "--endpoint-url"


@case("publish: data/raw manifest recording a credential (older ingest)")
def _(tmp, mp):
    from siamdiff.data.sources import ingest
    from siamdiff.storage.publish import publish

    raw = tmp / "data/raw"
    m = ingest({"sources": [{"type": "synthetic", "seed": 0, "patients": 1, "frames_per_patient": 1,
                             "datasets": ["synth-b"]}]}, raw_dir=raw, plot_path=None)
    m["sources"][0]["config"]["aws_secret_access_key"] = SECRET     # as ingest wrote it before issue 14
    (raw / "manifest-v1.json").write_text(json.dumps(m))
    split = tmp / "data/split.csv"
    split.write_text("id,dataset,patient,frame,split\n" + "".join(
        f"{it['id']},{it['dataset']},{it['patient']},{it['frame']},train\n" for it in m["items"]))
    _clean_aws_env(mp)
    mp.setenv("AWS_ACCESS_KEY_ID", "k")
    mp.setenv("AWS_SECRET_ACCESS_KEY", "s")
    mp.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")   # never contacted: refused before any upload
    mp.chdir(tmp)
    return _no_secret(lambda: publish(split, raw, "s3://siamdiff/siamese-data", progress=False)), \
        "sources[0].config.aws_secret_access_key"
