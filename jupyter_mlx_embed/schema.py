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

from .errors import InvalidRequestError

ENCODING_FORMATS = ("float", "base64")
MAX_INPUTS = 2048


@dataclass(frozen=True)
class EmbeddingsRequest:
    """A validated ``POST /v1/embeddings`` body."""

    inputs: list[str] | list[list[int]]
    model: str | None
    encoding_format: str = "float"
    dimensions: int | None = None


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


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_input(value: object, max_inputs: int) -> list[str] | list[list[int]]:
    if value is None:
        raise InvalidRequestError("'input' is required", param="input")
    if isinstance(value, str):
        if value == "":
            raise InvalidRequestError("'input' must not be an empty string", param="input")
        return [value]
    if not isinstance(value, list):
        raise InvalidRequestError(
            "'input' must be a string, an array of strings, an array of token ids or an array "
            f"of token-id arrays; got {type(value).__name__}",
            param="input",
        )
    if not value:
        raise InvalidRequestError("'input' must not be an empty array", param="input")
    if all(_is_int(v) for v in value):  # one token-id array
        return [_token_row(value, "input")]
    if len(value) > max_inputs:
        raise InvalidRequestError(
            f"'input' has {len(value)} items; at most {max_inputs} are allowed per request",
            param="input",
        )
    if isinstance(value[0], str):
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise InvalidRequestError(
                    f"'input[{i}]' must be a string like the other items", param="input"
                )
            if item == "":
                raise InvalidRequestError(f"'input[{i}]' must not be empty", param="input")
        return list(value)
    if isinstance(value[0], list):
        rows = []
        for i, item in enumerate(value):
            if not isinstance(item, list):
                raise InvalidRequestError(
                    f"'input[{i}]' must be an array of token ids like the other items",
                    param="input",
                )
            rows.append(_token_row(item, f"input[{i}]"))
        return rows
    raise InvalidRequestError(
        f"'input[0]' must be a string, a token id or an array of token ids; got "
        f"{type(value[0]).__name__}",
        param="input",
    )


def _token_row(row: list[Any], where: str) -> list[int]:
    if not row:
        raise InvalidRequestError(f"'{where}' must not be an empty token array", param="input")
    for j, token in enumerate(row):
        if not _is_int(token) or token < 0:
            raise InvalidRequestError(
                f"'{where}[{j}]' must be a non-negative integer token id; got {token!r}",
                param="input",
            )
    return row


def parse_embeddings_request(data: object, *, max_inputs: int = MAX_INPUTS) -> EmbeddingsRequest:
    """Validate a decoded ``POST /v1/embeddings`` body.

    Raises:
        InvalidRequestError: A field has the wrong type or value (the error names it).
    """
    if not isinstance(data, dict):
        raise InvalidRequestError(
            f"The request body must be a JSON object, not {type(data).__name__}"
        )
    inputs = _parse_input(data.get("input"), max_inputs)
    model = data.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise InvalidRequestError("'model' must be a non-empty string", param="model")
    encoding = data.get("encoding_format")
    encoding = "float" if encoding is None else encoding
    if encoding not in ENCODING_FORMATS:
        raise InvalidRequestError(
            f"'encoding_format' must be one of {', '.join(ENCODING_FORMATS)}; got {encoding!r}",
            param="encoding_format",
        )
    dimensions = data.get("dimensions")
    if dimensions is not None and (not _is_int(dimensions) or dimensions < 1):
        raise InvalidRequestError(
            f"'dimensions' must be a positive integer; got {dimensions!r}", param="dimensions"
        )
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidRequestError("'user' must be a string", param="user")
    return EmbeddingsRequest(
        inputs=inputs, model=model, encoding_format=encoding, dimensions=dimensions
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


def models_response(names: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The ``GET /v1/models`` response for ``(name, owner)`` pairs."""
    return {"object": "list", "data": [model_object(n, o) for n, o in names]}
