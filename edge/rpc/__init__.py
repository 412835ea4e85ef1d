"""Splitting a GGUF model across devices with llama.cpp's RPC backend.

An `edge worker` (edge/rpc/worker.py) lends its memory and CPU over ggml-rpc;
the machine that loads the model keeps the first layers and sends the rest to
the workers (`--rpc HOST:PORT,...`). This module parses worker addresses and
asks a worker for its memory in plain Python, speaking the ggml-rpc wire
protocol, so a bad address is a one-line error instead of llama.cpp aborting
the process. edge/rpc/host.py runs the split model in a child process for the
same reason: ggml-rpc aborts its process when a worker goes away.
"""
from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

from ..errors import InvalidOption, WorkerLost, WorkerUnreachable

__all__ = ["WorkerInfo", "WorkerLost", "WorkerUnreachable", "parse_endpoints", "probe", "probe_all"]

DEFAULT_PORT = 50052
# ggml-rpc wire protocol (ggml/src/ggml-rpc/ggml-rpc.cpp of the vendored llama.cpp).
PROTO_MAJOR = 7
CMD_GET_DEVICE_MEMORY, CMD_HELLO, CMD_DEVICE_COUNT = 11, 14, 15
CONN_CAPS_SIZE = 24
TIMEOUT_S = 3.0


@dataclass
class WorkerInfo:
    """What a worker reported: its address and, per device, free and total bytes."""

    endpoint: str
    free: int
    total: int
    devices: int = 1

    def to_dict(self) -> dict:
        return {"endpoint": self.endpoint, "free": self.free, "total": self.total, "devices": self.devices}


def parse_endpoint(text: str) -> str:
    """'host:port' checked and normalised (an IPv4 address or a host name: ggml-rpc has no IPv6)."""
    text = text.strip()
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidOption(f"'{text}' is not a worker address.", f"Write HOST:PORT, e.g. 127.0.0.1:{DEFAULT_PORT}.")
    if ":" in host or "[" in host:
        raise InvalidOption(f"'{text}' is an IPv6 address; llama.cpp's RPC backend takes IPv4 addresses and host names.",
                            "Use the worker's IPv4 address or its host name.")
    return f"{host}:{int(port)}"


def parse_endpoints(value) -> list[str]:
    """A comma-separated string or a list of 'host:port' into a list of checked addresses."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else [p for v in value for p in str(v).split(",")]
    out = [parse_endpoint(i) for i in items if i.strip()]
    dup = {e for e in out if out.count(e) > 1}
    if dup:
        raise InvalidOption(f"Worker {sorted(dup)[0]} is listed twice.", "List each worker once.")
    return out


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _recv(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            raise ConnectionError("closed")
        buf += part
    return buf


def _call(sock: socket.socket, cmd: int, payload: bytes, reply_size: int) -> bytes:
    sock.sendall(struct.pack("<BQ", cmd, len(payload)) + payload)
    size = struct.unpack("<Q", _recv(sock, 8))[0]
    if size != reply_size:
        raise ValueError(f"reply of {size} bytes, expected {reply_size}")
    return _recv(sock, size)


def probe(endpoint: str, timeout: float = TIMEOUT_S) -> WorkerInfo:
    """Ask the worker at `endpoint` for its devices' memory; raise WorkerUnreachable in one line."""
    host, _, port = endpoint.rpartition(":")
    start = f"Start one there with `edge worker --host ... --port {port}`, or fix the address."
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout)
    except socket.timeout:
        raise WorkerUnreachable(f"RPC worker {endpoint} did not answer within {timeout:g} s.", start) from None
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise WorkerUnreachable(f"Cannot reach RPC worker {endpoint}: {why}.", start) from None
    try:
        with sock:
            hello = _call(sock, CMD_HELLO, bytes(CONN_CAPS_SIZE), 4 + CONN_CAPS_SIZE)
            major, minor, patch = hello[0], hello[1], hello[2]
            if major != PROTO_MAJOR:
                raise WorkerUnreachable(
                    f"RPC worker {endpoint} speaks ggml-rpc protocol {major}.{minor}.{patch}; this edge speaks {PROTO_MAJOR}.x.",
                    "Install the same edge (and llama-cpp-python) version on both machines.")
            count = struct.unpack("<I", _call(sock, CMD_DEVICE_COUNT, b"", 4))[0]
            free = total = 0
            for dev in range(count):
                f, t = struct.unpack("<QQ", _call(sock, CMD_GET_DEVICE_MEMORY, struct.pack("<I", dev), 16))
                free, total = free + f, total + t
            return WorkerInfo(endpoint, free, total, count)
    except socket.timeout:
        raise WorkerUnreachable(
            f"RPC worker {endpoint} accepted the connection but did not answer within {timeout:g} s: "
            "it serves one client at a time and may be busy with another.",
            "Stop the other edge using it, or start another worker.") from None
    except (OSError, ValueError, struct.error) as exc:
        raise WorkerUnreachable(f"{endpoint} does not answer like an RPC worker ({exc}).",
                                "Check the port: it should be an `edge worker` or llama.cpp rpc-server.") from None


def probe_all(endpoints) -> list[WorkerInfo]:
    return [probe(e) for e in parse_endpoints(endpoints)]
