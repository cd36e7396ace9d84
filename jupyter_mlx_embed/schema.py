"""The OpenAI embeddings wire format: request parsing and response building (pure).

Parsing is strict about types and values (every problem is an ``InvalidRequestError`` naming
the field) and lenient about unknown fields, which are ignored as most OpenAI-compatible
servers do, so that clients sending extra options keep working.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
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


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json_body(body: bytes) -> Any:
    """Decode a request body as UTF-8 JSON.

    Raises:
        InvalidRequestError: Empty body, invalid UTF-8, invalid or too deeply nested JSON.
    """
    if not body or not body.strip():
        raise InvalidRequestError("The request body is empty; send a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(f"The request body is not valid UTF-8: {exc.reason}") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise InvalidRequestError("The request body is nested too deeply") from None
    except ValueError as exc:
        raise InvalidRequestError(f"The request body is not valid JSON: {exc}") from None


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
