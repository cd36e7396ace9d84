"""The Python API: ``embed``, ``aembed``, ``embed_images``, ``aembed_images``, ``rerank``,
``arerank`` and ``info`` through this process's transport.

In a kernel started by a Jupyter server that runs the extension, requests go to the server's
worker over HTTP; elsewhere to this process's own worker (see :mod:`.transport`). Inputs are
checked whole first (messages name the caller's own index), then sent in chunks of
``chunk_size`` texts, whichever the transport.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from typing import Any

import numpy as np

from . import envvars
from ._version import __version__
from .config import EngineConfig, ServingConfig
from .errors import EmbedError
from .images import as_pictures
from .options import EmbedOptions
from .ranking import Ranking
from .results import EmbedResult, RerankResult
from .transport import Transport, choose_transport, find_parent_server
from .validation import to_strings, to_texts
from .worker import Worker, current_worker

_lock = threading.RLock()
_transport: Transport | None = None
_serving: ServingConfig | None = None
#: The (base URL, token) of this Jupyter server process's own listener, when it has one.
_inprocess: tuple[str, str] | None = None


def get_worker() -> Worker:
    """This process's worker (the one that owns MLX here, whoever started it), started on
    first use from ``JUPYTER_MLX_EMBED_*`` settings when there is none."""
    with _lock:
        return current_worker() or Worker(EngineConfig.from_env())


def configure(config: EngineConfig | None = None, **settings: Any) -> Worker:
    """Replace this process's worker with one using ``config`` (or ``settings`` over the env).

    The previous worker finishes its queued requests and stops first: MLX has one owner
    thread per process.
    """
    with _lock:
        previous = current_worker()
        if previous is not None:
            previous.close()
        return Worker(config or EngineConfig.from_env(**settings))


def serving_config() -> ServingConfig:
    """The front-end settings in force (:func:`set_serving_config`, else the environment)."""
    with _lock:
        return _serving or ServingConfig.from_env()


def set_serving_config(config: ServingConfig) -> None:
    """Use ``config`` for the transport, timeouts and chunking from now on (the magics call
    this with the ``MLXEmbed`` settings); a changed transport mode or timeout takes effect at
    once."""
    global _serving, _transport
    with _lock:
        old = serving_config()
        _serving = config
        if _transport is not None and (old.transport, old.request_timeout) != (
            config.transport,
            config.request_timeout,
        ):
            _transport.close()
            _transport = None


def get_transport() -> Transport:
    """The transport in use, chosen on first use from the ``transport`` setting (default
    ``auto``: the parent Jupyter server's worker when there is one, else a local worker).

    Raises:
        EmbedError: ``transport`` is ``server`` but no parent server runs the extension.
    """
    global _transport
    with _lock:
        if _transport is None:
            config = serving_config()
            _transport = choose_transport(config.transport, get_worker, config.request_timeout)
        return _transport


def set_transport(mode: str) -> Transport:
    """Force ``local`` or ``server``, or go back to ``auto``.

    Raises:
        ValueError: Unknown mode.
        EmbedError: ``server`` without a parent Jupyter server running the extension.
    """
    with _lock:
        set_serving_config(serving_config().replace(transport=mode))
        return get_transport()


def _as_texts(input: str | Iterable[str]) -> tuple[list[str], bool]:
    if isinstance(input, str):
        return [input], True
    return to_texts(input)[0], False


def _chunks(
    transport: Transport, texts: list[str], options: EmbedOptions
) -> Iterator[Future[EmbedResult]]:
    """Submit ``texts`` one chunk at a time, yielding each chunk's future; the next chunk is
    submitted when the caller asks for it, after waiting for this one."""
    size = serving_config().chunk_size
    for start in range(0, len(texts), size):
        yield transport.submit(texts[start : start + size], options, first_index=start)


def embed_chunks(texts: list[str], options: EmbedOptions) -> Iterator[EmbedResult]:
    """Embed checked ``texts`` chunk by chunk, yielding each chunk's result (for progress
    bars); stopping the iteration cancels what is still queued.

    Raises:
        EmbedError: A chunk failed.
        TimeoutError: No answer within ``request_timeout``.
    """
    transport = get_transport()
    return _results(_chunks(transport, texts, options), transport.timeout)


def _results(futures: Iterator[Future[EmbedResult]], timeout: float) -> Iterator[EmbedResult]:
    """Each future's result in turn; one that fails or is left waiting is cancelled."""
    for future in futures:
        try:
            yield future.result(timeout=timeout)
        except BaseException:
            future.cancel()
            raise


async def _awaited(futures: Iterator[Future[EmbedResult]]) -> EmbedResult:
    """The futures' results awaited in turn, as one result; one that fails or whose waiter
    is cancelled is cancelled."""
    import asyncio  # here: a process that only calls embed() does not import it

    parts = []
    for future in futures:
        try:
            parts.append(await asyncio.wrap_future(future))
        except BaseException:
            future.cancel()
            raise
    return EmbedResult.concatenate(parts)


