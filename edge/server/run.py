"""Run the app: `serve` (blocking, for `edge serve`) and `Background` (a thread, for tests and benchmarks).

Both load the model once through `edge.load` and hand it to `create_app`;
uvicorn is the ASGI server.
"""
from __future__ import annotations

import socket
import threading
import time

from ..errors import EdgeError, require
from ..netutil import check_port
from .options import LOOPBACK, ServerOptions


def load_model(model: str | None = None, backend: str | None = None, **load_options):
    import edge

    # The server runs the prompt guard itself (blocked requests get a flagged refusal).
    return edge.load(model, backend, guard=False, **load_options)


def _config(app, options: ServerOptions, log_level: str):
    uvicorn = require("uvicorn", "server", "edge serve")
    return uvicorn.Config(app, host=options.host, port=options.port, log_level=log_level,
                          timeout_graceful_shutdown=2, access_log=log_level == "debug")


def serve(model: str | None = None, backend: str | None = None, options: ServerOptions | None = None,
          log_level: str = "info", on_ready=None, **load_options) -> None:
    """Load `model` and serve it until interrupted."""
    from .app import create_app

    require("fastapi", "server", "edge serve")
    options = options or ServerOptions()
    check_port(options.host, options.port)
    loaded = load_model(model, backend, **load_options)
    app = create_app(loaded, options)
    guard = app.state.server.guard
    if guard is not None and hasattr(guard, "load"):
        guard.load()  # fail now, not at the first request, when the guard cannot load
    if on_ready:
        on_ready(loaded, options)
    import uvicorn

    uvicorn.Server(_config(app, options, log_level)).run()


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Background:
    """A server on a free loopback port in a daemon thread.

        with Background(model) as srv:
            openai.OpenAI(base_url=srv.url + "/v1", api_key="x")
    """

    def __init__(self, model, options: ServerOptions | None = None, log_level: str = "warning", **app_kw):
        import uvicorn

        from .app import create_app

        options = options or ServerOptions(port=free_port())
        self.options = options
        self.app = create_app(model, options, **app_kw)
        self._server = uvicorn.Server(_config(self.app, options, log_level))
        self._server.install_signal_handlers = lambda: None
        self._thread = threading.Thread(target=self._server.run, name="edge-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.options.host}:{self.options.port}"

    def start(self, timeout: float = 30.0) -> "Background":
        if self._thread.is_alive():
            return self
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise EdgeError(f"The server did not start on {self.url}.", "See the log above for the cause.")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
