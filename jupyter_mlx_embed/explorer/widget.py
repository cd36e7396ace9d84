"""The similarity explorer widget: map, live query, neighbours and heatmap (notebook layer).

An ``anywidget`` whose front end (``static/explorer.js``, built from
``labextension/src/explorer/``) draws the embeddings with WebGL (regl-scatterplot). Python
owns the data and the maths: the 2-D map (:mod:`.projection`: PCA at once, UMAP from a
background thread), clusters (:mod:`.clusters`), colours by a column, query vectors
(through the same transport as ``embed``), similarities, neighbours and the heatmap
(:mod:`.explorer_data`). Per-point data travel as binary buffers (``Bytes`` traits, one
float32 pair or one byte per point); texts and column values never travel all at once.

Protocol (synced traits):

* Python to front end: ``coords`` (n x 2 float32), ``projection`` (``pca``/``umap``) and
  ``map_status``; the colouring: ``color_by`` (also set by the front end), ``color_options``,
  ``color_kind`` (``none``/``categorical``/``numeric``), ``color_codes`` (n uint8),
  ``color_names``, ``color_counts``, ``color_palette``, ``color_range``; ``clusters``
  (``{label, x, y, size}``, largest first); ``tooltip_columns``, ``embedding_model``,
  ``height``.
* Front end to Python: ``query`` with ``query_seq`` (set together; each edit takes the next
  number), ``k``, ``clicked`` (a point index, -1 for none) and ``selection`` (indices).
* Answers: ``result_seq`` (the query the answer belongs to), ``scores`` (n uint8: 0..254 from
  ``score_range[0]`` to ``score_range[1]``; empty without a query), ``top_k`` and
  ``neighbors`` (``{index, text, score}``), ``heatmap`` (m x m float32, rows in seriated
  order) with ``heatmap_indices``, ``heatmap_labels`` and ``heatmap_note``, and ``status``
  with ``status_level`` (``info``, ``busy`` or ``error``).

Custom messages: the front end sends ``{"type": "rows", "id", "indices"}`` (hover, tables)
and Python answers ``{"type": "rows", "id", "rows": [{index, text, fields}]}`` with each
text clipped to ``TEXT_LIMIT`` and the ``tooltip_columns`` values as strings.

Saved notebooks: the display bundle carries ``image/png`` (the map drawn in Python) beside
the widget view; it is displayed with a display id and updated when the map or its colours
change, so renderers without a kernel (GitHub, nbconvert) show the map.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import importlib.util
import logging
import operator
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anywidget
import numpy as np
import traitlets

from . import api, explorer_data
from .embeddings import Embeddings, Hit, SearchResults
from .errors import EmbedError
from .explorer_data import Coloring
from .results import EmbedResult
from .validation import labels_of, to_texts

if TYPE_CHECKING:
    from .clusters import Clusters
    from .transport import Transport

log = logging.getLogger(__name__)

PROJECTIONS = ("auto", "pca", "umap")
#: Most items the heatmap shows (a 200 x 200 matrix is 160 KB and still readable).
HEATMAP_LIMIT = 200
#: Characters of each text sent to the front end (hover, tables); the rest stays here.
TEXT_LIMIT = 1000
#: Characters of a heatmap row label.
LABEL_LIMIT = 60
#: Most rows one ``rows`` request may ask for.
ROWS_LIMIT = 500
#: The choice of ``color_by`` that colours by ``labels=``.
LABELS = "labels"
#: Seconds of quiet after a colour change before the static PNG is redrawn.
PNG_DELAY = 1.0

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
            at once and is replaced when UMAP is done.
        k: Rows in the query's top-k table and neighbours per clicked point.
        heatmap_limit: Most items in the similarity heatmap.
        query_prefix: Text put before every query when embedding it (e.g. ``"query: "``),
            instead of the model's own query prompt: by default a model with a prompt named
            ``query`` (``config_sentence_transformers.json``) gets it. The texts' vectors are
            used as they are.
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
    # Requests, front end (or Python) to Python.
    query = traitlets.Unicode("").tag(sync=True)
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
        columns = _columns(data, n)
        tooltip = _tooltip_columns(tooltip, columns)
        options = list(columns)
        colorings: dict[str, Coloring] = {}
        chosen = ""
        if labels is not None:
            colorings[LABELS] = explorer_data.label_coloring(labels, n)
            options.insert(0, LABELS)
            chosen = LABELS
        elif isinstance(color, str):
            if color not in columns:
                raise ValueError(f"color={color!r} is not a column of data; {_choices(columns)}")
            chosen = color
        elif color is not None:
            colorings["color"] = explorer_data.color_by(color, n, name="color")
            options.insert(0, "color")
            chosen = "color"

        from .projection import cached_projection, project

        wants_umap = projection == "umap" or (projection == "auto" and have_umap)
        umap = cached_projection(embeddings.vectors, "umap", seed=seed) if wants_umap else None
        if umap is not None or not n:
            xy, used = (umap if umap is not None else np.zeros((0, 2), np.float32)), "umap"
            pending = False
        else:
            xy, used = project(embeddings.vectors, "pca", seed=seed, progress=False), "pca"
            pending = wants_umap

        # Private state first: observers may run while the traits below are initialised.
        self._embeddings = embeddings
        self._columns = columns
        self._colorings = colorings
        self._heatmap_limit = heatmap_limit
        self._transport = transport
        self._seed = seed
        self._query_options = self._query_prompt(query_prefix)
        self._lock = threading.RLock()
        self._quiet = False  # set while search_text() changes the query traits itself
        self._latest_seq = 0  # the newest query number sent (older answers are dropped)
        self._similarities: np.ndarray | None = None  # float32 scores of the query on show
        self._map_version = 0  # bumped when the coordinates change
        self._cluster_result: Clusters | None = None
        self._display_id: str | None = None
        # The last PNG drawn and what it shows: (map version, colour, clusters drawn).
        self._png: tuple[tuple[int, str, bool], bytes] | None = None
        self._png_timer: threading.Timer | None = None
        self._done = threading.Event()  # set when the background map work is over
        # Completions arrive on other threads; in a kernel they are handed to its event
        # loop so that traits change (and comm messages go out) on the kernel's own thread.
        self._loop = _running_loop()
        self._loop_thread = threading.get_ident()
        self._posted: collections.deque[tuple[Callable[..., None], tuple[Any, ...]]] = (
            collections.deque()
        )

        super().__init__(
            coords=np.ascontiguousarray(xy, dtype="<f4").tobytes(),
            projection=used,
            map_status=self._map_message(used, pending),
            color_options=options,
            tooltip_columns=tooltip,
            embedding_model=embeddings.model,
            height=height,
            k=k,
            status=self._ready_message(),
            view_key=uuid.uuid4().hex,
            **self._heatmap_state([]),
            **kwargs,
        )
        self.color_by = chosen  # the observer fills the colour traits
        if not chosen:
            self._apply_coloring(Coloring("none", codes=np.zeros(n, dtype=np.uint8)))
        self.on_msg(self._on_message)
        if n:
            threading.Thread(
                target=self._compute_map,
                args=(pending,),
                name="jupyter-mlx-embed-explorer-map",
                daemon=True,
            ).start()
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
        return None if self._similarities is None else self._similarities.copy()

    @property
    def cluster_codes(self) -> np.ndarray | None:
        """Each point's cluster (int32, -1 for none) on the current map, once found."""
        found = self._cluster_result
        return None if found is None else found.codes.copy()

    def selected(self) -> Embeddings:
        """The selected points (``selection``) as an :class:`Embeddings`, in index order."""
        return self._embeddings[list(self.selection)]

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
        if threading.get_ident() == self._loop_thread:
            self._run_posted()  # the map and clusters the background work has posted
            if done:
                self._flush_png()
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

    def close(self) -> None:
        """Close the widget (its views disappear); a pending PNG update is dropped."""
        # getattr: ipywidgets also closes a widget whose __init__ failed before this was set.
        timer = getattr(self, "_png_timer", None)
        if timer is not None:
            timer.cancel()
        self._display_id = None
        super().close()

    def __repr__(self) -> str:
        return (
            f"SimilarityExplorer({len(self._embeddings)} texts, "
            f"model={self._embeddings.model!r}, projection={self.projection!r})"
        )

    # Display: the widget view plus a static PNG ------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return None
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle, {})
        return {**data, "image/png": self._png_bytes()}, metadata

    def _ipython_display_(self) -> None:
        """Displayed with a display id, so that the PNG can follow the map."""
        from IPython.display import display

        bundle = self._repr_mimebundle_()
        if bundle is None:
            return
        data, metadata = bundle
        if self._display_id is None:
            self._display_id = uuid.uuid4().hex
        display(data, metadata=metadata, raw=True, display_id=self._display_id)

    def _png_key(self) -> tuple[int, str, bool]:
        return self._map_version, self.color_by, self._cluster_result is not None

    def _png_bytes(self) -> bytes:
        cached = self._png
        if cached is not None and cached[0] == self._png_key():
            return cached[1]
        key, png = self._png_key(), self._render_png()
        self._png = (key, png)
        return png

    def _render_png(self) -> bytes:
        coloring = self._coloring_for(self.color_by)
        found = self._cluster_result
        labels = [(c.label, *c.center) for c in found.clusters] if found is not None else []
        caption = f"{self.map_status} (jupyter-mlx-embed similarity explorer)"
        return explorer_data.render_png(self.coordinates, coloring, labels=labels, caption=caption)

    def _schedule_png(self, delay: float = PNG_DELAY) -> None:
        """Redraw the PNG off the kernel's thread (it takes a while at a million points),
        after ``delay`` seconds without another change, then update the display."""
        if self._display_id is None:
            return
        if self._png_timer is not None:
            self._png_timer.cancel()

        def render() -> None:
            try:
                key, png = self._png_key(), self._render_png()
            except Exception:  # the live map is unaffected: logged only
                log.exception("similarity explorer: cannot draw the static map")
                return
            self._post(self._publish_png, key, png)

        self._png_timer = threading.Timer(delay, render)
        self._png_timer.daemon = True
        self._png_timer.start()

    def _flush_png(self) -> None:
        """Publish the PNG now if the one on show is out of date (instead of the timer)."""
        if self._display_id is None or (self._png is not None and self._png[0] == self._png_key()):
            return
        if self._png_timer is not None:
            self._png_timer.cancel()
        self._publish_png(self._png_key(), self._render_png())

    def _publish_png(self, key: tuple[int, str, bool], png: bytes) -> None:
        if key != self._png_key() or self._display_id is None:
            return  # the map changed again: a newer drawing is on its way
        from IPython.display import update_display

        self._png = (key, png)
        bundle = self._repr_mimebundle_()
        if bundle is not None:
            data, metadata = bundle
            update_display(data, metadata=metadata, raw=True, display_id=self._display_id)

    # The map: PCA at once, UMAP and clusters from a background thread ---------------------

    def _compute_map(self, umap: bool) -> None:
        """Background thread: the UMAP map (when asked for), then clusters on the map."""
        from .clusters import find_clusters
        from .projection import project

        # Only this thread changes the map, so the version its clusters belong to is known.
        version, xy = self._map_version, self.coordinates
        try:
            if umap:
                # No progress bar: from this thread it would print into whichever cell
                # runs meanwhile; the map's status line says UMAP is being computed.
                xy = project(self._embeddings.vectors, "umap", seed=self._seed, progress=False)
                version += 1
                self._post(self._show_map, xy)
            found = find_clusters(xy, self._embeddings.texts, seed=self._seed)
            self._post(self._show_clusters, version, found)
        except Exception as exc:  # noqa: BLE001 - shown in the status line
            self._post(self._map_failed, exc)
        finally:
            self._done.set()

    def _show_map(self, xy: np.ndarray) -> None:
        with self._lock, self.hold_sync():
            self._map_version += 1
            self._cluster_result = None
            self.coords = np.ascontiguousarray(xy, dtype="<f4").tobytes()
            self.projection = "umap"
            self.clusters = []
            self.map_status = self._map_message("umap", False) + " Finding clusters…"
        self._schedule_png(0)

    def _show_clusters(self, version: int, found: Clusters) -> None:
        if version != self._map_version:
            return  # found on a map no longer shown
        with self._lock, self.hold_sync():
            self._cluster_result = found
            self.clusters = [
                {"label": c.label, "x": float(c.center[0]), "y": float(c.center[1]), "size": c.size}
                for c in found.clusters
            ]
            self.map_status = (
                self._map_message(self.projection, False)
                + f" {_count(len(found.clusters), 'cluster')} labelled."
            )
        self._schedule_png(0)

    def _map_failed(self, exc: BaseException) -> None:
        message = exc.message if isinstance(exc, EmbedError) else f"{type(exc).__name__}: {exc}"
        log.debug("similarity explorer: map failed", exc_info=exc)
        self.map_status = f"{self.projection.upper()} map; the background work failed: {message}"

    def _map_message(self, used: str, pending: bool) -> str:
        shown = f"{used.upper()} map of {_count(len(self._embeddings), 'text')}."
        return shown + (" Computing UMAP in the background…" if pending else "")

    def _post(self, function: Callable[..., None], *args: Any) -> None:
        """Run ``function`` on the kernel's event loop when there is one, else here.

        Posted calls queue up in order; :meth:`wait` runs them itself when it is called on
        the loop's thread (a cell blocks the loop, so they would run only after it)."""
        loop = self._loop
        if loop is not None and loop.is_running():
            self._posted.append((function, args))
            try:
                loop.call_soon_threadsafe(self._run_posted)
                return
            except RuntimeError:  # the loop closed in the meantime
                pass
            self._run_posted()
            return
        function(*args)

    def _run_posted(self) -> None:
        """Run the queued calls of :meth:`_post` (on the loop's thread)."""
        while self._posted:
            try:
                function, args = self._posted.popleft()
            except IndexError:  # another drain took the last one
                return
            try:
                function(*args)
            except Exception:  # one failed update must not drop the others
                log.exception("similarity explorer: an update failed")

    # Colours ----------------------------------------------------------------------------

    @traitlets.validate("color_by")
    def _valid_color_by(self, proposal: dict[str, Any]) -> str:
        value = str(proposal["value"])
        if value and value not in self.color_options:
            raise traitlets.TraitError(
                f"color_by={value!r} is not a column to colour by; {_choices(self.color_options)}"
            )
        return value

    @traitlets.observe("color_by")
    @_reports_errors
    def _on_color_by(self, change: dict[str, Any]) -> None:
        self._apply_coloring(self._coloring_for(self.color_by))
        self._schedule_png()

    def _coloring_for(self, name: str) -> Coloring:
        n = len(self._embeddings)
        if not name:
            return Coloring("none", codes=np.zeros(n, dtype=np.uint8))
        if name not in self._colorings:
            self._colorings[name] = explorer_data.color_by(
                self._columns[name], n, name=f"data[{name!r}]", column=name
            )
        return self._colorings[name]

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
            if not isinstance(content, dict) or content.get("type") != "rows":
                return
            n = len(self._embeddings)
            indices = [int(i) for i in content.get("indices", [])[:ROWS_LIMIT]]
            rows = [self._row(i) for i in indices if 0 <= i < n]
            self.send({"type": "rows", "id": content.get("id"), "rows": rows})
        except Exception as exc:  # noqa: BLE001 - a comm handler has nobody to raise to
            self._fail(exc)

    def _row(self, index: int) -> dict[str, Any]:
        fields = {name: _cell(self._columns[name], index) for name in self.tooltip_columns}
        return {
            "index": index,
            "text": _clip(self._embeddings.texts[index], TEXT_LIMIT),
            "fields": fields,
        }

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
        future.add_done_callback(lambda done: self._deliver(seq, text, done))

    def _deliver(self, seq: int, text: str, future: Future[EmbedResult]) -> None:
        """Done callback (any thread): finish on the kernel's loop when there is one."""
        self._post(self._finish, seq, text, future)

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
        with self.hold_sync():
            if vector is None:
                self._similarities = None
                self.scores = b""
                self.score_range = []
                self.top_k = []
                self._set_status("Empty query: type some text to search by meaning.", "info")
            else:
                similarities = self._embeddings.similarity(vector)[:, 0] if n else np.zeros(0)
                self._similarities = similarities.astype(np.float32)
                codes, lo, hi = explorer_data.quantize_scores(self._similarities)
                self.scores = codes
                self.score_range = [lo, hi] if n else []
                self.top_k = _rows(self._hits(text))
                self._set_status(
                    f"{len(self.top_k)} nearest of {_count(n, 'text')} for {_quote(text)}", "info"
                )
            self.result_seq = seq

    def _hits(self, text: str | None) -> SearchResults:
        """Top-k of the query on show, exactly as ``Embeddings.search`` ranks them."""
        if self._similarities is None or not len(self._embeddings):
            return SearchResults([], query=text, model=self._embeddings.model)
        # The scores on show, not a second pass over every vector (0.2 s at a million).
        return self._embeddings.rank(self._similarities, self.k, query=text)

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
            if self._similarities is not None:
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
        values = np.unique(np.asarray(proposal["value"], dtype=np.int64))
        return values[(values >= 0) & (values < n)].tolist()

    @traitlets.observe("selection")
    @_reports_errors
    def _on_selection(self, change: dict[str, Any]) -> None:
        with self._lock, self.hold_sync():
            for name, value in self._heatmap_state(self.selection).items():
                setattr(self, name, value)
            count = len(self.selection)
            self._set_status(f"{count:,} selected" if count else "Selection cleared")

    def _heatmap_state(self, selection: list[int]) -> dict[str, Any]:
        """The heatmap of the selection (else the first items), rows seriated so that
        similar items sit together."""
        n, limit = len(self._embeddings), self._heatmap_limit
        pool = selection if selection else range(n)
        first = [int(i) for i in pool[:limit]]
        if selection:
            note = (
                f"the first {limit} of {len(selection):,} selected items"
                if len(selection) > limit
                else f"the {_count(len(selection), 'selected item')}"
            )
        elif n > limit:
            note = f"the first {limit} of {n:,} items; select points on the map to compare others"
        else:
            note = f"all {_count(n, 'item')}"
        matrix = self._embeddings[first].similarity() if first else np.zeros((0, 0))
        order = explorer_data.seriate(matrix)
        indices = [first[i] for i in order]
        matrix = matrix[np.ix_(order, order)]
        texts = self._embeddings.texts
        return {
            "heatmap": np.ascontiguousarray(matrix, dtype="<f4").tobytes(),
            "heatmap_indices": indices,
            "heatmap_labels": [_clip(" ".join(texts[i].split()), LABEL_LIMIT) for i in indices],
            "heatmap_note": f"Cosine similarity of {note}, similar rows together",
        }

    # Status -----------------------------------------------------------------------------

    def _ready_message(self) -> str:
        if not len(self._embeddings):
            return "No texts to explore."
        return "Type a query, click a point for its neighbours, or shift-drag to lasso points."

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
                    self._similarities = None
                    self.scores = b""
                    self.score_range = []
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
    columns = _columns(data, None)
    if text not in columns:
        raise ValueError(f"text={text!r} is not a column of data; {_choices(columns)}")
    values = columns[text]
    texts, skipped = to_texts(values, name=f"data[{text!r}]", skip_invalid=skip_invalid)
    if not texts:
        raise ValueError(f"data[{text!r}] has no texts to embed")
    labels = labels_of(values)
    kept = np.setdiff1d(np.arange(len(texts) + len(skipped)), skipped)
    parts = list(api.embed_chunks(texts, model=model, dimensions=dimensions))
    result = EmbedResult.concatenate(parts)
    embeddings = Embeddings(
        texts,
        result.vectors,
        result.model,
        index=None if labels is None else [labels[i] for i in kept],
        skipped=[i if labels is None else labels[i] for i in skipped],
    )
    table = {name: _take(column, kept) for name, column in columns.items()} if skipped else columns
    if color is not None and not isinstance(color, str):
        color = _take(color, kept) if skipped else color
    return SimilarityExplorer(embeddings, data=table, color=color, tooltip=tooltip, **options)


