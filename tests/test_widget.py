"""The similarity explorer widget: its comm protocol, queries, selection and errors (no browser).

Widgets talk through a recording comm (``comm.create_comm`` swapped for a class that keeps
every message), and the front end is simulated with ``set_state`` (what ipywidgets calls
for a front-end update) or a full comm message. Queries go through the real bundled model.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import comm
import numpy as np
import pytest
import traitlets
from comm.base_comm import BaseComm
from PIL import Image

import jupyter_mlx_embed as jme
import jupyter_mlx_embed as widget_module  # static/explorer.js lies beside its __init__
from jupyter_mlx_embed.embeddings import Embeddings
from jupyter_mlx_embed.explorer.data import (
    GREY,
    MISSING,
    categorical_palette,
    color_by,
    label_coloring,
)
from jupyter_mlx_embed.explorer.projection import UMAP_MIN_POINTS, project
from jupyter_mlx_embed.explorer.snapshot import render_png
from jupyter_mlx_embed.explorer.widget import SimilarityExplorer
from jupyter_mlx_embed.options import EmbedOptions

TEXTS = [
    "My cat sleeps on the sofa all afternoon.",
    "The dog barks at the mailman every morning.",
    "A kitten chased a ball of yarn under the bed.",
    "Stocks fell sharply after the earnings report.",
    "The central bank raised interest rates again.",
    "Bond yields climbed to a ten-year high.",
    "Simmer the tomato sauce for twenty minutes.",
    "Knead the dough until it is smooth and elastic.",
]
LABELS = ["pets", "pets", "pets", "finance", "finance", "finance", "cooking", "cooking"]
HAVE_UMAP = importlib.util.find_spec("umap") is not None


class RecordingComm(BaseComm):
    """A comm that keeps what it would send to the front end."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.messages: list[tuple[str, dict[str, Any], list[bytes]]] = []
        super().__init__(*args, **kwargs)

    def publish_msg(
        self,
        msg_type: str,
        data: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        buffers: Sequence[bytes | memoryview] | None = None,
        **keys: Any,
    ) -> None:
        self.messages.append((msg_type, data or {}, [bytes(b) for b in buffers or []]))


class ManualTransport:
    """Holds every request until the test completes it, in whatever order it likes."""

    kind = "manual"
    timeout = 60.0

    def __init__(self) -> None:
        #: (texts as the model sees them, i.e. with the prompt, model, dimensions, future).
        self.requests: list[tuple[list[str], str | None, int | None, Future[Any]]] = []

    def submit(self, inputs: Sequence[str], options: EmbedOptions) -> Future[Any]:
        assert options.prompt_name is None, "the test models have no prompts"
        future: Future[Any] = Future()
        texts = [(options.prompt or "") + t for t in inputs]
        self.requests.append((texts, options.model, options.dimensions, future))
        return future

    def complete(self, i: int) -> None:
        inputs, model, dimensions, future = self.requests[i]
        options = EmbedOptions(model, dimensions)
        future.set_result(jme.get_transport().submit(inputs, options).result(60))

    def model_info(self, name: str | None) -> dict[str, Any]:
        return jme.get_transport().model_info(name)

    def fail(self, i: int, error: BaseException) -> None:
        self.requests[i][3].set_exception(error)

    def info(self) -> dict[str, Any]:
        return {"transport": self.kind}

    def close(self) -> None:
        pass


class RefusingTransport(ManualTransport):
    """``submit`` itself raises, as a full queue does."""

    def submit(self, inputs: Sequence[str], options: EmbedOptions) -> Future[Any]:
        raise jme.OverloadedError("the queue is full")


@pytest.fixture(scope="module", autouse=True)
def local_worker() -> Iterator[jme.Worker]:
    jme.set_transport("local")
    worker = jme.configure()
    yield worker
    worker.close()


@pytest.fixture(scope="module")
def notes(local_worker: jme.Worker) -> Embeddings:
    return Embeddings(TEXTS, jme.embed(TEXTS), "all-MiniLM-L6-v2")


@pytest.fixture
def make(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., SimilarityExplorer]]:
    """Builds explorers on recording comms (closed after the test)."""
    monkeypatch.setattr(comm, "create_comm", RecordingComm)
    made: list[SimilarityExplorer] = []

    def build(embeddings: Embeddings, *args: Any, **kwargs: Any) -> SimilarityExplorer:
        kwargs.setdefault("projection", "pca")
        widget = SimilarityExplorer(embeddings, *args, **kwargs)
        made.append(widget)
        # The clusters come from a background thread: let it finish, so that tests see
        # every message it sends.
        assert widget.wait(120)
        return widget

    yield build
    for widget in made:
        widget.close()


