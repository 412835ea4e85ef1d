"""Checks shared by the commands that listen on a port (`edge serve`, `edge worker`)."""
from __future__ import annotations

import errno
import socket

from .errors import EdgeError


def check_port(host: str, port: int) -> None:
    """Fail with a one-line EdgeError, before anything loads, when HOST:PORT cannot be listened on."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                hint = (f"{host} is not an address of this machine: pass one of its own (`ip addr` lists them), "
                        "or 0.0.0.0 for all of them.")
            else:
                hint = "Pick another --port or stop the program using it."
            raise EdgeError(f"Cannot listen on {host}:{port}: {exc.strerror}.", hint) from None
