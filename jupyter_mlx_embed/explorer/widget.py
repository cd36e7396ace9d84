"""The similarity explorer widget: its synced traits and their observers (notebook layer).

An ``anywidget`` whose front end (``static/explorer.js``, built from
``labextension/src/explorer/``) draws the embeddings with WebGL (regl-scatterplot). Python
owns the data and the maths, in the modules beside this one: the map and clusters
(:mod:`.background`, over :mod:`.projection` and :mod:`.clusters`), table input and colours
by a column (:mod:`.table`, :mod:`.data`), queries and neighbours (:mod:`.query`, through the
same transport as ``embed``), the heatmap (:mod:`.heatmap`) and the static PNG
(:mod:`.snapshot`). Per-point data travel as binary buffers (``Bytes`` traits, one float32
pair or one byte per point); texts and column values never travel all at once.

Protocol (synced traits):

* Python to front end: ``coords`` (n x 2 float32), ``projection`` (``pca``/``umap``) and
  ``map_status``; the colouring: ``color_by`` (also set by the front end), ``color_options``,
  ``color_kind`` (``none``/``categorical``/``numeric``), ``color_codes`` (n uint8),
  ``color_names``, ``color_counts``, ``color_palette``, ``color_range``; ``clusters``
  (``{label, x, y, size, level, members}``: coarse regions (level 0) then dense ones
  (level 1), each largest first, with a sample of their points); ``tooltip_columns``,
  ``embedding_model``, ``height``; ``pictures`` (the points are pictures: thumbnails are
  shown); the filter's traits (below, by their declaration).
* Front end to Python: ``query`` with ``query_seq`` (set together; each edit takes the next
  number), ``k``, ``clicked`` (a point index, -1 for none) and ``selection`` (indices).
* Answers: ``result_seq`` (the query the answer belongs to), ``scores`` (n uint8: 0..254 from
  ``score_range[0]`` to ``score_range[1]``; empty without a query), ``top_k`` and
  ``neighbors`` (``{index, text, score}``), ``heatmap`` (m x m float32, rows in seriated
  order) with ``heatmap_indices``, ``heatmap_labels`` and ``heatmap_note``, and ``status``
  with ``status_level`` (``info``, ``busy`` or ``error``).

Custom messages: the front end sends ``{"type": "rows", "id", "indices"}`` (hover, tables)
and Python answers ``{"type": "rows", "id", "rows": [{index, text, fields}]}`` with each
text clipped to ``TEXT_LIMIT`` and the ``tooltip_columns`` values as strings. For pictures,
``{"type": "thumbnails", "id", "indices"}`` is answered (from :mod:`.thumbnails`' pool) by
``{"type": "thumbnails", "id", "indices", "sizes"}`` with one buffer: the JPEGs one after the
other (size 0: unreadable).

Saved notebooks: the display bundle carries ``image/png`` (the map drawn in Python) beside
the widget view, kept up to date by :mod:`.snapshot`, and the output's metadata the mark
``SNAPSHOT_MARK``, by which the labextension shows that PNG when the widget's model is gone
(a notebook reopened later).

Over 500 lines, on purpose: the synced traits (the protocol that the front end's
``protocol.ts`` mirrors) and the public API are documented here, and ``explore`` (the
table-first way in, kept beside the class as jupyter-scatter keeps ``plot`` beside
``Scatter``) is typed by the class it returns. Each method is a few lines of glue over the
modules beside this one.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import operator
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anywidget
import numpy as np
import traitlets

from ..embeddings import Embeddings, SearchResults
from ._format import count, describe, quote
from .background import Handoff, first_map, start_map_work
from .data import Coloring, scaled_codes
from .density import contours
from .filtering import (
    combined,
    describe_mask,
    expression_mask,
    given_mask,
    keyword_mask,
    range_mask,
)
from .heatmap import HEATMAP_LIMIT, heatmap_state
from .query import Answer, Queries, hit_rows, nearest_neighbors
from .snapshot import Key, Picture, Snapshot
from .table import (
    choices,
    choose_colorings,
    column_strings,
    columns_of,
    embed_column,
    numeric_columns,
    row,
    take_rows,
    tooltip_columns,
)
from .thumbnails import Thumbnails

if TYPE_CHECKING:
    from ..transport import Transport
    from .clusters import Clusters

log = logging.getLogger(__name__)

PROJECTIONS = ("auto", "pca", "umap")
#: Output metadata key of the explorer's display (labextension/src/snapshot.ts: a notebook
#: reopened without the widget's model shows the PNG).
SNAPSHOT_MARK = "jupyter_mlx_embed"
#: Most rows one ``rows`` request may ask for.
ROWS_LIMIT = 500
#: Traits of a live session that an exported page starts without (their defaults).
_LIVE_ONLY = (
    "scores",
    "score_range",
    "top_k",
    "neighbors",
    "heatmap",
    "heatmap_indices",
    "heatmap_labels",
    "heatmap_note",
    "query",
    "reranker",
    "rerank",
    "clicked",
    "selection",
    "filter_mask",
    "filter_count",
    "filter_text",
    "keyword",
    "value_range",
    "search_filtered",
)

_BUNDLE = Path(__file__).parent.parent / "static" / "explorer.js"
# Shown instead of the map when the front end was never built (a source checkout).
_MISSING_BUNDLE = """
export default {
  render({ el }) {
    el.textContent = "jupyter-mlx-embed: static/explorer.js is missing; build it with "
      + "`cd labextension && npm run build:widget`.";
  }
};
"""


def _one_of(name: str, value: Any, options: Sequence[str], what: str) -> str:
    """A column-choosing trait's new value: one of ``options``, or "" for none."""
    chosen = str(value)
    if chosen and chosen not in options:
        raise traitlets.TraitError(f"{name}={chosen!r} is not {what}; {choices(options)}")
    return chosen


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

    Drag to pan, ctrl-scroll (or click the map, then scroll) to zoom, hover for the text,
    click a point for its nearest neighbours, shift-drag to lasso points (or pick the lasso
    or box tool), double-click to reset the view, and type in the query box to colour the
    points by similarity to the query and list the best matches.

    Args:
        embeddings: The texts and vectors to explore.
        labels: One label per text (strings, numbers, a pandas Series...): points are
            coloured by label (categories), with a legend.
        data: A table aligned with the embeddings (a pandas DataFrame, or a mapping of
            column name to one value per text): its columns can colour the points and show
            in tooltips.
        color: A column of ``data`` to colour by, or one value per text. Numbers get a
            continuous scale with a colour bar; anything else the 20 most frequent
            categories and "other".
        tooltip: Columns of ``data`` shown when hovering a point.
        projection: ``"pca"``, ``"umap"`` (needs ``umap-learn``) or ``"auto"`` (UMAP when
            installed). A UMAP map is computed in a background thread: the PCA map shows
            at once and is replaced when UMAP is done. A map too small for UMAP (see
            :func:`jupyter_mlx_embed.project`) is a PCA map, and says so.
        k: Rows in the query's top-k table and neighbours per clicked point.
        heatmap_limit: Most items in the similarity heatmap.
        query_prefix: Text put before every query when embedding it (e.g. ``"query: "``),
            instead of the model's own query prompt: by default a model with a prompt named
            ``query`` (``config_sentence_transformers.json``) gets it. The texts' vectors are
            used as they are.
        reranker: A reranker's name: the query box then has a "rerank" toggle (on at first)
            that reorders the query's best matches by this reranker's scores (of its 50
            nearest texts); the map stays coloured by similarity. Also the ``reranker`` and
            ``rerank`` traits.
        height: Height of the map in pixels.
        seed: Seed of the projection and the clusters (the same seed, the same map).
        transport: Where queries are embedded; the process's transport
            (:func:`jupyter_mlx_embed.get_transport`) by default.

    Raises:
        TypeError: ``embeddings`` is not an :class:`Embeddings`.
        ValueError: Unknown projection or column, ``k`` below 1, or labels, colours or
            ``data`` of the wrong length.
        ImportError: ``projection="umap"`` without ``umap-learn``.
    """

    _esm = _BUNDLE if _BUNDLE.is_file() else _MISSING_BUNDLE

    # The map, Python to front end.
    coords = traitlets.Bytes(b"").tag(sync=True)
    projection = traitlets.Unicode("pca").tag(sync=True)
    map_status = traitlets.Unicode("").tag(sync=True)
    clusters = traitlets.List(traitlets.Dict()).tag(sync=True)
    # Colours: ``color_by`` is also set by the front end (the colour menu).
    color_by = traitlets.Unicode("").tag(sync=True)
    color_options = traitlets.List(traitlets.Unicode()).tag(sync=True)
    color_kind = traitlets.Unicode("none").tag(sync=True)
    color_codes = traitlets.Bytes(b"").tag(sync=True)
    color_names = traitlets.List(traitlets.Unicode()).tag(sync=True)
    color_counts = traitlets.List(traitlets.Int()).tag(sync=True)
    color_palette = traitlets.List(traitlets.Unicode()).tag(sync=True)
    color_range = traitlets.List(traitlets.Float()).tag(sync=True)
    tooltip_columns = traitlets.List(traitlets.Unicode()).tag(sync=True)
    embedding_model = traitlets.Unicode("").tag(sync=True)
    height = traitlets.Int(440).tag(sync=True)
    pictures = traitlets.Bool(False).tag(sync=True)
    # Requests, front end (or Python) to Python.
    query = traitlets.Unicode("").tag(sync=True)
    #: A reranker for the query's nearest texts ("" for none), and whether it is switched on.
    reranker = traitlets.Unicode("").tag(sync=True)
    rerank = traitlets.Bool(False).tag(sync=True)
    query_seq = traitlets.Int(0).tag(sync=True)
    k = traitlets.Int(5).tag(sync=True)
    clicked = traitlets.Int(-1).tag(sync=True)
    selection = traitlets.List(traitlets.Int()).tag(sync=True)
    # Answers.
    result_seq = traitlets.Int(0).tag(sync=True)
    scores = traitlets.Bytes(b"").tag(sync=True)
    score_range = traitlets.List(traitlets.Float()).tag(sync=True)
    top_k = traitlets.List(traitlets.Dict()).tag(sync=True)
    neighbors = traitlets.List(traitlets.Dict()).tag(sync=True)
    heatmap = traitlets.Bytes(b"").tag(sync=True)
    heatmap_indices = traitlets.List(traitlets.Int()).tag(sync=True)
    heatmap_labels = traitlets.List(traitlets.Unicode()).tag(sync=True)
    heatmap_note = traitlets.Unicode("").tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)
    status_level = traitlets.Unicode("info").tag(sync=True)
    # The filter (points that do not match are greyed out): ``filter_mask`` (n uint8, 1 for
    # a match; empty for no filter) and ``filter_count`` from Python, ``filter_text`` (the
    # Python filter shown; the front end empties it to clear that filter), ``keyword`` and
    # ``value_range`` (of a numeric colour column) from the front end, and
    # ``search_filtered`` (rank only the matching points).
    filter_mask = traitlets.Bytes(b"").tag(sync=True)
    filter_count = traitlets.Int(0).tag(sync=True)
    filter_text = traitlets.Unicode("").tag(sync=True)
    keyword = traitlets.Unicode("").tag(sync=True)
    value_range = traitlets.List(traitlets.Float()).tag(sync=True)
    search_filtered = traitlets.Bool(False).tag(sync=True)
    # Points scaled by a numeric column among ``size_options``: their size (``size_by``)
    # and/or their opacity (``opacity_by``), each "" for none (also set by the front end),
    # and ``scale_codes``: that column as n uint8 (0..254 smallest to largest, 255 missing).
    # The points carry one such column besides their colour (regl-scatterplot has two
    # values a point): naming another column for one turns the other off.
    size_by = traitlets.Unicode("").tag(sync=True)
    opacity_by = traitlets.Unicode("").tag(sync=True)
    size_options = traitlets.List(traitlets.Unicode()).tag(sync=True)
    scale_codes = traitlets.Bytes(b"").tag(sync=True)
    # Density contours: ``density`` switches them on (front end or Python); ``contours``
    # holds their lines (``{share, color, paths}``, paths flat [x0, y0, x1, ...] in map
    # coordinates), per category when coloured by one.
    density = traitlets.Bool(False).tag(sync=True)
    contours = traitlets.List(traitlets.Dict()).tag(sync=True)
    #: False only in an exported page (``to_html``: no kernel, what needs Python is hidden).
    interactive = traitlets.Bool(True).tag(sync=True)
    # Which views show this explorer (the front end gives each view its own model object).
    view_key = traitlets.Unicode("").tag(sync=True)

    def __init__(
        self,
        embeddings: Embeddings,
        labels: Iterable[Any] | None = None,
        *,
        data: Any = None,
        color: str | Iterable[Any] | None = None,
        tooltip: Sequence[str] = (),
        projection: str = "auto",
        k: int = 5,
        heatmap_limit: int = HEATMAP_LIMIT,
        query_prefix: str = "",
        reranker: str | None = None,
        height: int = 440,
        seed: int = 0,
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
        if projection not in PROJECTIONS:
            raise ValueError(
                f"projection must be one of {', '.join(PROJECTIONS)}, got {projection!r}"
            )
        have_umap = importlib.util.find_spec("umap") is not None
        if projection == "umap" and not have_umap:
            raise ImportError("projection='umap' needs umap-learn: pip install umap-learn")
        if labels is not None and color is not None:
            raise ValueError("give labels or color, not both (labels is a categorical color)")
        n = len(embeddings)
        columns = columns_of(data, n)
        tooltip = tooltip_columns(tooltip, columns)
        colorings, options, chosen = choose_colorings(labels, color, columns, n)
        xy, used, pending = first_map(
            embeddings.vectors, projection, have_umap=have_umap, seed=seed
        )

        # Private state first: observers may run while the traits below are initialised.
        self._embeddings = embeddings
        self._columns = columns
        self._colorings = colorings
        self._heatmap_limit = heatmap_limit
        self._given_filter: np.ndarray | None = None  # the Python filter's mask
        self._filter_is_query = False
        self._keyword_mask: np.ndarray | None = None
        self._mask: np.ndarray | None = None  # what every part of the filter keeps
        self._contours: dict[tuple[int, str], list[dict[str, Any]]] = {}  # of the map shown
        self._lock = threading.RLock()
        self._handoff = Handoff()
        self._queries = Queries(
            embeddings,
            transport=transport,
            prefix=query_prefix,
            lock=self._lock,
            handoff=self._handoff,
            k=lambda: self.k,
            publish=self._show_answer,
            set_status=self._set_status,
            reranker=lambda: self.reranker if self.rerank else "",
            publish_hits=self._show_reranked,
            within=lambda: self._mask if self.search_filtered else None,
        )
        self._map_version = 0  # bumped when the coordinates change
        self._cluster_result: Clusters | None = None
        self._snapshot = Snapshot(
            key=self._png_key,
            picture=self._picture,
            bundle=self._repr_mimebundle_,
            handoff=self._handoff,
        )
        self._done = threading.Event()  # set when the background map work is over
        images = embeddings.images
        self._thumbnails = None if images is None else Thumbnails(images)

        super().__init__(
            coords=np.ascontiguousarray(xy, dtype="<f4").tobytes(),
            projection=used,
            map_status=self._map_message(used, pending=pending),
            color_options=options,
            size_options=numeric_columns(columns),
            tooltip_columns=tooltip,
            embedding_model=embeddings.model,
            height=height,
            pictures=images is not None,
            k=k,
            **({"reranker": reranker, "rerank": True} if reranker else {}),
            status=self._ready_message(),
            view_key=uuid.uuid4().hex,
            **heatmap_state(embeddings, [], heatmap_limit),
            **kwargs,
        )
        self.color_by = chosen  # the observer fills the colour traits
        if not chosen:
            self._apply_coloring(Coloring("none", codes=np.zeros(n, dtype=np.uint8)))
        self.on_msg(self._on_message)
        if n:
            start_map_work(
                embeddings.vectors,
                embeddings.texts if embeddings.images is None else picture_names(embeddings),
                xy,
                self._map_version,
                umap=pending,
                seed=seed,
                handoff=self._handoff,
                show_map=self._show_map,
                show_clusters=self._show_clusters,
                failed=self._map_failed,
                done=self._done,
            )
        else:
            self._done.set()

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
        found = self._queries.similarities
        return None if found is None else found.copy()

    @property
    def cluster_codes(self) -> np.ndarray | None:
        """Each point's cluster (int32, -1 for none) on the current map, once found."""
        found = self._cluster_result
        return None if found is None else found.codes.copy()

    def selected(self) -> Embeddings:
        """The selected points (``selection``) as an :class:`Embeddings`, in index order."""
        return self._embeddings[list(self.selection)]

    @property
    def filter(self) -> str | np.ndarray | None:
        """The filter set from Python: points that do not match are greyed out on the map.

        Set a pandas query over the table's columns and ``text`` (``"year > 2000 and
        lang == 'en'"``), a boolean mask (one value per point), or ``None`` to clear it. It
        combines with the widget's keyword box and a numeric column's range; the rows that
        match them all are :attr:`filtered`. With ``search_filtered`` on, queries rank only
        those rows.

        Raises:
            ValueError: Not a valid query, or a mask of the wrong length.
            TypeError: Neither a string nor a boolean mask.
        """
        if self._given_filter is None:
            return None
        return self.filter_text if self._filter_is_query else self._given_filter.copy()

    @filter.setter
    def filter(self, value: str | Any | None) -> None:
        n = len(self._embeddings)
        if value is None or (isinstance(value, str) and not value.strip()):
            mask, text, is_query = None, "", False
        elif isinstance(value, str):
            texts = self._embeddings.texts
            mask, text, is_query = expression_mask(value, self._columns, texts), value, True
        else:
            mask = given_mask(value, n)
            text, is_query = describe_mask(mask), False
        with self._lock, self.hold_sync():
            self._given_filter, self._filter_is_query = mask, is_query
            self.filter_text = text  # the observer leaves a Python filter as set here
            self._refilter()

    @property
    def filtered(self) -> np.ndarray:
        """Positions (int64) of the points the filter keeps: every point without one."""
        mask = self._mask
        n = len(self._embeddings)
        return np.arange(n, dtype=np.int64) if mask is None else np.flatnonzero(mask)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the background work (UMAP map, clusters) is done, e.g. in a script.

        Not needed in a live notebook: the map updates by itself when the work is done. In a
        notebook run headless (nbconvert, papermill, nbval), it also brings the static PNG up
        to date before the cell ends, since updates sent after a cell has ended are dropped
        there.

        Returns:
            Whether it is done (False when ``timeout`` seconds passed first).
        """
        done = self._done.wait(timeout)
        if self._handoff.on_loop_thread():
            self._handoff.run_posted()  # the map and clusters the background work has posted
            if done:
                self._snapshot.flush()
        return done

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
            seq = self._queries.latest = self._queries.latest + 1
            with self._queries.quietly(), self.hold_sync():
                self.query = text
                self.query_seq = seq
        return self._queries.search(seq, text, timeout)

    def to_html(
        self, path: str | Path, *, title: str | None = None, thumbnails: bool = True
    ) -> Path:
        """Write the explorer as one self-contained HTML page: the map with pan, zoom, hover,
        the legend's filter and the keyword box, opened in a browser without a kernel or a
        network. Searching by meaning, neighbours and the heatmap need Python and are left
        out. The page is coloured as the explorer is now.

        Each point costs its text (up to 1,000 characters) and tooltip values, plus about
        12 bytes (see :mod:`.export`); a picture also its thumbnail (about 2.5 KB), shown on
        hover and in place of the points at the closest zooms, unless ``thumbnails=False``.

        Returns:
            The path written.
        """
        from .export import page, write_text

        n = len(self._embeddings)
        inherited = anywidget.AnyWidget.class_trait_names(sync=True)
        own = set(self.trait_names(sync=True)) - set(inherited)
        state = {name: getattr(self, name) for name in sorted(own) if not name.startswith("_")}
        jpegs = self._thumbnails.all() if self._thumbnails is not None and thumbnails else None
        state.update(
            interactive=False,
            pictures=jpegs is not None,
            view_key=uuid.uuid4().hex,
            color_options=[],
            status=f"Exported map of {count(n, self._noun)}: hover for "
            f"{'pictures' if jpegs is not None else 'texts'}, filter by the legend or a keyword. "
            "Open the notebook to search by meaning.",
            status_level="info",
            **{name: getattr(type(self), name).default() for name in _LIVE_ONLY},
        )
        if not self._done.is_set():  # a page does no background work: the map as it is now
            state["map_status"] = self._map_message(self.projection)
        bundle = _BUNDLE.read_bytes() if _BUNDLE.is_file() else _MISSING_BUNDLE.encode()
        texts = self._embeddings.texts
        fields = {name: column_strings(self._columns[name], n) for name in self.tooltip_columns}
        heading = title or f"Similarity explorer: {count(n, self._noun)}"
        return write_text(path, page(bundle, state, texts, fields, heading, jpegs))

    def to_parquet(self, path: str | Path, *, vectors: bool = True) -> Path:
        """Write what the map shows as a Parquet table: the table's columns, then ``text``,
        ``projection_x`` / ``projection_y`` (the map), ``cluster`` / ``cluster_label`` /
        ``region_label`` (the labels, once found) and ``vector`` (the embeddings, unless
        ``vectors=False``).

        embedding-atlas opens it with ``embedding-atlas FILE --text text --x projection_x
        --y projection_y`` (``--vector vector`` to project again); Latent Scope ingests it
        with ``text`` as the text column.

        Returns:
            The path written.

        Raises:
            ImportError: pyarrow is not installed.
        """
        import pyarrow.parquet as pq

        from .export import parquet_table

        table = parquet_table(
            self._embeddings.texts,
            self._columns,
            self.coordinates,
            self._embeddings.vectors if vectors else None,
            self._cluster_result,
        )
        pq.write_table(table, str(path))
        return Path(path)

    def close(self) -> None:
        """Close the widget (its views disappear); a pending PNG update and thumbnails being
        made are dropped."""
        # getattr: ipywidgets also closes a widget whose __init__ failed before these were set.
        for part in (getattr(self, "_snapshot", None), getattr(self, "_thumbnails", None)):
            if part is not None:
                part.close()
        super().close()

    def __repr__(self) -> str:
        return (
            f"SimilarityExplorer({count(len(self._embeddings), self._noun)}, "
            f"model={self._embeddings.model!r}, projection={self.projection!r})"
        )

    # Display: the widget view plus a static PNG ------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return None
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle, {})
        # The mark tells the labextension to show the PNG when the widget's model is gone.
        marked = {**(metadata or {}), SNAPSHOT_MARK: {"explorer": 1}}
        return {**data, "image/png": self._snapshot.png()}, marked

    def _ipython_display_(self) -> None:
        """Displayed with a display id, so that the PNG can follow the map."""
        self._snapshot.show(self._repr_mimebundle_())

    def _png_key(self) -> Key:
        return self._map_version, self.color_by, self._cluster_result is not None

    def _picture(self) -> Picture:
        coloring = self._colorings.get(self.color_by)
        found = self._cluster_result
        # The labels of the whole map: the coarse regions.
        shown = (found.regions or found.clusters) if found is not None else []
        labels = [(c.label, *c.center) for c in shown]
        # What the picture shows, not the work in progress that map_status also tells: a
        # saved notebook's reader has no kernel to see that work finish.
        caption = self._map_message(self.projection, found=found)
        return Picture(
            self.coordinates, coloring, labels, f"{caption} (jupyter-mlx-embed similarity explorer)"
        )

    # The map: PCA at once, UMAP and clusters from the background thread -------------------

    def _show_map(self, xy: np.ndarray) -> None:
        with self._lock, self.hold_sync():
            self._map_version += 1
            self._cluster_result = None
            self.coords = np.ascontiguousarray(xy, dtype="<f4").tobytes()
            self.projection = "umap"
            self.clusters = []
            self.map_status = self._map_message("umap") + " Finding clusters…"
            self._update_contours()
        self._snapshot.schedule(0)

    def _show_clusters(self, version: int, found: Clusters) -> None:
        if version != self._map_version:
            return  # found on a map no longer shown
        with self._lock, self.hold_sync():
            self._cluster_result = found
            self.clusters = [
                {
                    "label": c.label,
                    "x": float(c.center[0]),
                    "y": float(c.center[1]),
                    "size": c.size,
                    "level": c.level,
                    "members": list(c.members),
                }
                for c in found.labels
            ]
            self.map_status = self._map_message(self.projection, found=found)
        self._snapshot.schedule(0)

    def _map_failed(self, exc: BaseException) -> None:
        log.debug("similarity explorer: map failed", exc_info=exc)
        self.map_status = (
            f"{self.projection.upper()} map; the background work failed: {describe(exc)}"
        )

    def _map_message(
        self, used: str, *, pending: bool = False, found: Clusters | None = None
    ) -> str:
        """What the map shows: its projection ``used``, the clusters ``found`` on it, and
        whether a UMAP map is still to come (``pending``)."""
        message = f"{used.upper()} map of {count(len(self._embeddings), self._noun)}."
        if found is not None and not found.clusters:
            message += " No clusters found."
        elif found is not None:
            message += (
                f" {count(len(found.clusters), 'cluster')}"
                + (f" in {count(len(found.regions), 'region')}" if found.regions else "")
                + " labelled."
            )
        return message + (" Computing UMAP in the background…" if pending else "")

    @property
    def _noun(self) -> str:
        """What a point is: ``text`` or ``picture``."""
        return "text" if self._embeddings.images is None else "picture"

    # Colours ----------------------------------------------------------------------------

    @traitlets.validate("color_by")
    def _valid_color_by(self, proposal: dict[str, Any]) -> str:
        return _one_of("color_by", proposal["value"], self.color_options, "a column to colour by")

    @traitlets.observe("color_by")
    @_reports_errors
    def _on_color_by(self, change: dict[str, Any]) -> None:
        self._apply_coloring(self._colorings.get(self.color_by))
        if self.value_range:
            self.value_range = []  # a range of the column no longer shown
        self._update_contours()
        self._snapshot.schedule()

    def _apply_coloring(self, coloring: Coloring) -> None:
        with self.hold_sync():
            self.color_kind = coloring.kind
            self.color_codes = coloring.codes.tobytes()
            self.color_names = coloring.names
            self.color_counts = coloring.counts
            self.color_palette = coloring.palette
            self.color_range = [coloring.lo, coloring.hi] if coloring.kind == "numeric" else []

    # Rows on demand ---------------------------------------------------------------------

    def _on_message(self, widget: Any, content: Any, buffers: Sequence[bytes]) -> None:
        try:
            if not isinstance(content, dict):
                return
            if content.get("type") == "thumbnails" and self._thumbnails is not None:
                asked = content.get("indices", [])
                self._thumbnails.request(
                    [int(i) for i in asked if isinstance(i, int)],
                    functools.partial(self._handoff.post, self._send_thumbnails, content.get("id")),
                )
                return
            if content.get("type") != "rows":
                return
            n, texts = len(self._embeddings), self._embeddings.texts
            indices = [int(i) for i in content.get("indices", [])[:ROWS_LIMIT]]
            rows = [
                row(texts, self._columns, self.tooltip_columns, i) for i in indices if 0 <= i < n
            ]
            self.send({"type": "rows", "id": content.get("id"), "rows": rows})
        except Exception as exc:  # noqa: BLE001 - a comm handler has nobody to raise to
            self._fail(exc)

    def _send_thumbnails(self, request: Any, indices: list[int], jpegs: list[bytes]) -> None:
        content = {"type": "thumbnails", "id": request, "indices": indices}
        self.send({**content, "sizes": [len(j) for j in jpegs]}, buffers=[b"".join(jpegs)])

    # Sizes and opacity ------------------------------------------------------------------

    @traitlets.validate("size_by", "opacity_by")
    def _valid_scale(self, proposal: dict[str, Any]) -> str:
        name = proposal["trait"].name
        return _one_of(name, proposal["value"], self.size_options, "a numeric column")

    @traitlets.observe("size_by", "opacity_by")
    @_reports_errors
    def _on_scale(self, change: dict[str, Any]) -> None:
        other = "opacity_by" if change["name"] == "size_by" else "size_by"
        if change["new"] and getattr(self, other) not in ("", change["new"]):
            setattr(self, other, "")  # one scaling column at a time (see the traits)
            return  # that change's own call made the codes
        name, n = self.size_by or self.opacity_by, len(self._embeddings)
        codes = scaled_codes(self._columns[name], n, f"data[{name!r}]") if name else None
        self.scale_codes = b"" if codes is None else codes.tobytes()

    # Density contours -------------------------------------------------------------------

    @traitlets.observe("density")
    @_reports_errors
    def _on_density(self, change: dict[str, Any]) -> None:
        self._update_contours()

    def _update_contours(self) -> None:
        """Draw the density lines of the map shown (its colouring's categories, if any), or
        none with the switch off. Kept per map and colouring: switching is instant after
        the first time."""
        if not self.density:
            self.contours = []
            return
        key = (self._map_version, self.color_by)
        if key not in self._contours:
            coloring = self._colorings.get(self.color_by)
            categorical = coloring.kind == "categorical"
            self._contours = {
                key: contours(
                    self.coordinates,
                    coloring.codes if categorical else None,
                    coloring.palette if categorical else (),
                    coloring.counts if categorical else (),
                )
            }
        self.contours = self._contours[key]

    # The filter -------------------------------------------------------------------------

    @traitlets.observe("filter_text")
    @_reports_errors
    def _on_filter_text(self, change: dict[str, Any]) -> None:
        """The front end empties ``filter_text`` to clear the Python filter."""
        if not change["new"] and self._given_filter is not None:
            self.filter = None

    @traitlets.observe("keyword")
    @_reports_errors
    def _on_keyword(self, change: dict[str, Any]) -> None:
        try:
            self._keyword_mask = keyword_mask(self.keyword, self._embeddings.texts)
        except ValueError as exc:
            self._set_status(str(exc), "error")
            return
        with self._lock:
            self._refilter()

    @traitlets.observe("value_range", "search_filtered")
    @_reports_errors
    def _on_filter_part(self, change: dict[str, Any]) -> None:
        with self._lock:
            self._refilter()

    def _range_mask(self) -> np.ndarray | None:
        values = self._colorings.get(self.color_by).values
        return None if values is None else range_mask(values, self.value_range)

    def _refilter(self) -> None:
        """Combine the filter's parts, show what matches, and rank again within it (lock
        held)."""
        mask = combined([self._given_filter, self._keyword_mask, self._range_mask()])
        self._mask = mask
        matched = len(self._embeddings) if mask is None else int(mask.sum())
        with self.hold_sync():
            self.filter_mask = b"" if mask is None else mask.astype(np.uint8).tobytes()
            self.filter_count = matched
            if self._queries.similarities is not None:
                self.top_k = hit_rows(self._queries.hits(self.query))
            if mask is not None:
                self._set_status(
                    f"{matched:,} of {count(len(self._embeddings), self._noun)} match the filter"
                )

    # Queries ----------------------------------------------------------------------------

    @traitlets.observe("query", "query_seq")
    @_reports_errors
    def _on_query(self, change: dict[str, Any]) -> None:
        queries = self._queries
        with self._lock:
            if queries.quiet:
                return
            if self.query_seq <= queries.latest:
                # ``query`` changed without a new number (set from Python): take the next
                # one, which comes back here and submits.
                if change["name"] == "query":
                    self.query_seq = queries.latest + 1
                return
            # The front end sets both traits at once; the second notification finds its
            # number taken and stops above.
            seq = queries.latest = self.query_seq
            text = self.query
        queries.start(seq, text)

    @traitlets.observe("rerank", "reranker")
    @_reports_errors
    def _on_rerank(self, change: dict[str, Any]) -> None:
        """Switching the reranker on or off (or changing it) answers the query on show again."""
        if change["old"] == change["new"] or not self.query.strip():
            return
        with self._lock:
            seq = self._queries.latest = self._queries.latest + 1
            text = self.query
            with self._queries.quietly():
                self.query_seq = seq
        self._queries.start(seq, text)

    def _show_reranked(self, rows: list[dict[str, Any]], status: str) -> None:
        with self.hold_sync():
            self.top_k = rows
            self._set_status(status, "info")

    def _show_answer(self, answer: Answer) -> None:
        with self.hold_sync():
            self.scores = answer.scores
            self.score_range = answer.score_range
            self.top_k = answer.top_k
            self._set_status(answer.status, answer.level)
            self.result_seq = answer.seq

    # Clicks, selection, k ---------------------------------------------------------------

    @traitlets.validate("k")
    def _valid_k(self, proposal: dict[str, Any]) -> int:
        return max(1, int(proposal["value"]))

    @traitlets.observe("k")
    @_reports_errors
    def _on_k(self, change: dict[str, Any]) -> None:
        with self._lock, self.hold_sync():
            if self._queries.similarities is not None:
                self.top_k = hit_rows(self._queries.hits(self.query))
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
                f"There is no point {index} (the map has {count(n, 'point')}).", "error"
            )
            return
        hits = nearest_neighbors(self._embeddings, index, self.k)
        self.neighbors = hit_rows(hits)
        if announce:
            self._set_status(
                f"{count(len(hits), 'nearest neighbour')} of point {index}: "
                f"{quote(self._embeddings.texts[index])}"
            )

    @traitlets.validate("selection")
    def _valid_selection(self, proposal: dict[str, Any]) -> list[int]:
        # Sorted, unique and in range, whatever the front end sends.
        n = len(self._embeddings)
        values = np.unique(np.asarray(proposal["value"], dtype=np.int64))
        return values[(values >= 0) & (values < n)].tolist()

    @traitlets.observe("selection")
    @_reports_errors
    def _on_selection(self, change: dict[str, Any]) -> None:
        with self._lock, self.hold_sync():
            state = heatmap_state(self._embeddings, self.selection, self._heatmap_limit)
            for name, value in state.items():
                setattr(self, name, value)
            selected = len(self.selection)
            self._set_status(f"{selected:,} selected" if selected else "Selection cleared")

    # Status -----------------------------------------------------------------------------

    def _ready_message(self) -> str:
        if not len(self._embeddings):
            return f"No {self._noun}s to explore."
        return "Type a query, click a point for its neighbours, or shift-drag to lasso points."

    def _set_status(self, message: str, level: str = "info") -> None:
        with self.hold_sync():
            self.status = message
            self.status_level = level

    def _fail(self, exc: BaseException) -> None:
        """Show ``exc`` in the status line (query failures: :meth:`.Queries.fail`)."""
        message = describe(exc)
        log.debug("similarity explorer: %s", message, exc_info=exc)
        try:
            with self._lock, self.hold_sync():
                self._set_status(message, "error")
        except Exception:  # nothing may escape an observer or a done callback
            log.exception("similarity explorer: cannot show an error")


def explore(
    data: Any,
    text: str = "text",
    *,
    color: str | Iterable[Any] | None = None,
    tooltip: Sequence[str] = (),
    model: str | None = None,
    dimensions: int | None = None,
    skip_invalid: bool = False,
    **options: Any,
) -> SimilarityExplorer:
    """Embed a table's text column and open the similarity explorer on it.

    The texts follow the rules of ``%embed -i``: every row must hold a non-blank string, or
    ``skip_invalid=True`` leaves the other rows out (of the map and of ``data``).

    Args:
        data: A pandas DataFrame (or a mapping of column name to values).
        text: The column holding the texts.
        color: A column to colour the points by (numbers: a continuous scale; anything
            else: categories), or one value per row.
        tooltip: Columns shown when hovering a point.
        model: Model name; the configured default when ``None``.
        dimensions: Keep the first ``dimensions`` values of each vector.
        skip_invalid: Leave out rows whose text is missing or blank instead of failing.
        **options: More options of :class:`SimilarityExplorer` (``projection``, ``k``...).

    Returns:
        The widget; display it (or leave it last in a cell).

    Raises:
        ValueError: ``text`` is not a column of ``data``, or no row has a text.
        EmbedError: Rows that are not texts (naming them), or the embedding failed.
    """
    embeddings, table, color = embed_column(
        data, text, color=color, model=model, dimensions=dimensions, skip_invalid=skip_invalid
    )
    return SimilarityExplorer(embeddings, data=table, color=color, tooltip=tooltip, **options)


def picture_names(embeddings: Embeddings) -> list[str]:
    """What names pictures' clusters: each path below the folder all share, without its
    suffix, its separators made spaces (``cats/tabby-3.jpg`` -> ``cats tabby 3``)."""
    import os
    import re

    paths = [s if isinstance(s, str) else "" for s in embeddings.images or []]
    files = [p for p in paths if p]
    common = (
        os.path.commonpath(files) if len(files) > 1 else os.path.dirname(files[0]) if files else ""
    )
    names = []
    for path in paths:
        inner = os.path.splitext(os.path.relpath(path, common) if path and common else path)[0]
        names.append(re.sub(r"[\W_]+", " ", inner).strip())
    return names


def explore_images(
    source: Any,
    image: str = "path",
    *,
    color: str | Iterable[Any] | None = None,
    tooltip: Sequence[str] = (),
    model: str | None = None,
    dimensions: int | None = None,
    skip_invalid: bool = False,
    **options: Any,
) -> SimilarityExplorer:
    """Embed pictures with an image-text model and open the explorer on them: thumbnails on
    hover, in the tables and, at the closest zooms, in place of the points; the query box
    embeds a typed text with the model's text tower.

    Args:
        source: A folder (its pictures) or a glob, a DataFrame with a column of paths
            (``image``), or any collection of pictures (paths, bytes, PIL images, arrays).
        image: The column of a DataFrame ``source`` that holds the pictures.
        color: A column of the DataFrame to colour by, or one value per picture.
        tooltip: Columns of the DataFrame shown when hovering.
        model: An image-text model; the configured default when ``None``.
        dimensions: Keep the first ``dimensions`` values of each vector.
        skip_invalid: Leave out items that are not pictures or cannot be decoded.
        **options: More options of :class:`SimilarityExplorer`.

    Raises:
        ValueError: ``image`` is not a column, or nothing matches a folder or glob.
        EmbedError: A picture cannot be read (naming it), or the model embeds no pictures.
    """
    from ..embeddings import embed_picture_collection
    from ..images import as_pictures, picture_files
    from ..options import EmbedOptions
    from ..progress import progress_bar
    from ..validation import labels_of

    table: dict[str, Any] | None = None
    labels: list[Any] | None = None
    if isinstance(source, (str, Path)):
        items: list[Any] = picture_files(str(source))
        if not items:
            raise ValueError(f"no picture files match {str(source)!r}")
    elif hasattr(source, "columns") or isinstance(source, dict):
        table = columns_of(source, None)
        if image not in table:
            raise ValueError(f"image={image!r} is not a column of the table; {choices(table)}")
        items, labels = list(table[image]), labels_of(table[image])
    else:
        items, single = as_pictures(source)
        labels = None if single else labels_of(source)
    with progress_bar(len(items), desc="embedding", unit="picture") as bar:
        # Skipped items come back by position here (labels need not be unique).
        embeddings = embed_picture_collection(
            items, EmbedOptions(model, dimensions), skip_invalid=skip_invalid, progress=bar
        )
    skipped = embeddings.skipped
    if skipped:
        kept = sorted(set(range(len(items))) - set(skipped))
        if table is not None:
            table = {name: take_rows(column, kept) for name, column in table.items()}
        if color is not None and not isinstance(color, str):
            color = take_rows(list(color), kept)
    if labels is not None:
        left_out = set(skipped)
        embeddings.index = [labels[i] for i in range(len(items)) if i not in left_out]
        embeddings.skipped = [labels[i] for i in skipped]
    return SimilarityExplorer(embeddings, data=table, color=color, tooltip=tooltip, **options)
