"""The standalone OpenAI-compatible server: the same handlers in a plain Tornado app.

Used by ``jupyter-mlx-embed serve`` and by the kernel-side server (``%embed_serve``). It
listens on loopback by default, always requires ``Authorization: Bearer <token>`` (checked
before any byte of a body is read), caps open connections, and stops gracefully: while
stopping, new requests get 503 and every response closes its connection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hmac
import json
import logging
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from tornado import iostream, web
from tornado.http1connection import HTTP1Connection, HTTP1ServerConnection
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from .config import DEFAULT_PORT, ServingConfig
from .errors import WorkerClosedError
from .routes import (
    BODY_TIMEOUT_KEY,
    MAX_BODY_KEY,
    WORKER_KEY,
    EmbeddingsMixin,
    error_body,
    unauthenticated,
)
from .worker import Worker

log = logging.getLogger(__name__)

METRICS_AUTH_KEY = "mlx_embed_metrics_auth"
TOKEN_KEY = "mlx_embed_token"
STATE_KEY = "mlx_embed_state"

#: Seconds :meth:`EmbeddingsServer.stop` waits for requests in flight.
STOP_TIMEOUT = 30.0


@dataclass
class _ServerState:
    """Requests being handled (so that shutdown can wait for them) and whether the server is
    stopping."""

    count: int = 0
    stopping: bool = False
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()

    def enter(self) -> None:
        self.count += 1
        self.idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self.idle.set()


@web.stream_request_body
class _Handler(EmbeddingsMixin, web.RequestHandler):
    """Bearer-token authentication, then the body; 503 while the server stops."""

    _entered = False
    #: Whether the route needs the token (the health check does not; /metrics by setting).
    needs_token = True

    @property
    def _state(self) -> _ServerState:
        state: _ServerState = self.settings[STATE_KEY]
        return state

    def prepare(self) -> None:
        self._state.enter()
        self._entered = True
        expected: str = self.settings[TOKEN_KEY]
        scheme, _, supplied = self.request.headers.get("Authorization", "").partition(" ")
        if self.needs_token and (
            scheme.lower() not in ("bearer", "token")
            or not hmac.compare_digest(supplied.strip().encode(), expected.encode())
        ):
            raise unauthenticated()
        if self._state.stopping:
            raise WorkerClosedError(
                "The server is shutting down; retry with another server",
                code="server_shutting_down",
            )
        self.begin_body()

    def check_xsrf_cookie(self) -> None:
        """Token-authenticated API: no cookies, so no XSRF check."""

    def finish(self, chunk: str | bytes | dict[str, Any] | None = None) -> asyncio.Future[None]:
        if self._state.stopping:  # this is the connection's last response
            self.set_header("Connection", "close")
        flushed = super().finish(chunk)
        flushed.add_done_callback(self._flushed)
        return flushed

    def _flushed(self, written: asyncio.Future[None]) -> None:
        """The response is written out: only now may shutdown close the connection."""
        if not written.cancelled():
            written.exception()  # retrieved: a client that left already is no error
        connection = self.request.connection
        if self._state.stopping and isinstance(connection, HTTP1Connection):
            connection.close()
        self._leave()

    def _leave(self) -> None:
        if self._entered:
            self._entered = False
            self._state.leave()

    def on_connection_close(self) -> None:
        self._leave()  # a client gone mid-body or mid-request is not waited for
        super().on_connection_close()


class _MetricsHandler(_Handler):
    """``GET /metrics``: the Prometheus exposition (behind the token unless configured)."""

    def initialize(self) -> None:
        self.needs_token = self.settings[METRICS_AUTH_KEY]

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(REGISTRY))


class _HealthHandler(_Handler):
    """``GET /health``: ``ready`` (200), ``loading`` or ``failed`` (503); nothing private,
    no token needed (for load balancers and Kubernetes probes)."""

    needs_token = False

    def get(self) -> None:
        status = self.worker.health()
        self.set_status(200 if status == "ready" else 503)
        self._send_json({"status": status})


class _EmbeddingsHandler(_Handler):
    async def post(self) -> None:
        await self.post_embeddings()


class _ModelsHandler(_Handler):
    async def get(self, model_id: str | None = None) -> None:
        await self.get_models(model_id)


class _StatusHandler(_Handler):
    def get(self) -> None:
        self.write_status()


class _NotFoundHandler(_Handler):
    def prepare(self) -> None:
        super().prepare()
        self.reject_unknown_route()


#: Access lines of the kernel-side server: kept out of notebook cells (a kernel prints its
#: warnings into the output of whatever cell runs), so not propagated to the root logger.
KERNEL_ACCESS_LOG = "jupyter_mlx_embed.kernel_server.access"
logging.getLogger(KERNEL_ACCESS_LOG).propagate = False
logging.getLogger(KERNEL_ACCESS_LOG).addHandler(logging.NullHandler())


def _log_request(logger: logging.Logger, handler: web.RequestHandler) -> None:
    """Tornado's access line, with secrets redacted from the URI (via ``_request_summary``)."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    summary = handler._request_summary()
    elapsed = 1000.0 * handler.request.request_time()
    logger.log(level, "%d %s %.2fms", status, summary, elapsed)


