"""Ranked hits and their tables: vector search results and reranker rankings (pure: numpy;
pandas only for ``to_pandas``).

Rich display goes through ``_repr_html_``, which Jupyter picks up without an IPython import.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, overload

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

PREVIEW_WIDTH = 80


@dataclass(frozen=True)
class Hit:
    """One search result.

    Attributes:
        rank: Position in the results, from 1 (most similar).
        index: Row of the text in the searched ``Embeddings``.
        score: Cosine similarity to the query, or the reranker's score where one ranked it.
        text: The text itself.
        similarity: Where a reranker ranked the hit, its cosine similarity to the query
            (what retrieved it); else None.
        label: The row's label in the table the texts came from (``Embeddings.index``: a
            Series' index, e.g. after ``%embed -i df.text``), or None where they have none.
            ``df.loc[hit.label]`` is the hit's row; ``index`` is its position.
        thumbnail: For a picture, a small JPEG of it (shown in the results' table); else
            None.
    """

    rank: int
    index: int
    score: float
    text: str
    similarity: float | None = None
    label: Any = None
    thumbnail: bytes | None = field(default=None, repr=False)


class SearchResults(Sequence[Hit]):
    """Hits of one search, most similar first; a read-only list of :class:`Hit`.

    Args:
        hits: The hits, in rank order.
        query: The query string, or ``None`` for a vector query.
        model: Model of the searched embeddings.
    """

    def __init__(self, hits: Sequence[Hit], *, query: str | None, model: str) -> None:
        self._hits = tuple(hits)
        self.query = query
        self.model = model

    @overload
    def __getitem__(self, key: int) -> Hit: ...

    @overload
    def __getitem__(self, key: slice) -> SearchResults: ...

    def __getitem__(self, key: int | slice) -> Hit | SearchResults:
        if isinstance(key, slice):
            return SearchResults(self._hits[key], query=self.query, model=self.model)
        return self._hits[key]

    def __len__(self) -> int:
        return len(self._hits)

    @property
    def texts(self) -> list[str]:
        """The texts, in rank order."""
        return [hit.text for hit in self._hits]

    @property
    def scores(self) -> np.ndarray:
        """float32 cosine similarities, in rank order."""
        return np.array([hit.score for hit in self._hits], dtype=np.float32)

    @property
    def indices(self) -> np.ndarray:
        """Rows of the hits in the searched ``Embeddings``, in rank order."""
        return np.array([hit.index for hit in self._hits], dtype=np.intp)

    @property
    def labels(self) -> list[Any] | None:
        """The hits' labels in the table the texts came from, in rank order (None when the
        texts have no labels)."""
        if not any(hit.label is not None for hit in self._hits):
            return None
        return [hit.label for hit in self._hits]

    @property
    def reranked(self) -> bool:
        """Whether a reranker ranked the hits (each then has its ``similarity`` too)."""
        return any(hit.similarity is not None for hit in self._hits)

    def to_pandas(self) -> pd.DataFrame:
        """A DataFrame with columns ``rank`` (``label`` where the texts have labels),
        ``index``, ``score`` (and ``similarity`` when reranked) and ``text``.

        Raises:
            ImportError: pandas is not installed.
        """
        pandas = import_pandas()
        columns: dict[str, Any] = {"rank": [hit.rank for hit in self._hits]}
        labels = self.labels
        if labels is not None:
            columns["label"] = labels
        columns |= {"index": self.indices, "score": self.scores}
        if self.reranked:
            columns["similarity"] = [hit.similarity for hit in self._hits]
        columns["text"] = self.texts
        return pandas.DataFrame(columns)

    def _title(self) -> str:
        return "a vector query" if self.query is None else repr(self.query)

    def __repr__(self) -> str:
        lines = [f"SearchResults for {self._title()} ({count(len(self), 'hit')}, {self.model})"]
        similarity, labels = self.reranked, self.labels
        if self._hits:
            label, cells = "", [""] * len(self)
            if labels is not None:  # padded, so that the scores line up under their header
                names = [str(name) for name in labels]
                width = max(map(len, ["label", *names]))
                label, cells = f"  {'label':<{width}}", [f"  {name:<{width}}" for name in names]
            extra = f"  {'cosine':>6}" if similarity else ""
            lines.append(f"{'rank':>4}{label}  {'score':>6}{extra}  text")
            for hit, cell in zip(self._hits, cells, strict=True):
                extra = f"  {hit.similarity:>6.3f}" if similarity else ""
                lines.append(f"{hit.rank:>4}{cell}  {hit.score:>6.3f}{extra}  {shorten(hit.text)}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        similarity, labels = self.reranked, self.labels
        rows = "".join(
            f"<tr><td>{hit.rank}</td>"
            + (f"<td>{html.escape(str(hit.label))}</td>" if labels is not None else "")
            + f"<td>{hit.score:.3f}</td>"
            + (f"<td>{hit.similarity:.3f}</td>" if similarity else "")
            + f'<td style="text-align:left">{_picture(hit)}{html.escape(shorten(hit.text, 300))}'
            "</td></tr>"
            for hit in self._hits
        )
        what = "Reranked search" if similarity else "Search"
        return (
            '<table class="jme-search-results">'
            f"<caption>{what} for {html.escape(self._title())} "
            f"({count(len(self), 'hit')}, <code>{html.escape(self.model)}</code>)</caption>"
            "<thead><tr><th>rank</th>"
            + ("<th>label</th>" if labels is not None else "")
            + "<th>score</th>"
            + ("<th>cosine</th>" if similarity else "")
            + f'<th style="text-align:left">text</th></tr></thead><tbody>{rows}</tbody></table>'
        )


class Ranking:
    """A reranker's scores for a query's documents (what :func:`jupyter_mlx_embed.rerank`
    gives): ``scores`` in the documents' order, ``hits`` best first.

    Attributes:
        query: The query.
        documents: The documents, in the order given.
        scores: float32, one per document, in the documents' order.
        model: The reranker.
        hits: The best ``top_n`` (all by default), best first, as :class:`SearchResults`
            (``index`` is the document's position).
    """

    def __init__(
        self,
        query: str,
        documents: Sequence[str],
        scores: np.ndarray,
        *,
        model: str,
        top_n: int | None = None,
    ) -> None:
        self.query = query
        self.documents = list(documents)
        self.scores = np.asarray(scores, dtype=np.float32)
        self.model = model
        order = top_k(self.scores, min(top_n or len(self.scores), len(self.scores)))
        self.hits = SearchResults(
            [
                Hit(rank=r, index=int(i), score=float(self.scores[i]), text=self.documents[i])
                for r, i in enumerate(order, start=1)
            ],
            query=query,
            model=model,
        )

    def __len__(self) -> int:
        return len(self.hits)

    def __iter__(self) -> Iterator[Hit]:
        return iter(self.hits)

    def __getitem__(self, key: int) -> Hit:
        return self.hits[key]

    @property
    def indices(self) -> np.ndarray:
        """The documents' positions, best first."""
        return self.hits.indices

    def to_pandas(self) -> pd.DataFrame:
        """The hits as a DataFrame (``rank``, ``index``, ``score``, ``text``)."""
        return self.hits.to_pandas()

    def __repr__(self) -> str:
        return repr(self.hits).replace("SearchResults for", "Ranking for", 1)

    def _repr_html_(self) -> str:
        return self.hits._repr_html_().replace("Search for", "Reranking for", 1)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores, descending, equal scores in index order."""
    if k < len(scores):
        # Partition first (linear) so that only candidates are sorted; every score equal to
        # the k-th largest is kept so that ties are resolved by index, not by partition order.
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        candidates = np.flatnonzero(scores >= kth)
    else:
        candidates = np.arange(len(scores))
    return candidates[np.lexsort((candidates, -scores[candidates]))][:k]


def shorten(text: str, width: int = PREVIEW_WIDTH) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1].rstrip() + "…"


def count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def import_pandas() -> Any:
    try:
        import pandas
    except ImportError as exc:
        raise ImportError("to_pandas() needs pandas: pip install pandas") from exc
    return pandas


def _picture(hit: Hit) -> str:
    """An inline ``<img>`` of a picture hit's thumbnail, or nothing."""
    if not hit.thumbnail:
        return ""
    data = base64.b64encode(hit.thumbnail).decode("ascii")
    return (
        f'<img src="data:image/jpeg;base64,{data}" '
        'style="height:48px;vertical-align:middle;margin-right:6px">'
    )
