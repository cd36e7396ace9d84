"""The Python API: ``embed``, ``aembed`` and ``info`` through this process's transport.

In a kernel started by a Jupyter server that runs the extension, requests go to the server's
worker over HTTP; elsewhere to this process's own worker (see :mod:`.transport`).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterable
from typing import Any

import numpy as np

from ._version import __version__
from .config import EngineConfig
from .errors import EmbedError, InvalidRequestError
from .registry import ModelRegistry
from .transport import TRANSPORT_ENV, Transport, choose_transport
from .worker import EmbedResult, Worker

_lock = threading.RLock()
_worker: Worker | None = None
_transport: Transport | None = None
_transport_mode: str | None = None


def get_worker() -> Worker:
    """This process's worker, started on first use from ``JUPYTER_MLX_EMBED_*`` settings."""
    global _worker
    with _lock:
        if _worker is None or not _worker.alive:
            _worker = Worker(EngineConfig.from_env())
        return _worker


def configure(config: EngineConfig | None = None, **settings: Any) -> Worker:
    """Replace this process's worker with one using ``config`` (or ``settings`` over the env).

    The previous worker finishes its queued requests and stops first: MLX has one owner
    thread per process.
    """
    global _worker
    with _lock:
        if _worker is not None:
            _worker.close()
        _worker = Worker(config or EngineConfig.from_env(**settings))
        return _worker


def get_transport() -> Transport:
    """The transport in use, chosen on first use (``JUPYTER_MLX_EMBED_TRANSPORT``, default
    ``auto``: the parent Jupyter server's worker when there is one, else a local worker)."""
    global _transport
    with _lock:
        if _transport is None:
            mode = _transport_mode or os.environ.get(TRANSPORT_ENV) or "auto"
            _transport = choose_transport(mode, get_worker, EngineConfig.from_env().request_timeout)
        return _transport


def set_transport(mode: str) -> Transport:
    """Force ``local`` or ``server``, or go back to ``auto``.

    Raises:
        ValueError: Unknown mode.
        EmbedError: ``server`` without a parent Jupyter server running the extension.
    """
    global _transport, _transport_mode
    with _lock:
        new = choose_transport(mode, get_worker, EngineConfig.from_env().request_timeout)
        if _transport is not None:
            _transport.close()
        _transport, _transport_mode = new, mode
        return new


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
    texts = list(input)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidRequestError(
                f"input[{i}] must be a string, got {type(text).__name__}", param="input"
            )
    return texts, False


def _empty(transport: Transport, model: str | None, dimensions: int | None) -> np.ndarray:
    if dimensions is None:
        try:
            dimensions = ModelRegistry(EngineConfig.from_env()).resolve(model).dimension
        except EmbedError:  # a model only the server knows: ask it
            probe = transport.submit(["."], model=model, dimensions=None)
            dimensions = probe.result(timeout=transport.timeout).vectors.shape[1]
    return np.zeros((0, dimensions), dtype=np.float32)


def _shape(result: EmbedResult, single: bool) -> np.ndarray:
    return result.vectors[0] if single else result.vectors


def embed(
    input: str | Iterable[str], *, model: str | None = None, dimensions: int | None = None
) -> np.ndarray:
    """Embed text.

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
    transport = get_transport()
    if not texts:
        return _empty(transport, model, dimensions)
    future = transport.submit(texts, model=model, dimensions=dimensions)
    return _shape(future.result(timeout=transport.timeout), single)


async def aembed(
    input: str | Iterable[str], *, model: str | None = None, dimensions: int | None = None
) -> np.ndarray:
    """Awaitable :func:`embed`: the event loop keeps running while the worker computes."""
    texts, single = _as_texts(input)
    transport = get_transport()
    if not texts:
        return _empty(transport, model, dimensions)
    future = transport.submit(texts, model=model, dimensions=dimensions)
    return _shape(await asyncio.wrap_future(future), single)


def info() -> dict[str, Any]:
    """Transport, versions, device, BLAS in use, loaded models, queue depth and counters."""
    data = get_transport().info()
    data["version"] = __version__
    return data
