"""What one embedding or rerank request gives back, whichever transport served it (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EmbedResult:
    """The vectors of one request, in input order.

    Attributes:
        vectors: float32 array (inputs x dimensions), L2-normalised rows.
        model: Canonical name of the model that produced them.
        token_counts: Real tokens per input (special tokens included, after truncation);
            empty when only the total is known (results received over HTTP).
        prompt_tokens: Tokens processed for the whole request.
    """

    vectors: np.ndarray
    model: str
    token_counts: tuple[int, ...] = ()
    prompt_tokens: int = -1

    def __post_init__(self) -> None:
        if self.prompt_tokens < 0:
            object.__setattr__(self, "prompt_tokens", sum(self.token_counts))

    @classmethod
    def concatenate(cls, parts: list[EmbedResult]) -> EmbedResult:
        """One result from the results of consecutive chunks of one input."""
        return cls(
            vectors=np.concatenate([p.vectors for p in parts]),
            model=parts[-1].model,
            token_counts=tuple(n for p in parts for n in p.token_counts),
            prompt_tokens=sum(p.prompt_tokens for p in parts),
        )

    @classmethod
    def interleave(cls, parts: Sequence[tuple[Sequence[int], EmbedResult]], n: int) -> EmbedResult:
        """One result of ``n`` inputs from the results of parts of them (e.g. a request's
        texts and its pictures), each part's rows going to its inputs' positions."""
        first = parts[0][1]
        vectors = np.empty((n, first.vectors.shape[1]), dtype=np.float32)
        counts = [0] * n
        for positions, part in parts:
            vectors[list(positions)] = part.vectors
            for at, count in zip(positions, part.token_counts or [0] * len(positions), strict=True):
                counts[at] = count
        return cls(
            vectors=vectors,
            model=first.model,
            token_counts=tuple(counts),
            prompt_tokens=sum(part.prompt_tokens for _, part in parts),
        )


@dataclass(frozen=True)
class RerankResult:
    """The relevance scores of one rerank request, in the documents' order.

    Attributes:
        scores: float32 array (documents,): the reranker's score of each (query, document)
            pair, as sentence-transformers' ``CrossEncoder.predict`` gives it (after the
            model's activation: sigmoid unless its config names another).
        model: Canonical name of the reranker.
        token_counts: Tokens of each pair (special tokens included, after truncation); empty
            when only the total is known (results received over HTTP).
        prompt_tokens: Tokens processed for the whole request.
        logits: The scores before the activation (TEI's ``raw_scores``); None when the
            result came over HTTP.
    """

    scores: np.ndarray
    model: str
    token_counts: tuple[int, ...] = ()
    prompt_tokens: int = -1
    logits: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.prompt_tokens < 0:
            object.__setattr__(self, "prompt_tokens", sum(self.token_counts))