def _empty(options: EmbedOptions, transport: Transport | None = None) -> np.ndarray:
    dimensions = options.dimensions
    if dimensions is None:
        transport = transport or get_transport()
        probe = transport.submit(["."], EmbedOptions(model=options.model))
        dimensions = probe.result(timeout=transport.timeout).vectors.shape[1]
    return np.zeros((0, dimensions), dtype=np.float32)


def embed_with(transport: Transport, texts: list[str], options: EmbedOptions) -> np.ndarray:
    """``(n, d)`` vectors of checked ``texts`` through ``transport`` (the integrations give
    theirs: this process's, or a server's named by URL and token)."""
    if not texts:
        return _empty(options, transport)
    parts = _results(_chunks(transport, texts, options), transport.timeout)
    return EmbedResult.concatenate(list(parts)).vectors


async def aembed_with(transport: Transport, texts: list[str], options: EmbedOptions) -> np.ndarray:
    """Awaitable :func:`embed_with` (no dimension probe: empty ``texts`` are the caller's
    case)."""
    return (await _awaited(_chunks(transport, texts, options))).vectors


def _shape(result: EmbedResult, single: bool) -> np.ndarray:
    return result.vectors[0] if single else result.vectors


def embed(
    input: str | Iterable[str],
    *,
    model: str | None = None,
    dimensions: int | None = None,
    prompt_name: str | None = None,
    prompt: str | None = None,
) -> np.ndarray:
    """Embed text.

    Args:
        input: A string, or an iterable of strings (list, tuple, numpy array, pandas Series).
        model: Model name; the configured default (all-MiniLM-L6-v2) when ``None``.
        dimensions: Keep the first ``dimensions`` values of each vector and renormalise.
        prompt_name: One of the model's prompts (e.g. ``"query"`` for e5, bge, nomic or
            Qwen3-Embedding), put before every text; by default the model's default prompt.
        prompt: A prompt text of your own instead (e.g. ``"query: "``).

    Returns:
        float32 L2-normalised vectors: shape ``(d,)`` for a string, ``(n, d)`` otherwise.

    Raises:
        EmbedError: Invalid input, unknown or unsupported model, or overload.
    """
    options = EmbedOptions(model, dimensions, prompt_name, prompt)
    texts, single = _as_texts(input)
    vectors = embed_with(get_transport(), texts, options)
    return vectors[0] if single else vectors


async def aembed(
    input: str | Iterable[str],
    *,
    model: str | None = None,
    dimensions: int | None = None,
    prompt_name: str | None = None,
    prompt: str | None = None,
) -> np.ndarray:
    """Awaitable :func:`embed`: the event loop keeps running while the worker computes."""
    options = EmbedOptions(model, dimensions, prompt_name, prompt)
    texts, single = _as_texts(input)
    if not texts:
        return _empty(options)
    return _shape(await _awaited(_chunks(get_transport(), texts, options)), single)


#: Pictures per request when embed_images() embeds a large collection (a chunk's decoded
#: pixels are held until its vectors are done: about 150 KB each at 224 x 224).
IMAGE_CHUNK = 64


def _image_chunks(images: list[Any], options: EmbedOptions) -> Iterator[Future[EmbedResult]]:
    transport = get_transport()
    for start in range(0, len(images), IMAGE_CHUNK):
        yield transport.submit_images(
            images[start : start + IMAGE_CHUNK], options, first_index=start
        )


def embed_image_chunks(images: list[Any], options: EmbedOptions) -> Iterator[EmbedResult]:
    """Embed pictures chunk by chunk, yielding each chunk's result (for progress bars);
    stopping the iteration cancels what is still queued.

    Raises:
        EmbedError: A chunk failed.
        TimeoutError: No answer within ``request_timeout``.
    """
    return _results(_image_chunks(images, options), get_transport().timeout)


def embed_images(
    images: Any, *, model: str | None = None, dimensions: int | None = None
) -> np.ndarray:
    """Embed pictures with an image-text model (SigLIP): vectors in the same space as its
    text vectors (``embed(texts, model=...)``), so that texts find pictures.

    Args:
        images: A picture or an iterable of them: file paths (``str`` or ``Path``), encoded
            files (``bytes``), PIL images or ``(h, w, 3)`` uint8 arrays.
        model: An image-text model's name; the configured default when ``None``.
        dimensions: Keep the first ``dimensions`` values of each vector and renormalise.

    Returns:
        float32 L2-normalised vectors: ``(d,)`` for one picture, ``(n, d)`` otherwise.

    Raises:
        EmbedError: A picture cannot be read (the error names its index), the model embeds
            no pictures, or overload.
    """
    options = EmbedOptions(model, dimensions)
    items, single = as_pictures(images)
    if not items:
        return _empty(options)
    parts = list(embed_image_chunks(items, options))
    return _shape(EmbedResult.concatenate(parts), single)


