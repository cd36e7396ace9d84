"""jupyter-mlx-embed: local text embeddings with MLX for Jupyter."""

from __future__ import annotations

from ._version import __version__
from .api import aembed, configure, embed, get_worker, info
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
    "get_worker",
    "info",
]
