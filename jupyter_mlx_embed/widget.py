"""The similarity explorer widget: map, live query, neighbours and heatmap (notebook layer).

An ``anywidget`` whose front end (``static/explorer.js``, built from
``labextension/src/explorer/``) draws the embeddings on a canvas. Python owns the data and
the maths: the 2-D projection, query vectors (through the same transport as ``embed``),
similarities, nearest neighbours and the heatmap. Large arrays travel as binary buffers
(little-endian float32 / int32 ``Bytes`` traits), never as JSON lists.

Protocol (every name is a synced trait):

* Python to front end: ``coords`` (n x 2 float32), ``texts``, ``label_codes`` (n int32, empty
  without labels), ``label_names``, ``projection``, ``embedding_model``, ``height``.
* Front end to Python: ``query`` with ``query_seq`` (set together; each edit takes the next
  number), ``k``, ``clicked`` (a point index, -1 for none) and ``selection`` (indices).
* Answers: ``result_seq`` (the query the answer belongs to), ``scores`` (n float32, empty
  without a query), ``top_k`` and ``neighbors`` (lists of ``{index, text, score}``),
  ``heatmap`` (m x m float32) with ``heatmap_indices`` and ``heatmap_note``, and ``status``
  with ``status_level`` (``info``, ``busy`` or ``error``).
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import logging
import operator
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anywidget
import numpy as np
import traitlets

from . import api
from .embeddings import Embeddings, Hit, SearchResults
from .errors import EmbedError

if TYPE_CHECKING:
    from .results import EmbedResult
    from .transport import Transport

log = logging.getLogger(__name__)

PROJECTIONS = ("auto", "pca", "umap")
#: Most items the heatmap shows (a 200 x 200 matrix is 160 KB and still readable).
HEATMAP_LIMIT = 200
#: Characters of each text sent to the front end (hover and labels); the rest stays here.
TEXT_LIMIT = 1000
#: Below this many points UMAP's neighbour graph is meaningless: use PCA.
UMAP_MIN_POINTS = 20

_BUNDLE = Path(__file__).parent / "static" / "explorer.js"
# Shown instead of the map when the front end was never built (a source checkout).
_MISSING_BUNDLE = """
export default {
  render({ el }) {
    el.textContent = "jupyter-mlx-embed: static/explorer.js is missing; build it with "
      + "`cd labextension && npm run build:widget`.";
  }
};
"""


def _reports_errors(method: Callable[[Any, dict[str, Any]], None]) -> Callable[..., None]:
    """Wrap an observer so that errors go to the status line: an observer that raises would
    raise into the comm handler (or into whoever set the trait)."""

    @functools.wraps(method)
    def observer(self: SimilarityExplorer, change: dict[str, Any]) -> None:
        try:
            method(self, change)
        except Exception as exc:  # noqa: BLE001 - shown in the status line instead
            self._fail(exc)

    return observer


class SimilarityExplorer(anywidget.AnyWidget):
    """An interactive map of embeddings with live semantic search.

    Drag to pan, scroll to zoom, hover for the text, click a point for its nearest
    neighbours, shift-drag (or the select mode) to select a box of points, and type in the
    query box to colour the points by similarity to the query and list the best matches.

    Args:
        embeddings: The texts and vectors to explore.
        labels: One label per text (strings, numbers, a pandas Series...): points are
            coloured by label, with a legend.
        projection: ``"pca"``, ``"umap"`` (needs ``umap-learn``) or ``"auto"`` (UMAP when
            installed, else PCA).
        k: Rows in the query's top-k table and neighbours per clicked point.
        heatmap_limit: Most items in the similarity heatmap.
        query_prefix: Text put before every query when embedding it (e.g. ``"query: "``),
            instead of the model's own query prompt: by default a model with a prompt named
            ``query`` (``config_sentence_transformers.json``) gets it. The texts' vectors are
            used as they are.
        height: Height of the map in pixels.
        transport: Where queries are embedded; the process's transport
            (:func:`jupyter_mlx_embed.get_transport`) by default.

    Raises:
        TypeError: ``embeddings`` is not an :class:`Embeddings`.
        ValueError: Unknown projection, ``k`` below 1, or labels of the wrong length.
        ImportError: ``projection="umap"`` without ``umap-learn``.
    """

    _esm = _BUNDLE if _BUNDLE.is_file() else _MISSING_BUNDLE

    # Data, Python to front end.
    coords = traitlets.Bytes(b"").tag(sync=True)
    texts = traitlets.List(traitlets.Unicode()).tag(sync=True)
    label_codes = traitlets.Bytes(b"").tag(sync=True)
    label_names = traitlets.List(traitlets.Unicode()).tag(sync=True)
    projection = traitlets.Unicode("pca").tag(sync=True)
    embedding_model = traitlets.Unicode("").tag(sync=True)
    height = traitlets.Int(440).tag(sync=True)
    # Requests, front end (or Python) to Python.
    query = traitlets.Unicode("").tag(sync=True)
    query_seq = traitlets.Int(0).tag(sync=True)
    k = traitlets.Int(5).tag(sync=True)
    clicked = traitlets.Int(-1).tag(sync=True)
    selection = traitlets.List(traitlets.Int()).tag(sync=True)
    # Answers.
    result_seq = traitlets.Int(0).tag(sync=True)
    scores = traitlets.Bytes(b"").tag(sync=True)
    top_k = traitlets.List(traitlets.Dict()).tag(sync=True)
    neighbors = traitlets.List(traitlets.Dict()).tag(sync=True)
    heatmap = traitlets.Bytes(b"").tag(sync=True)
    heatmap_indices = traitlets.List(traitlets.Int()).tag(sync=True)
    heatmap_note = traitlets.Unicode("").tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)
    status_level = traitlets.Unicode("info").tag(sync=True)

    def __init__(
        self,
        embeddings: Embeddings,
        labels: Iterable[Any] | None = None,
        *,
        projection: str = "auto",
        k: int = 5,
        heatmap_limit: int = HEATMAP_LIMIT,
        query_prefix: str = "",
        height: int = 440,
        transport: Transport | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(embeddings, Embeddings):
            raise TypeError(f"embeddings must be an Embeddings, got {type(embeddings).__name__}")
        k = operator.index(k)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        heatmap_limit = operator.index(heatmap_limit)
        if heatmap_limit < 1:
            raise ValueError(f"heatmap_limit must be at least 1, got {heatmap_limit}")
        codes, names = encode_labels(labels, len(embeddings))
        coords, used = project(embeddings.vectors, projection)

        # Private state first: observers may run while the traits below are initialised.
        self._embeddings = embeddings
        self._heatmap_limit = heatmap_limit
        self._transport = transport
        self._query_options = self._query_prompt(query_prefix)
        self._lock = threading.RLock()
        self._quiet = False  # set while search_text() changes the query traits itself
        self._latest_seq = 0  # the newest query number sent (older answers are dropped)
        self._vector: np.ndarray | None = None  # vector of the query on show
        # Completions arrive on a worker thread; in a kernel they are handed to its event
        # loop so that traits change (and comm messages go out) on the kernel's own thread.
        self._loop = _running_loop()

        super().__init__(
            coords=coords.astype("<f4").tobytes(),
            texts=[_clip(text, TEXT_LIMIT) for text in embeddings.texts],
            label_codes=codes.tobytes(),
            label_names=names,
            projection=used,
            embedding_model=embeddings.model,
            height=height,
            k=k,
            status=self._ready_message(used),
            **self._heatmap_state([]),
            **kwargs,
        )

    # Public API -------------------------------------------------------------------------

    @property
    def embeddings(self) -> Embeddings:
        """The embeddings on the map."""
        return self._embeddings

    @property
    def coordinates(self) -> np.ndarray:
        """The 2-D map positions, float32 (n x 2) (a copy)."""
        return np.frombuffer(self.coords, dtype="<f4").reshape(-1, 2).astype(np.float32)

    @property
    def similarities(self) -> np.ndarray | None:
        """Cosine similarity of every text to the query on show, or ``None``."""
        if not self.scores:
            return None
        return np.frombuffer(self.scores, dtype="<f4").astype(np.float32)

    def selected(self) -> Embeddings:
        """The selected points (``selection``) as an :class:`Embeddings`, in index order."""
        return self._embeddings[list(self.selection)]

    def search_text(self, text: str, *, timeout: float | None = None) -> SearchResults:
        """Run a query now and wait for its answer, as typing it in the query box would.

        Unlike setting ``query`` (answered in the background), this blocks until the query
        is embedded, like :func:`jupyter_mlx_embed.embed`, so the result is on show when it
        returns.

        Args:
            text: The query; an empty one clears the similarity colouring.
            timeout: Seconds to wait; the transport's timeout by default.

        Returns:
            The top-k hits (empty for an empty query).

        Raises:
            EmbedError: The query could not be embedded (also shown in ``status``).
        """
        with self._lock:
            seq = self._latest_seq = self._latest_seq + 1
            with self._quietly(), self.hold_sync():
                self.query = text
                self.query_seq = seq
        if not text.strip():
            self._show(seq, text, None)
            return SearchResults([], query=text, model=self._embeddings.model)
        self._set_status(f"Searching for {_quote(text)}…", "busy")
        try:
            transport = self._get_transport()
            future = self._submit(transport, text)
            result = future.result(timeout=timeout or transport.timeout)
        except Exception as exc:
            self._fail(exc, seq)
            raise
        with self._lock:
            if seq == self._latest_seq:
                self._show(seq, text, result.vectors[0])
        return self._hits(text)

    def __repr__(self) -> str:
        return (
            f"SimilarityExplorer({len(self._embeddings)} texts, "
            f"model={self._embeddings.model!r}, projection={self.projection!r})"
        )

    # Queries ----------------------------------------------------------------------------

    @traitlets.observe("query", "query_seq")
    @_reports_errors
    def _on_query(self, change: dict[str, Any]) -> None:
        with self._lock:
            if self._quiet:
                return
            if self.query_seq <= self._latest_seq:
                # ``query`` changed without a new number (set from Python): take the next
                # one, which comes back here and submits.
                if change["name"] == "query":
                    self.query_seq = self._latest_seq + 1
                return
            # The front end sets both traits at once; the second notification finds its
            # number taken and stops above.
            seq = self._latest_seq = self.query_seq
            text = self.query
        self._start(seq, text)

    def _start(self, seq: int, text: str) -> None:
        if not text.strip():
            with self._lock:
                self._show(seq, text, None)
            return
        self._set_status(f"Searching for {_quote(text)}…", "busy")
        try:
            future = self._submit(self._get_transport(), text)
        except Exception as exc:  # noqa: BLE001 - e.g. a full queue: shown in the status line
            self._fail(exc, seq)
            return
        loop = _running_loop() or self._loop
        self._loop = loop
        future.add_done_callback(lambda done: self._deliver(seq, text, done, loop))

    def _deliver(
        self,
        seq: int,
        text: str,
        future: Future[EmbedResult],
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        """Done callback (any thread): finish on the kernel's loop when there is one."""
        if loop is not None and loop.is_running():
            try:
                loop.call_soon_threadsafe(self._finish, seq, text, future)
                return
            except RuntimeError:  # the loop closed in the meantime
                pass
        self._finish(seq, text, future)

    def _finish(self, seq: int, text: str, future: Future[EmbedResult]) -> None:
        try:
            with self._lock:
                if seq != self._latest_seq:
                    log.debug("dropping the answer to query %d (latest: %d)", seq, self._latest_seq)
                    return
                error = future.exception()
                if error is not None:
                    self._fail(error, seq)
                    return
                self._show(seq, text, future.result().vectors[0])
        except Exception as exc:  # noqa: BLE001 - a done callback has nobody to raise to
            self._fail(exc, seq)

    def _show(self, seq: int, text: str, vector: np.ndarray | None) -> None:
        """Publish the answer to query ``seq`` (``vector`` None: an empty query)."""
        n = len(self._embeddings)
        self._vector = vector
        with self.hold_sync():
            if vector is None:
                self.scores = b""
                self.top_k = []
                self._set_status("Empty query: type some text to search by meaning.", "info")
            else:
                similarities = self._embeddings.similarity(vector)[:, 0] if n else np.zeros(0)
                self.scores = similarities.astype("<f4").tobytes()
                self.top_k = _rows(self._hits(text))
                self._set_status(
                    f"{len(self.top_k)} nearest of {_count(n, 'text')} for {_quote(text)}", "info"
                )
            self.result_seq = seq

    def _hits(self, text: str | None) -> SearchResults:
        """Top-k of the query on show, exactly as ``Embeddings.search`` ranks them."""
        model = self._embeddings.model
        if self._vector is None or not len(self._embeddings):
            return SearchResults([], query=text, model=model)
        found = self._embeddings.search(self._vector, min(self.k, len(self._embeddings)))
        return SearchResults(list(found), query=text, model=model)

    def _get_transport(self) -> Transport:
        return self._transport if self._transport is not None else api.get_transport()

    def _query_prompt(self, prefix: str) -> dict[str, str | None]:
        """How queries are prompted: the caller's prefix, else the model's ``query`` prompt
        when it has one, else as any text (the model's default prompt, if any)."""
        if prefix:
            return {"prompt_name": None, "prompt": prefix}
        try:
            prompts = self._get_transport().model_info(self._embeddings.model)["prompts"]
        except (EmbedError, KeyError, TypeError):
            prompts = {}
        return {"prompt_name": "query" if "query" in (prompts or {}) else None, "prompt": None}

    def _submit(self, transport: Transport, text: str) -> Future[EmbedResult]:
        return transport.submit(
            [text],
            model=self._embeddings.model,
            dimensions=self._embeddings.dimensions,
            prompt_name=self._query_options["prompt_name"],
            prompt=self._query_options["prompt"],
        )

    # Clicks, selection, k ---------------------------------------------------------------

    @traitlets.validate("k")
    def _valid_k(self, proposal: dict[str, Any]) -> int:
        return max(1, int(proposal["value"]))

    @traitlets.observe("k")
    @_reports_errors
    def _on_k(self, change: dict[str, Any]) -> None:
        with self._lock, self.hold_sync():
            if self._vector is not None:
                self.top_k = _rows(self._hits(self.query))
            self._update_neighbors()

    @traitlets.observe("clicked")
    @_reports_errors
    def _on_clicked(self, change: dict[str, Any]) -> None:
        with self._lock:
            self._update_neighbors(announce=True)

    def _update_neighbors(self, announce: bool = False) -> None:
        index, n = self.clicked, len(self._embeddings)
        if index < 0:
            self.neighbors = []
            return
        if index >= n:
            self.neighbors = []
            self._set_status(
                f"There is no point {index} (the map has {_count(n, 'point')}).", "error"
            )
            return
        # One more than k: the point itself is among the hits (usually first, but exact
        # duplicates tie with it), and is left out by index.
        found = self._embeddings.search(self._embeddings.vectors[index], min(self.k + 1, n))
        hits = [hit for hit in found if hit.index != index][: self.k]
        self.neighbors = _rows(hits)
        if announce:
            self._set_status(
                f"{_count(len(hits), 'nearest neighbour')} of point {index}: "
                f"{_quote(self._embeddings.texts[index])}"
            )

    @traitlets.validate("selection")
    def _valid_selection(self, proposal: dict[str, Any]) -> list[int]:
        # Sorted, unique and in range, whatever the front end sends.
        n = len(self._embeddings)
        return sorted({int(i) for i in proposal["value"] if 0 <= int(i) < n})

    @traitlets.observe("selection")
    @_reports_errors
    def _on_selection(self, change: dict[str, Any]) -> None:
        with self._lock, self.hold_sync():
            for name, value in self._heatmap_state(self.selection).items():
                setattr(self, name, value)
            count = len(self.selection)
            self._set_status(f"{count:,} selected" if count else "Selection cleared")

    def _heatmap_state(self, selection: list[int]) -> dict[str, Any]:
        n, limit = len(self._embeddings), self._heatmap_limit
        pool = selection if selection else range(n)
        indices = [int(i) for i in pool[:limit]]
        if selection:
            note = (
                f"Cosine similarity of the first {limit} of {len(selection):,} selected items"
                if len(selection) > limit
                else f"Cosine similarity of the {_count(len(selection), 'selected item')}"
            )
        elif n > limit:
            note = (
                f"Cosine similarity of the first {limit} of {n:,} items; select points on "
                "the map to compare others"
            )
        else:
            note = f"Cosine similarity of all {_count(n, 'item')}"
        matrix = self._embeddings[indices].similarity() if indices else np.zeros((0, 0))
        return {
            "heatmap": matrix.astype("<f4").tobytes(),
            "heatmap_indices": indices,
            "heatmap_note": note,
        }

    # Status -----------------------------------------------------------------------------

    def _ready_message(self, projection: str) -> str:
        n = len(self._embeddings)
        if not n:
            return "No texts to explore."
        return (
            f"{_count(n, 'text')} on a {projection.upper()} map. Type a query, click a "
            "point for its neighbours, or shift-drag to select."
        )

    def _set_status(self, message: str, level: str = "info") -> None:
        with self.hold_sync():
            self.status = message
            self.status_level = level

    def _fail(self, exc: BaseException, seq: int | None = None) -> None:
        """Show ``exc`` in the status line; for query ``seq``, clear its stale colouring."""
        message = exc.message if isinstance(exc, EmbedError) else f"{type(exc).__name__}: {exc}"
        log.debug("similarity explorer: %s", message, exc_info=exc)
        try:
            with self._lock, self.hold_sync():
                if seq is not None:
                    if seq != self._latest_seq:
                        return  # a stale query's failure says nothing about the newest one
                    self._vector = None
                    self.scores = b""
                    self.top_k = []
                    self.result_seq = seq
                    message = f"Query failed: {message}"
                self._set_status(message, "error")
        except Exception:  # nothing may escape an observer or a done callback
            log.exception("similarity explorer: cannot show an error")

    @contextmanager
    def _quietly(self) -> Iterator[None]:
        self._quiet = True
        try:
            yield
        finally:
            self._quiet = False


