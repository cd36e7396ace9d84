"""Tornado handlers for ``/v1/embeddings``, the rerank routes (``/v1/rerank``, ``/v2/rerank``,
``/rerank``), ``/v1/models`` and the status route (HTTP layer).

The logic lives in mixins that any ``RequestHandler`` can take, and :func:`route_table` is
the one table of routes both servers mount: the Jupyter server extension combines them with
Jupyter's ``APIHandler`` (its auth and XSRF rules, and its authorizer around each method) and
the standalone server with a Bearer-token check. Collaborators arrive through
``self.settings``, as :func:`handler_settings` gives them: ``mlx_embed_worker`` (a
:class:`~jupyter_mlx_embed.worker.Worker`), ``mlx_embed_max_body_bytes`` and
``mlx_embed_body_timeout``.

Bodies are streamed (``@stream_request_body`` on the servers' handlers): each server
authenticates in ``prepare``, before any byte of the body is read, then calls
:meth:`EmbeddingsMixin.begin_body`. The event loop is shared (in Jupyter, with every kernel's
websocket), so large bodies are decoded, validated and answered in a thread, by
:mod:`.codec` in pieces small enough that no single C call holds the GIL for long.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, NoReturn, cast
from urllib.parse import urlsplit, urlunsplit

from tornado import web
from tornado.http1connection import HTTP1Connection
from tornado.iostream import StreamClosedError

from . import metrics
from ._version import __version__
from .codec import encode_json_in_pieces, parse_json_body, parse_large_json_body
from .config import ServingConfig
from .errors import (
    EmbedError,
    ModelNotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    elide,
)
from .options import EmbedOptions
from .preparation import MAX_IMAGE_BYTES
from .rerank_schema import RERANK_SHAPES, RerankRequest, parse_rerank_request, rerank_response
from .results import EmbedResult, RerankResult
from .schema import (
    EmbeddingsRequest,
    embeddings_response,
    models_response,
    parse_embeddings_request,
    split_mixed_input,
)
from .validation import check_count
from .worker import Worker

log = logging.getLogger(__name__)

WORKER_KEY = "mlx_embed_worker"
MAX_BODY_KEY = "mlx_embed_max_body_bytes"
BODY_TIMEOUT_KEY = "mlx_embed_body_timeout"


def handler_settings(worker: Worker, config: ServingConfig) -> dict[str, Any]:
    """The application settings that the routes read: ``worker`` and the body limits of
    ``config`` (each server adds its own)."""
    return {
        WORKER_KEY: worker,
        MAX_BODY_KEY: config.max_body_bytes,
        BODY_TIMEOUT_KEY: config.body_timeout,
    }


_HTTP_ERROR_TYPES = {
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", None),
}

#: Bodies up to this size are decoded on the event loop (a fraction of a millisecond);
#: larger ones in a thread.
_INLINE_BODY_BYTES = 64 * 1024
#: Responses up to this many values are encoded on the event loop; larger ones in a thread.
_INLINE_RESPONSE_VALUES = 8 * 1024
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
        path = self.request.path
        if getattr(self, "_pending", None) is None and path.endswith(("/embeddings", "rerank")):
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
        options = EmbedOptions(
            request.model, request.dimensions, request.prompt_name, request.prompt
        )
        mixed = split_mixed_input(request.inputs, max_image_bytes=MAX_IMAGE_BYTES)
        if mixed is None:
            return request, self.worker.submit(request.inputs, options)
        check_count(request.inputs, self.worker.config.max_inputs, name="input", param="input")
        queued: list[tuple[list[int], Future[EmbedResult]]] = []
        if mixed.texts:
            texts = self.worker.submit(mixed.texts, options, positions=mixed.text_positions)
            queued.append((mixed.text_positions, texts))
        if mixed.images:
            pictures = self.worker.submit_images(
                mixed.images, options, positions=mixed.image_positions
            )
            queued.append((mixed.image_positions, pictures))
        return request, joined(queued, len(request.inputs))

    @staticmethod
    def _encode(result: EmbedResult, request: EmbeddingsRequest) -> list[bytes]:
        return encode_json_in_pieces(
            embeddings_response(
                result.vectors,
                model=request.model or result.model,
                prompt_tokens=result.prompt_tokens,
                encoding_format=request.encoding_format,
            )
        )

    def _submit_rerank(
        self, parts: Sequence[bytes], shape: str
    ) -> tuple[RerankRequest, Future[RerankResult]]:
        """Decode and check a rerank request of ``shape`` and queue it."""
        body = b"".join(parts)
        large = len(body) > _INLINE_BODY_BYTES
        data = parse_large_json_body(body) if large else parse_json_body(body)
        request = parse_rerank_request(data, shape)
        options = EmbedOptions(model=request.model, truncate=request.truncate)
        future = self.worker.rerank(request.query, request.documents, options)
        return request, future

    @staticmethod
    def _encode_rerank(result: RerankResult, request: RerankRequest) -> list[bytes]:
        return encode_json_in_pieces(rerank_response(request, result))

    async def post_embeddings(self) -> None:
        """``POST /v1/embeddings``."""
        await self._serve(self._submit, self._encode, lambda r: r.vectors.size)

    async def post_rerank(self, shape: str) -> None:
        """``POST v1/rerank``, ``v2/rerank`` or ``rerank``: the request ``shape``'s."""
        await self._serve(
            lambda parts: self._submit_rerank(parts, shape),
            self._encode_rerank,
            lambda r: r.scores.size * 8,  # with the texts returned, a few values each
        )

    async def _serve(
        self,
        submit: Callable[[Sequence[bytes]], tuple[Any, Future[Any]]],
        encode: Callable[[Any, Any], list[bytes]],
        size: Callable[[Any], int],
    ) -> None:
        """Read the body, ``submit`` it, wait for the worker and ``encode`` its answer (in a
        thread when the body or the answer's ``size`` in values is large)."""
        parts, self._body_parts = self._body_parts or [], None
        loop = asyncio.get_running_loop()
        if self._body_size <= _INLINE_BODY_BYTES:
            request, future = submit(parts)
        else:
            request, future = await loop.run_in_executor(None, submit, parts)
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
        if size(result) <= _INLINE_RESPONSE_VALUES:
            payload = encode(result, request)
        else:
            payload = await loop.run_in_executor(None, encode, result, request)
        if self._client_gone:
            return
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        await self._finish_in_pieces(payload)

    async def _finish_in_pieces(self, pieces: list[bytes]) -> None:
        """Send the body ``pieces`` one at a time, the loop free while each leaves (a 17 MB
        answer written at once held it 12-39 ms: copied behind its headers, then sent)."""
        if len(pieces) == 1:
            self.finish(pieces[0])
            return
        self.set_header("Content-Length", sum(map(len, pieces)))  # one body, not chunked
        try:
            for piece in pieces:
                self.write(piece)
                await self.flush()
        except StreamClosedError:
            return  # the client left mid-answer
        self.finish()

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


