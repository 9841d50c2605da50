"""A free TCP port on this machine (the torchrun rendezvous, the local S3 server, multi-process tests)."""
from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now: the OS picks one for a socket bound to port 0, then it is closed."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