def sent(widget: SimilarityExplorer) -> list[tuple[str, dict[str, Any], list[bytes]]]:
    return widget.comm.messages


def with_buffers(data: dict[str, Any], buffers: list[bytes]) -> dict[str, Any]:
    """A message's state with its binary buffers put back where they belong."""
    state = dict(data["state"])
    for path, buffer in zip(data.get("buffer_paths", []), buffers, strict=True):
        assert len(path) == 1, path
        state[path[0]] = buffer
    return state


def updates(widget: SimilarityExplorer) -> list[tuple[dict[str, Any], list[list[str]]]]:
    """State updates sent to the front end, with their buffer paths."""
    return [
        (with_buffers(data, buffers), data["buffer_paths"])
        for kind, data, buffers in sent(widget)
        if kind == "comm_msg" and data.get("method") == "update"
    ]


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the widget")
        time.sleep(0.005)


def hits_of(results: Any) -> list[dict[str, Any]]:
    return [{"index": hit.index, "text": hit.text, "score": hit.score} for hit in results]


def assert_same_hits(actual: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert [h["index"] for h in actual] == [h["index"] for h in expected]
    assert [h["text"] for h in actual] == [h["text"] for h in expected]
    assert [h["score"] for h in actual] == pytest.approx([h["score"] for h in expected], abs=1e-6)


# Initial state ----------------------------------------------------------------------------


def test_initial_state_goes_out_as_binary_buffers(make, notes) -> None:
    widget = make(notes, LABELS)
    kind, data, buffers = sent(widget)[0]
    assert kind == "comm_open"
    state = with_buffers(data, buffers)
    paths = {tuple(path) for path in data["buffer_paths"]}
    assert {("coords",), ("heatmap",)} <= paths
    n = len(TEXTS)
    assert len(state["coords"]) == n * 2 * 4
    np.testing.assert_array_equal(
        np.frombuffer(state["coords"], dtype="<f4").reshape(n, 2), project(notes.vectors, "pca")
    )
    # No texts travel with the map: they are fetched on demand ("rows" messages); only the
    # heatmap's (at most heatmap_limit) rows carry short labels.
    assert "texts" not in state
    assert [name for name in state if TEXTS[0] in str(state[name])] == ["heatmap_labels"]
    assert state["projection"] == "pca"
    assert state["map_status"].startswith("PCA map of 8 texts.")
    assert state["embedding_model"] == "all-MiniLM-L6-v2"
    assert state["k"] == 5 and state["query_seq"] == 0 and state["selection"] == []
    assert state["scores"] == b"" and state["top_k"] == []
    # Every item fits the heatmap: the full matrix, all indices (in seriated order).
    assert sorted(state["heatmap_indices"]) == list(range(n))
    order = state["heatmap_indices"]
    np.testing.assert_allclose(
        np.frombuffer(state["heatmap"], dtype="<f4").reshape(n, n),
        notes[order].similarity(),
        atol=1e-6,
    )
    # The front end is the bundled module (built by `npm run build:widget`).
    bundle = Path(widget_module.__file__).parent / "static" / "explorer.js"
    if bundle.is_file():
        assert state["_esm"] == bundle.read_text(encoding="utf-8")


def test_labels_colour_the_points_as_categories(make, notes) -> None:
    widget = make(notes, LABELS)
    assert widget.color_by == "labels" and widget.color_options == ["labels"]
    assert widget.color_kind == "categorical"
    # Most frequent first; ties in order of first appearance.
    assert widget.color_names == ["pets", "finance", "cooking"]
    assert widget.color_counts == [3, 3, 2]
    codes = np.frombuffer(widget.color_codes, dtype=np.uint8)
    assert codes.tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    assert widget.color_palette == categorical_palette(3)


def test_bad_arguments_raise(make, notes) -> None:
    with pytest.raises(ValueError, match="projection"):
        make(notes, projection="tsne")
    with pytest.raises(ValueError, match="labels has 2 values but there are 8 texts"):
        make(notes, ["a", "b"])
    with pytest.raises(TypeError, match="single string"):
        make(notes, "pets")
    with pytest.raises(ValueError, match="k must be at least 1"):
        make(notes, k=0)
    with pytest.raises(TypeError, match="Embeddings"):
        SimilarityExplorer(notes.vectors)  # type: ignore[arg-type]
    table = {"topic": LABELS, "stars": list(range(8))}
    with pytest.raises(ValueError, match="color='colour' is not a column of data; choose one of"):
        make(notes, data=table, color="colour")
    with pytest.raises(ValueError, match="tooltip column 'author' is not a column of data"):
        make(notes, data=table, tooltip=["author"])
    with pytest.raises(ValueError, match="data has 2 rows but there are 8 texts"):
        make(notes, data={"topic": ["a", "b"]})
    with pytest.raises(ValueError, match="color has 3 values but there are 8 texts"):
        make(notes, color=[1, 2, 3])
    with pytest.raises(ValueError, match="labels or color, not both"):
        make(notes, LABELS, color=LABELS)


def test_explore_method_builds_the_widget(monkeypatch, notes) -> None:
    monkeypatch.setattr(comm, "create_comm", RecordingComm)
    widget = notes.explore(labels=LABELS, projection="pca", k=3)
    try:
        assert isinstance(widget, SimilarityExplorer)
        assert widget.embeddings is notes and widget.k == 3
        assert widget.color_names == ["pets", "finance", "cooking"]
        assert repr(widget) == (
            "SimilarityExplorer(8 texts, model='all-MiniLM-L6-v2', projection='pca')"
        )
    finally:
        widget.close()


# Colours, rows on demand, the static PNG -----------------------------------------------------


def test_categorical_colours_keep_the_top_20_and_other() -> None:
    # 25 categories: c0 is the most frequent, c24 the least.
    values = [f"c{i}" for i in range(25) for _ in range(30 - i)]
    coloring = color_by(values, len(values), name="color")
    assert coloring.kind == "categorical"
    assert coloring.names == [f"c{i}" for i in range(20)] + ["other"]
    assert coloring.counts == [30 - i for i in range(20)] + [sum(30 - i for i in range(20, 25))]
    assert sum(coloring.counts) == len(values)
    codes = coloring.codes
    assert codes.dtype == np.uint8 and codes[0] == 0 and codes[-1] == 20
    assert len(coloring.palette) == 21 and coloring.palette[-1] == GREY


def test_numbers_get_a_continuous_scale() -> None:
    coloring = color_by([0.5, 2.5, float("nan"), 1.5], 4, name="color")
    assert coloring.kind == "numeric" and (coloring.lo, coloring.hi) == (0.5, 2.5)
    assert coloring.codes.tolist() == [0, 254, MISSING, 127]
    assert len(coloring.palette) == 256 and coloring.palette[MISSING] == GREY
    # Integers with few distinct values are categories (star ratings), many are numbers.
    assert color_by([1, 2, 2, 5], 4, name="stars").kind == "categorical"
    assert color_by(list(range(50)), 50, name="year").kind == "numeric"


def test_front_end_picks_the_column_to_colour_by(make, notes) -> None:
    pandas = pytest.importorskip("pandas")
    lengths = [len(t) / 10 for t in TEXTS]  # floats: a continuous scale
    table = pandas.DataFrame({"topic": LABELS, "length": lengths})
    widget = make(notes, data=table, color="topic", tooltip=["length"])
    assert widget.color_options == ["topic", "length"] and widget.color_kind == "categorical"
    widget.set_state({"color_by": "length"})
    assert widget.color_kind == "numeric"
    assert widget.color_range == [min(lengths), max(lengths)]
    codes = np.frombuffer(widget.color_codes, dtype=np.uint8)
    assert codes[int(np.argmin(lengths))] == 0 and codes[int(np.argmax(lengths))] == 254
    widget.set_state({"color_by": ""})
    assert widget.color_kind == "none" and widget.color_names == []
    with pytest.raises(traitlets.TraitError, match="color_by='nonsense' is not a column"):
        widget.color_by = "nonsense"
    assert widget.color_by == "" and widget.color_kind == "none"


def custom_messages(widget: SimilarityExplorer) -> list[dict[str, Any]]:
    return [
        data["content"]
        for kind, data, _ in sent(widget)
        if kind == "comm_msg" and data.get("method") == "custom"
    ]


def test_rows_are_sent_on_demand_with_tooltip_fields(make, notes) -> None:
    table = {"topic": LABELS, "stars": [5, 4, 3, 2, 1, 5, 4, 3]}
    widget = make(notes, data=table, tooltip=["topic", "stars"])
    assert widget.tooltip_columns == ["topic", "stars"]
    widget.comm.handle_msg(
        {
            "content": {
                "comm_id": widget.comm.comm_id,
                "data": {
                    "method": "custom",
                    "content": {"type": "rows", "id": 7, "indices": [3, 99, 0]},
                },
            },
            "buffers": [],
        }
    )
    assert custom_messages(widget) == [
        {
            "type": "rows",
            "id": 7,
            "rows": [
                {"index": 3, "text": TEXTS[3], "fields": {"topic": "finance", "stars": "2"}},
                {"index": 0, "text": TEXTS[0], "fields": {"topic": "pets", "stars": "5"}},
            ],
        }
    ]


def test_display_bundle_carries_a_png_of_the_map(make, notes) -> None:
    widget = make(notes, LABELS)
    data, metadata = widget._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in data
    # The labextension shows the PNG when the widget's model is gone (a reopened notebook).
    assert metadata["jupyter_mlx_embed"] == {"explorer": 1}
    png = data["image/png"]
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (640, 400)
    assert (np.asarray(image.convert("RGB")) != 255).any()
    # A different colouring draws a different picture.
    widget.set_state({"color_by": ""})
    assert widget._repr_mimebundle_()[0]["image/png"] != png


def test_png_draws_each_point_in_its_colour() -> None:
    coords = np.array([[0, 0], [1, 1], [2, 0.5], [2, 0.5]], dtype=np.float32)
    coloring = label_coloring(["a", "b", "c", "c"], 4)
    image = Image.open(io.BytesIO(render_png(coords, coloring, width=200, height=100)))
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    colours = {tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in coloring.palette}
    drawn = {tuple(p) for p in np.unique(pixels, axis=0)}
    assert colours <= drawn


def test_explore_embeds_a_table_and_honours_skip_invalid(monkeypatch, local_worker) -> None:
    pandas = pytest.importorskip("pandas")
    monkeypatch.setattr(comm, "create_comm", RecordingComm)
    table = pandas.DataFrame(
        {"text": [*TEXTS[:3], None, *TEXTS[3:]], "topic": [*LABELS[:3], "?", *LABELS[3:]]}
    )
    with pytest.raises(jme.InputTypeError, match=r"data\['text'\]\[3\] is NaN, a missing value"):
        jme.explore(table, "text", projection="pca")
    widget = jme.explore(table, "text", color="topic", skip_invalid=True, projection="pca")
    try:
        assert widget.embeddings.texts == TEXTS and widget.embeddings.skipped == [3]
        np.testing.assert_allclose(widget.embeddings.vectors, jme.embed(TEXTS), atol=1e-6)
        assert widget.color_names == ["pets", "finance", "cooking"]  # the "?" row left out
    finally:
        widget.close()
    with pytest.raises(ValueError, match="text='body' is not a column of data"):
        jme.explore(table, "body")


def test_clusters_are_found_on_the_map(make, notes) -> None:
    widget = make(notes, LABELS)
    assert widget.wait(120)
    codes = widget.cluster_codes
    assert codes is not None and codes.shape == (len(TEXTS),)
    for cluster in widget.clusters:
        assert set(cluster) == {"label", "x", "y", "size", "level", "members"}
        assert cluster["size"] > 0 and cluster["level"] in (0, 1)
        assert 0 < len(cluster["members"]) <= cluster["size"]


def umap_sized() -> Embeddings:
    """Random points, as many as UMAP needs (fewer stay on the PCA map)."""
    vectors = np.random.default_rng(0).standard_normal((UMAP_MIN_POINTS, 16)).astype(np.float32)
    return Embeddings([f"note {i}" for i in range(UMAP_MIN_POINTS)], vectors, "all-MiniLM-L6-v2")


@pytest.mark.skipif(not HAVE_UMAP, reason="umap-learn is not installed")
def test_umap_replaces_the_pca_map_from_a_background_thread(make) -> None:
    points = umap_sized()
    widget = make(points, projection="umap")
    assert widget.wait(300)
    assert widget.projection == "umap"
    np.testing.assert_array_equal(widget.coordinates, project(points.vectors, "umap"))
    assert any(state.get("projection") == "umap" for state, _ in updates(widget))


@pytest.mark.skipif(not HAVE_UMAP, reason="umap-learn is not installed")
def test_wait_in_a_cell_shows_the_map_before_it_returns(make) -> None:
    # A cell blocks the kernel's event loop, where the background work posts its results:
    # wait() (called by make) must apply them itself.
    async def cell() -> tuple[str, bool, str]:
        widget = make(umap_sized(), projection="umap")
        # Read before returning: once the cell ends, the loop runs what was posted anyway.
        return widget.projection, widget.cluster_codes is not None, widget.map_status

    projection, clustered, status = asyncio.run(cell())
    assert projection == "umap"
    assert clustered
    assert status.startswith(f"UMAP map of {UMAP_MIN_POINTS} texts.")


# Queries ----------------------------------------------------------------------------------


def test_front_end_query_gives_search_top_k_and_scores(make, notes) -> None:
    widget = make(notes, LABELS, k=3)
    widget.set_state({"query": "pets at home", "query_seq": 1})
    wait_for(lambda: widget.result_seq == 1)
    expected = notes.search("pets at home", k=3)
    assert_same_hits(widget.top_k, hits_of(expected))
    assert widget.status == "3 nearest of 8 texts for 'pets at home'"
    assert widget.status_level == "info"
    # Exact similarities stay in Python, the same as a search over everything...
    everything = notes.search("pets at home", k=len(TEXTS))
    by_index = {hit.index: hit.score for hit in everything}
    exact = np.array([by_index[i] for i in range(len(TEXTS))])
    assert widget.similarities.tolist() == pytest.approx(exact.tolist(), abs=1e-6)
    # ...and go out as one byte per text spanning score_range (0: lowest, 254: highest).
    codes = np.frombuffer(widget.scores, dtype=np.uint8)
    lo, hi = widget.score_range
    assert len(codes) == len(TEXTS) and (lo, hi) == pytest.approx((exact.min(), exact.max()))
    assert codes[exact.argmin()] == 0 and codes[exact.argmax()] == 254
    np.testing.assert_allclose(lo + codes / 254 * (hi - lo), exact, atol=(hi - lo) / 254)
    # The answer went out as one update with the scores as a binary buffer.
    answer = [(state, paths) for state, paths in updates(widget) if state.get("result_seq") == 1]
    assert len(answer) == 1
    state, paths = answer[0]
    assert ["scores"] in paths and state["scores"] == widget.scores
    assert state["top_k"] == widget.top_k


def test_query_uses_the_embeddings_model_and_dimensions(make, local_worker) -> None:
    small = Embeddings(TEXTS, jme.embed(TEXTS, dimensions=64), "all-MiniLM-L6-v2")
    transport = ManualTransport()
    widget = make(small, transport=transport, query_prefix="query: ")
    widget.set_state({"query": "interest rates", "query_seq": 1})
    assert transport.requests[0][:3] == (["query: interest rates"], "all-MiniLM-L6-v2", 64)
    transport.complete(0)
    vector = jme.embed("query: interest rates", dimensions=64)
    assert_same_hits(widget.top_k, hits_of(small.search(vector, k=5)))


def test_python_side_query_and_search_text(make, notes) -> None:
    widget = make(notes)
    widget.query = "baking bread"  # no number: the widget takes the next one itself
    assert widget.query_seq == 1
    wait_for(lambda: widget.result_seq == 1)
    assert_same_hits(widget.top_k, hits_of(notes.search("baking bread", k=5)))

    results = widget.search_text("the stock market")  # blocks until the answer is shown
    assert widget.query == "the stock market" and widget.query_seq == widget.result_seq == 2
    assert_same_hits(hits_of(results), hits_of(notes.search("the stock market", k=5)))
    assert_same_hits(widget.top_k, hits_of(results))
    assert results.query == "the stock market"


def test_k_change_reranks_the_current_query(make, notes) -> None:
    widget = make(notes)
    widget.search_text("animals")
    widget.set_state({"k": 2})
    assert_same_hits(widget.top_k, hits_of(notes.search("animals", k=2)))
    widget.set_state({"k": 50})  # more than there are texts: all of them
    assert len(widget.top_k) == len(TEXTS)


def test_a_stale_answer_arriving_late_is_ignored(make, notes) -> None:
    transport = ManualTransport()
    widget = make(notes, transport=transport)
    widget.set_state({"query": "pets", "query_seq": 1})
    widget.set_state({"query": "money", "query_seq": 2})
    assert [request[0] for request in transport.requests] == [["pets"], ["money"]]
    assert widget.status_level == "busy"
    transport.complete(1)  # the newer answer first...
    assert widget.result_seq == 2
    expected = hits_of(notes.search("money", k=5))
    assert_same_hits(widget.top_k, expected)
    scores = widget.scores
    transport.complete(0)  # ...then the older one, which must change nothing
    assert widget.result_seq == 2
    assert_same_hits(widget.top_k, expected)
    assert widget.scores == scores
    assert not any(state.get("result_seq") == 1 for state, _ in updates(widget))


def test_an_older_answer_arriving_first_is_dropped(make, notes) -> None:
    transport = ManualTransport()
    widget = make(notes, transport=transport)
    widget.set_state({"query": "pets", "query_seq": 1})
    widget.set_state({"query": "money", "query_seq": 2})
    transport.complete(0)
    assert widget.result_seq == 0 and widget.top_k == [] and widget.scores == b""
    transport.complete(1)
    assert widget.result_seq == 2
    assert_same_hits(widget.top_k, hits_of(notes.search("money", k=5)))


def test_empty_query_clears_the_colouring(make, notes) -> None:
    widget = make(notes)
    widget.search_text("cooking pasta")
    assert widget.scores
    widget.set_state({"query": "   ", "query_seq": widget.query_seq + 1})
    assert widget.result_seq == widget.query_seq
    assert widget.scores == b"" and widget.top_k == [] and widget.similarities is None
    assert widget.status.startswith("Empty query")


def test_completion_is_handed_to_the_running_event_loop(make, notes) -> None:
    threads: list[threading.Thread] = []

    async def main() -> None:
        widget = make(notes)
        widget.observe(lambda change: threads.append(threading.current_thread()), "result_seq")
        widget.set_state({"query": "a sleepy cat", "query_seq": 1})
        deadline = time.monotonic() + 60
        while widget.result_seq != 1:
            assert time.monotonic() < deadline, "no answer"
            await asyncio.sleep(0.005)
        assert_same_hits(widget.top_k, hits_of(notes.search("a sleepy cat", k=5)))

    asyncio.run(main())
    assert threads == [threading.main_thread()]


# Errors -----------------------------------------------------------------------------------


def test_a_failed_query_shows_in_status_and_never_raises(make, notes) -> None:
    transport = ManualTransport()
    widget = make(notes, transport=transport)
    widget.set_state({"query": "pets", "query_seq": 1})
    transport.fail(0, jme.EmbedError("Cannot reach the Jupyter server's embedding endpoint"))
    assert widget.status == "Query failed: Cannot reach the Jupyter server's embedding endpoint"
    assert widget.status_level == "error"
    assert widget.result_seq == 1 and widget.top_k == [] and widget.scores == b""
    # A later query works again.
    widget.set_state({"query": "pets", "query_seq": 2})
    transport.complete(1)
    assert widget.status_level == "info" and len(widget.top_k) == 5


def test_a_refused_submission_shows_in_status(make, notes) -> None:
    widget = make(notes, transport=RefusingTransport())
    widget.set_state({"query": "pets", "query_seq": 1})
    assert widget.status == "Query failed: the queue is full"
    assert widget.status_level == "error"
    with pytest.raises(jme.OverloadedError):
        widget.search_text("pets")
    assert widget.status == "Query failed: the queue is full"


def test_an_unknown_model_shows_in_status(make, notes) -> None:
    orphan = Embeddings(notes.texts, notes.vectors, "nobody/nothing")
    widget = make(orphan)
    widget.set_state({"query": "pets", "query_seq": 1})
    wait_for(lambda: widget.status_level == "error")
    assert widget.status.startswith("Query failed: ") and "nobody/nothing" in widget.status
    with pytest.raises(jme.ModelNotFoundError):
        widget.search_text("pets")


def test_a_stale_failure_does_not_hide_the_newest_answer(make, notes) -> None:
    transport = ManualTransport()
    widget = make(notes, transport=transport)
    widget.set_state({"query": "pets", "query_seq": 1})
    widget.set_state({"query": "money", "query_seq": 2})
    transport.complete(1)
    transport.fail(0, jme.EmbedError("too late"))
    assert widget.status_level == "info" and widget.result_seq == 2 and widget.top_k


# Clicks, selection, heatmap ---------------------------------------------------------------


def test_clicking_a_point_lists_its_neighbours(make, notes) -> None:
    widget = make(notes, k=3)
    widget.set_state({"clicked": 3})
    expected = [hit for hit in notes.search(notes.vectors[3], k=4) if hit.index != 3][:3]
    assert_same_hits(widget.neighbors, hits_of(expected))
    assert widget.neighbors[0]["index"] in (4, 5)  # the other finance texts
    assert widget.status.startswith("3 nearest neighbours of point 3")
    widget.set_state({"k": 2})
    assert len(widget.neighbors) == 2
    widget.set_state({"clicked": -1})
    assert widget.neighbors == []
    widget.set_state({"clicked": 99})  # nonsense from the front end: reported, not raised
    assert widget.neighbors == [] and widget.status_level == "error"


def test_selection_syncs_back_and_selected_returns_embeddings(make, notes) -> None:
    widget = make(notes, LABELS)
    # A full comm message, as the front end sends it after a box selection.
    widget.comm.handle_msg(
        {
            "content": {
                "comm_id": widget.comm.comm_id,
                "data": {"method": "update", "state": {"selection": [6, 3, 3, 99, -1]}},
            },
            "buffers": [],
        }
    )
    assert widget.selection == [3, 6]  # sorted, unique, in range
    chosen = widget.selected()
    assert isinstance(chosen, Embeddings)
    assert chosen.texts == [TEXTS[3], TEXTS[6]] and chosen.model == notes.model
    np.testing.assert_array_equal(chosen.vectors, notes.vectors[[3, 6]])
    # The cleaned selection went back to the front end, and the heatmap follows it.
    assert any(state.get("selection") == [3, 6] for state, _ in updates(widget))
    assert widget.heatmap_indices == [3, 6]
    assert widget.heatmap_note.startswith("Cosine similarity of the 2 selected items")
    np.testing.assert_allclose(
        np.frombuffer(widget.heatmap, dtype="<f4").reshape(2, 2),
        notes[[3, 6]].similarity(),
        atol=1e-6,
    )
    widget.set_state({"selection": []})
    assert len(widget.selected()) == 0
    assert sorted(widget.heatmap_indices) == list(range(len(TEXTS)))


def test_heatmap_shows_at_most_the_limit(make, notes) -> None:
    widget = make(notes, heatmap_limit=3)
    assert sorted(widget.heatmap_indices) == [0, 1, 2] and len(widget.heatmap) == 3 * 3 * 4
    assert widget.heatmap_note.startswith("Cosine similarity of the first 3 of 8 items")
    widget.selection = [7, 1, 2, 5]
    assert sorted(widget.heatmap_indices) == [1, 2, 5]
    assert widget.heatmap_note.startswith("Cosine similarity of the first 3 of 4 selected items")


def test_heatmap_rows_are_ordered_by_similarity(make, notes) -> None:
    # Interleave the topics: seriation must bring each topic's texts back together.
    order = [0, 3, 6, 1, 4, 7, 2, 5]
    shuffled = notes[order]
    widget = make(shuffled)
    topics = [LABELS[order[i]] for i in widget.heatmap_indices]
    runs = [topic for i, topic in enumerate(topics) if i == 0 or topics[i - 1] != topic]
    assert sorted(runs) == ["cooking", "finance", "pets"], topics
    n = len(TEXTS)
    np.testing.assert_allclose(
        np.frombuffer(widget.heatmap, dtype="<f4").reshape(n, n),
        shuffled[widget.heatmap_indices].similarity(),
        atol=1e-6,
    )
    assert widget.heatmap_labels == [shuffled.texts[i] for i in widget.heatmap_indices]


# The filter ---------------------------------------------------------------------------------

YEARS = [2001, 1999, 2010, 2020, 1980, 2005, 2015, 1990]


def filter_table() -> dict[str, Any]:
    return {"topic": LABELS, "year": YEARS, "price": [1.5, 2.5, 3.0, 10.0, 0.5, 7.25, 4.0, 9.0]}


def mask_of(widget: SimilarityExplorer) -> list[int]:
    return np.frombuffer(widget.filter_mask, dtype=np.uint8).tolist()


def test_a_pandas_query_greys_out_the_rest(make, notes) -> None:
    widget = make(notes, data=filter_table())
    assert widget.filter is None and widget.filtered.tolist() == list(range(8))
    assert widget.filter_mask == b""
    widget.filter = "year > 2000 and topic != 'finance'"
    assert widget.filter == "year > 2000 and topic != 'finance'"
    assert widget.filtered.tolist() == [0, 2, 6]
    assert mask_of(widget) == [1, 0, 1, 0, 0, 0, 1, 0] and widget.filter_count == 3
    assert widget.filter_text == "year > 2000 and topic != 'finance'"
    assert widget.status == "3 of 8 texts match the filter"
    # `text` is a column too (the table has none of that name).
    widget.filter = "text.str.contains('bank')"
    assert widget.filtered.tolist() == [4]
    # The front end's clear button empties filter_text: no filter left.
    widget.set_state({"filter_text": ""})
    assert widget.filter is None and widget.filter_mask == b""


def test_a_boolean_mask_filters_and_bad_filters_raise(make, notes) -> None:
    widget = make(notes, data=filter_table())
    widget.filter = np.array([True] * 3 + [False] * 5)
    assert widget.filtered.tolist() == [0, 1, 2] and widget.filter_text == "mask of 3 rows"
    assert widget.filter.tolist() == [True] * 3 + [False] * 5
    with pytest.raises(ValueError, match=r"not a valid query.*nosuch"):
        widget.filter = "nosuch > 3"
    with pytest.raises(ValueError, match="not a condition"):
        widget.filter = "year + 1"
    with pytest.raises(ValueError, match=r"one value per point \(8\)"):
        widget.filter = [True, False]
    with pytest.raises(TypeError, match="boolean mask"):
        widget.filter = [1, 0, 1, 0, 1, 0, 1, 0]
    assert widget.filtered.tolist() == [0, 1, 2]  # a bad filter leaves the last one
    widget.filter = None
    assert widget.filtered.tolist() == list(range(8))


def test_keyword_and_range_combine_with_the_python_filter(make, notes) -> None:
    widget = make(notes, data=filter_table(), color="price")
    widget.set_state({"keyword": "THE"})  # a substring, ignoring case
    with_the = [i for i, text in enumerate(TEXTS) if "the" in text.lower()]
    assert widget.filtered.tolist() == with_the
    widget.set_state({"keyword": "/k(itten|nead)/"})  # a regular expression
    assert widget.filtered.tolist() == [2, 7]
    widget.set_state({"keyword": "/(/"})
    assert widget.status_level == "error" and "not a valid regular expression" in widget.status
    assert widget.filtered.tolist() == [2, 7]  # kept until a valid keyword comes
    widget.set_state({"keyword": ""})
    widget.set_state({"value_range": [2.0, 8.0]})  # inclusive, on the numeric colour column
    assert widget.filtered.tolist() == [1, 2, 5, 6]
    widget.filter = "topic == 'finance'"
    assert widget.filtered.tolist() == [5]
    # Another colour column drops the range (it was a range of the column shown).
    widget.set_state({"color_by": "topic"})
    assert widget.value_range == [] and widget.filtered.tolist() == [3, 4, 5]


def test_search_can_be_limited_to_the_filtered_points(make, notes) -> None:
    widget = make(notes, data=filter_table(), k=3)
    widget.filter = "topic == 'cooking'"
    widget.set_state({"query": "my pet cat", "query_seq": 1})
    wait_for(lambda: widget.result_seq == 1)
    assert [hit["index"] for hit in widget.top_k][:1] == [0]  # ranked among all by default
    widget.set_state({"search_filtered": True})
    assert sorted(hit["index"] for hit in widget.top_k) == [6, 7]
    # The map is still coloured by every text's similarity.
    assert len(widget.scores) == len(TEXTS)
    widget.filter = np.zeros(8, dtype=bool)  # nothing matches: nothing to rank
    assert widget.top_k == []


def test_density_switch_draws_contours_per_category(make) -> None:
    rng = np.random.default_rng(0)
    group = rng.integers(0, 3, 600)
    vectors = (rng.normal(size=(3, 16))[group] * 5 + rng.normal(size=(600, 16))).astype("f4")
    many = Embeddings([f"note {i}" for i in range(600)], vectors, "all-MiniLM-L6-v2")
    widget = make(many, [f"group {g}" for g in group])
    assert widget.contours == []
    widget.set_state({"density": True})
    palette = dict(zip(widget.color_names, widget.color_palette, strict=False))
    # Per category (labels colour the points): the categories' own colours.
    assert sorted(c["color"] for c in widget.contours) == sorted(palette.values())
    widget.set_state({"color_by": ""})  # no colouring: the lines of all points together
    assert widget.contours and all(c["color"] == "" for c in widget.contours)
    widget.set_state({"density": False})
    assert widget.contours == []


def test_points_sized_by_a_numeric_column(make, notes) -> None:
    widget = make(notes, data=filter_table())
    assert widget.size_options == ["year", "price"] and widget.scale_codes == b""
    widget.set_state({"size_by": "price"})
    codes = np.frombuffer(widget.scale_codes, dtype=np.uint8)
    prices = np.array(filter_table()["price"])
    assert codes[prices.argmin()] == 0 and codes[prices.argmax()] == 254
    assert (np.diff(codes[np.argsort(prices)]) >= 0).all()  # bigger values, bigger codes
    with pytest.raises(traitlets.TraitError, match="not a numeric column"):
        widget.size_by = "topic"
    widget.set_state({"size_by": ""})
    assert widget.scale_codes == b""


def test_points_faded_by_a_numeric_column_one_column_at_a_time(make, notes) -> None:
    """Opacity by a column, alone or with sizes by the same one; another column for one
    turns the other off (a point carries one value besides its colour)."""
    widget = make(notes, data=filter_table())
    years, prices = (np.array(filter_table()[c], dtype=float) for c in ("year", "price"))
    widget.set_state({"opacity_by": "year"})
    codes = np.frombuffer(widget.scale_codes, dtype=np.uint8)
    assert codes[years.argmin()] == 0 and codes[years.argmax()] == 254
    widget.set_state({"size_by": "year"})  # the same column: both scale
    assert (widget.size_by, widget.opacity_by) == ("year", "year")
    widget.set_state({"size_by": "price"})  # another column: opacity is turned off
    assert (widget.size_by, widget.opacity_by) == ("price", "")
    codes = np.frombuffer(widget.scale_codes, dtype=np.uint8)
    assert codes[prices.argmin()] == 0 and codes[prices.argmax()] == 254
    widget.opacity_by = "year"  # and the other way round
    assert (widget.size_by, widget.opacity_by) == ("", "year")
    assert np.frombuffer(widget.scale_codes, dtype=np.uint8)[years.argmax()] == 254
    with pytest.raises(traitlets.TraitError, match="not a numeric column"):
        widget.opacity_by = "topic"
    widget.opacity_by = ""
    assert widget.scale_codes == b""