def _columns(data: Any, n: int | None) -> dict[str, Any]:
    """``data``'s columns by name (a DataFrame, or a mapping of name to values), each
    checked to hold ``n`` values."""
    if data is None:
        return {}
    names = getattr(data, "columns", None)
    if names is not None:  # a DataFrame: its Series, which keep their dtypes
        columns = {str(name): data[name] for name in names}
    elif isinstance(data, Mapping):
        columns = {str(name): values for name, values in data.items()}
    else:
        raise TypeError(
            f"data must be a pandas DataFrame or a mapping of column name to values, "
            f"got {type(data).__name__}"
        )
    for name, values in columns.items():
        if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
            raise TypeError(f"data[{name!r}] must be a column of values, not {values!r}")
        if n is not None and len(values) != n:
            raise ValueError(f"data has {len(values)} rows but there are {n} texts")
    return columns


def _tooltip_columns(tooltip: Sequence[str], columns: Mapping[str, Any]) -> list[str]:
    if isinstance(tooltip, str):
        tooltip = [tooltip]
    missing = [name for name in tooltip if name not in columns]
    if missing:
        raise ValueError(
            f"tooltip column {missing[0]!r} is not a column of data; {_choices(columns)}"
        )
    return list(tooltip)


def _choices(names: Iterable[str]) -> str:
    listed = ", ".join(repr(name) for name in names)
    return f"choose one of {listed}" if listed else "data has no columns"


def _take(values: Any, positions: np.ndarray) -> Any:
    iloc = getattr(values, "iloc", None)
    if iloc is not None:
        return iloc[positions]
    return [values[int(i)] for i in positions]


def _cell(values: Any, index: int) -> str:
    iloc = getattr(values, "iloc", None)
    value = iloc[index] if iloc is not None else values[index]
    return _clip(str(value), 200)


def _rows(hits: Iterable[Hit]) -> list[dict[str, Any]]:
    return [
        {"index": hit.index, "text": _clip(hit.text, TEXT_LIMIT), "score": hit.score}
        for hit in hits
    ]


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
