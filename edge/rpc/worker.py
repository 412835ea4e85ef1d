"""`edge worker`: lend this device's memory and CPU to another edge over ggml-rpc.

The server is llama.cpp's own (`ggml_backend_rpc_start_server`), called
through ctypes from the libraries llama-cpp-python installs, so no extra
binary is needed and the worker always speaks the same protocol version as
the client. `--mem` caps the memory the worker reports: the CPU device is
wrapped in a copy whose memory query answers the cap (llama.cpp's CPU device
reports all physical RAM as free). ggml-rpc has no authentication, so a
non-loopback address needs an explicit flag.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EdgeError, InvalidOption
from ..netutil import check_port
from . import DEFAULT_PORT, is_loopback
from .ggml import ggml_libs

CPU = 0  # GGML_BACKEND_DEVICE_TYPE_CPU
DEVICE_WORDS = 17  # struct ggml_backend_device: 15 interface functions, reg, context
GET_MEMORY, INIT_BACKEND = 2, 5  # their slots in ggml_backend_device_i

NO_AUTH = ("ggml-rpc has no authentication and no encryption: anyone who can reach the port can run "
           "computations and read what the worker holds.")


@dataclass
class WorkerOptions:
    """How an `edge worker` listens and what it lends."""

    host: str = field(default="127.0.0.1", metadata={"help": "Address to listen on (default: loopback only)."})
    port: int = field(default=DEFAULT_PORT, metadata={"help": "TCP port to listen on."})
    threads: int | None = field(default=None, metadata={"help": "CPU threads for the layers it holds; default: physical cores."})
    mem: int | None = field(default=None, metadata={"help": "Memory to lend, in MB (default: what the device reports)."})
    cache: str | None = field(default=None, metadata={"help": "Folder for llama.cpp's tensor cache (fast reloads of the same model)."})
    i_understand_no_auth: bool = field(default=False, metadata={"help": "Allow a non-loopback --host: " + NO_AUTH})

    def check(self) -> None:
        if not 0 < self.port < 65536:
            raise InvalidOption(f"--port must be 1-65535 (got {self.port}).")
        if ":" in self.host:
            raise InvalidOption(f"--host {self.host} is IPv6; llama.cpp's RPC server listens on IPv4 only.",
                                "Pass an IPv4 address, e.g. 127.0.0.1.")
        if self.mem is not None and self.mem < 1:
            raise InvalidOption(f"--mem must be at least 1 MB (got {self.mem}).")
        if self.threads is not None and self.threads < 1:
            raise InvalidOption(f"--threads must be at least 1 (got {self.threads}).")
        if not is_loopback(self.host) and not self.i_understand_no_auth:
            raise EdgeError(f"Refusing to listen on {self.host}: {NO_AUTH}",
                            "Keep workers on a private network (a LAN you trust, a VPN such as WireGuard, or an SSH "
                            "tunnel to 127.0.0.1) and pass --i-understand-no-auth to accept this.")


GetMemory = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t))
InitBackend = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p)


class CappedDevice:
    """A copy of a ggml device whose memory query reports at most `cap` bytes.

    The RPC server asks the device of each backend it made, so the backend the
    copy creates is pointed back at the copy.
    """

    def __init__(self, dev: int, cap: int):
        self.real = dev
        self.cap = cap
        words = (ctypes.c_void_p * DEVICE_WORDS).from_address(dev)
        self.words = (ctypes.c_void_p * DEVICE_WORDS)(*words)
        real_memory = GetMemory(words[GET_MEMORY])
        real_init = InitBackend(words[INIT_BACKEND])

        def get_memory(_dev, free, total):
            real_memory(dev, free, total)
            free[0] = min(free[0], cap)
            total[0] = min(total[0], cap)

        def init_backend(_dev, params):
            backend = real_init(dev, params)
            if backend:
                fields_ = (ctypes.c_void_p * 64).from_address(backend)
                for i in range(64):  # guid, the backend interface, then the device pointer
                    if fields_[i] == dev:
                        fields_[i] = self.address
                        break
            return backend

        self._callbacks = (GetMemory(get_memory), InitBackend(init_backend))
        self.words[GET_MEMORY] = ctypes.cast(self._callbacks[0], ctypes.c_void_p)
        self.words[INIT_BACKEND] = ctypes.cast(self._callbacks[1], ctypes.c_void_p)
        ggml, _ = ggml_libs()
        if ggml.ggml_backend_dev_name(self.address) != ggml.ggml_backend_dev_name(dev):
            raise EdgeError("This llama.cpp lays out its devices differently, so --mem cannot cap them.",
                            "Run the worker without --mem, or install the llama-cpp-python version edge pins.")

    @property
    def address(self) -> int:
        return ctypes.addressof(self.words)


def serve(options: WorkerOptions, announce=print) -> None:
    """Run the worker until the process is stopped (it never returns normally)."""
    from ..config import default_threads

    options.check()
    check_port(options.host, options.port)
    ggml, rpc = ggml_libs()
    dev = ggml.ggml_backend_dev_by_type(CPU)
    if not dev:
        raise EdgeError("llama.cpp found no CPU device.", "Reinstall llama-cpp-python.")
    device = CappedDevice(dev, options.mem << 20) if options.mem else None
    devices = (ctypes.c_void_p * 1)(device.address if device else dev)
    threads = options.threads or default_threads()
    cache = None
    if options.cache:
        Path(options.cache).mkdir(parents=True, exist_ok=True)
        cache = str(Path(options.cache).resolve()).encode()
    lent = f"{options.mem} MB" if options.mem else "all memory"
    announce(f"edge worker on {options.host}:{options.port}: {lent}, {threads} threads"
             + (f", tensor cache {options.cache}" if options.cache else "")
             + (". Not authenticated: keep this port on a private network." if not is_loopback(options.host) else "."))
    sys.stdout.flush()
    # The server loop runs in C and never returns to Python: let signals stop the process directly.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    endpoint = f"{options.host}:{options.port}".encode()
    rpc.ggml_backend_rpc_start_server(endpoint, cache, threads, 1, devices)
    raise EdgeError(f"The RPC server on {options.host}:{options.port} stopped.", "See the message above for the cause.")


def main(argv=None) -> None:  # python -m edge.rpc.worker, for tests and services without the CLI
    import argparse

    p = argparse.ArgumentParser(prog="edge worker")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--threads", type=int)
    p.add_argument("--mem", type=int)
    p.add_argument("--cache")
    p.add_argument("--i-understand-no-auth", action="store_true")
    a = p.parse_args(argv)
    try:
        serve(WorkerOptions(**vars(a)))
    except EdgeError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        os._exit(1)


if __name__ == "__main__":
    main()
