"""The Python API over the process's worker: ``embed``, ``aembed`` and ``info``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from typing import Any

import numpy as np

from ._version import __version__
from .config import EngineConfig
from .errors import InvalidRequestError
from .worker import EmbedResult, Worker

_lock = threading.Lock()
_worker: Worker | None = None


def get_worker() -> Worker:
    """The process's worker, started on first use from ``JUPYTER_MLX_EMBED_*`` settings."""
    global _worker
    with _lock:
        if _worker is None or not _worker.alive:
            _worker = Worker(EngineConfig.from_env())
        return _worker


def configure(config: EngineConfig | None = None, **settings: Any) -> Worker:
    """Replace the process's worker with one using ``config`` (or ``settings`` over the env).

    The previous worker finishes its queued requests and stops first: MLX has one owner
    thread per process.
    """
    global _worker
    with _lock:
        if _worker is not None:
            _worker.close()
        _worker = Worker(config or EngineConfig.from_env(**settings))
        return _worker


def _as_texts(input: str | Iterable[str]) -> tuple[list[str], bool]:
    if isinstance(input, str):
        return [input], True
    if isinstance(input, np.ndarray):
        input = input.tolist()
    if isinstance(input, bytes) or not isinstance(input, Iterable):
        raise InvalidRequestError(
            f"input must be a string or an iterable of strings, got {type(input).__name__}",
            param="input",
        )
    return list(input), False


def _shape(result: EmbedResult, single: bool) -> np.ndarray:
    return result.vectors[0] if single else result.vectors


def embed(
    input: str | Iterable[str], *, model: str | None = None, dimensions: int | None = None
) -> np.ndarray:
    """Embed text with the process's worker.

    Args:
        input: A string, or an iterable of strings (list, tuple, numpy array, pandas Series).
        model: Model name; the configured default (all-MiniLM-L6-v2) when ``None``.
        dimensions: Keep the first ``dimensions`` values of each vector and renormalise.

    Returns:
        float32 L2-normalised vectors: shape ``(d,)`` for a string, ``(n, d)`` otherwise.

    Raises:
        EmbedError: Invalid input, unknown or unsupported model, or overload.
    """
    texts, single = _as_texts(input)
    worker = get_worker()
    if not texts:
        dim = dimensions or worker.registry.resolve(model).dimension
        return np.zeros((0, dim), dtype=np.float32)
    future = worker.submit(texts, model=model, dimensions=dimensions)
    return _shape(future.result(timeout=worker.config.request_timeout), single)


async def aembed(
    input: str | Iterable[str], *, model: str | None = None, dimensions: int | None = None
) -> np.ndarray:
    """Awaitable :func:`embed`: the event loop keeps running while the worker computes."""
    texts, single = _as_texts(input)
    worker = get_worker()
    if not texts:
        dim = dimensions or worker.registry.resolve(model).dimension
        return np.zeros((0, dim), dtype=np.float32)
    future = worker.submit(texts, model=model, dimensions=dimensions)
    return _shape(await asyncio.wrap_future(future), single)


def info() -> dict[str, Any]:
    """Versions, device, BLAS in use, loaded models, queue depth and counters."""
    data = get_worker().info()
    data["version"] = __version__
    return data
