"""Jupyter server extension: the OpenAI-compatible endpoint under the server's base URL.

Routes (:func:`~jupyter_mlx_embed.routes.route_table`, all behind Jupyter's authentication
and authorizer): ``POST v1/embeddings``, ``GET v1/models``, ``GET v1/models/{id}``,
``GET mlx-embed/status``, and an OpenAI-shaped 404 for any other path under ``v1/``. API
clients without a valid token get 401 (not Jupyter's 403 about a missing ``_xsrf``
argument); browsers keep Jupyter's cookie and XSRF rules.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.application import ExtensionApp
from jupyter_server.utils import url_path_join
from tornado import web

from . import api, envvars
from .config import ServingConfig
from .routes import EmbeddingsMixin, handler_settings, route_table, unauthenticated
from .settings import MLXEmbed
from .standalone import ThreadedServer
from .worker import Worker

AUTH_RESOURCE = "mlx_embed"

_UNSET = object()


@web.stream_request_body
class _Base(EmbeddingsMixin, APIHandler):
    """Jupyter's authentication, then the body (never read for an unauthenticated client)."""

    auth_resource = AUTH_RESOURCE

    async def prepare(self) -> None:  # type: ignore[override]
        await super().prepare()  # resolves the user; XSRF for cookie-authenticated requests
        # (with ServerApp.allow_unauthenticated_access; CORS preflights carry no credentials)
        if self.current_user is None and self.request.method != "OPTIONS":
            raise unauthenticated()
        self.begin_body()

    def check_xsrf_cookie(self) -> None:
        """401 for a request without a valid token or login cookie; Jupyter's XSRF check
        (403) for a request authenticated by its cookie."""
        if getattr(self, "_jupyter_current_user", _UNSET) is None:
            raise unauthenticated()
        super().check_xsrf_cookie()

    def get_login_url(self) -> str:
        """API clients are not redirected to a login page: 401."""
        raise unauthenticated()


def _guard(method: Callable[..., Any]) -> Callable[..., Any]:
    """Each route method: authenticated (Jupyter's rule for every handler), then authorized
    on :data:`AUTH_RESOURCE` (``read`` for GET, ``write`` for POST)."""
    return web.authenticated(authorized(method))


class MLXEmbedApp(ExtensionApp):
    """Starts the process's embedding worker with the server and serves its routes."""

    name = "jupyter_mlx_embed"
    classes = [MLXEmbed]  # noqa: RUF012 - traitlets expects a plain list

    worker: Worker | None = None
    inprocess: ThreadedServer | None = None

    def initialize_settings(self) -> None:
        settings = MLXEmbed(parent=self)
        serving = settings.serving_config()
        # This worker becomes the process's worker: jupyter_mlx_embed.embed() in the server
        # process (another extension, a server-side hook) uses it too.
        self.worker = Worker(settings.engine_config())
        if serving.preload:
            self.worker.preload()
        self.settings.update(handler_settings(self.worker, serving))
        assert self.serverapp is not None  # set before extensions initialise
        os.environ[envvars.SERVER_PID] = str(os.getpid())
        # Kernels reach this server over HTTPS with its own certificate (self-signed or not).
        if self.serverapp.certfile:
            os.environ[envvars.SERVER_CERTFILE] = os.path.abspath(self.serverapp.certfile)
        else:
            os.environ.pop(envvars.SERVER_CERTFILE, None)
        self.log.info(
            "jupyter-mlx-embed: OpenAI-compatible endpoint at %s",
            url_path_join(self.serverapp.base_url, "v1"),
        )
        if serving.inprocess_endpoint:
            self._serve_inprocess(serving)

    def _serve_inprocess(self, serving: ServingConfig) -> None:
        """The same routes on a loopback port served by a thread of their own
        (``openai_endpoint()`` and ``openai_client()`` in this process use it; the log
        names it): an HTTP client inside this process that blocks the
        server's loop while it waits still gets its answer."""
        assert self.worker is not None
        try:
            self.inprocess = ThreadedServer.start(self.worker, port=0, config=serving)
        except OSError as exc:
            self.log.warning("jupyter-mlx-embed: no in-process endpoint (%s)", exc)
            return
        api.set_inprocess_endpoint((self.inprocess.url, self.inprocess.token))
        self.log.info(
            "jupyter-mlx-embed: in-process endpoint for clients inside this server at %s",
            self.inprocess.url,
        )

    def initialize_handlers(self) -> None:
        self.handlers.extend(route_table(_Base, guard=_guard))

    async def stop_extension(self) -> None:
        """Finish queued requests and stop the worker thread, waiting in a thread so that the
        server's event loop keeps serving meanwhile."""
        inprocess, self.inprocess = self.inprocess, None  # stopped once, however often asked
        if inprocess is not None:
            api.set_inprocess_endpoint(None)
            await asyncio.wrap_future(inprocess.stop_soon())
        if self.worker is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.worker.close)