def joined(parts: Sequence[tuple[list[int], Future[EmbedResult]]], n: int) -> Future[EmbedResult]:
    """One future for the worker requests of one HTTP request's parts (its texts, its
    pictures): their vectors in the input's order once all are done; the first failure
    fails it (and cancels the rest), and cancelling it cancels them."""
    whole: Future[EmbedResult] = Future()
    whole.add_done_callback(
        lambda f: [part.cancel() for _, part in parts] if f.cancelled() else None
    )

    def settle(done: Future[EmbedResult]) -> None:
        if whole.done():
            return
        for _, part in parts:
            if part.done() and (part.cancelled() or part.exception() is not None):
                if part.cancelled():
                    whole.cancel()
                else:
                    whole.set_exception(part.exception())
                for _, other in parts:
                    other.cancel()
                return
        if all(part.done() for _, part in parts):
            whole.set_result(EmbedResult.interleave([(p, f.result()) for p, f in parts], n))

    for _, part in parts:
        part.add_done_callback(settle)
    return whole


def _too_large(size: int, limit: int, *, so_far: bool = False) -> PayloadTooLargeError:
    if so_far:
        return PayloadTooLargeError(f"The request body exceeds the limit of {limit} bytes")
    return PayloadTooLargeError(f"The request body has {size} bytes; the limit is {limit} bytes")


