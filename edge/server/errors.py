"""OpenAI-style error objects: `{"error": {message, type, param, code}}`.

Every failure a client can cause becomes an `APIError` with the HTTP status
OpenAI would use; library `EdgeError`s are mapped through one table so the
server never leaks a traceback and keeps serving.
"""
from __future__ import annotations

from .. import errors as E

INVALID = "invalid_request_error"
AUTH = "authentication_error"
NOT_FOUND = "not_found_error"
OVERLOADED = "server_overloaded"
SERVER = "server_error"


class APIError(Exception):
    """An error answered to the client as an OpenAI error object."""

    def __init__(self, status: int, message: str, type: str = INVALID, param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# Most specific class first: the first isinstance match wins.
EDGE_ERRORS: tuple[tuple[type, int, str, str | None], ...] = (
    (E.ContextTooLong, 400, INVALID, "context_length_exceeded"),
    (E.InvalidOption, 400, INVALID, None),
    (E.ToolError, 400, INVALID, "invalid_tools"),
    (E.ModelNotFound, 404, NOT_FOUND, "model_not_found"),
    (E.MissingExtra, 501, SERVER, "not_installed"),
    (E.BackendUnavailable, 503, SERVER, "backend_unavailable"),
    (E.WorkerLost, 503, SERVER, "rpc_worker_lost"),
    (E.EdgeError, 500, SERVER, None),
)


def from_edge(exc: Exception, param: str | None = None) -> APIError:
    """The APIError for a library error (or any other exception, as a 500)."""
    if isinstance(exc, APIError):
        return exc
    for cls, status, type_, code in EDGE_ERRORS:
        if isinstance(exc, cls):
            return APIError(status, str(exc), type_, param, code)
    return APIError(500, f"Internal error: {type(exc).__name__}: {exc}. The server keeps running; retry or report it.",
                    SERVER)


def bad(message: str, param: str | None = None, code: str | None = None) -> APIError:
    """A 400 for a request field that is missing, of the wrong type or out of range."""
    return APIError(400, message, INVALID, param, code)
