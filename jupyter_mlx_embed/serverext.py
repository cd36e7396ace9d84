"""Jupyter server extension: the OpenAI-compatible endpoint under the server's base URL.

Routes (all behind Jupyter's authentication and authorizer): ``POST v1/embeddings``,
``GET v1/models``, ``GET v1/models/{id}`` and ``GET mlx-embed/status``.
"""

from __future__ import annotations

import asyncio
import os

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.application import ExtensionApp
from jupyter_server.utils import url_path_join
from tornado import web

from . import envvars
from .routes import MAX_BODY_KEY, WORKER_KEY, EmbeddingsMixin
from .settings import MLXEmbed
from .worker import Worker

AUTH_RESOURCE = "mlx_embed"


class _Base(EmbeddingsMixin, APIHandler):
    auth_resource = AUTH_RESOURCE


class EmbeddingsHandler(_Base):
    """``POST v1/embeddings``."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        await self.post_embeddings()


class ModelsHandler(_Base):
    """``GET v1/models`` and ``GET v1/models/{id}``."""

    @web.authenticated
    @authorized
    async def get(self, model_id: str | None = None) -> None:
        await self.get_models(model_id)


class StatusHandler(_Base):
    """``GET mlx-embed/status``: worker state for the JupyterLab status bar."""

    @web.authenticated
    @authorized
    def get(self) -> None:
        self.write_status()


class MLXEmbedApp(ExtensionApp):
    """Starts the process's embedding worker with the server and serves its routes."""

    name = "jupyter_mlx_embed"
    classes = [MLXEmbed]  # noqa: RUF012 - traitlets expects a plain list

    worker: Worker | None = None

    def initialize_settings(self) -> None:
        settings = MLXEmbed(parent=self)
        serving = settings.serving_config()
        # This worker becomes the process's worker: jupyter_mlx_embed.embed() in the server
        # process (another extension, a server-side hook) uses it too.
        self.worker = Worker(settings.engine_config())
        if serving.preload:
            self.worker.preload()
        self.settings.update({WORKER_KEY: self.worker, MAX_BODY_KEY: serving.max_body_bytes})
        os.environ[envvars.SERVER_PID] = str(os.getpid())
        assert self.serverapp is not None  # set before extensions initialise
        self.log.info(
            "jupyter-mlx-embed: OpenAI-compatible endpoint at %s",
            url_path_join(self.serverapp.base_url, "v1"),
        )

    def initialize_handlers(self) -> None:
        self.handlers.extend(
            [
                (r"/v1/embeddings", EmbeddingsHandler),
                (r"/v1/models", ModelsHandler),
                (r"/v1/models/(.+)", ModelsHandler),
                (r"/mlx-embed/status", StatusHandler),
            ]
        )

    async def stop_extension(self) -> None:
        """Finish queued requests and stop the worker thread, waiting in a thread so that the
        server's event loop keeps serving meanwhile."""
        if self.worker is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.worker.close)