# -- the route table ---------------------------------------------------------------------


class EmbeddingsRoute(EmbeddingsMixin):
    """``POST v1/embeddings``."""

    async def post(self) -> None:
        await self.post_embeddings()


class RerankRoute(EmbeddingsMixin):
    """``POST v1/rerank`` (Jina, Cohere v1), ``v2/rerank`` (Cohere v2) and ``rerank`` (TEI):
    the URL pattern's group names the shape."""

    async def post(self, shape: str) -> None:
        await self.post_rerank(_RERANK_PATHS[shape])


class ModelsRoute(EmbeddingsMixin):
    """``GET v1/models`` and ``GET v1/models/{id}``."""

    async def get(self, model_id: str | None = None) -> None:
        await self.get_models(model_id)


class StatusRoute(EmbeddingsMixin):
    """``GET mlx-embed/status``: worker state for the JupyterLab status bar."""

    def get(self) -> None:
        self.write_status()


class UnknownRoute(EmbeddingsMixin):
    """Any other path: an OpenAI-shaped 404 for every method, once the server's ``prepare``
    has authenticated the request."""

    async def prepare(self) -> None:
        prepared = super().prepare()
        if prepared is not None:
            await prepared
        self.reject_unknown_route()


#: The routes of both servers, under the server's base URL, in matching order: (URL pattern,
#: the route's HTTP methods).
ROUTES: tuple[tuple[str, type[EmbeddingsMixin]], ...] = (
    (r"/v1/embeddings", EmbeddingsRoute),
    (r"/(v1/rerank|v2/rerank|rerank)", RerankRoute),
    (r"/v1/models", ModelsRoute),
    (r"/v1/models/(.+)", ModelsRoute),
    (r"/mlx-embed/status", StatusRoute),
)
#: The rerank routes' paths and the request shape each speaks (``rerank_schema``).
_RERANK_PATHS = dict(zip(("v1/rerank", "v2/rerank", "rerank"), RERANK_SHAPES, strict=True))
#: The paths under the base URL that get :class:`UnknownRoute`'s 404 unless a server owns
#: them all: those under ``v1/`` and ``v2/`` (the Jupyter server serves the others).
UNKNOWN_PATHS = r"/v[12](?:/.*)?"

_HTTP_METHODS = {method.lower() for method in web.RequestHandler.SUPPORTED_METHODS}


def _unguarded(method: Callable[..., Any]) -> Callable[..., Any]:
    return method


def route_table(
    base: type[web.RequestHandler],
    *,
    guard: Callable[[Callable[..., Any]], Callable[..., Any]] = _unguarded,
    extra: Sequence[tuple[str, type[web.RequestHandler]]] = (),
    unknown: str = UNKNOWN_PATHS,
) -> list[tuple[str, type[web.RequestHandler]]]:
    """The handlers a server mounts: :data:`ROUTES`, then the server's own ``extra`` routes,
    then ``unknown`` paths answered by :class:`UnknownRoute`.

    Args:
        base: The server's handler base, combined with each route: its authentication
            (``prepare``, which calls :meth:`EmbeddingsMixin.begin_body`) and
            ``@stream_request_body``.
        guard: Wraps each HTTP method of the routes (Jupyter: ``@web.authenticated`` and
            ``@authorized``).
        extra: Routes of this server only, matched before ``unknown``.
        unknown: The pattern of the paths that get an OpenAI-shaped 404.

    Returns:
        ``(pattern, handler class)`` pairs, in matching order.
    """
    handlers: dict[type[EmbeddingsMixin], type[web.RequestHandler]] = {}

    def handler(route: type[EmbeddingsMixin]) -> type[web.RequestHandler]:
        if route not in handlers:
            methods = {
                name: guard(method) for name, method in vars(route).items() if name in _HTTP_METHODS
            }
            name = route.__name__.removesuffix("Route") + "Handler"
            made = type(name, (route, base), {**methods, "__module__": base.__module__})
            handlers[route] = cast("type[web.RequestHandler]", made)
        return handlers[route]

    return [
        *((pattern, handler(route)) for pattern, route in ROUTES),
        *extra,
        (unknown, handler(UnknownRoute)),
    ]
