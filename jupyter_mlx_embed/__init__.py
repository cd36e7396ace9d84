"""jupyter-mlx-embed: local text embeddings with MLX for Jupyter."""

from __future__ import annotations

from ._version import __version__
from .api import aembed, configure, embed, get_transport, get_worker, info, set_transport
from .config import EngineConfig
from .errors import (
    EmbedError,
    InvalidRequestError,
    ModelLoadError,
    ModelNotFoundError,
    ModelTypeError,
    OverloadedError,
    PayloadTooLargeError,
    WorkerClosedError,
)
from .worker import EmbedResult, Worker


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext jupyter_mlx_embed``: register the magics (imported lazily)."""
    from .magics import load

    load(ipython)


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where the prebuilt JupyterLab extension lives inside the package."""
    return [{"src": "labextension", "dest": "jupyter-mlx-embed"}]


def _jupyter_server_extension_points() -> list[dict[str, object]]:
    """Register the server extension (imported lazily: the engine API does not need it)."""
    from .serverext import MLXEmbedApp

    return [{"module": "jupyter_mlx_embed", "app": MLXEmbedApp}]


__all__ = [
    "EmbedError",
    "EmbedResult",
    "EngineConfig",
    "InvalidRequestError",
    "ModelLoadError",
    "ModelNotFoundError",
    "ModelTypeError",
    "OverloadedError",
    "PayloadTooLargeError",
    "Worker",
    "WorkerClosedError",
    "__version__",
    "aembed",
    "configure",
    "embed",
    "get_transport",
    "get_worker",
    "info",
    "set_transport",
]
