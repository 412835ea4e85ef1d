"""The OpenAI-compatible local server: one loaded model, many HTTP clients.

    from edge.server import ServerOptions, create_app, serve
    serve("smollm2-135m-instruct", options=ServerOptions(port=8080))

`create_app(model)` gives the FastAPI app for any ASGI server; `serve`
loads a model and runs uvicorn; `Background` runs one in a thread.
FastAPI, pydantic and uvicorn are imported only when a server is built.
"""
from __future__ import annotations

from .options import ServerOptions

__all__ = ["ServerOptions", "create_app", "serve", "Background"]


def __getattr__(name):
    if name == "create_app":
        from .app import create_app

        return create_app
    if name in ("serve", "Background"):
        from . import run

        return getattr(run, name)
    raise AttributeError(name)
