"""The wire shapes of reranking (pure; the JSON text itself is :mod:`.codec`'s).

Three request and response shapes, one per kind of client, all served by the same worker:

- ``v1``: ``POST v1/rerank`` as Jina and Cohere's v1 API define it: ``model``, ``query``,
  ``documents`` (strings or ``{"text": ...}`` objects), ``top_n``, ``return_documents``
  (default true, as Jina) -> ``{"id", "model", "results": [{"index", "relevance_score",
  "document": {"text"}}], "usage", "meta"}``, best first.
- ``v2``: ``POST v2/rerank``, Cohere's v2 API (``cohere.ClientV2``): the same fields,
  ``return_documents`` false by default -> ``{"id", "results", "meta"}``.
- ``tei``: ``POST rerank``, text-embeddings-inference's: ``query``, ``texts``,
  ``raw_scores``, ``return_text``, ``truncate`` -> ``[{"index", "score", "text"}]``, best
  first.

As for embeddings, types are checked strictly (each problem a 400 naming the field) and
unknown fields are ignored. The texts themselves are checked by the worker
(:func:`~.validation.check_rerank`), for every front end alike.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, overload

from .errors import InvalidRequestError, elide
from .ranking import top_k
from .results import RerankResult

#: The request shapes, by route: Jina / Cohere v1, Cohere v2, TEI.
RERANK_SHAPES = ("v1", "v2", "tei")


@dataclass(frozen=True)
class RerankRequest:
    """A rerank request body, its types checked.

    Attributes:
        shape: One of :data:`RERANK_SHAPES`.
        query: The query (its text checked by the worker).
        documents: The documents' texts (``{"text": ...}`` objects unwrapped).
        model: The reranker's name; the default model when ``None``.
        top_n: Results to return (the best); all when ``None``.
        return_documents: Whether each result carries its document's text.
        raw_scores: TEI: the logits instead of the scores.
        truncate: Truncate over-long pairs (``truncate``, every shape); ``None``: the
            worker's setting.
    """

    shape: str
    query: Any
    documents: list[Any]
    model: str | None = None
    top_n: int | None = None
    return_documents: bool = False
    raw_scores: bool = False
    truncate: bool | None = None


@overload
def _flag(data: dict[str, Any], name: str, default: bool) -> bool: ...


@overload
def _flag(data: dict[str, Any], name: str, default: None) -> bool | None: ...


def _flag(data: dict[str, Any], name: str, default: bool | None) -> bool | None:
    """Field ``name``: true or false, ``default`` when absent or null."""
    value = data.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidRequestError(f"'{name}' must be true or false", param=name)
    return value


def _documents(value: object, name: str) -> list[Any]:
    """The texts of ``documents`` (``texts`` for TEI): strings, or ``{"text": ...}`` objects
    (Jina, Cohere v1). Other items are passed on, for the worker to name."""
    if value is None:
        raise InvalidRequestError(f"'{name}' is required", param=name)
    if not isinstance(value, list):
        raise InvalidRequestError(
            f"'{name}' must be an array of strings, got {type(value).__name__}", param=name
        )
    texts = []
    for i, item in enumerate(value):
        if isinstance(item, dict):
            text = item.get("text")
            if not isinstance(text, str):
                raise InvalidRequestError(
                    f"{name}[{i}] must be a string or an object with a 'text' string",
                    param=name,
                )
            item = text
        texts.append(item)
    return texts


def parse_rerank_request(data: object, shape: str) -> RerankRequest:
    """Check the JSON types of a decoded rerank body of ``shape`` (:data:`RERANK_SHAPES`).

    Raises:
        InvalidRequestError: A field has the wrong type or value (the error names it).
    """
    if not isinstance(data, dict):
        raise InvalidRequestError(
            f"The request body must be a JSON object, not {type(data).__name__}"
        )
    model = data.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise InvalidRequestError("'model' must be a non-empty string", param="model")
    query = data.get("query")
    if query is None:
        raise InvalidRequestError("'query' is required", param="query")
    if shape == "tei":
        direction = data.get("truncation_direction", "Right")
        if direction not in ("Right", "right"):
            raise InvalidRequestError(
                f"'truncation_direction' {elide(direction)} is not supported: texts are "
                "truncated at their end (Right)",
                param="truncation_direction",
            )
        return RerankRequest(
            shape=shape,
            query=query,
            documents=_documents(data.get("texts"), "texts"),
            model=model,
            return_documents=_flag(data, "return_text", False),
            raw_scores=_flag(data, "raw_scores", False),
            truncate=_flag(data, "truncate", None),
        )
    top_n = data.get("top_n")
    if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 1):
        raise InvalidRequestError(
            f"'top_n' must be a positive integer, got {elide(top_n)}", param="top_n"
        )
    return RerankRequest(
        shape=shape,
        query=query,
        documents=_documents(data.get("documents"), "documents"),
        model=model,
        top_n=top_n,
        return_documents=_flag(data, "return_documents", shape == "v1"),
        truncate=_flag(data, "truncate", None),
    )


def rerank_response(request: RerankRequest, result: RerankResult) -> Any:
    """The response body of ``request``'s shape: the best ``top_n`` results, best first."""
    scores = result.scores
    order = top_k(scores, min(request.top_n or len(scores), len(scores)))
    if request.shape == "tei":
        values = result.logits if request.raw_scores else result.scores
        assert values is not None  # a local worker's result carries its logits
        return [
            {
                "index": int(i),
                "score": float(values[i]),
                **({"text": request.documents[i]} if request.return_documents else {}),
            }
            for i in order
        ]
    results = [
        {
            "index": int(i),
            "relevance_score": float(result.scores[i]),
            **({"document": {"text": request.documents[i]}} if request.return_documents else {}),
        }
        for i in order
    ]
    tokens = result.prompt_tokens
    meta = {
        "api_version": {"version": "2" if request.shape == "v2" else "1"},
        "billed_units": {"search_units": 1},
        "tokens": {"input_tokens": tokens, "output_tokens": 0},
    }
    body: dict[str, Any] = {"id": str(uuid.uuid4()), "results": results, "meta": meta}
    if request.shape == "v1":
        body["model"] = request.model or result.model
        body["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    return body
