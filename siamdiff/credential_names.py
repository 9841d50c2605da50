"""Which config keys hold a credential, and where credentials go instead (shared by the params schema and
siamdiff.storage; a module of its own so every stage's params check needs no storage code)."""
from __future__ import annotations

import re

KEYS_POINTER = ("give the keys to a DVC remote with `dvc remote modify --local NAME access_key_id ...` and "
                "`dvc remote modify --local NAME secret_access_key ...` (.dvc/config.local, git-ignored; then "
                "`remote: NAME` in the s3 source) or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE) (docs/S3.md)")

# Config key names (normalised: lower case, snake_case) that hold a credential: exact names, and suffixes.
CREDENTIAL_NAMES = frozenset({
    "key", "secret", "token", "password", "passwd", "pwd", "passphrase", "auth", "authorization",
    "credential", "credentials", "access_key_id", "secret_access_key", "session_token", "security_token",
    "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "aws_security_token",
    "access_key", "secret_key", "accesskey", "secretkey", "key_id", "api_key", "apikey", "private_key",
    "account_key", "sas_token", "client_secret",
})
CREDENTIAL_SUFFIXES = ("_secret", "_password", "_passwd", "_passphrase", "_token", "_access_key", "_secret_key",
                       "accesskey", "secretkey", "_key_id", "_keyid", "_api_key", "_apikey", "_private_key",
                       "_account_key", "_credential", "_credentials")


def _norm_key(name) -> str:
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name))     # accessKeyId -> access_Key_Id
    return re.sub(r"[^a-z0-9]+", "_", s.lower()).strip("_")


def is_credential_key(name) -> bool:
    """True for a config key that names a credential (`aws_secret_access_key`, `secret_key`, `token`, ...)."""
    n = _norm_key(name)
    return n in CREDENTIAL_NAMES or n.endswith(CREDENTIAL_SUFFIXES)