def project(vectors: np.ndarray, projection: str = "auto") -> tuple[np.ndarray, str]:
    """2-D positions for ``vectors`` and the method used (``"pca"`` or ``"umap"``).

    Args:
        vectors: Array (n x d).
        projection: ``"pca"``, ``"umap"`` or ``"auto"`` (UMAP when ``umap-learn`` is
            installed, else PCA). UMAP needs at least ``UMAP_MIN_POINTS`` points; fewer
            get PCA.

    Raises:
        ValueError: Unknown projection.
        ImportError: ``"umap"`` without ``umap-learn``.
    """
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {', '.join(PROJECTIONS)}, got {projection!r}")
    have_umap = importlib.util.find_spec("umap") is not None
    if projection == "umap" and not have_umap:
        raise ImportError("projection='umap' needs umap-learn: pip install umap-learn")
    if projection != "pca" and have_umap and len(vectors) >= UMAP_MIN_POINTS:
        return _umap(vectors), "umap"
    return pca_2d(vectors), "pca"


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """The first two principal components of ``vectors`` (float32, n x 2).

    Deterministic: each component's sign makes its largest-magnitude loading positive
    (scikit-learn's ``svd_flip`` convention on the loadings), so the same vectors always
    give the same map. Missing components (fewer than 2 points or dimensions) are zeros.
    """
    data = np.asarray(vectors, dtype=np.float64)
    out = np.zeros((len(data), 2), dtype=np.float32)
    if data.ndim != 2 or len(data) < 2 or data.shape[1] == 0:
        return out
    centered = data - data.mean(axis=0)
    if len(data) > data.shape[1]:
        # The d x d scatter matrix has the same right singular vectors as the n x d data and
        # is far cheaper to decompose when there are many more points than dimensions.
        _, _, vt = np.linalg.svd(centered.T @ centered, hermitian=True)
    else:
        _, _, vt = np.linalg.svd(centered, full_matrices=False)
    components = vt[:2]
    largest = np.argmax(np.abs(components), axis=1)
    signs = np.sign(components[np.arange(len(components)), largest])
    components = components * np.where(signs == 0, 1, signs)[:, None]
    projected = centered @ components.T
    out[:, : projected.shape[1]] = projected
    return out


