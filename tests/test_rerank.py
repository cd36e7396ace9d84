"""Reranking (#25): cross-encoders at their published shapes scored as sentence-transformers'
``CrossEncoder.predict`` scores them (short, truncated, non-English pairs; the native path and
the stock forward), rerank requests sharing the worker with embedding requests, and
``rerank()`` / ``Embeddings.search(rerank=...)`` in this process.

The HTTP routes, with the official ``cohere`` clients and TEI's shape against both servers, are
in ``test_rerank_http.py``. Set ``JME_REAL_MODELS_DIR`` to keep the built models between
sessions, as for ``test_real_shapes.py``.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from concurrent.futures import wait
from pathlib import Path

import numpy as np
import pytest

import jupyter_mlx_embed as jme
from jupyter_mlx_embed import EngineConfig, Worker
from jupyter_mlx_embed.errors import InvalidRequestError, ModelTypeError
from jupyter_mlx_embed.options import EmbedOptions

from .reranker_models import RERANKERS, build_reranker

pytest.importorskip("sentence_transformers")
torch = pytest.importorskip("torch")

#: Truncation length for the tests (ModernBERT's published 8192 would make one pair cost
#: seconds on a CPU; 512 is still past its 128-token local window).
MAX_LENGTH = {"gte-reranker-modernbert-base": 512}

QUERY = "How do I read a file line by line in Python?"
DOCUMENTS = [
    "Use open() and iterate over the file object: each iteration gives one line.",
    "The giant panda is a bear species endemic to China.",
    "A",
    "Le café est très chaud, n'est-ce pas ?",
    "東京の天気は晴れです。明日は雨が降るかもしれません。",
    "Emoji 🎉🚀👍🏽 and a family 👨‍👩‍👧‍👦",
    "  leading and trailing spaces  ",
]


def _long(words: int) -> str:
    text = (
        "A function definition is an executable statement. Its execution binds the function "
        "name in the current local namespace to a function object, a wrapper around the "
        "executable code for the function. "
    )
    base = text.split()
    return " ".join(base[i % len(base)] for i in range(words))


#: Pairs past the context: a long document (cut alone), and a long query with a long document
#: (both cut, longest first).
LONG_DOCUMENTS = [_long(900), _long(300)]
LONG_QUERY = _long(400)


@pytest.fixture(scope="session")
def rerankers(reranker_root: Path) -> dict[str, Path]:
    """Every published reranker, built once (model root: the folders' parent)."""
    return {
        name: build_reranker(name, reranker_root, max_length=MAX_LENGTH.get(name))
        for name in RERANKERS
    }


def _reference(folder: Path, query: str, documents: list[str]) -> np.ndarray:
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(folder), device="cpu")
    scores = model.predict([(query, d) for d in documents], batch_size=4)
    del model
    gc.collect()
    return np.asarray(scores, dtype=np.float32)


