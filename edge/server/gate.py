"""ASGI middleware: the bearer-token check (when an API key is set) and request counting.

/health and the API description (/openapi.json, /docs) stay open: they hold nothing secret.
"""
from __future__ import annotations

import hmac
import json

from .errors import AUTH, APIError


class Gate:
    """ASGI middleware: bearer-token check (when an API key is set) and request counting."""

    OPEN = ("/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")

    def __init__(self, app, server):
        self.app = app
        self.server = server
        key = server.options.api_key
        self.expected = f"Bearer {key}".encode() if key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        status = {"code": 500}

        async def counted(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            if self.expected and path not in self.OPEN and scope["method"] != "OPTIONS":
                got = dict(scope["headers"]).get(b"authorization", b"")
                if not hmac.compare_digest(got, self.expected):
                    return await _send_error(counted, APIError(
                        401, "Incorrect or missing API key. Send 'Authorization: Bearer <key>' with the key the "
                        "server was started with.", AUTH, None, "invalid_api_key"))
            await self.app(scope, receive, counted)
        finally:
            self.server.metrics.request(path if path in _ROUTES else "other", status["code"])


_ROUTES = {"/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/completions", "/v1/embeddings"}


async def _send_error(send, exc: APIError) -> None:
    body = json.dumps(exc.body()).encode()
    await send({"type": "http.response.start", "status": exc.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
