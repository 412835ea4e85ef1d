"""A model split across RPC workers, run in a child process.

ggml-rpc aborts its process when a worker stops answering, so the llama.cpp
backend that uses the workers lives in a child (`python -m edge.rpc.host`)
and `SplitBackend` forwards the backend calls to it over a pipe. When the
child dies mid-generation the request gets a `WorkerLost` naming the worker
that went away, and the calling process (a CLI, a server) keeps running.
The shared generation loop, sampling and logits hooks stay in this process.
"""
from __future__ import annotations

import collections
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
from typing import Sequence

import numpy as np

from .. import errors
from ..backends.base import Backend as BaseBackend
from ..formats import GGUF
from . import WorkerLost, WorkerUnreachable, probe


def _send(fd: int, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    os.write(fd, struct.pack("<Q", len(data)))
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _recv_exact(fd: int, n: int, timeout: float | None) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        if timeout is not None:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                raise TimeoutError
        part = os.read(fd, min(n - len(buf), 1 << 20))
        if not part:
            raise EOFError
        buf += part
    return bytes(buf)


def _recv(fd: int, timeout: float | None = None):
    size = struct.unpack("<Q", _recv_exact(fd, 8, timeout))[0]
    return pickle.loads(_recv_exact(fd, size, timeout))


def _drain(stream, tail: collections.deque) -> None:
    for line in iter(stream.readline, b""):
        tail.append(line.decode("utf-8", "replace").rstrip())


class SplitBackend(BaseBackend):
    """The llama.cpp backend with some layers on RPC workers, driven in a child process."""

    name = "llama.cpp"
    format = GGUF

    def __init__(self, artifact, load=None, options=None):
        from ..backends.llama_cpp import Options

        self.Options = Options
        super().__init__(artifact, load, options)
        self.workers = list(self.load_options.rpc or [])
        self._tail: collections.deque[str] = collections.deque(maxlen=20)
        self._proc = subprocess.Popen([sys.executable, "-m", "edge.rpc.host"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        # The thread must not hold `self`: a dropped model then frees its child process at once.
        threading.Thread(target=_drain, args=(self._proc.stderr, self._tail), daemon=True,
                         name="edge-split-stderr").start()
        facts = self._call("load", artifact, self.load_options, self.options)
        for k, v in facts.items():
            setattr(self, k, v)

    def _call(self, method: str, *args):
        if self._proc is None:
            raise WorkerLost("This split model was closed.", "Load it again.")
        try:
            _send(self._proc.stdin.fileno(), (method, args))
            # No answer in time means a worker hangs (a link down sends no reset); loading may take longer.
            timeout = self.load_options.rpc_timeout * (10 if method == "load" else 1)
            reply = _recv(self._proc.stdout.fileno(), timeout)
        except (BrokenPipeError, EOFError, TimeoutError, OSError) as exc:
            raise self._lost(timed_out=isinstance(exc, TimeoutError)) from None
        if reply[0] == "ok":
            return reply[1]
        _, cls_name, message, hint = reply
        cls = getattr(errors, cls_name, errors.EdgeError)
        raise cls(message, hint)

    def _lost(self, timed_out: bool) -> WorkerLost:
        self._kill()
        gone = []
        for endpoint in self.workers:
            try:
                probe(endpoint, timeout=1.0)
            except WorkerUnreachable:
                gone.append(endpoint)
        hint = ("Restart it (edge worker) and load the model again, or drop --rpc if the model fits this device."
                if gone else "Load the model again.")
        if gone:
            who = ("RPC worker " if len(gone) == 1 else "RPC workers ") + ", ".join(gone) + " stopped answering"
        elif timed_out:
            who = f"The RPC workers did not answer within {self.load_options.rpc_timeout:g} s"
        else:
            last = next((line for line in reversed(self._tail) if line.strip()), "no message")
            who = f"The process running the split model stopped ({last})"
        return WorkerLost(f"{who}; this request could not finish.", hint)

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proc is not None:
            proc.wait()

    # -- the backend interface, forwarded --------------------------------------
    def tokenize(self, text: str, special: bool = True) -> list[int]:
        return self._call("tokenize", text, special)

    def token_bytes(self, token: int) -> bytes:
        return self._pieces[token] if 0 <= token < len(self._pieces) else b""

    def detokenize(self, ids: Sequence[int]) -> str:
        return b"".join(self.token_bytes(t) for t in ids).decode("utf-8", "replace")

    def _forward(self, ids: Sequence[int]) -> np.ndarray:
        return self._call("forward", list(ids))

    def _rewind(self, n: int) -> int:
        return int(self._call("rewind", n))

    def _reset_cache(self) -> None:
        self._call("reset")

    def score(self, ids: Sequence[int]) -> np.ndarray:
        self._cached = []
        return self._call("score", list(ids))

    def close(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                _send(proc.stdin.fileno(), ("close", ()))
                proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._kill()

    def __del__(self):
        try:
            self._kill()
        except Exception:
            pass


FACTS = ("n_ctx", "n_ctx_train", "n_vocab", "eos_ids", "bos_token", "eos_token", "chat_template")


def _load(state: dict, artifact, load, options):
    from ..backends.llama_cpp import Backend

    b = state["backend"] = Backend(artifact, load, options)
    facts = {k: getattr(b, k) for k in FACTS}
    facts["_pieces"] = [b.token_bytes(t) for t in range(b.n_vocab)]
    return facts


def _rewind(b, n: int) -> int:
    n = b._rewind(n)
    b._cached = b._cached[:n]
    return n


# The calls SplitBackend forwards: name -> handler(backend, *args).
CALLS = {
    "forward": lambda b, ids: np.array(b.forward(ids), dtype=np.float32),
    "tokenize": lambda b, text, special: b.tokenize(text, special),
    "rewind": _rewind,
    "reset": lambda b: b.reset(),
    "score": lambda b, ids: b.score(ids),
}


def _serve(rfd: int, wfd: int) -> None:
    state: dict = {"backend": None}
    while True:
        try:
            method, args = _recv(rfd)
        except EOFError:
            return
        if method == "close":
            if state["backend"] is not None:
                state["backend"].close()
            _send(wfd, ("ok", None))
            return
        try:
            result = _load(state, *args) if method == "load" else CALLS[method](state["backend"], *args)
            reply = ("ok", result)
        except errors.EdgeError as exc:
            reply = ("err", type(exc).__name__, exc.message, exc.hint)
        except Exception as exc:  # a bug, not a user error: say what it was
            reply = ("err", "EdgeError", f"The split model failed: {type(exc).__name__}: {exc}", None)
        _send(wfd, reply)


def main() -> None:
    # The pipe to the parent is the original stdout; anything the libraries print goes to stderr.
    wfd = os.dup(1)
    os.dup2(2, 1)
    _serve(0, wfd)


if __name__ == "__main__":
    main()
