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
AWS itself (None). An endpoint is a plain `http(s)://host[:port]`: one carrying user info
(`http://KEY:SECRET@host`) is refused wherever it comes from, and every message prints endpoints through
`redact_url`, so user info never reaches a log.

Secrets never go in params.yaml (DVC records it in dvc.lock and the run cache, ingest in
data/raw/manifest-v1.json, and `siamdiff publish` uploads that): `secret_paths` finds credential-looking
keys and values in a config, `check_no_secrets` refuses them with a pointer to the mechanisms above.
"""
from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from siamdiff.credential_names import KEYS_POINTER, is_credential_key
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

    def __post_init__(self):
        check_endpoint_url(self.endpoint_url, "S3 endpoint")

    @property
    def endpoint_label(self) -> str:
        return redact_url(self.endpoint_url) if self.endpoint_url else "AWS S3 (no custom endpoint)"


# ------------------------------------------------------------------------------------------------ secrets
# scheme://<anything without blanks or quotes>@ : the user-info part of a URL (greedy: a secret may hold '/')
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s'\"<>]*@")
_AWS_KEY_ID = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")

def redact_url(url) -> str:
    """`url` with any user info replaced by `***` (`http://KEY:SECRET@host` -> `http://***@host`)."""
    return _URL_USERINFO.sub(r"\1***@", str(url))


def redact(text: str, *secrets: str | None) -> str:
    """`text` with URL user info and the given secret strings replaced by `***` (for messages and logs)."""
    text = _URL_USERINFO.sub(r"\1***@", str(text))
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    return text


def secret_paths(obj, where: str) -> list[tuple[str, str]]:
    """[(dotted path, why)] of every credential in a config: a credential-named key with a value, a URL with
    user info, an AWS access key id. Never returns the secret itself."""
    out: list[tuple[str, str]] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            path = f"{where}.{k}"
            if is_credential_key(k) and v not in (None, "", [], {}):
                out.append((path, "a credential"))
            else:
                out.extend(secret_paths(v, path))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.extend(secret_paths(v, f"{where}[{i}]"))
    elif isinstance(obj, (str, bytes)):
        s = obj.decode(errors="replace") if isinstance(obj, bytes) else obj
        if _URL_USERINFO.search(s):
            out.append((where, "a URL with user info (name:password@)"))
        elif _AWS_KEY_ID.search(s):
            out.append((where, "an AWS access key id"))
    return out


def check_no_secrets(obj, where: str, file: str = "params.yaml", why: str = "") -> None:
    """Refuse a config holding a credential (see `secret_paths`), naming its key but never its value."""
    found = secret_paths(obj, where)
    if not found:
        return
    names = ", ".join(p for p, _ in found)
    kinds = sorted({k for _, k in found})
    one = len(found) == 1
    what = ("a credential" if one else "credentials") if kinds == ["a credential"] else " / ".join(kinds)
    why = why or ("DVC records params.yaml in dvc.lock and its run cache, ingest records the source in "
                  "data/raw/manifest-v1.json, and `siamdiff publish` uploads that")
    url = any(k.startswith("a URL") for _, k in found)
    fix = ("drop the user info from the URL (keep scheme://host[:port]/...)" if url and one
           else f"remove {'it' if one else 'them'}" + (" (drop a URL's user info)" if url else ""))
    raise SiamdiffError(f"{file}: {names} {'holds' if one else 'hold'} {what}: refused, credentials never go in "
                        f"{file} ({why}); {fix} and {KEYS_POINTER}; rotate the key if it was committed or used "
                        "in a run")


def check_endpoint_url(url, origin: str) -> str | None:
    """`url` if it is a usable S3 endpoint (`http(s)://host[:port][/path]`), None if unset; else a clear error.

    User info (`http://KEY:SECRET@host`) is refused, and the message shows the URL redacted.
    """
    if url is None or url == "":
        return None
    if not isinstance(url, str):
        raise SiamdiffError(f"{origin}: the S3 endpoint URL must be a string like http://127.0.0.1:9000, "
                            f"got {type(url).__name__}")
    shown = redact_url(url)
    if "@" in url:
        raise SiamdiffError(f"{origin}: the S3 endpoint URL {shown} carries user info (name:password@) and is "
                            f"refused: URLs are logged and recorded, credentials never go in one; give the "
                            f"endpoint as scheme://host[:port] and {KEYS_POINTER}")
    from urllib.parse import urlsplit

    try:
        u = urlsplit(url)
        _ = u.port  # raises ValueError for a port that is not a number
    except ValueError:
        u = None
    if u is None or u.scheme not in ("http", "https") or not u.hostname or any(c.isspace() for c in url):
        raise SiamdiffError(f"{origin}: the S3 endpoint URL {shown!r} is not an http(s)://host[:port] URL "
                            "(e.g. http://127.0.0.1:9000)")
    return url


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
        except Exception as e:  # configobj.ConfigObjError: its text quotes the line, which may hold a key
            line = getattr(e, "line_number", None)
            at = f" at line {line}" if line else ""
            raise SiamdiffError(f"{path}: cannot parse DVC config{at} ({type(e).__name__}); fix it with "
                                "`dvc config` / `dvc remote modify`") from None
        for section, values in conf.items():
            sec = section.strip()
            if sec == "core":
                out["core"].update(dict(values))
            elif sec.startswith("remote"):
                rname = sec[len("remote"):].strip().strip('"').strip("'")
                out["remote"].setdefault(rname, {}).update(dict(values))
    return out


def _remote_settings(name: str, conf: dict) -> dict:
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
            project: str | os.PathLike | None = None, *,
            endpoint_origin: str = "the endpoint URL given (--endpoint-url / endpoint_url)") -> S3Settings:
    """Find the endpoint and credentials (see the module docstring for the order). Raises if none.

    An endpoint with user info is refused, naming where it came from (`endpoint_origin` for the argument).
    """
    disable_instance_metadata()
    conf = read_dvc_config(project)
    rconf = _remote_settings(remote, conf) if remote else {}

    for value, origin in ((endpoint_url, endpoint_origin),
                          (rconf.get("endpointurl"), f".dvc/config: DVC remote {remote!r} endpointurl"),
                          (os.environ.get("AWS_ENDPOINT_URL_S3"), "environment: AWS_ENDPOINT_URL_S3"),
                          (os.environ.get("AWS_ENDPOINT_URL"), "environment: AWS_ENDPOINT_URL")):
        if value:
            check_endpoint_url(value, origin)
            break
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
                endpoint = check_endpoint_url(r_endpoint, f".dvc/config: DVC remote {name!r} endpointurl")
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
        f"no S3 credentials for {redact_url(endpoint) if endpoint else 'AWS S3'}: set AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY, or store "
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
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
        ProfileNotFound,
        ReadTimeoutError,
    )

    def fail(msg: str) -> SiamdiffError:
        return SiamdiffError(redact(msg, s.secret_access_key, s.session_token))

    try:
        yield
    except (EndpointConnectionError, ConnectTimeoutError) as e:
        raise fail(f"cannot reach the S3 endpoint {s.endpoint_label} while {what} ({type(e).__name__}); "
                   "is the server running and the endpoint URL right (--endpoint-url, the DVC remote's "
                   "endpointurl or AWS_ENDPOINT_URL)?") from None
    except ReadTimeoutError:
        raise fail(f"the S3 endpoint {s.endpoint_label} did not answer within {s.read_timeout:g} s while "
                   f"{what}; retry, or raise the DVC remote's read_timeout") from None
    except (NoCredentialsError, PartialCredentialsError, ProfileNotFound) as e:
        raise fail(f"no usable S3 credentials while {what} ({e}); set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                   "or `dvc remote modify --local NAME access_key_id ...`") from None
    except ClientError as e:
        code = client_error_code(e)
        status = str(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code in _AUTH_CODES or status in ("401", "403"):
            raise fail(f"S3 at {s.endpoint_label} rejected the credentials from {s.source} while {what} "
                       f"({code or status}); check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the DVC "
                       "remote's access_key_id/secret_access_key in .dvc/config.local") from None
        if code == "NoSuchBucket":
            raise fail(f"the bucket does not exist at {s.endpoint_label} while {what}; create it first "
                       "(AWS: `aws s3 mb s3://BUCKET`; local server: `mkdir .s3/BUCKET`)") from None
        raise fail(f"S3 error at {s.endpoint_label} while {what}: {code or status} {e}") from None
    except BotoCoreError as e:
        raise fail(f"S3 client error at {s.endpoint_label} while {what}: {e}") from None