def _umap(vectors: np.ndarray) -> np.ndarray:
    import umap

    # A fixed random_state makes the map reproducible; n_jobs=1 says so explicitly (umap
    # warns when random_state silently turns parallelism off).
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=min(15, len(vectors) - 1),
        metric="cosine",
        random_state=0,
        n_jobs=1,
    )
    return np.asarray(reducer.fit_transform(vectors), dtype=np.float32)


def encode_labels(labels: Iterable[Any] | None, n: int) -> tuple[np.ndarray, list[str]]:
    """Labels as int32 codes and names, in order of first appearance.

    Labels are compared by their text (``str``), which is what the legend shows.

    Raises:
        TypeError: ``labels`` is a single string.
        ValueError: Not one label per text.
    """
    if labels is None:
        return np.zeros(0, dtype="<i4"), []
    if isinstance(labels, (str, bytes)):
        raise TypeError("labels must be one label per text, not a single string")
    values = list(labels)
    if len(values) != n:
        raise ValueError(f"{n} texts but {len(values)} labels")
    names: dict[str, int] = {}
    codes = np.array([names.setdefault(str(v), len(names)) for v in values], dtype="<i4")
    return codes, list(names)


def _rows(hits: Iterable[Hit]) -> list[dict[str, Any]]:
    return [{"index": hit.index, "text": hit.text, "score": hit.score} for hit in hits]


def _running_loop() -> asyncio.AbstractEventLoop | None:
    # Not tornado's IOLoop.current(): without a running loop it is deprecated (and warns).
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _quote(text: str, width: int = 60) -> str:
    return repr(_clip(" ".join(text.split()), width))


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"