@pytest.fixture(scope="session")
def references(rerankers: dict[str, Path]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """CrossEncoder's scores of (QUERY, DOCUMENTS + LONG_DOCUMENTS) and of (LONG_QUERY,
    LONG_DOCUMENTS), per model."""
    return {
        name: (
            _reference(folder, QUERY, DOCUMENTS + LONG_DOCUMENTS),
            _reference(folder, LONG_QUERY, LONG_DOCUMENTS),
        )
        for name, folder in rerankers.items()
    }


@pytest.fixture
def make_worker(rerankers: dict[str, Path]) -> Iterator[object]:
    workers: list[Worker] = []

    def make(**settings: object) -> Worker:
        root = next(iter(rerankers.values())).parent
        workers.append(Worker(EngineConfig(model_roots=(root,), cache=False, **settings)))
        return workers[-1]

    yield make
    for worker in workers:
        worker.close()


@pytest.mark.slow
@pytest.mark.parametrize("fast", [True, False], ids=["native", "stock"])
@pytest.mark.parametrize("name", list(RERANKERS))
def test_scores_equal_cross_encoder(name, fast, rerankers, references, make_worker) -> None:
    folder = rerankers[name]
    worker = make_worker(cpu_fast_path=fast)
    options = EmbedOptions(model=folder.name)
    short = worker.rerank(QUERY, DOCUMENTS + LONG_DOCUMENTS, options).result(600)
    long = worker.rerank(LONG_QUERY, LONG_DOCUMENTS, options).result(600)
    expected_short, expected_long = references[name]
    np.testing.assert_allclose(short.scores, expected_short, atol=1e-4)
    np.testing.assert_allclose(long.scores, expected_long, atol=1e-4)
    assert np.ptp(expected_short) > 1e-3  # the random heads tell pairs apart
    limit = worker.registry.resolve(folder.name).max_seq_length
    assert max(short.token_counts) == limit and max(long.token_counts) == limit
    # The score is the head's logit through the model's activation (sigmoid here).
    assert short.logits is not None
    np.testing.assert_allclose(short.scores, 1 / (1 + np.exp(-short.logits)), atol=1e-6)


@pytest.mark.slow
def test_pairs_get_their_own_scores_among_other_requests(rerankers, make_worker) -> None:
    """Rerank and embedding requests share forward passes' rounds; each gets its own results,
    equal to what it gets alone."""
    name = "ms-marco-MiniLM-L6-v2"
    worker = make_worker(batch_window_ms=20)
    options = EmbedOptions(model=rerankers[name].name)
    alone = worker.rerank(QUERY, DOCUMENTS, options).result(120).scores
    queries = [QUERY, "what is a panda", DOCUMENTS[4]]
    expected = [worker.rerank(q, DOCUMENTS, options).result(120).scores for q in queries]
    texts = worker.submit(DOCUMENTS).result(120).vectors
    futures = [worker.rerank(q, DOCUMENTS, options) for q in queries]
    embedded = worker.submit(DOCUMENTS)
    wait([*futures, embedded], 120)
    for future, scores in zip(futures, expected, strict=True):
        np.testing.assert_allclose(future.result().scores, scores, atol=1e-5)
    np.testing.assert_allclose(embedded.result().vectors, texts, atol=1e-5)
    np.testing.assert_allclose(expected[0], alone, atol=1e-5)


def test_task_mismatch_is_refused_naming_the_task(rerankers, make_worker) -> None:
    worker = make_worker()
    reranker = rerankers["ms-marco-MiniLM-L6-v2"].name
    with pytest.raises(ModelTypeError, match=r"is a reranker .*gives no embeddings"):
        worker.submit(["a text"], EmbedOptions(model=reranker)).result(120)
    with pytest.raises(ModelTypeError, match=r"is an embedding model: .*cannot rerank"):
        worker.rerank("q", ["d"], EmbedOptions(model="all-MiniLM-L6-v2")).result(120)
    card = worker.model_card(reranker)
    assert card["task"] == "rerank" and card["dimensions"] is None
    assert worker.model_card()["task"] == "embed"


@pytest.mark.parametrize(
    ("query", "documents", "field", "message"),
    [
        (None, ["d"], "query", "query is missing"),
        ("", ["d"], "query", "query is an empty string"),
        ("q", [], "documents", "documents must not be empty"),
        ("q", ["d", ""], "documents", r"documents\[1\] is an empty string"),
        ("q", ["d", 3], "documents", r"documents\[1\] is int"),
        ("q", "d", "documents", "documents must be a list"),
        ("q", ["d"] * 1001, "documents", "1001 items, more than the maximum of 1000"),
    ],
)
def test_bad_rerank_requests_name_the_field(
    query, documents, field, message, make_worker, rerankers
) -> None:
    worker = make_worker()
    with pytest.raises(InvalidRequestError, match=message) as caught:
        worker.rerank(query, documents, EmbedOptions(model="ms-marco-MiniLM-L6-v2"))
    assert caught.value.param == field


def test_rerank_without_a_model_needs_a_default_reranker(rerankers, make_worker) -> None:
    reranker = rerankers["ms-marco-MiniLM-L6-v2"].name
    worker = make_worker(default_reranker=reranker)
    assert worker.rerank("q", ["d"]).result(120).model == reranker


def test_rerank_and_search_through_the_api(rerankers, make_worker) -> None:
    reranker = rerankers["ms-marco-MiniLM-L6-v2"].name
    worker = make_worker()
    expected = worker.rerank(QUERY, DOCUMENTS, EmbedOptions(model=reranker)).result(120).scores
    ranking = jme.rerank(QUERY, DOCUMENTS, model=reranker, top_n=3)
    np.testing.assert_allclose(ranking.scores, expected, atol=1e-6)  # the documents' order
    assert [hit.index for hit in ranking] == list(np.argsort(-expected, kind="stable")[:3])
    assert ranking[0].text == DOCUMENTS[ranking[0].index]
    assert "Ranking for" in repr(ranking) and "<table" in ranking._repr_html_()

    collection = jme.Embeddings(DOCUMENTS, jme.embed(DOCUMENTS), model=jme.info()["default_model"])
    plain = collection.search(QUERY, k=7)
    reranked = collection.search(QUERY, k=2, rerank=reranker, candidates=4)
    candidates = set(plain.indices[:4].tolist())
    assert set(reranked.indices.tolist()) <= candidates and len(reranked) == 2
    by_index = dict(zip(plain.indices.tolist(), plain.scores.tolist(), strict=True))
    for hit in reranked:
        assert hit.score == pytest.approx(float(expected[hit.index]), abs=1e-6)
        assert hit.similarity == pytest.approx(by_index[hit.index], abs=1e-6)
    assert list(reranked.scores) == sorted(reranked.scores, reverse=True)
    assert "cosine" in repr(reranked) and "similarity" in reranked.to_pandas().columns


def test_explorer_query_reranks_its_best_matches(rerankers, make_worker) -> None:
    reranker = rerankers["ms-marco-MiniLM-L6-v2"].name
    make_worker()
    collection = jme.Embeddings(DOCUMENTS, jme.embed(DOCUMENTS), model="all-MiniLM-L6-v2")
    explorer = collection.explore(projection="pca", reranker=reranker, k=3)
    try:
        assert explorer.rerank and explorer.reranker == reranker
        hits = explorer.search_text(QUERY)
        expected = collection.search(QUERY, k=3, rerank=reranker, candidates=50)
        assert hits.indices.tolist() == expected.indices.tolist()
        np.testing.assert_allclose(hits.scores, expected.scores, atol=1e-6)
        assert [row["index"] for row in explorer.top_k] == hits.indices.tolist()
        assert all("similarity" in row for row in explorer.top_k)
        assert "reranked by" in explorer.status
        # The map stays coloured by similarity: the scores are the query's cosines.
        plain = collection.search(QUERY, k=3)
        explorer.rerank = False
        hits = explorer.search_text(QUERY)
        assert hits.indices.tolist() == plain.indices.tolist()
        assert all("similarity" not in row for row in explorer.top_k)
    finally:
        explorer.close()


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_rerankers_take_the_precision_setting(precision, rerankers, make_worker) -> None:
    """The reduced precisions reach a reranker's encoder as they reach an embedder's (the
    scores move a little; where the CPU lacks the precision, fp32 runs and says so)."""
    name = rerankers["ms-marco-MiniLM-L6-v2"].name
    exact = make_worker()
    options = EmbedOptions(model=name)
    expected = exact.rerank(QUERY, DOCUMENTS, options).result(120).scores
    exact.close()
    reduced = make_worker(precision=precision)
    scores = reduced.rerank(QUERY, DOCUMENTS, options).result(120).scores
    if reduced.info()["precision"]["in_use"] != precision:
        pytest.skip(reduced.info()["precision"]["detail"])
    assert np.abs(scores - expected).max() < 2e-2
    assert not np.array_equal(scores, expected)  # the products did run at that precision


def test_a_cross_encoder_saved_by_sentence_transformers_keeps_its_activation(
    rerankers, tmp_path
) -> None:
    """sentence-transformers 5+ saves a CrossEncoder with ``config_sentence_transformers.json``
    (model_type CrossEncoder, activation_fn) and ``modules.json``: the saved activation (here
    Identity: raw logits) is what its scores use, and so ours."""
    from sentence_transformers import CrossEncoder

    saved = tmp_path / "identity-reranker"
    source = CrossEncoder(str(rerankers["ms-marco-MiniLM-L6-v2"]), device="cpu")
    source.activation_fn = torch.nn.Identity()
    source.save_pretrained(str(saved))
    written = (saved / "config_sentence_transformers.json").read_text()
    assert "CrossEncoder" in written and "Identity" in written
    expected = CrossEncoder(str(saved), device="cpu").predict([(QUERY, d) for d in DOCUMENTS])
    with Worker(EngineConfig(model_roots=(tmp_path,), cache=False)) as worker:
        scores = worker.rerank(QUERY, DOCUMENTS, EmbedOptions(model=saved.name)).result(120)
    np.testing.assert_allclose(scores.scores, expected, atol=1e-4)
    assert scores.logits is not None
    np.testing.assert_allclose(scores.scores, scores.logits, atol=1e-6)  # no sigmoid
