"""The standalone OpenAI-compatible server: the same handlers in a plain Tornado app.

Used by ``jupyter-mlx-embed serve`` and by the kernel-side server (``%embed_serve``). It
listens on loopback by default, always requires ``Authorization: Bearer <token>`` (checked
before any byte of a body is read), caps open connections (those that have not authenticated
apart, so that they cannot lock out those that have), and stops gracefully: while stopping,
new requests get 503 and every response closes its connection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import functools
import hmac
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from tornado import httputil, iostream, web
from tornado.http1connection import (
    HTTP1Connection,
    HTTP1ConnectionParameters,
    HTTP1ServerConnection,
)
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from .config import DEFAULT_PORT, ServingConfig
from .errors import PayloadTooLargeError, WorkerClosedError
from .routes import EmbeddingsMixin, handler_settings, route_table, unauthenticated
from .worker import Worker

log = logging.getLogger(__name__)

METRICS_AUTH_KEY = "mlx_embed_metrics_auth"
TOKEN_KEY = "mlx_embed_token"
STATE_KEY = "mlx_embed_state"
CONNECTIONS_KEY = "mlx_embed_connections"

#: Seconds :meth:`EmbeddingsServer.stop` waits for requests in flight.
STOP_TIMEOUT = 30.0
#: Seconds a connection that has not authenticated yet has to send complete request headers
#: (from its opening, or from its previous response); then it is closed. Clients send their
#: headers at once; until they do, the connection holds a place that others need. Capped by
#: ``body_timeout``, which stays the idle timeout of authenticated connections.
HEADER_TIMEOUT = 5.0
#: Seconds a new connection is spared when the unauthenticated pool is full: a client's
#: fresh connection must get to send its headers even when a flood of connections arrives in
#: the same accept burst. Up to twice ``max_connections`` such young ones are kept.
NEW_CONNECTION_GRACE = 0.5


class _Connections:
    """The open connections, in two pools of at most ``max_connections`` each.

    A connection joins the authenticated pool with its first request that needs the token
    and presents it; beyond the maximum, that request gets 503 and its connection is closed.
    Every other connection (half-sent request lines, idle sockets, health probes) is in the
    unauthenticated pool, where a new connection closes the oldest one when the pool is full
    (sparing those younger than :data:`NEW_CONNECTION_GRACE`, up to twice the maximum):
    clients that never authenticate only push each other out and cannot lock out those that
    do. Both pools log once when they fill up, and again only after they have drained to half.
    """

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        # Each with the time it joined the pool, oldest first.
        self._unauthenticated: OrderedDict[iostream.IOStream, float] = OrderedDict()
        self._authenticated: set[iostream.IOStream] = set()
        self._evicting = False
        self._refusing = False

    def open(self, stream: iostream.IOStream) -> None:
        """Count a connection that waits for a request's headers as unauthenticated (a new
        one, or one whose unauthenticated request was answered), closing the oldest such ones
        if the pool is full."""
        if stream in self._unauthenticated or stream in self._authenticated:
            return
        now = time.monotonic()
        while len(self._unauthenticated) >= self.max_connections:
            oldest, joined = next(iter(self._unauthenticated.items()))
            young = now - joined < NEW_CONNECTION_GRACE
            if young and len(self._unauthenticated) < 2 * self.max_connections:
                break
            del self._unauthenticated[oldest]
            if not self._evicting:
                log.warning(
                    "%d connections have not authenticated (max_connections); closing the "
                    "oldest of them to make room for new ones",
                    self.max_connections,
                )
                self._evicting = True
            oldest.close()
        self._unauthenticated[stream] = now

    def spoke(self, stream: iostream.IOStream) -> None:
        """A connection sent a request's whole headers: no longer one to close for room
        (under a flood of new connections, a real client's request must not be closed
        between its headers and its handler's token check)."""
        self._unauthenticated.pop(stream, None)

    def authenticated(self, stream: iostream.IOStream) -> bool:
        """Whether the connection has authenticated."""
        return stream in self._authenticated

    def admit(self, stream: iostream.IOStream) -> bool:
        """Move an authenticated connection to its pool; False when that pool is full."""
        if stream in self._authenticated or stream.closed():
            return True  # counted already, or gone (closed as the oldest unauthenticated)
        if len(self._authenticated) >= self.max_connections:
            if not self._refusing:
                log.warning(
                    "%d authenticated connections open (max_connections); refusing more",
                    len(self._authenticated),
                )
                self._refusing = True
            return False
        self._unauthenticated.pop(stream, None)
        self._authenticated.add(stream)
        return True

    def close(self, stream: iostream.IOStream) -> None:
        """Forget a closed connection."""
        self._authenticated.discard(stream)
        self._unauthenticated.pop(stream, None)
        half = self.max_connections // 2
        self._refusing = self._refusing and len(self._authenticated) > half
        self._evicting = self._evicting and len(self._unauthenticated) > half


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
    """Bearer-token authentication (routes without it take no body), a place among the
    authenticated connections, then the body; 503 while the server stops or when no place is
    left."""

    _entered = False
    #: Whether the response refuses the connection (too many): it is closed after it.
    _refused = False
    #: Whether the route needs the token (the health check does not; /metrics by setting).
    needs_token = True

    @property
    def _state(self) -> _ServerState:
        state: _ServerState = self.settings[STATE_KEY]
        return state

    def prepare(self) -> None:
        self._state.enter()
        self._entered = True
        headers = self.request.headers
        if self.needs_token:
            expected: str = self.settings[TOKEN_KEY]
            scheme, _, supplied = headers.get("Authorization", "").partition(" ")
            if scheme.lower() not in ("bearer", "token") or not hmac.compare_digest(
                supplied.strip().encode(), expected.encode()
            ):
                raise unauthenticated()
        elif "Transfer-Encoding" in headers or headers.get("Content-Length", "0") != "0":
            # Anyone may call these routes: they must not make the server keep a body.
            raise PayloadTooLargeError("This route takes no request body")
        if self._state.stopping:
            raise WorkerClosedError(
                "The server is shutting down; retry with another server",
                code="server_shutting_down",
            )
        connections: _Connections = self.settings[CONNECTIONS_KEY]
        connection = self.request.connection
        if (
            self.needs_token
            and isinstance(connection, HTTP1Connection)
            and not connections.admit(connection.stream)
        ):
            self._refused = True
            raise WorkerClosedError(
                "Too many open connections; retry shortly", code="too_many_connections"
            )
        self.begin_body()

    def check_xsrf_cookie(self) -> None:
        """Token-authenticated API: no cookies, so no XSRF check."""

    @property
    def _last_response(self) -> bool:
        return self._state.stopping or self._refused

    @property
    def _body_unread(self) -> bool:
        """Whether the request was answered before its body was read (refused in ``prepare``:
        401, 404, 413...): Tornado then closes the connection after the answer."""
        prepared = self._prepared_future  # set for streamed bodies, done once prepare() is
        return prepared is not None and not prepared.done()

    def flush(self, include_footers: bool = False) -> asyncio.Future[None]:
        if not self._headers_written:  # the headers leave with the first flush
            if self._last_response or self._body_unread:
                # Said, so that a keep-alive client opens a new connection for its next
                # request instead of sending it down this one.
                self.set_header("Connection", "close")
            if self._refused:
                self.set_header("Retry-After", "1")
        return super().flush(include_footers)

    def finish(self, chunk: str | bytes | dict[str, Any] | None = None) -> asyncio.Future[None]:
        flushed = super().finish(chunk)
        flushed.add_done_callback(self._flushed)
        return flushed

    def _flushed(self, written: asyncio.Future[None]) -> None:
        """The response is written out: only now may the connection be closed."""
        if not written.cancelled():
            written.exception()  # retrieved: a client that left already is no error
        connection = self.request.connection
        if self._last_response and isinstance(connection, HTTP1Connection):
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
        **handler_settings(worker, config),
        TOKEN_KEY: token,
        METRICS_AUTH_KEY: config.metrics_auth,
        STATE_KEY: _ServerState(),
        CONNECTIONS_KEY: _Connections(config.max_connections),
        "log_function": functools.partial(_log_request, logging.getLogger(access_log)),
    }
    # The shared routes, then this server's own (operations: no Jupyter around it), and
    # every other path is an OpenAI-shaped 404.
    routes = route_table(
        _Handler,
        extra=[(r"/metrics", _MetricsHandler), (r"/health", _HealthHandler)],
        unknown=r"/.*",
    )
    return web.Application(routes, **settings)


