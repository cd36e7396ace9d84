"""Tornado handlers for ``/v1/embeddings``, ``/v1/models`` and the status route (HTTP layer).

The logic lives in mixins that any ``RequestHandler`` can take; the Jupyter server extension
combines them with Jupyter's ``APIHandler`` (its auth and XSRF rules) and the standalone
server with a Bearer-token check. Collaborators arrive through ``self.settings``:
``mlx_embed_worker`` (a :class:`~jupyter_mlx_embed.worker.Worker`),
``mlx_embed_max_body_bytes`` and ``mlx_embed_body_timeout``.

Bodies are streamed (``@stream_request_body`` on the servers' handlers): each server
authenticates in ``prepare``, before any byte of the body is read, then calls
:meth:`EmbeddingsMixin.begin_body`. The event loop is shared (in Jupyter, with every kernel's
websocket), so large bodies are decoded, validated and answered in a thread, and in pieces
small enough that no single C call holds the GIL for long.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Sequence
from concurrent.futures import Future
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

from tornado import web
from tornado.http1connection import HTTP1Connection

from . import metrics
from ._version import __version__
from .errors import (
    EmbedError,
    InvalidRequestError,
    ModelNotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    elide,
)
from .results import EmbedResult
from .schema import (
    EmbeddingsRequest,
    embeddings_response,
    models_response,
    parse_embeddings_request,
    parse_json_body,
)
from .worker import Worker

log = logging.getLogger(__name__)

WORKER_KEY = "mlx_embed_worker"
MAX_BODY_KEY = "mlx_embed_max_body_bytes"
BODY_TIMEOUT_KEY = "mlx_embed_body_timeout"

_HTTP_ERROR_TYPES = {
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", None),
}

#: Bodies up to this size are decoded on the event loop (a fraction of a millisecond);
#: larger ones in a thread.
_INLINE_BODY_BYTES = 64 * 1024
#: Responses up to this many values are encoded on the event loop; larger ones in a thread.
_INLINE_RESPONSE_VALUES = 8 * 1024
#: The most JSON text one C-level ``json`` call decodes while other threads wait for the GIL
#: (about 2-4 ms of work); larger arrays and objects are decoded item by item.
_JSON_PIECE_CHARS = 256 * 1024
#: Query parameters whose values never appear in logs (any name containing one of these).
_SECRET_PARAMS = ("token", "key", "auth", "secret", "password", "xsrf")


def error_body(exc: BaseException | None, status: int) -> tuple[int, dict[str, Any]]:
    """The status and OpenAI error object for an exception (the one mapping for all routes)."""
    if isinstance(exc, EmbedError):
        return exc.status, exc.to_dict()
    if isinstance(exc, web.HTTPError):
        status = exc.status_code
        message = exc.log_message % exc.args if exc.log_message and exc.args else exc.log_message
        message = message or exc.reason or HTTPStatus(status).phrase
    else:
        message = HTTPStatus(status).phrase if status != 500 else "The server had an error"
    if status >= 500:
        kind, code = "server_error", None
    else:
        kind, code = _HTTP_ERROR_TYPES.get(status, ("invalid_request_error", None))
    if status == 404 and not isinstance(exc, EmbedError):
        code = "not_found"
    return status, {"error": {"message": message, "type": kind, "param": None, "code": code}}


def unauthenticated() -> web.HTTPError:
    """The 401 both servers answer to a missing or wrong API key."""
    return web.HTTPError(401, "Missing or invalid API key: send 'Authorization: Bearer TOKEN'")


def redact_uri(uri: str) -> str:
    """``uri`` with the values of secret-looking query parameters (``token``, ``api_key``,
    ...) replaced by ``[secret]``, for logs."""
    parts = urlsplit(uri)
    if not parts.query:
        return uri
    params = []
    for param in parts.query.split("&"):
        name, sep, _ = param.partition("=")
        secret = sep and any(word in name.lower() for word in _SECRET_PARAMS)
        params.append(f"{name}=[secret]" if secret else param)
    return urlunsplit(parts._replace(query="&".join(params)))


# -- JSON in pieces ----------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_NUMBERS = re.compile(r"[-+.0-9eE \t\n\r,]{1,65536}")


def _skip(text: str, index: int) -> int:
    match = _WHITESPACE.match(text, index)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def decode_json_in_pieces(text: str) -> Any:
    """``json.loads(text)`` (``NaN`` and ``Infinity`` refused), decoded so that no single C
    call handles more than about 256 KiB: arrays and objects with more text after them are
    walked item by item, and runs of numbers are decoded 64 KiB at a time.

    Raises:
        ValueError: As ``json.loads`` (a ``json.JSONDecodeError`` at the same position).
        RecursionError: Too deeply nested.
    """
    value, end = _decode_value(text, _skip(text, 0))
    end = _skip(text, end)
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return value


def _decode_value(text: str, index: int) -> tuple[Any, int]:
    if len(text) - index > _JSON_PIECE_CHARS:
        opener = text[index : index + 1]
        if opener == "[":
            return _decode_array(text, index + 1)
        if opener == "{":
            return _decode_object(text, index + 1)
    value, end = _DECODER.raw_decode(text, index)
    return value, end


def _decode_array(text: str, index: int) -> tuple[list[Any], int]:
    items: list[Any] = []
    index = _skip(text, index)
    if text.startswith("]", index):
        return items, index + 1
    while True:
        first = text[index : index + 1]
        if first and first in "-0123456789":
            # A run of numbers (a token-id row): decode up to its last comma in one call.
            run = _NUMBERS.match(text, index)
            cut = text.rfind(",", index, run.end() if run else index)
            if cut > index:
                try:
                    items.extend(_DECODER.decode("[" + text[index:cut] + "]"))
                except json.JSONDecodeError as exc:
                    raise json.JSONDecodeError(exc.msg, text, index + exc.pos - 1) from None
                index = _skip(text, cut + 1)
                continue
        item, index = _decode_value(text, index)
        items.append(item)
        closed, index = _after_item(text, index, "]")
        if closed:
            return items, index


def _decode_object(text: str, index: int) -> tuple[dict[str, Any], int]:
    members: dict[str, Any] = {}
    index = _skip(text, index)
    if text.startswith("}", index):
        return members, index + 1
    while True:
        if not text.startswith('"', index):
            raise json.JSONDecodeError(
                "Expecting property name enclosed in double quotes", text, index
            )
        key, index = _DECODER.raw_decode(text, index)
        index = _skip(text, index)
        if not text.startswith(":", index):
            raise json.JSONDecodeError("Expecting ':' delimiter", text, index)
        value, index = _decode_value(text, _skip(text, index + 1))
        members[key] = value
        closed, index = _after_item(text, index, "}")
        if closed:
            return members, index


def _after_item(text: str, index: int, close: str) -> tuple[bool, int]:
    """After an array item or object member: whether ``close`` ends the container, and the
    index past it or past the comma before the next item."""
    index = _skip(text, index)
    if text.startswith(close, index):
        return True, index + 1
    if not text.startswith(",", index):
        raise json.JSONDecodeError("Expecting ',' delimiter", text, index)
    return False, _skip(text, index + 1)


def parse_large_json_body(body: bytes) -> Any:
    """:func:`~jupyter_mlx_embed.schema.parse_json_body` for a body too large to decode in
    one call without stalling other threads (same errors and messages).

    Raises:
        InvalidRequestError: Empty body, invalid UTF-8, invalid or too deeply nested JSON.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return parse_json_body(body)  # raises the same error, stopping at the same byte
    if not text.strip():
        return parse_json_body(body)
    try:
        return decode_json_in_pieces(text)
    except RecursionError:
        raise InvalidRequestError("The request body is nested too deeply") from None
    except ValueError as exc:
        raise InvalidRequestError(f"The request body is not valid JSON: {exc}") from None


