"""S3 endpoint + credentials: where they come from, and a boto3 client with bounded retries.

Credentials are never read from the instance-metadata service (`AWS_EC2_METADATA_DISABLED=true` is set
for this process and its children) and never written to logs or to `repr()`. They come, in this order, from:

1. the DVC remote named by `remote=` (`.dvc/config` + `.dvc/config.local`, i.e.
   `dvc remote modify --local NAME access_key_id ...` -- config.local is git-ignored by DVC),
2. the environment: `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`),
3. without `remote=`: the project's default DVC remote, or any DVC remote whose `endpointurl` equals
   the endpoint, if it has keys in its config,
4. a named AWS profile (`profile` option of the DVC remote, or `AWS_PROFILE`).

The endpoint: explicit argument > the remote's `endpointurl` > `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` >
AWS itself (None).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

from siamdiff.utils import SiamdiffError

# Bounded by default so that a wrong endpoint or wrong keys fail in seconds, not minutes.
CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 20.0
MAX_ATTEMPTS = 2          # botocore "standard" mode: total attempts incl. the first

_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken",
               "InvalidClientTokenId", "AuthorizationHeaderMalformed", "403", "Forbidden", "Unauthorized", "401"}


def disable_instance_metadata() -> None:
    """Never let boto3/botocore/aiobotocore probe the EC2 metadata service (slow, and not our keys)."""
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


@dataclass(frozen=True)
class S3Settings:
    """Where and how to talk to S3. Secrets are excluded from repr() so they never reach a log."""

    endpoint_url: str | None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    profile: str | None = None
    region: str = "us-east-1"
    source: str = "unset"                 # human-readable origin of the credentials (no secrets)
    connect_timeout: float = CONNECT_TIMEOUT
    read_timeout: float = READ_TIMEOUT
    max_attempts: int = MAX_ATTEMPTS

    @property
    def endpoint_label(self) -> str:
        return self.endpoint_url or "AWS S3 (no custom endpoint)"


# ------------------------------------------------------------------------------------------------ DVC config
def find_project_root(start: str | os.PathLike | None = None) -> Path | None:
    """The nearest folder at or above `start` (default: cwd) holding a `.dvc` folder."""
    p = Path(start or os.getcwd()).resolve()
    for q in (p, *p.parents):
        if (q / ".dvc").is_dir():
            return q
    return None


def read_dvc_config(project: str | os.PathLike | None = None) -> dict:
    """Merged `.dvc/config` + `.dvc/config.local` as `{"core": {...}, "remote": {name: {...}}}`."""
    root = Path(project) if project else find_project_root()
    out: dict = {"core": {}, "remote": {}}
    if root is None:
        return out
    from configobj import ConfigObj

    for name in ("config", "config.local"):
        path = root / ".dvc" / name
        if not path.exists():
            continue
        try:
            conf = ConfigObj(str(path), encoding="utf-8")
        except Exception as e:  # configobj.ConfigObjError
            raise SiamdiffError(f"{path}: cannot parse DVC config ({e}); fix it with `dvc config` / `dvc remote modify`") from None
        for section, values in conf.items():
            sec = section.strip()
            if sec == "core":
                out["core"].update(dict(values))
            elif sec.startswith("remote"):
                rname = sec[len("remote"):].strip().strip('"').strip("'")
                out["remote"].setdefault(rname, {}).update(dict(values))
    return out


def _remote_settings(name: str, conf: dict, origin: str) -> dict:
    r = conf["remote"].get(name)
    if r is None:
        known = ", ".join(sorted(conf["remote"])) or "none"
        raise SiamdiffError(f"DVC remote {name!r} not found in .dvc/config or .dvc/config.local (known: {known}); "
                            f"add it with `dvc remote add {name} s3://BUCKET/dvcstore`")
    return r


def _to_float(v, default):
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


def resolve(endpoint_url: str | None = None, remote: str | None = None,
            project: str | os.PathLike | None = None) -> S3Settings:
    """Find the endpoint and credentials (see the module docstring for the order). Raises if none."""
    disable_instance_metadata()
    conf = read_dvc_config(project)
    rconf = _remote_settings(remote, conf, "remote=") if remote else {}

    endpoint = (endpoint_url or rconf.get("endpointurl") or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL") or None)
    region = rconf.get("region") or os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
    extra = dict(
        connect_timeout=_to_float(rconf.get("connect_timeout"), CONNECT_TIMEOUT),
        read_timeout=_to_float(rconf.get("read_timeout"), READ_TIMEOUT),
    )

    def settings(key, secret, token, source, profile=None):
        return S3Settings(endpoint_url=endpoint, access_key_id=key, secret_access_key=secret,
                          session_token=token, profile=profile, region=region, source=source, **extra)

    if rconf.get("access_key_id") and rconf.get("secret_access_key"):
        return settings(rconf["access_key_id"], rconf["secret_access_key"], rconf.get("session_token"),
                        f"DVC remote {remote!r} (.dvc/config.local)")
    env_key, env_secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if env_key and env_secret:
        return settings(env_key, env_secret, os.environ.get("AWS_SESSION_TOKEN"), "environment (AWS_ACCESS_KEY_ID)")
    if not remote:
        default = conf["core"].get("remote")
        candidates = ([default] if default else []) + sorted(conf["remote"])
        for name in candidates:
            r = conf["remote"].get(name, {})
            if not (r.get("access_key_id") and r.get("secret_access_key")):
                continue
            r_endpoint = r.get("endpointurl")
            if endpoint and r_endpoint and r_endpoint.rstrip("/") != endpoint.rstrip("/"):
                continue
            if endpoint is None and r_endpoint:
                endpoint = r_endpoint
            extra.update(connect_timeout=_to_float(r.get("connect_timeout"), CONNECT_TIMEOUT),
                         read_timeout=_to_float(r.get("read_timeout"), READ_TIMEOUT))
            if r.get("region"):
                region = r["region"]
            return settings(r["access_key_id"], r["secret_access_key"], r.get("session_token"),
                            f"DVC remote {name!r} (.dvc/config.local)")
    profile = rconf.get("profile") or os.environ.get("AWS_PROFILE")
    if profile:
        return settings(None, None, None, f"AWS profile {profile!r}", profile=profile)
    raise SiamdiffError(
        f"no S3 credentials for {endpoint or 'AWS S3'}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or store "
        "them for a DVC remote with `dvc remote modify --local NAME access_key_id ...` and "
        "`dvc remote modify --local NAME secret_access_key ...` (see docs/S3.md)")


# ------------------------------------------------------------------------------------------------ client
def make_client(s: S3Settings, max_pool_connections: int = 10):
    """A boto3 S3 client with explicit credentials, short timeouts and bounded retries."""
    disable_instance_metadata()
    import boto3
    from botocore.config import Config

    if s.access_key_id:
        session = boto3.session.Session(aws_access_key_id=s.access_key_id, aws_secret_access_key=s.secret_access_key,
                                        aws_session_token=s.session_token, region_name=s.region)
    else:
        session = boto3.session.Session(profile_name=s.profile, region_name=s.region)
    kwargs = dict(
        connect_timeout=s.connect_timeout, read_timeout=s.read_timeout,
        retries={"max_attempts": s.max_attempts, "mode": "standard"},
        s3={"addressing_style": "path" if s.endpoint_url else "auto"},
        signature_version="s3v4", max_pool_connections=max_pool_connections,
    )
    if _supports_checksum_config():
        # checksums only where an operation requires them: many S3-compatible stores reject the new defaults
        kwargs.update(request_checksum_calculation="when_required", response_checksum_validation="when_required")
    config = Config(**kwargs)
    return session.client("s3", endpoint_url=s.endpoint_url, config=config)


def _supports_checksum_config() -> bool:
    from botocore.config import Config

    try:
        Config(request_checksum_calculation="when_required")
        return True
    except TypeError:
        return False


def client_error_code(e) -> str:
    return str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))


@contextlib.contextmanager
def s3_errors(s: S3Settings, what: str) -> Iterator[None]:
    """Turn botocore's exceptions into one clear `SiamdiffError` naming the endpoint and what to do."""
    from botocore.exceptions import (BotoCoreError, ClientError, ConnectTimeoutError, EndpointConnectionError,
                                     NoCredentialsError, PartialCredentialsError, ProfileNotFound,
                                     ReadTimeoutError)

    try:
        yield
    except (EndpointConnectionError, ConnectTimeoutError) as e:
        raise SiamdiffError(f"cannot reach the S3 endpoint {s.endpoint_label} while {what} ({type(e).__name__}); "
                            "is the server running and the endpoint URL right (--endpoint-url, the DVC remote's "
                            "endpointurl or AWS_ENDPOINT_URL)?") from None
    except ReadTimeoutError:
        raise SiamdiffError(f"the S3 endpoint {s.endpoint_label} did not answer within {s.read_timeout:g} s while "
                            f"{what}; retry, or raise the DVC remote's read_timeout") from None
    except (NoCredentialsError, PartialCredentialsError, ProfileNotFound) as e:
        raise SiamdiffError(f"no usable S3 credentials while {what} ({e}); set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                            "or `dvc remote modify --local NAME access_key_id ...`") from None
    except ClientError as e:
        code = client_error_code(e)
        status = str(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code in _AUTH_CODES or status in ("401", "403"):
            raise SiamdiffError(f"S3 at {s.endpoint_label} rejected the credentials from {s.source} while {what} "
                                f"({code or status}); check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the DVC "
                                "remote's access_key_id/secret_access_key in .dvc/config.local") from None
        if code == "NoSuchBucket":
            raise SiamdiffError(f"the bucket does not exist at {s.endpoint_label} while {what}; create it first "
                                "(AWS: `aws s3 mb s3://BUCKET`; local server: `mkdir .s3/BUCKET`)") from None
        raise SiamdiffError(f"S3 error at {s.endpoint_label} while {what}: {code or status} {e}") from None
    except BotoCoreError as e:
        raise SiamdiffError(f"S3 client error at {s.endpoint_label} while {what}: {e}") from None


def with_endpoint(s: S3Settings, endpoint_url: str | None) -> S3Settings:
    return replace(s, endpoint_url=endpoint_url)
