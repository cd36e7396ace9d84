"""Tornado handlers for ``/v1/embeddings``, ``/v1/models`` and the status route (HTTP layer).

The logic lives in mixins that any ``RequestHandler`` can take; the Jupyter server extension
combines them with Jupyter's ``APIHandler`` (its auth and XSRF rules) and the standalone
server with a Bearer-token check. Collaborators arrive through ``self.settings``:
``mlx_embed_worker`` (a :class:`~jupyter_mlx_embed.worker.Worker`) and
``mlx_embed_max_body_bytes``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import Future
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from tornado import web

from ._version import __version__
from .errors import EmbedError, ModelNotFoundError, OverloadedError, PayloadTooLargeError
from .schema import (
    embeddings_response,
    model_object,
    models_response,
    parse_embeddings_request,
    parse_json_body,
)
from .worker import Worker

log = logging.getLogger(__name__)

WORKER_KEY = "mlx_embed_worker"
MAX_BODY_KEY = "mlx_embed_max_body_bytes"

_HTTP_ERROR_TYPES = {
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", None),
}


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


if TYPE_CHECKING:  # the mixins are only ever combined with a RequestHandler
    HandlerBase = web.RequestHandler
else:
    HandlerBase = object


class OpenAIErrorsMixin(HandlerBase):
    """Writes every error in the OpenAI shape, without tracebacks."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        exc = exc_info[1] if exc_info else None
        status, body = error_body(exc, status_code)
        self.clear_header("Content-Type")
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        if isinstance(exc, OverloadedError):
            self.set_header("Retry-After", str(max(1, round(exc.retry_after))))
        self.finish(json.dumps(body))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, EmbedError) and value.status < 500:
            log.info(
                "%s %s: %s %s",
                self.request.method,
                self.request.uri,
                value.status,
                value.message,
            )
        else:
            super().log_exception(typ, value, tb)


class EmbeddingsMixin(OpenAIErrorsMixin):
    """The route logic, independent of how a server authenticates."""

    _pending: Future[Any] | None = None
    _client_gone = False

    @property
    def worker(self) -> Worker:
        """The worker injected into the application settings."""
        worker: Worker = self.settings[WORKER_KEY]
        return worker

    def on_connection_close(self) -> None:
        self._client_gone = True
        if self._pending is not None:
            self._pending.cancel()  # only succeeds while still queued: no wasted forward pass
        super().on_connection_close()

    def _send_json(self, body: dict[str, Any]) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(body))

    async def post_embeddings(self) -> None:
        """``POST /v1/embeddings``."""
        limit = self.settings[MAX_BODY_KEY]
        body = self.request.body
        if len(body) > limit:
            raise PayloadTooLargeError(
                f"The request body has {len(body)} bytes; the limit is {limit} bytes"
            )
        request = parse_embeddings_request(parse_json_body(body))
        self._pending = self.worker.submit(
            request.inputs, model=request.model, dimensions=request.dimensions
        )
        try:
            result = await asyncio.wrap_future(self._pending)
        except asyncio.CancelledError:
            if self._client_gone:
                return  # the client left; nothing to answer
            raise
        if self._client_gone:
            return
        self._send_json(
            embeddings_response(
                result.vectors,
                model=request.model or result.model,
                prompt_tokens=result.prompt_tokens,
                encoding_format=request.encoding_format,
            )
        )

    async def get_models(self, model_id: str | None = None) -> None:
        """``GET /v1/models`` and ``GET /v1/models/{id}``."""
        registry = self.worker.registry
        loop = asyncio.get_running_loop()
        if model_id is None:
            entries = await loop.run_in_executor(None, registry.list_models)
            self._send_json(models_response([(e.name, e.source) for e in entries]))
            return
        try:
            spec = await loop.run_in_executor(None, registry.resolve, model_id)
        except ModelNotFoundError:
            raise ModelNotFoundError(f"The model '{model_id}' does not exist") from None
        self._send_json(model_object(model_id, spec.source))

    def write_status(self) -> None:
        """``GET mlx-embed/status``: worker state for the front end."""
        info = self.worker.info(timeout=0)
        info["version"] = __version__
        self._send_json(info)


class NotFoundMixin(OpenAIErrorsMixin):
    """Unknown paths under ``/v1``: 404 in the OpenAI shape for every method."""

    def prepare(self) -> None:
        raise web.HTTPError(404, "Unknown route %s", self.request.path)
