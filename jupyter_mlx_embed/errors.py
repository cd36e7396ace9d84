"""Error hierarchy shared by every layer (pure: no MLX, no Tornado).

Each error knows how it appears on the wire in the OpenAI error shape:
``{"error": {"message", "type", "param", "code"}}`` and with which HTTP status.
"""

from __future__ import annotations

import re
import reprlib
from typing import Any

# An absolute file path inside a message (not the path part of a URL).
_PATH = re.compile(r"(?<![\w:/.])(?:~|/)(?:[\w.@+-]+/)+[\w.@+-]*")

#: Characters of a client's text (a model name, a prompt name, a path) that a message or a
#: log line shows: the longest valid model name (org/name) has 193.
ELIDE_CHARS = 200

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = ELIDE_CHARS


def elide(value: object, *, quote: bool = True) -> str:
    """How a message or log line shows a value a client sent: its ``repr`` (or, with
    ``quote=False``, the text itself), cut after :data:`ELIDE_CHARS` characters and followed
    by the original length, so that a megabyte of model name becomes neither a megabyte of
    error body nor of log line. Every client-supplied value enters messages through here.
    """
    if not isinstance(value, str):
        return _REPR.repr(value)  # nested values cut too (lists, dicts: first few items)
    head = repr(value[:ELIDE_CHARS]) if quote else value[:ELIDE_CHARS]
    return head if len(value) <= ELIDE_CHARS else f"{head}... ({len(value)} characters)"


class EmbedError(Exception):
    """Base class of every error this package raises on purpose."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI error object for this error, as clients see it: file paths of the
        server (model folders, caches) are left out of the message."""
        return {
            "error": {
                "message": _PATH.sub("<path>", self.message),
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequestError(EmbedError):
    """The request is malformed or asks for something impossible (HTTP 400)."""

    status = 400
    type = "invalid_request_error"


class InputTypeError(InvalidRequestError, TypeError):
    """An input is of the wrong type, e.g. a number among texts (HTTP 400; also a
    ``TypeError``, as Python code expects)."""


class ModelNotFoundError(InvalidRequestError):
    """No model of that name is known to the registry (HTTP 404)."""

    status = 404
    code = "model_not_found"

    def __init__(self, message: str, *, param: str | None = "model", code: str | None = None):
        super().__init__(message, param=param, code=code)


class ModelTypeError(InvalidRequestError):
    """The model exists but is not a text-embedding model we can run (HTTP 400)."""

    code = "unsupported_model"

    def __init__(self, message: str, *, model_type: str | None = None, param: str | None = "model"):
        super().__init__(message, param=param)
        self.model_type = model_type


class AuthenticationError(InvalidRequestError):
    """A server refused the token a client sent (HTTP 401)."""

    status = 401


class PayloadTooLargeError(InvalidRequestError):
    """The request body or its token total exceeds a configured limit (HTTP 413)."""

    status = 413
    code = "payload_too_large"


class OverloadedError(EmbedError):
    """The worker's queue is full; the client should retry later (HTTP 429)."""

    status = 429
    type = "rate_limit_error"
    code = "overloaded"

    def __init__(self, message: str, *, retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = retry_after


class WorkerClosedError(EmbedError):
    """The worker is shutting down or closed and accepts no more work (HTTP 503)."""

    status = 503
    type = "server_error"
    code = "worker_closed"


class ModelLoadError(EmbedError):
    """A model's files are missing or corrupt, or loading failed (HTTP 500)."""

    status = 500
    type = "server_error"
    code = "model_load_failed"


def error_from_response(status: int, body: Any, retry_after: str | None = None) -> EmbedError:
    """Rebuild the error a server described in an OpenAI error body (the inverse of
    :meth:`EmbedError.to_dict`), so remote and local callers see the same exceptions."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return EmbedError(f"The embedding server answered HTTP {status}")
    message = str(error.get("message") or f"HTTP {status}")
    param, code = error.get("param"), error.get("code")
    if status == 401:
        return AuthenticationError(message, param=param, code=code)
    if status == 404:
        return ModelNotFoundError(message, param=param)
    if status == 413:
        return PayloadTooLargeError(message, param=param)
    if status == 429:
        try:
            delay = float(retry_after) if retry_after else 1.0
        except ValueError:
            delay = 1.0
        return OverloadedError(message, retry_after=delay)
    if status == 503:
        return WorkerClosedError(message)
    if status == 400 and code == "unsupported_model":
        return ModelTypeError(message, param=param)
    if 400 <= status < 500:
        return InvalidRequestError(message, param=param, code=code)
    if code == "model_load_failed":
        return ModelLoadError(message)
    return EmbedError(message, param=param, code=code)