def make_app(
    worker: Worker,
    token: str,
    *,
    config: ServingConfig | None = None,
    access_log: str = "tornado.access",
) -> web.Application:
    """A Tornado application serving the embedding routes with Bearer-token auth
    (``access_log``: the logger its access lines go to)."""
    config = config or ServingConfig()
    settings: dict[str, Any] = {
        WORKER_KEY: worker,
        TOKEN_KEY: token,
        MAX_BODY_KEY: config.max_body_bytes,
        BODY_TIMEOUT_KEY: config.body_timeout,
        METRICS_AUTH_KEY: config.metrics_auth,
        STATE_KEY: _ServerState(),
        "log_function": functools.partial(_log_request, logging.getLogger(access_log)),
    }
    routes = [
        (r"/v1/embeddings", _EmbeddingsHandler),
        (r"/v1/models", _ModelsHandler),
        (r"/v1/models/(.+)", _ModelsHandler),
        (r"/mlx-embed/status", _StatusHandler),
        (r"/metrics", _MetricsHandler),
        (r"/health", _HealthHandler),
        (r"/.*", _NotFoundHandler),
    ]
    return web.Application(routes, **settings)


def _refusal(status: int, message: str, code: str) -> bytes:
    """A complete HTTP response in the OpenAI error shape, for a connection that is closed
    without reading a request."""
    _, body = error_body(web.HTTPError(status, message), status)
    body["error"]["code"] = code
    payload = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status} Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"
    )
    return head.encode() + payload


def _close(stream: iostream.IOStream, written: asyncio.Future[None]) -> None:
    if not written.cancelled():
        written.exception()  # retrieved: a client that left already is no error
    stream.close()


class _CappedHTTPServer(HTTPServer):
    """Tornado's HTTP server, answering 503 and closing connections beyond a maximum."""

    max_connections = ServingConfig.max_connections
    _open = 0
    _refusing = False

    def handle_stream(self, stream: iostream.IOStream, address: tuple[Any, ...]) -> None:
        if self._open >= self.max_connections:
            if not self._refusing:
                log.warning("%d connections open (max_connections); refusing new ones", self._open)
                self._refusing = True
            refusal = _refusal(
                503, "Too many open connections; retry shortly", "too_many_connections"
            )
            stream.write(refusal).add_done_callback(lambda written: _close(stream, written))
            return
        self._open += 1
        super().handle_stream(stream, address)

    def on_close(self, server_conn: HTTP1ServerConnection) -> None:  # type: ignore[override]
        self._open -= 1
        self._refusing = False
        super().on_close(server_conn)