def encode_json_in_pieces(obj: dict[str, Any]) -> bytes:
    """``json.dumps(obj).encode()`` with the items of list values encoded one at a time, so
    that no single C call holds the GIL for long (a 2,048 x 384 float response takes
    ~0.4 s in one ``json.dumps``)."""
    members = []
    for key, value in obj.items():
        if isinstance(value, list):
            text = "[" + ", ".join([json.dumps(item) for item in value]) + "]"
        else:
            text = json.dumps(value)
        members.append(f"{json.dumps(key)}: {text}")
    return ("{" + ", ".join(members) + "}").encode()


# -- handlers ----------------------------------------------------------------------------

if TYPE_CHECKING:  # the mixins are only ever combined with a RequestHandler
    HandlerBase = web.RequestHandler
else:
    HandlerBase = object


class OpenAIErrorsMixin(HandlerBase):
    """Writes every error in the OpenAI shape, without tracebacks, and logs requests with
    secrets redacted from their URIs."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        exc = exc_info[1] if exc_info else None
        status, body = error_body(exc, status_code)
        if getattr(self, "_pending", None) is None and self.request.path.endswith("/embeddings"):
            # Refused before the worker took it (auth, body, schema, a full queue): the
            # worker counts the requests it accepts, this counts the others.
            metrics.REQUESTS.labels(metrics.UNKNOWN_MODEL, body["error"]["type"]).inc()
        self.clear_header("Content-Type")
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        if status == 401:
            self.set_header("WWW-Authenticate", "Bearer")
        if isinstance(exc, OverloadedError):
            self.set_header("Retry-After", str(max(1, round(exc.retry_after))))
        self.finish(json.dumps(body))

    def _request_summary(self) -> str:
        # Tornado's access log and error lines use this; the URI may carry ?token=.
        request = self.request
        uri = elide(redact_uri(request.uri or ""), quote=False)
        return f"{request.method} {uri} ({request.remote_ip})"

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, web.HTTPError):
            super().log_exception(typ, value, tb)  # one warning line, via _request_summary
        elif isinstance(value, EmbedError) and value.status < 500:
            log.info("%s: %s %s", self._request_summary(), value.status, value.message)
        else:
            # Tornado's own line would add repr(request), whose URI is not redacted.
            log.error("Uncaught exception %s", self._request_summary(), exc_info=(typ, value, tb))


class EmbeddingsMixin(OpenAIErrorsMixin):
    """The route logic, independent of how a server authenticates.

    The servers' handlers are ``@stream_request_body``: their ``prepare`` authenticates,
    then calls :meth:`begin_body`; only then is the body read (and kept, up to the limit).
    """

    _pending: Future[Any] | None = None
    _client_gone = False
    _body_parts: list[bytes] | None = None
    _body_size = 0

    @property
    def worker(self) -> Worker:
        """The worker injected into the application settings."""
        worker: Worker = self.settings[WORKER_KEY]
        return worker

    # -- the body ---------------------------------------------------------------------

    def begin_body(self) -> None:
        """Accept the body of an authenticated request: refuse a declared length above the
        limit at once (413), and give the client ``body_timeout`` seconds to send it.

        Raises:
            PayloadTooLargeError: ``Content-Length`` exceeds ``max_body_bytes``.
        """
        limit: int = self.settings[MAX_BODY_KEY]
        declared = self.request.headers.get("Content-Length", "").strip()
        if declared.isdigit() and int(declared) > limit:
            raise _too_large(int(declared), limit)
        timeout = self.settings.get(BODY_TIMEOUT_KEY)
        connection = self.request.connection
        if timeout is not None and isinstance(connection, HTTP1Connection):
            connection.set_body_timeout(timeout)  # Tornado closes the connection after it

    def data_received(self, chunk: bytes) -> None:
        limit: int = self.settings[MAX_BODY_KEY]
        self._body_size += len(chunk)
        if self._body_size > limit:  # a chunked body, without Content-Length
            self._body_parts = None
            exc = _too_large(self._body_size, limit, so_far=True)
            self.log_exception(type(exc), exc, None)
            # Tornado reads no more of the body and closes the connection after the answer.
            self.send_error(exc.status, exc_info=(type(exc), exc, None))
            return
        if self._body_parts is None:
            self._body_parts = []
        self._body_parts.append(chunk)

    def on_connection_close(self) -> None:
        self._client_gone = True
        if self._pending is not None:
            self._pending.cancel()  # the worker drops it, queued or at its next batch
        super().on_connection_close()

    # -- routes -----------------------------------------------------------------------

    def _send_json(self, body: dict[str, Any]) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(body))

    def _submit(self, parts: Sequence[bytes]) -> tuple[EmbeddingsRequest, Future[EmbedResult]]:
        """Decode and check a request and queue it (a thread when the body is large)."""
        body = b"".join(parts)
        large = len(body) > _INLINE_BODY_BYTES
        data = parse_large_json_body(body) if large else parse_json_body(body)
        request = parse_embeddings_request(data)
        future = self.worker.submit(
            request.inputs,
            model=request.model,
            dimensions=request.dimensions,
            prompt_name=request.prompt_name,
            prompt=request.prompt,
        )
        return request, future

    @staticmethod
    def _encode(result: EmbedResult, request: EmbeddingsRequest) -> bytes:
        return encode_json_in_pieces(
            embeddings_response(
                result.vectors,
                model=request.model or result.model,
                prompt_tokens=result.prompt_tokens,
                encoding_format=request.encoding_format,
            )
        )

    async def post_embeddings(self) -> None:
        """``POST /v1/embeddings``."""
        parts, self._body_parts = self._body_parts or [], None
        loop = asyncio.get_running_loop()
        if self._body_size <= _INLINE_BODY_BYTES:
            request, future = self._submit(parts)
        else:
            request, future = await loop.run_in_executor(None, self._submit, parts)
        self._pending = future
        if self._client_gone:  # left while the body was decoded
            future.cancel()
            return
        try:
            result = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if self._client_gone:
                return  # the client left; nothing to answer
            raise
        if self._client_gone:
            return
        if result.vectors.size <= _INLINE_RESPONSE_VALUES:
            payload = self._encode(result, request)
        else:
            payload = await loop.run_in_executor(None, self._encode, result, request)
        if self._client_gone:
            return
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(payload)

    async def get_models(self, model_id: str | None = None) -> None:
        """``GET /v1/models`` and ``GET /v1/models/{id}``."""
        loop = asyncio.get_running_loop()
        if model_id is None:
            cards = await loop.run_in_executor(None, self.worker.model_cards)
            self._send_json(models_response(cards))
            return
        try:
            card = await loop.run_in_executor(None, self.worker.model_card, model_id)
        except ModelNotFoundError:
            raise ModelNotFoundError(f"The model {elide(model_id)} does not exist") from None
        self._send_json(card)

    def write_status(self) -> None:
        """``GET mlx-embed/status``: worker state for the front end."""
        info = self.worker.info(timeout=0)
        info["version"] = __version__
        self._send_json(info)

    def reject_unknown_route(self) -> NoReturn:
        """Unknown paths under ``/v1``: 404 in the OpenAI shape (after authentication)."""
        raise web.HTTPError(404, "Unknown route %s", elide(self.request.path, quote=False))


def _too_large(size: int, limit: int, *, so_far: bool = False) -> PayloadTooLargeError:
    if so_far:
        return PayloadTooLargeError(f"The request body exceeds the limit of {limit} bytes")
    return PayloadTooLargeError(f"The request body has {size} bytes; the limit is {limit} bytes")