class _HeadersSeen(httputil.HTTPMessageDelegate):
    """A request's delegate that calls ``seen`` once the request's headers are in."""

    def __init__(self, inner: httputil.HTTPMessageDelegate, seen: Callable[[], None]) -> None:
        self._inner, self._seen = inner, seen

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        self._seen()
        return self._inner.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return self._inner.data_received(chunk)

    def finish(self) -> None:
        self._inner.finish()

    def on_connection_close(self) -> None:
        self._inner.on_connection_close()


class _CappedHTTPServer(HTTPServer):
    """Tornado's HTTP server, keeping its connections in :class:`_Connections` and giving
    those that have not authenticated :data:`HEADER_TIMEOUT` to send each request's headers
    (the connection parameters given to it are those of authenticated connections)."""

    connections: _Connections
    unauthenticated_params: HTTP1ConnectionParameters  # with the short header_timeout

    def handle_stream(self, stream: iostream.IOStream, address: tuple[Any, ...]) -> None:
        self.connections.open(stream)
        super().handle_stream(stream, address)

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        # Called before each request's headers are read, with the deadline of its connection.
        delegate = super().start_request(server_conn, request_conn)
        if isinstance(request_conn, HTTP1Connection) and not self.connections.authenticated(
            request_conn.stream
        ):
            request_conn.params = self.unauthenticated_params
            self.connections.open(request_conn.stream)
            return _HeadersSeen(delegate, lambda: self.connections.spoke(request_conn.stream))
        return delegate

    def on_close(self, server_conn: object) -> None:
        self.connections.close(cast(HTTP1ServerConnection, server_conn).stream)
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
            # Authenticated connections: also the deadline of each request's headers.
            idle_connection_timeout=self.config.body_timeout,
        )
        self._http.connections = self.app.settings[CONNECTIONS_KEY]
        unauthenticated_params = copy.copy(self._http.conn_params)
        unauthenticated_params.header_timeout = min(HEADER_TIMEOUT, self.config.body_timeout)
        self._http.unauthenticated_params = unauthenticated_params
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


class ThreadedServer:
    """An :class:`EmbeddingsServer` on a daemon thread with an event loop of its own.

    A kernel's (``%embed_serve``): never on the kernel's loop, which is blocked while a cell
    runs (so a cell calling the server, or any client while a cell is busy, would wait). A
    Jupyter server's in-process endpoint: HTTP clients running inside the server process
    (jupyter-ai's OpenAI providers) block the server's loop while they wait for an answer
    that loop would have to give.
    """

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
    ) -> ThreadedServer:
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