async def aembed_images(
    images: Any, *, model: str | None = None, dimensions: int | None = None
) -> np.ndarray:
    """Awaitable :func:`embed_images`: the event loop keeps running while the worker
    decodes and computes."""
    options = EmbedOptions(model, dimensions)
    items, single = as_pictures(images)
    if not items:
        return _empty(options)
    return _shape(await _awaited(_image_chunks(items, options)), single)


def _rerank_args(documents: Iterable[str], model: str | None) -> tuple[list[str], EmbedOptions]:
    return to_strings(documents, name="documents"), EmbedOptions(model=model)


def rerank_with(
    transport: Transport, query: str, texts: list[str], options: EmbedOptions
) -> RerankResult:
    """Scores of checked ``texts`` against ``query`` through ``transport``."""
    future = transport.rerank(query, texts, options)
    try:
        return future.result(timeout=transport.timeout)
    except BaseException:
        future.cancel()
        raise


async def arerank_with(
    transport: Transport, query: str, texts: list[str], options: EmbedOptions
) -> RerankResult:
    """Awaitable :func:`rerank_with`."""
    import asyncio  # here: a process that only calls rerank() does not import it

    future = transport.rerank(query, texts, options)
    try:
        return await asyncio.wrap_future(future)
    except BaseException:
        future.cancel()
        raise


def rerank(
    query: str,
    documents: Iterable[str],
    *,
    model: str | None = None,
    top_n: int | None = None,
) -> Ranking:
    """Score each document's relevance to ``query`` with a reranker (a cross-encoder).

    Args:
        query: The query.
        documents: The texts to score (list, tuple, array, Series), at most
            ``max_rerank_documents`` (1,000).
        model: The reranker; the configured default model when ``None`` (which must be a
            reranker).
        top_n: Keep the best ``top_n`` in ``hits`` (all by default).

    Returns:
        A :class:`~.ranking.Ranking`: ``scores`` in the documents' order (as
        sentence-transformers' ``CrossEncoder.predict`` gives them), ``hits`` best first.

    Raises:
        EmbedError: Invalid input, unknown model, or a model that is not a reranker.
    """
    texts, options = _rerank_args(documents, model)
    result = rerank_with(get_transport(), query, texts, options)
    return Ranking(query, texts, result.scores, model=result.model, top_n=top_n)


async def arerank(
    query: str,
    documents: Iterable[str],
    *,
    model: str | None = None,
    top_n: int | None = None,
) -> Ranking:
    """Awaitable :func:`rerank`: the event loop keeps running while the worker computes."""
    texts, options = _rerank_args(documents, model)
    result = await arerank_with(get_transport(), query, texts, options)
    return Ranking(query, texts, result.scores, model=result.model, top_n=top_n)


def set_inprocess_endpoint(endpoint: tuple[str, str] | None) -> None:
    """Name the ``(base_url, token)`` that HTTP clients inside this Jupyter server process
    use (the server extension's own listener, see ``MLXEmbed.inprocess_endpoint``), or
    ``None`` once it stops."""
    global _inprocess
    _inprocess = endpoint


def openai_endpoint() -> tuple[str, str]:
    """The ``(base_url, api_key)`` of this process's embedding endpoint: the Jupyter server
    that started this kernel (when it runs the extension); inside a Jupyter server process,
    its in-process endpoint; else the server named by ``JUPYTER_MLX_EMBED_URL`` and
    ``JUPYTER_MLX_EMBED_TOKEN`` (``%embed_serve`` sets both).

    Raises:
        EmbedError: None exists.
    """
    endpoint = find_parent_server()
    if endpoint is not None:
        return endpoint.url.rstrip("/") + "/v1", endpoint.token
    if _inprocess is not None:
        return _inprocess
    url, token = os.environ.get(envvars.URL), os.environ.get(envvars.TOKEN)
    if url and token:
        return url, token
    raise EmbedError(
        "No embedding endpoint for this process: it was not started by a Jupyter server that "
        f"runs jupyter_mlx_embed, and {envvars.URL} / {envvars.TOKEN} are not set. Run "
        "%embed_serve (in a notebook) or jupyter-mlx-embed serve, or use embed() directly."
    )


def openai_client(**options: Any) -> Any:
    """An ``openai.OpenAI`` client for this process's endpoint (see :func:`openai_endpoint`);
    ``options`` go to the client (e.g. ``timeout``)."""
    from openai import OpenAI

    base_url, api_key = openai_endpoint()
    return OpenAI(base_url=base_url, api_key=api_key, **options)


def async_openai_client(**options: Any) -> Any:
    """An ``openai.AsyncOpenAI`` client for this process's endpoint."""
    from openai import AsyncOpenAI

    base_url, api_key = openai_endpoint()
    return AsyncOpenAI(base_url=base_url, api_key=api_key, **options)


def info() -> dict[str, Any]:
    """Transport, versions, device, BLAS in use, loaded models, queue depth and counters."""
    data = get_transport().info()
    data["version"] = __version__
    return data
