"""The standalone OpenAI-compatible server: the same handlers in a plain Tornado app.

Used by ``jupyter-mlx-embed serve`` and by the kernel-side server. It listens on loopback by
default and always requires ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from .config import DEFAULT_PORT, ServingConfig
from .routes import MAX_BODY_KEY, WORKER_KEY, EmbeddingsMixin, HandlerBase, NotFoundMixin
from .worker import Worker

log = logging.getLogger(__name__)

TOKEN_KEY = "mlx_embed_token"
STATE_KEY = "mlx_embed_state"


@dataclass
class _InFlight:
    """Counts requests being handled, so shutdown can wait for them."""

    count: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()


class _TokenAuthMixin(HandlerBase):
    """Requires ``Authorization: Bearer <token>`` (or ``token <token>``) on every request."""

    def prepare(self) -> None:
        state: _InFlight = self.settings[STATE_KEY]
        state.count += 1
        state.idle.clear()
        self._counted = True
        expected: str = self.settings[TOKEN_KEY]
        scheme, _, supplied = self.request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() not in ("bearer", "token") or not hmac.compare_digest(
            supplied.strip().encode(), expected.encode()
        ):
            raise web.HTTPError(
                401, "Missing or invalid API key: send 'Authorization: Bearer TOKEN'"
            )
        super().prepare()

    def on_finish(self) -> None:
        if getattr(self, "_counted", False):
            state: _InFlight = self.settings[STATE_KEY]
            state.count -= 1
            if state.count == 0:
                state.idle.set()
        super().on_finish()


class _Handler(_TokenAuthMixin, EmbeddingsMixin, web.RequestHandler):
    def check_xsrf_cookie(self) -> None:
        """Token-authenticated API: no cookies, so no XSRF check."""


class _EmbeddingsHandler(_Handler):
    async def post(self) -> None:
        await self.post_embeddings()


class _ModelsHandler(_Handler):
    async def get(self, model_id: str | None = None) -> None:
        await self.get_models(model_id)


class _StatusHandler(_Handler):
    def get(self) -> None:
        self.write_status()


class _NotFoundHandler(_TokenAuthMixin, NotFoundMixin, web.RequestHandler):
    pass


def make_app(
    worker: Worker, token: str, *, max_body_bytes: int = ServingConfig.max_body_bytes
) -> web.Application:
    """A Tornado application serving the embedding routes with Bearer-token auth."""
    settings: dict[str, Any] = {
        WORKER_KEY: worker,
        TOKEN_KEY: token,
        MAX_BODY_KEY: max_body_bytes,
        STATE_KEY: _InFlight(),
    }
    routes = [
        (r"/v1/embeddings", _EmbeddingsHandler),
        (r"/v1/models", _ModelsHandler),
        (r"/v1/models/(.+)", _ModelsHandler),
        (r"/mlx-embed/status", _StatusHandler),
        (r"/.*", _NotFoundHandler),
    ]
    return web.Application(routes, **settings)


class EmbeddingsServer:
    """An HTTP server for a worker on the running asyncio loop.

    Args:
        worker: The worker to serve.
        host: Address to bind (loopback by default).
        port: Port to bind; 0 picks a free one (see :attr:`port` after :meth:`start`).
        token: The API key clients must send; generated when ``None``.
        max_body_bytes: Largest accepted body (413 above it).
    """

    def __init__(
        self,
        worker: Worker,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        token: str | None = None,
        max_body_bytes: int = ServingConfig.max_body_bytes,
    ) -> None:
        self.worker = worker
        self.host = host
        self.port = port
        self.token = token or secrets.token_urlsafe(32)
        self.app = make_app(worker, self.token, max_body_bytes=max_body_bytes)
        # Bodies up to twice the limit reach the handler, which answers 413; larger ones are
        # cut off by Tornado before they are buffered.
        self._max_body = 2 * max_body_bytes + (1 << 20)
        self._http: HTTPServer | None = None

    @property
    def url(self) -> str:
        """The OpenAI ``base_url`` of this server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def start(self) -> None:
        """Bind and start serving on the current event loop."""
        self._http = HTTPServer(self.app, max_body_size=self._max_body, xheaders=False)
        sockets = bind_sockets(self.port, address=self.host)
        self.port = sockets[0].getsockname()[1]
        self._http.add_sockets(sockets)

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop accepting connections and wait for in-flight requests to finish."""
        if self._http is None:
            return
        self._http.stop()
        state: _InFlight = self.app.settings[STATE_KEY]
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
    """An :class:`EmbeddingsServer` for an interactive session.

    In a Jupyter kernel it runs on the kernel's own event loop (no new loop, no nesting);
    where no loop is running (terminal IPython) it gets a daemon thread with its own loop.
    """

    def __init__(self, server: EmbeddingsServer, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self._loop = loop

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
        cls, worker: Worker, *, port: int = DEFAULT_PORT, token: str | None = None
    ) -> KernelServer:
        """Bind on loopback and start serving ``worker``."""
        server = EmbeddingsServer(worker, port=port, token=token)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return cls(server, _start_in_thread(server))
        server.start()
        return cls(server, loop)

    def stop_soon(self) -> None:
        """Stop accepting connections; requests in flight finish on their own."""
        self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self.server.stop()))


def _start_in_thread(server: EmbeddingsServer) -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            server.start()
        except BaseException as exc:  # noqa: BLE001 - reported to the caller below
            failure.append(exc)
            return
        finally:
            started.set()
        loop.run_forever()

    threading.Thread(target=run, name="mlx-embed-http", daemon=True).start()
    started.wait()
    if failure:
        raise failure[0]
    return loop
