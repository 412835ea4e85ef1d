"""The exception hierarchy of edge.

Every error a user can cause is an `EdgeError`; its message is one line that
says what went wrong and what to do next. The CLI turns these into click
errors at its boundary; library users catch `EdgeError`.
"""
from __future__ import annotations


class EdgeError(Exception):
    """Base of every error edge raises on purpose.

    `hint` is the "what to do next" part, appended to the message.
    """

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(f"{message} {hint}".strip() if hint else message)


class ModelNotFound(EdgeError):
    """A model name or path that resolves to nothing."""


class BadModelFile(EdgeError):
    """A model file that is missing, corrupt, truncated or of the wrong format."""


class ManifestMismatch(BadModelFile):
    """Files on disk that do not match their manifest (size or hash)."""


class BackendUnavailable(EdgeError):
    """A backend whose library is not installed or cannot load this artifact."""


class MissingExtra(EdgeError):
    """An optional dependency that is not installed; says which extra to install."""

    def __init__(self, package: str, extra: str, what: str = ""):
        what = f" for {what}" if what else ""
        super().__init__(
            f"{package} is not installed{what}.",
            f"Install it with: pip install 'edge[{extra}]'",
        )
        self.package = package
        self.extra = extra


class InvalidOption(EdgeError):
    """An option value that is out of range or inconsistent with the model."""


class ContextTooLong(InvalidOption):
    """A context length or prompt that exceeds what the model supports."""


class DoesNotFit(EdgeError):
    """A model that would not fit the device memory."""


class WorkerUnreachable(EdgeError):
    """An RPC worker address that does not answer, or answers something else."""


class WorkerLost(EdgeError):
    """An RPC worker that went away while a model split across it was in use."""


class ConversionError(EdgeError):
    """A conversion that could not be completed."""


class ToolError(EdgeError):
    """A tool definition, tool call or tool execution that failed."""


class GuardBlocked(EdgeError):
    """A prompt the guard refused; carries the guard verdict."""

    def __init__(self, message: str, verdict=None):
        super().__init__(message)
        self.verdict = verdict


def require(module: str, extra: str, what: str = ""):
    """Import `module` or raise MissingExtra naming the extra that brings it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise MissingExtra(module.split(".")[0], extra, what) from exc
