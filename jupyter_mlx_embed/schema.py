"""The wire shapes: the OpenAI embeddings request and response, model objects and the
worker's status (pure; the JSON text itself is :mod:`.codec`'s).

Parsing is strict about types and values (every problem is an ``InvalidRequestError`` naming
the field) and lenient about unknown fields, which are ignored as most OpenAI-compatible
servers do, so that clients sending extra options keep working.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidRequestError, elide

ENCODING_FORMATS = ("float", "base64")


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


def encode_vector(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    """One embedding as a JSON list of floats or base64 of little-endian float32."""
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return np.asarray(vector, dtype=np.float32).tolist()


def embeddings_response(
    vectors: np.ndarray, *, model: str, prompt_tokens: int, encoding_format: str
) -> dict[str, Any]:
    """The ``POST /v1/embeddings`` response object."""
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode_vector(v, encoding_format)}
            for i, v in enumerate(vectors)
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


def model_card(
    name: str,
    *,
    owned_by: str,
    dimensions: int,
    max_input_tokens: int,
    pooling: str,
    prompts: Mapping[str, str],
    default_prompt_name: str | None,
    quantization: tuple[int, int] | None,
    loaded: bool,
) -> dict[str, Any]:
    """What ``GET /v1/models/{id}`` shows of a model: the OpenAI fields (:func:`model_object`),
    then extra fields that OpenAI clients ignore.

    Args:
        name: The model's id, as the client named it.
        owned_by: Where the registry found it (``bundled``, ``root``, ``hf-cache``, ``hub``).
        dimensions: The length of its vectors.
        max_input_tokens: Its maximum sequence length.
        pooling: Its pooling mode.
        prompts: Its named instruction prefixes.
        default_prompt_name: The prompt used when a request names none, if any.
        quantization: ``(bits, group_size)`` of an MLX-quantized checkpoint, else ``None``.
        loaded: Whether the worker holds it in memory.
    """
    return {
        **model_object(name, owned_by),
        "dimensions": dimensions,
        "max_input_tokens": max_input_tokens,
        "pooling": pooling,
        "prompts": dict(prompts),
        "default_prompt_name": default_prompt_name,
        "quantization": None
        if quantization is None
        else {"bits": quantization[0], "group_size": quantization[1]},
        "loaded": loaded,
    }


def worker_status(
    *,
    state: str,
    busy: bool,
    queue_depth: int,
    queue_size: int,
    default_model: str,
    max_inputs: int,
    requests: int,
    requests_failed: int,
    inputs: int,
    tokens: int,
    padded_tokens: int,
    batches: int,
    token_budget: int,
    cache_enabled: bool,
    cache_hits: int,
    cache_misses: int,
    engine: dict[str, Any] | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """The worker's state and counters (``info()``, ``GET mlx-embed/status``).

    Args:
        state: ``starting``, ``ready`` or ``closed``; ``failed`` when ``error`` is given
            and ``engine`` is not.
        engine: :func:`engine_status` once the engine has started.
        error: Why the engine could not start.

    The other arguments are the worker's settings and counters of the same names.
    """
    status: dict[str, Any] = {
        "state": state,
        "busy": busy,
        "queue_depth": queue_depth,
        "queue_size": queue_size,
        "default_model": default_model,
        "max_inputs": max_inputs,
        "requests": requests,
        "requests_failed": requests_failed,
        "inputs": inputs,
        "tokens": tokens,
        "padded_tokens": padded_tokens,
        "batches": batches,
        "token_budget": token_budget,
        "cache": {"enabled": cache_enabled, "hits": cache_hits, "misses": cache_misses},
    }
    if engine is not None:
        status.update(engine)
    elif error is not None:
        status.update(state="failed", error=error)
    return status


def engine_status(
    *,
    mlx_version: str,
    device: str,
    blas_name: str,
    blas_path: str | None,
    blas_fast: bool,
    blas_detail: str,
    blas_core: str | None,
    native_kernels: Mapping[str, Any],
    loaded_models: Sequence[str],
    models: Sequence[dict[str, Any]],
    malloc_tuned: bool,
) -> dict[str, Any]:
    """The started engine's part of :func:`worker_status`: MLX, the BLAS it bound, the
    native kernels, the loaded models (their names and :func:`model_card`), malloc tuning."""
    return {
        "mlx_version": mlx_version,
        "device": device,
        "blas": {
            "name": blas_name,
            "path": blas_path,
            "fast": blas_fast,
            "detail": blas_detail,
            "core": blas_core,
        },
        "native_kernels": dict(native_kernels),
        "loaded_models": list(loaded_models),
        "models": list(models),
        "malloc_tuned": malloc_tuned,
    }