class EmbeddingsServer:
    """An HTTP server for a worker on the running asyncio loop.

    Args:
        worker: The worker to serve.
        host: Address to bind (loopback by default).
        port: Port to bind; 0 picks a free one (see :attr:`port` after :meth:`start`).
        token: The API key clients must send; generated when ``None``.
        config: Limits (``max_body_bytes``, ``body_timeout``, ``max_connections``).
    """

    def __init__(
        self,
        worker: Worker,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        token: str | None = None,
        config: ServingConfig | None = None,
        access_log: str = "tornado.access",
    ) -> None:
        self.worker = worker
        self.host = host
        self.port = port
        self.token = token or secrets.token_urlsafe(32)
        self.config = config or ServingConfig()
        self.app = make_app(worker, self.token, config=self.config, access_log=access_log)
        self._http: _CappedHTTPServer | None = None

    @property
    def url(self) -> str:
        """The OpenAI ``base_url`` of this server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def start(self) -> None:
        """Bind and start serving on the current event loop."""
        self._http = _CappedHTTPServer(
            self.app,
            xheaders=False,
            # The handlers stream bodies and answer 413 themselves; Tornado's own limit (a
            # bare 400) must lie above any length they refuse.
            max_body_size=1 << 62,
            body_timeout=self.config.body_timeout,
            idle_connection_timeout=self.config.body_timeout,  # also bounds header reading
        )
        self._http.max_connections = self.config.max_connections
        sockets = bind_sockets(self.port, address=self.host)
        self.port = sockets[0].getsockname()[1]
        self._http.add_sockets(sockets)

    async def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop accepting connections, answer new requests on open ones with 503 and close
        each connection after its response, wait (up to ``timeout``) for the requests in
        flight, then close every connection left (idle ones)."""
        if self._http is None:
            return
        state: _ServerState = self.app.settings[STATE_KEY]
        state.stopping = True
        self._http.stop()
        try:
            await asyncio.wait_for(state.idle.wait(), timeout)
        except asyncio.TimeoutError:
            log.warning("%d requests still running after %.0fs; stopping", state.count, timeout)
        await self._http.close_all_connections()
        self._http = None


async def serve(server: EmbeddingsServer, stop: asyncio.Event, *, announce: Any = print) -> None:
    """Run ``server`` until ``stop`` is set, then shut down gracefully."""
    server.start()
    announce(f"Serving OpenAI-compatible embeddings at {server.url}")
    await stop.wait()
    await server.stop()


class KernelServer:
    """An :class:`EmbeddingsServer` for an interactive session, on a daemon thread with an
    event loop of its own: never on the kernel's loop, which is blocked while a cell runs
    (so a cell calling the server, or any client while a cell is busy, would wait)."""

    def __init__(
        self, server: EmbeddingsServer, loop: asyncio.AbstractEventLoop, thread: threading.Thread
    ) -> None:
        self.server = server
        self._loop = loop
        self._thread = thread

    @property
    def url(self) -> str:
        """The OpenAI ``base_url``."""
        return self.server.url

    @property
    def token(self) -> str:
        """The API key clients must send."""
        return self.server.token

    @classmethod
    def start(
        cls,
        worker: Worker,
        *,
        port: int = DEFAULT_PORT,
        token: str | None = None,
        config: ServingConfig | None = None,
    ) -> KernelServer:
        """Bind on loopback and start serving ``worker`` in a new thread.

        Raises:
            OSError: The port cannot be bound.
        """
        server = EmbeddingsServer(
            worker, port=port, token=token, config=config, access_log=KERNEL_ACCESS_LOG
        )
        loop = asyncio.new_event_loop()
        started: concurrent.futures.Future[None] = concurrent.futures.Future()

        async def begin() -> None:
            server.start()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(begin())
            except BaseException as exc:  # noqa: BLE001 - reported to the caller below
                started.set_exception(exc)
                loop.close()
                return
            started.set_result(None)
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_default_executor())
                loop.close()

        thread = threading.Thread(target=run, name="mlx-embed-http", daemon=True)
        thread.start()
        started.result()
        return cls(server, loop, thread)

    def stop_soon(self) -> concurrent.futures.Future[None]:
        """Stop accepting connections now; requests in flight finish on their own, then the
        thread ends. The returned future resolves then."""

        async def stop() -> None:
            try:
                await self.server.stop()
            finally:
                asyncio.get_running_loop().call_soon(self._loop.stop)

        return asyncio.run_coroutine_threadsafe(stop(), self._loop)
