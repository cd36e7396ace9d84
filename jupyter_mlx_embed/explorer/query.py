"""The explorer's queries (notebook layer): each one numbered, embedded through the transport
in the background (or at once for ``search_text``), and answered with similarity scores and
the top k unless a newer query came meanwhile; and a clicked point's neighbours.

With a reranker switched on, the top k shown first (by similarity) is then replaced by the
reranker's best k of the :data:`RERANK_CANDIDATES` nearest texts, each with both scores; the
map stays coloured by similarity.

The front end sets ``query`` with ``query_seq`` (each edit takes the next number); answers
carry ``result_seq``, the number of the query they answer, so a stale answer is never shown.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import api
from ..embeddings import Embeddings
from ..errors import EmbedError
from ..options import EmbedOptions
from ..ranking import Hit, SearchResults, top_k
from ._format import TEXT_LIMIT, clip, count, describe, quote
from .background import Handoff
from .data import quantize_scores

if TYPE_CHECKING:
    from ..results import EmbedResult
    from ..transport import Transport

log = logging.getLogger(__name__)

#: The nearest texts (by similarity) a query's reranker scores, when there are more than k.
RERANK_CANDIDATES = 50


@dataclass(frozen=True)
class Answer:
    """What the explorer shows for query ``seq``: the ``scores`` and ``score_range`` traits
    (empty without a query), ``top_k`` rows and the status line."""

    seq: int
    scores: bytes = b""
    score_range: list[float] = field(default_factory=list)
    top_k: list[dict[str, Any]] = field(default_factory=list)
    status: str = ""
    level: str = "info"


class Queries:
    """One explorer's queries; a newer query always wins over a stale answer.

    Args:
        embeddings: The texts searched.
        transport: Where queries are embedded; the process's transport by default.
        prefix: Text put before every query (else the model's ``query`` prompt, if any).
        lock: The explorer's lock, held while answers are checked and shown.
        handoff: Hands answers from the transport's threads to the kernel's loop.
        k: How many hits a query shows (read when its answer comes).
        publish: Shows an :class:`Answer` (sets the widget's traits).
        set_status: Shows a message and its level in the status line.
        reranker: The reranker switched on ("" for none; read when a query's answer comes).
        publish_hits: Shows reranked ``top_k`` rows and a status line (the scores stay).
        within: The points queries rank (a boolean mask, read when an answer comes), or
            ``None`` for all of them; the map is coloured by every point's score either way.
    """

    def __init__(
        self,
        embeddings: Embeddings,
        *,
        transport: Transport | None,
        prefix: str,
        lock: threading.RLock,
        handoff: Handoff,
        k: Callable[[], int],
        publish: Callable[[Answer], None],
        set_status: Callable[[str, str], None],
        reranker: Callable[[], str] = str,
        publish_hits: Callable[[list[dict[str, Any]], str], None] | None = None,
        within: Callable[[], np.ndarray | None] = lambda: None,
    ) -> None:
        self._embeddings = embeddings
        self._within = within
        self._reranker = reranker
        self._publish_hits = publish_hits
        self._transport = transport
        self._lock = lock
        self._handoff = handoff
        self._k = k
        self._publish = publish
        self._set_status = set_status
        self._options = self._query_options(prefix)
        #: The newest query number sent (older answers are dropped).
        self.latest = 0
        #: Float32 scores of the query on show, or ``None``.
        self.similarities: np.ndarray | None = None
        #: Set while ``search_text`` changes the query traits itself.
        self.quiet = False

    def transport(self) -> Transport:
        """The transport queries go through."""
        return self._transport if self._transport is not None else api.get_transport()

    @contextmanager
    def quietly(self) -> Iterator[None]:
        """Within: changes of the query traits are the caller's own (not new queries)."""
        self.quiet = True
        try:
            yield
        finally:
            self.quiet = False

    def start(self, seq: int, text: str) -> None:
        """Embed query ``seq`` in the background; its answer is shown when it comes."""
        if not text.strip():
            with self._lock:
                self._show(seq, text, None)
            return
        self._set_status(f"Searching for {quote(text)}…", "busy")
        try:
            future = self._submit(self.transport(), text)
        except Exception as exc:  # noqa: BLE001 - e.g. a full queue: shown in the status line
            self.fail(exc, seq)
            return
        self._handoff.follow_running_loop()
        future.add_done_callback(lambda done: self._deliver(seq, text, done))

    def search(self, seq: int, text: str, timeout: float | None) -> SearchResults:
        """Embed query ``seq`` now and wait for its answer (``search_text``).

        Raises:
            EmbedError: The query could not be embedded or reranked (also shown in the status
                line).
        """
        if not text.strip():
            self._show(seq, text, None)
            return SearchResults([], query=text, model=self._embeddings.model)
        self._set_status(f"Searching for {quote(text)}…", "busy")
        try:
            transport = self.transport()
            future = self._submit(transport, text)
            result = future.result(timeout=timeout or transport.timeout)
        except Exception as exc:
            self.fail(exc, seq)
            raise
        with self._lock:
            if seq == self.latest:
                self._show(seq, text, result.vectors[0], rerank=False)
        reranked = self._rerank(seq, text)
        if reranked is None:
            return self.hits(text)
        pending, pool, reranker = reranked
        try:
            scores = pending.result(timeout=timeout or transport.timeout).scores
        except Exception as exc:
            pending.cancel()
            self._set_status(f"Reranking failed: {describe(exc)}", "error")
            raise
        with self._lock:
            hits = self._reranked_hits(text, pool, scores, reranker)
            self._show_reranked(seq, text, len(pool), reranker, hits)
        return hits

    def hits(self, text: str | None) -> SearchResults:
        """Top-k of the query on show, exactly as ``Embeddings.search`` ranks them (among
        the points ``within`` keeps)."""
        ranked = self._ranked_scores()
        if ranked is None:
            return SearchResults([], query=text, model=self._embeddings.model)
        scores, eligible = ranked
        # The scores on show, not a second pass over every vector (0.2 s at a million).
        return self._embeddings.rank(scores, min(self._k(), eligible), query=text)

    def _ranked_scores(self) -> tuple[np.ndarray, int] | None:
        """The scores queries rank by (-inf outside ``within``) and how many points are
        eligible, or None when there is nothing to rank."""
        if self.similarities is None or not len(self._embeddings):
            return None
        mask = self._within()
        if mask is None:
            return self.similarities, len(self.similarities)
        eligible = int(mask.sum())
        if not eligible:
            return None
        return np.where(mask, self.similarities, -np.inf).astype(np.float32), eligible

    def fail(self, exc: BaseException, seq: int) -> None:
        """Show that query ``seq`` failed, and clear its stale colouring, unless a newer
        query was asked meanwhile."""
        message = describe(exc)
        log.debug("similarity explorer: %s", message, exc_info=exc)
        try:
            with self._lock:
                if seq != self.latest:
                    return  # a stale query's failure says nothing about the newest one
                self.similarities = None
                self._publish(Answer(seq, status=f"Query failed: {message}", level="error"))
        except Exception:  # nothing may escape an observer or a done callback
            log.exception("similarity explorer: cannot show an error")

    def _deliver(self, seq: int, text: str, future: Future[EmbedResult]) -> None:
        """Done callback (any thread): finish on the kernel's loop when there is one."""
        self._handoff.post(self._finish, seq, text, future)

    def _finish(self, seq: int, text: str, future: Future[EmbedResult]) -> None:
        try:
            with self._lock:
                if seq != self.latest:
                    log.debug("dropping the answer to query %d (latest: %d)", seq, self.latest)
                    return
                error = future.exception()
                if error is not None:
                    self.fail(error, seq)
                    return
                self._show(seq, text, future.result().vectors[0])
        except Exception as exc:  # noqa: BLE001 - a done callback has nobody to raise to
            self.fail(exc, seq)

    def _rerank(self, seq: int, text: str) -> tuple[Future[Any], np.ndarray, str] | None:
        """Have the reranker switched on score the nearest texts of query ``seq`` on show
        (None: no reranker, or nothing to rerank)."""
        reranker = self._reranker()
        ranked = self._ranked_scores()
        if not reranker or ranked is None:
            return None
        scores, eligible = ranked
        pool = top_k(scores, min(max(self._k(), RERANK_CANDIDATES), eligible))
        texts = [self._embeddings.texts[i] for i in pool]
        self._set_status(
            f"Reranking the {count(len(pool), 'nearest text')} with {quote(reranker)}…", "busy"
        )
        future = self.transport().rerank(text, texts, EmbedOptions(model=reranker))
        return future, pool, reranker

    def _rerank_later(self, seq: int, text: str) -> None:
        """:meth:`_rerank`, its answer shown when it comes (if ``seq`` is still the latest)."""
        try:
            reranked = self._rerank(seq, text)
        except Exception as exc:  # noqa: BLE001 - e.g. a full queue: shown in the status line
            self._set_status(f"Reranking failed: {describe(exc)}", "error")
            return
        if reranked is not None:
            future, pool, reranker = reranked
            future.add_done_callback(
                lambda done: self._handoff.post(
                    self._finish_rerank, seq, text, pool, reranker, done
                )
            )

    def _reranked_hits(
        self, text: str, pool: np.ndarray, scores: np.ndarray, reranker: str
    ) -> SearchResults:
        assert self.similarities is not None
        return self._embeddings.reranked(
            pool, scores, self.similarities, self._k(), query=text, by=reranker
        )

    def _finish_rerank(
        self, seq: int, text: str, pool: np.ndarray, reranker: str, future: Future[Any]
    ) -> None:
        """Done callback of :meth:`_rerank_later`'s request (on the kernel's loop)."""
        try:
            with self._lock:
                if seq != self.latest:
                    return
                error = future.exception()
                if error is not None:
                    self._set_status(f"Reranking failed: {describe(error)}", "error")
                    return
                hits = self._reranked_hits(text, pool, future.result().scores, reranker)
                self._show_reranked(seq, text, len(pool), reranker, hits)
        except Exception as exc:  # noqa: BLE001 - a done callback has nobody to raise to
            self._set_status(f"Reranking failed: {describe(exc)}", "error")

    def _show_reranked(
        self, seq: int, text: str, candidates: int, reranker: str, hits: SearchResults
    ) -> None:
        """Show the reranked top-k of query ``seq`` if it is still the latest (lock held)."""
        if seq != self.latest or self._publish_hits is None:
            return
        rows = hit_rows(hits)
        status = (
            f"{len(rows)} best of the {count(candidates, 'nearest text')}, reranked by "
            f"{quote(reranker)}, for {quote(text)}"
        )
        self._publish_hits(rows, status)

    def _show(self, seq: int, text: str, vector: np.ndarray | None, *, rerank: bool = True) -> None:
        """Publish the answer to query ``seq`` (``vector`` None: an empty query), then
        rerank its nearest texts when a reranker is switched on (unless ``rerank`` is
        false: the caller does)."""
        n = len(self._embeddings)
        if vector is None:
            self.similarities = None
            self._publish(Answer(seq, status="Empty query: type some text to search by meaning."))
            return
        similarities = self._embeddings.similarity(vector)[:, 0] if n else np.zeros(0)
        self.similarities = similarities.astype(np.float32)
        codes, lo, hi = quantize_scores(self.similarities)
        rows = hit_rows(self.hits(text))
        status = f"{len(rows)} nearest of {count(n, 'text')} for {quote(text)}"
        self._publish(Answer(seq, codes, [lo, hi] if n else [], rows, status))
        if rerank:
            self._rerank_later(seq, text)

    def _query_options(self, prefix: str) -> EmbedOptions:
        """How queries are embedded: like the texts (model, dimensions), prompted with the
        caller's prefix, else the model's ``query`` prompt when it has one, else as any text
        (the model's default prompt, if any)."""
        model, dimensions = self._embeddings.model, self._embeddings.dimensions
        if prefix:
            return EmbedOptions(model, dimensions, prompt=prefix)
        try:
            prompts = self.transport().model_info(model)["prompts"]
        except (EmbedError, KeyError, TypeError):
            prompts = {}
        name = "query" if "query" in (prompts or {}) else None
        return EmbedOptions(model, dimensions, prompt_name=name)

    def _submit(self, transport: Transport, text: str) -> Future[EmbedResult]:
        return transport.submit([text], self._options)


def nearest_neighbors(embeddings: Embeddings, index: int, k: int) -> list[Hit]:
    """The ``k`` items most similar to item ``index``, itself left out."""
    # One more than k: the point itself is among the hits (usually first, but exact
    # duplicates tie with it), and is left out by index.
    found = embeddings.search(embeddings.vectors[index], min(k + 1, len(embeddings)))
    return [hit for hit in found if hit.index != index][:k]


def hit_rows(hits: Iterable[Hit]) -> list[dict[str, Any]]:
    """Hits as the ``top_k`` and ``neighbors`` traits carry them (texts clipped; a reranked
    hit also with its ``similarity``)."""
    rows = []
    for hit in hits:
        row = {"index": hit.index, "text": clip(hit.text, TEXT_LIMIT), "score": hit.score}
        if hit.similarity is not None:
            row["similarity"] = hit.similarity
        rows.append(row)
    return rows
