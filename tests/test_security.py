"""Security pass over every tracked file: safe deserialisation and no credentials in the repository."""
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THIS = Path(__file__).resolve()


def tracked_files():
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split()
    return [ROOT / f for f in out if (ROOT / f).is_file() and (ROOT / f).resolve() != THIS]


def python_sources():
    return [p for p in tracked_files() if p.suffix == ".py"]


def test_torch_load_always_weights_only():
    offenders = []
    for p in python_sources():
        for n, line in enumerate(p.read_text().splitlines(), 1):
            if "torch.load(" in line and "weights_only=True" not in line:
                offenders.append(f"{p.relative_to(ROOT)}:{n}")
    assert not offenders, f"torch.load without weights_only=True: {offenders}"


def test_pickle_only_after_pinned_hash_check():
    """Unpickling is allowed only in the asset converter, which verifies a pinned SHA-256 first."""
    allowed = {"siamdiff/metrics/assets.py"}
    offenders = []
    for p in python_sources():
        rel = p.relative_to(ROOT).as_posix()
        text = p.read_text()
        if re.search(r"\b(pickle|joblib|dill)\.loads?\(|np\.load\([^)]*allow_pickle=True", text) and rel not in allowed:
            offenders.append(rel)
    assert not offenders, f"unpickling outside the verified asset converter: {offenders}"
    text = (ROOT / "siamdiff/metrics/assets.py").read_text()
    assert re.search(r"[0-9a-f]{64}", text), "assets.py must pin the SHA-256 of what it unpickles"


CREDENTIAL_PATTERNS = [
    re.compile(r"AKIA[0-9A-Z]{16}"),                                   # AWS access key id
    re.compile(r"(?i)aws_secret_access_key\s*[=:]\s*['\"]?[A-Za-z0-9/+]{30,}"),
    re.compile(r"(?i)secret_access_key\s*=\s*[A-Za-z0-9/+]{30,}"),
    re.compile(r"-----BEGIN (RSA |EC |OPENSSH )?PRIVATE KEY-----"),
]


def test_no_credentials_in_tracked_files():
    offenders = []
    for p in tracked_files():
        try:
            text = p.read_text(errors="ignore")
        except OSError:
            continue
        for pat in CREDENTIAL_PATTERNS:
            if pat.search(text):
                offenders.append(f"{p.relative_to(ROOT)}: {pat.pattern}")
    assert not offenders, f"credentials in tracked files: {offenders}"


def test_dvc_config_has_no_secrets():
    config = (ROOT / ".dvc" / "config").read_text()
    assert "secret_access_key" not in config and "access_key_id" not in config, \
        "S3 credentials belong in .dvc/config.local or the environment, never in .dvc/config"
