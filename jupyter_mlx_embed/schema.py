"""The wire shapes: the OpenAI embeddings request and response, model objects and the
worker's status (pure; the JSON text itself is :mod:`.codec`'s).

Parsing is strict about types and values (every problem is an ``InvalidRequestError`` naming
the field) and lenient about unknown fields, which are ignored as most OpenAI-compatible
servers do, so that clients sending extra options keep working.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from .errors import InvalidRequestError, elide
from .images import from_data_uri
from .quantization import PRECISIONS, quantize
from .validation import check_texts

ENCODING_FORMATS = ("float", "base64", *PRECISIONS)


@dataclass(frozen=True)
class EmbeddingsRequest:
    """A validated ``POST /v1/embeddings`` body."""

    inputs: list[Any]
    model: str | None
    encoding_format: str = "float"
    dimensions: Any = None
    prompt_name: Any = None
    prompt: Any = None


def _parse_input(value: object) -> list[Any]:
    """The items of ``input``: a string is one text and an array of integers one token-id
    row (the OpenAI wire forms); the items themselves are checked by the worker."""
    if value is None:
        raise InvalidRequestError("'input' is required", param="input")
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise InvalidRequestError(
            "'input' must be a string, an array of strings, an array of token ids or an array "
            f"of token-id arrays; got {type(value).__name__}",
            param="input",
        )
    if value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return [value]  # one token-id array
    return value


@dataclass(frozen=True)
class MixedInput:
    """The items of an ``input`` that holds objects (Jina's shape for image-text models):
    ``{"text": ...}`` and ``{"image": "data:image/...;base64,..."}``, split by kind, each with
    its index in ``input`` (the answer's ``data`` follows ``input``'s order)."""

    texts: list[str]
    text_positions: list[int]
    images: list[bytes]
    image_positions: list[int]


def split_mixed_input(items: Sequence[Any], *, max_image_bytes: int) -> MixedInput | None:
    """:class:`MixedInput` when ``items`` holds an object, else None (plain texts or ids).
    A plain string among objects is a text.

    Raises:
        InvalidRequestError: An item is neither a string nor an object with one ``text`` or
            ``image`` field; an image is not a ``data:image/...;base64,`` URI (URLs and paths
            are never fetched) or is larger than ``max_image_bytes``; a text is malformed.
    """
    if not any(isinstance(item, dict) for item in items):
        return None
    mixed = MixedInput([], [], [], [])
    for i, item in enumerate(items):
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, dict) or len(item.keys() & {"text", "image"}) != 1:
            raise InvalidRequestError(
                f'input[{i}] must be a string, {{"text": ...}} or {{"image": '
                f'"data:image/...;base64,..."}}; got {elide(item)}',
                param="input",
            )
        if "text" in item:
            check_texts([item["text"]], name="input", first_index=i)
            mixed.texts.append(item["text"])
            mixed.text_positions.append(i)
        else:
            mixed.images.append(from_data_uri(item["image"], i, max_bytes=max_image_bytes))
            mixed.image_positions.append(i)
    return mixed


def parse_embeddings_request(data: object) -> EmbeddingsRequest:
    """Check the JSON types of a decoded ``POST /v1/embeddings`` body (the values of
    ``input`` and ``dimensions`` are checked by the worker, for every front end alike).

    Raises:
        InvalidRequestError: A field has the wrong type or value (the error names it).
    """
    if not isinstance(data, dict):
        raise InvalidRequestError(
            f"The request body must be a JSON object, not {type(data).__name__}"
        )
    inputs = _parse_input(data.get("input"))
    model = data.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise InvalidRequestError("'model' must be a non-empty string", param="model")
    encoding = data.get("encoding_format")
    encoding = "float" if encoding is None else encoding
    if encoding not in ENCODING_FORMATS:
        raise InvalidRequestError(
            f"'encoding_format' must be one of {', '.join(ENCODING_FORMATS)}; "
            f"got {elide(encoding)}",
            param="encoding_format",
        )
    dimensions = data.get("dimensions")
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidRequestError("'user' must be a string", param="user")
    return EmbeddingsRequest(
        inputs=inputs,
        model=model,
        encoding_format=encoding,
        dimensions=dimensions,
        prompt_name=data.get("prompt_name"),
        prompt=data.get("prompt"),
    )


def encode_vectors(vectors: np.ndarray, encoding_format: str) -> list[Any]:
    """Each embedding as a JSON list of floats, base64 of little-endian float32, or a list
    of ints at a :data:`~.quantization.PRECISIONS` precision (fixed ranges, see there)."""
    if encoding_format == "base64":
        return [
            base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode("ascii") for v in vectors
        ]
    # A row at a time: one ``tolist`` of a 2,048 x 384 matrix holds the GIL ~40 ms.
    if encoding_format in PRECISIONS:
        return [row.tolist() for row in quantize(vectors, encoding_format)]
    return [row.tolist() for row in np.asarray(vectors, dtype=np.float32)]


def embeddings_response(
    vectors: np.ndarray, *, model: str, prompt_tokens: int, encoding_format: str
) -> dict[str, Any]:
    """The ``POST /v1/embeddings`` response object."""
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": embedding}
            for i, embedding in enumerate(encode_vectors(vectors, encoding_format))
        ],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def model_object(name: str, owned_by: str = "local") -> dict[str, Any]:
    """One entry of ``GET /v1/models``."""
    return {"id": name, "object": "model", "created": 0, "owned_by": owned_by}


def models_response(models: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ``GET /v1/models`` response for model objects (:func:`model_object` and more)."""
    return {"object": "list", "data": list(models)}


class QuantizationFacts(Protocol):
    """What :func:`model_card` reads of an MLX-quantized checkpoint's scheme."""

    @property
    def bits(self) -> int: ...

    @property
    def group_size(self) -> int: ...


class ModelFacts(Protocol):
    """What :func:`model_card` reads of a model (a :class:`~.modelspec.ModelSpec`; its
    ``source`` is where the registry found it: ``bundled``, ``root``, ``hf-cache``, ``hub``)."""

    @property
    def source(self) -> str: ...

    @property
    def task(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    @property
    def max_seq_length(self) -> int: ...

    @property
    def pooling(self) -> str: ...

    @property
    def prompts(self) -> Mapping[str, str]: ...

    @property
    def default_prompt_name(self) -> str | None: ...

    @property
    def quantization(self) -> QuantizationFacts | None: ...

    @property
    def modalities(self) -> tuple[str, ...]: ...

    @property
    def image(self) -> ImageFacts | None: ...


class ImageFacts(Protocol):
    """What :func:`model_card` reads of an image tower's input (``ModelSpec.image``)."""

    @property
    def height(self) -> int: ...

    @property
    def width(self) -> int: ...

    @property
    def tokens(self) -> int: ...


def model_card(name: str, model: ModelFacts, *, loaded: bool) -> dict[str, Any]:
    """What ``GET /v1/models/{id}`` shows of a model: the OpenAI fields (:func:`model_object`),
    then extra fields that OpenAI clients ignore (its task, ``embed`` or ``rerank``, what it
    embeds (``text``, and ``image`` for an image-text model, with the pictures' size), its
    dimensions (none for a reranker), max input tokens, pooling, prompts, default prompt,
    quantization and whether it is loaded).

    Args:
        name: The model's id, as the client named it.
        model: The model's facts.
        loaded: Whether the worker holds it in memory.
    """
    quantization = model.quantization
    return {
        **model_object(name, model.source),
        "task": model.task,
        "modalities": list(model.modalities),
        "image_size": None if model.image is None else [model.image.height, model.image.width],
        "dimensions": model.dimension if model.task == "embed" else None,
        "max_input_tokens": model.max_seq_length,
        "pooling": model.pooling,
        "prompts": dict(model.prompts),
        "default_prompt_name": model.default_prompt_name,
        "quantization": None
        if quantization is None
        else {"bits": quantization.bits, "group_size": quantization.group_size},
        "loaded": loaded,
    }


@dataclass
class WorkerCounters:
    """What a worker has done: requests answered (and failed), inputs, tokens (and padded
    tokens) embedded, forward passes, cache hits and misses (kept by the worker thread, read
    from any thread)."""

    requests: int = 0
    requests_failed: int = 0
    inputs: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    batches: int = 0
    cache_hits: int = 0
    cache_misses: int = 0


def worker_status(
    state: str,
    settings: Any,
    counters: WorkerCounters,
    *,
    busy: bool,
    queue_depth: int,
    cache_enabled: bool,
    engine: dict[str, Any] | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """The worker's state and counters (``info()``, ``GET mlx-embed/status``).

    Args:
        state: ``starting``, ``ready`` or ``closed``; ``failed`` when ``error`` is given
            and ``engine`` is not.
        settings: The worker's :class:`~.config.EngineConfig` (its ``queue_size``,
            ``default_model``, ``max_inputs`` and ``token_budget`` are shown).
        counters: The worker's counters.
        busy: Whether a forward pass is running.
        queue_depth: Requests submitted and not yet answered.
        cache_enabled: Whether the vector cache is in use.
        engine: :func:`engine_status` once the engine has started.
        error: Why the engine could not start.
    """
    status: dict[str, Any] = {
        "state": state,
        "busy": busy,
        "queue_depth": queue_depth,
        "queue_size": settings.queue_size,
        "default_model": settings.default_model,
        "max_inputs": settings.max_inputs,
        "requests": counters.requests,
        "requests_failed": counters.requests_failed,
        "inputs": counters.inputs,
        "tokens": counters.tokens,
        "padded_tokens": counters.padded_tokens,
        "batches": counters.batches,
        "token_budget": settings.token_budget,
        "cache": {
            "enabled": cache_enabled,
            "hits": counters.cache_hits,
            "misses": counters.cache_misses,
        },
    }
    if engine is not None:
        status.update(engine)
    elif error is not None:
        status.update(state="failed", error=error)
    return status


def engine_status(engine: Any, models: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The started engine's part of :func:`worker_status`: MLX, the BLAS it bound, the
    native kernels, the loaded models, malloc tuning.

    Args:
        engine: The engine (:class:`~.engine.mlx_engine.Engine`, typed loosely as the worker
            holds it: its module imports MLX).
        models: :func:`model_card` of each loaded model.
    """
    blas = engine.blas
    return {
        "mlx_version": engine.mlx_version,
        "device": engine.device,
        "blas": {
            "name": blas.name,
            "path": blas.path,
            "fast": blas.fast,
            "detail": blas.detail,
            "core": engine.blas_core,
        },
        "native_kernels": asdict(engine.native_kernels),
        "precision": asdict(engine.precision),
        "loaded_models": [card["id"] for card in models],
        "models": list(models),
        "malloc_tuned": engine.malloc_tuned,
    }
