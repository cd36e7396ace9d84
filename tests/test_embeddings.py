"""``Embeddings`` and ``SearchResults``: search, similarity, subsets, files and display."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import jupyter_mlx_embed as jme
from jupyter_mlx_embed.embeddings import Embeddings, Hit, SearchResults

MODEL = "all-MiniLM-L6-v2"
TEXTS = [
    "To change the password of your account, open Settings and choose Security.",
    "Whisk two cups of flour with three eggs and a pinch of salt.",
    "The home team won the championship after a dramatic penalty shootout.",
    "Heavy rain and strong winds are forecast along the coast tomorrow.",
    "The telescope photographed a distant spiral galaxy.",
    "Our cat sleeps on the warm windowsill all afternoon.",
]
PASSWORD_QUERY = "How do I reset my login password?"


@pytest.fixture(scope="module", autouse=True)
def default_worker() -> Iterator[jme.Worker]:
    worker = jme.configure()
    yield worker
    worker.close()


@pytest.fixture(scope="module")
def emb() -> Embeddings:
    return Embeddings(TEXTS, jme.embed(TEXTS), MODEL)


# -- construction ---------------------------------------------------------------------------


def test_constructor_stores_float32_c_contiguous_vectors() -> None:
    vectors = np.asfortranarray(np.eye(3, dtype=np.float64))
    e = Embeddings(("a", "b", "c"), vectors, MODEL)
    assert e.vectors.dtype == np.float32 and e.vectors.flags.c_contiguous
    assert e.texts == ["a", "b", "c"] and isinstance(e.texts, list)
    assert len(e) == 3 and e.dimensions == 3


def test_constructor_rejects_a_text_count_that_differs_from_the_rows() -> None:
    with pytest.raises(ValueError, match="2 texts but 3 vectors"):
        Embeddings(["a", "b"], np.eye(3), MODEL)


def test_constructor_rejects_one_dimensional_vectors() -> None:
    with pytest.raises(ValueError, match="2-D"):
        Embeddings(["a"], np.ones(3), MODEL)


def test_constructor_rejects_a_single_string_as_texts() -> None:
    with pytest.raises(TypeError, match="single string"):
        Embeddings("abc", np.eye(3), MODEL)


# -- search ---------------------------------------------------------------------------------


def test_search_finds_the_paraphrased_text_first(emb: Embeddings) -> None:
    results = emb.search(PASSWORD_QUERY, k=3)
    assert results[0].text == TEXTS[0] and results[0].index == 0 and results[0].rank == 1
    assert emb.search("Who won the football final?")[0].index == 2
    assert emb.search("What will the weather be like?")[0].index == 3


def test_search_scores_are_descending_dot_products(emb: Embeddings) -> None:
    results = emb.search(PASSWORD_QUERY, k=len(TEXTS))
    expected = emb.vectors @ jme.embed(PASSWORD_QUERY)
    assert np.all(np.diff(results.scores) <= 0)
    np.testing.assert_allclose(results.scores, expected[results.indices], atol=1e-5)
    assert [hit.rank for hit in results] == list(range(1, len(TEXTS) + 1))
    assert results.query == PASSWORD_QUERY and results.model == MODEL


def test_search_clamps_k_to_the_number_of_texts(emb: Embeddings) -> None:
    results = emb.search(PASSWORD_QUERY, k=100)
    assert len(results) == len(TEXTS)
    assert sorted(results.indices.tolist()) == list(range(len(TEXTS)))


@pytest.mark.parametrize("k", [0, -1])
def test_search_rejects_k_below_one(emb: Embeddings, k: int) -> None:
    with pytest.raises(ValueError, match="k must be at least 1"):
        emb.search(PASSWORD_QUERY, k=k)


def test_search_with_a_vector_query_matches_the_string_query(emb: Embeddings) -> None:
    by_text = emb.search(PASSWORD_QUERY, k=4)
    by_vector = emb.search(jme.embed(PASSWORD_QUERY), k=4)
    assert by_vector.query is None
    assert by_vector.indices.tolist() == by_text.indices.tolist()
    np.testing.assert_allclose(by_vector.scores, by_text.scores, atol=1e-6)


def test_search_renormalises_a_vector_query(emb: Embeddings) -> None:
    vector = emb.vectors[4]
    scaled = emb.search(vector * 7.5, k=2)
    assert scaled[0].index == 4 and scaled[0].score == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("shape", [(383,), (1, 384), (384, 1)])
def test_search_rejects_a_vector_query_of_the_wrong_shape(emb: Embeddings, shape) -> None:
    with pytest.raises(ValueError, match=r"shape \(384,\)"):
        emb.search(np.ones(shape, dtype=np.float32))


def test_search_rejects_a_zero_vector_query(emb: Embeddings) -> None:
    with pytest.raises(ValueError, match="non-zero"):
        emb.search(np.zeros(384, dtype=np.float32))


def test_search_of_truncated_embeddings_embeds_the_query_at_that_size() -> None:
    small = Embeddings(TEXTS, jme.embed(TEXTS, dimensions=64), MODEL)
    assert small.dimensions == 64
    results = small.search(PASSWORD_QUERY, k=2)
    assert results[0].index == 0
    expected = small.vectors @ jme.embed(PASSWORD_QUERY, dimensions=64)
    np.testing.assert_allclose(results.scores, expected[results.indices], atol=1e-5)


def test_search_breaks_ties_by_index() -> None:
    vectors = np.array([[0, 1], [1, 0], [0, 1], [1, 0], [1, 0]], dtype=np.float32)
    e = Embeddings(list("abcde"), vectors, MODEL)
    assert e.search(np.array([1.0, 0.0]), k=2).indices.tolist() == [1, 3]
    assert e.search(np.array([1.0, 0.0]), k=5).indices.tolist() == [1, 3, 4, 0, 2]


def test_hits_carry_the_labels_of_the_table_the_texts_came_from() -> None:
    """After ``%embed -i df.text --skip-invalid`` positions and labels differ: each hit says
    both, so ``df.loc[hit.label]`` is its row."""
    vectors = np.array([[0, 1], [1, 0], [0.6, 0.8]], dtype=np.float32)
    e = Embeddings(["a", "b", "c"], vectors, MODEL, index=["r3", "r7", "r9"])
    hits = e.search(np.array([1.0, 0.0]), k=2)
    assert hits.indices.tolist() == [1, 2] and hits.labels == ["r7", "r9"]
    table = hits.to_pandas()
    assert table["label"].tolist() == ["r7", "r9"] and table["index"].tolist() == [1, 2]
    assert "r7" in repr(hits) and "<th>label</th>" in hits._repr_html_()
    unlabelled = Embeddings(["a", "b"], vectors[:2], MODEL).search(np.array([1.0, 0.0]), k=1)
    assert unlabelled.labels is None and "label" not in unlabelled.to_pandas().columns


def test_search_results_table_pads_labels_so_scores_line_up() -> None:
    vectors = np.array([[1, 0], [0.6, 0.8], [0, 1]], dtype=np.float32)
    e = Embeddings(
        ["first", "second", "third"], vectors, MODEL, index=["r0", "r12", "a-long-label"]
    )
    header, *rows = repr(e.search(np.array([1.0, 0.0]), k=3)).splitlines()[1:]
    assert header == "rank  label          score  text"
    assert rows[1] == "   2  r12            0.600  second"
    end = header.index("score") + len("score")  # each score ends under its header
    assert [row[end - 5 : end] for row in rows] == ["1.000", "0.600", "0.000"]


def test_search_renormalises_rows_that_are_not_unit_length() -> None:
    vectors = np.array([[10, 0], [0.6, 0.8]], dtype=np.float32)
    results = Embeddings(["x", "y"], vectors, MODEL).search(np.array([1.0, 0.0]), k=2)
    np.testing.assert_allclose(results.scores, [1.0, 0.6], atol=1e-6)


# -- similarity -----------------------------------------------------------------------------


def test_similarity_with_itself_is_symmetric_with_a_unit_diagonal(emb: Embeddings) -> None:
    sim = emb.similarity()
    assert sim.shape == (len(TEXTS), len(TEXTS)) and sim.dtype == np.float32
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-5)
    np.testing.assert_allclose(sim, sim.T, atol=1e-6)


def test_similarity_with_other_has_a_column_per_other_row(emb: Embeddings) -> None:
    other = emb[[0, 3]]
    sim = emb.similarity(other)
    assert sim.shape == (len(TEXTS), 2)
    np.testing.assert_allclose(sim, emb.vectors @ other.vectors.T, atol=1e-6)
    np.testing.assert_allclose(emb.similarity(other.vectors), sim, atol=1e-6)


def test_similarity_with_other_dimensions_raises(emb: Embeddings) -> None:
    small = Embeddings(TEXTS[:2], jme.embed(TEXTS[:2], dimensions=64), MODEL)
    with pytest.raises(ValueError, match="64 dimensions but these embeddings have 384"):
        emb.similarity(small)
    with pytest.raises(ValueError, match="64 dimensions"):
        emb.similarity(small.vectors)


# -- numpy protocol -------------------------------------------------------------------------


def test_asarray_returns_the_vectors_without_copying(emb: Embeddings) -> None:
    array = np.asarray(emb)
    assert array.shape == (len(TEXTS), 384) and array.dtype == np.float32
    assert np.shares_memory(array, emb.vectors)


def test_array_with_copy_returns_an_independent_copy(emb: Embeddings) -> None:
    array = np.array(emb, copy=True)
    np.testing.assert_array_equal(array, emb.vectors)
    assert not np.shares_memory(array, emb.vectors)


def test_asarray_converts_dtype_but_refuses_copy_false_when_it_must_copy(
    emb: Embeddings,
) -> None:
    assert np.asarray(emb, dtype=np.float64).dtype == np.float64
    with pytest.raises(ValueError):
        np.asarray(emb, dtype=np.float64, copy=False)


# -- subsets --------------------------------------------------------------------------------


def test_int_index_gives_embeddings_of_one_row(emb: Embeddings) -> None:
    last = emb[-1]
    assert isinstance(last, Embeddings) and len(last) == 1
    assert last.texts == [TEXTS[-1]] and last.model == MODEL
    np.testing.assert_array_equal(last.vectors, emb.vectors[-1:])


def test_slice_gives_the_rows_in_range(emb: Embeddings) -> None:
    part = emb[1:4]
    assert part.texts == TEXTS[1:4]
    np.testing.assert_array_equal(part.vectors, emb.vectors[1:4])


def test_list_of_ints_gives_the_rows_in_that_order(emb: Embeddings) -> None:
    part = emb[[4, 0, 4]]
    assert part.texts == [TEXTS[4], TEXTS[0], TEXTS[4]]
    np.testing.assert_array_equal(part.vectors, emb.vectors[[4, 0, 4]])


def test_boolean_mask_selects_rows(emb: Embeddings) -> None:
    mask = np.array([len(text) > 55 for text in TEXTS])
    part = emb[mask]
    assert part.texts == [text for text in TEXTS if len(text) > 55]
    np.testing.assert_array_equal(part.vectors, emb.vectors[mask])


def test_out_of_range_index_and_wrong_mask_length_raise_index_error(emb: Embeddings) -> None:
    with pytest.raises(IndexError):
        emb[len(TEXTS)]
    with pytest.raises(IndexError):
        emb[np.ones(2, dtype=bool)]


# -- files ----------------------------------------------------------------------------------

UNUSUAL = [
    "émigré café naïve — 東京 🚀👩‍👩‍👧",
    "two\nlines\r\nand a\ttab",
    "  leading and trailing spaces  ",
    "",
]


def test_save_and_load_round_trip_texts_exactly(tmp_path: Path) -> None:
    vectors = np.random.default_rng(0).standard_normal((len(UNUSUAL), 8)).astype(np.float32)
    saved = Embeddings(UNUSUAL, vectors, MODEL)
    path = saved.save(tmp_path / "unusual.npz")
    loaded = Embeddings.load(path)
    assert loaded.texts == UNUSUAL and loaded.model == MODEL
    np.testing.assert_array_equal(loaded.vectors, vectors)
    assert loaded.vectors.dtype == np.float32


def test_save_round_trips_real_embeddings(emb: Embeddings, tmp_path: Path) -> None:
    loaded = Embeddings.load(emb.save(tmp_path / "emb.npz"))
    assert loaded.texts == TEXTS
    assert loaded.search(PASSWORD_QUERY, k=1)[0].index == 0


def test_save_keeps_the_path_exactly_as_given(emb: Embeddings, tmp_path: Path) -> None:
    target = tmp_path / "no-suffix"
    assert emb.save(str(target)) == target
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no-suffix"]
    assert Embeddings.load(target).texts == TEXTS


def test_save_and_load_keep_the_skipped_labels(tmp_path: Path) -> None:
    """What ``%embed -i df.text --skip-invalid`` left out survives a round trip."""
    skipped = ["row1", 3, 2.5, None]
    saved = Embeddings(["a", "b"], np.eye(2), MODEL, index=["row0", "row2"], skipped=skipped)
    loaded = Embeddings.load(saved.save(tmp_path / "skipped.npz"))
    assert loaded.skipped == skipped and loaded.index == ["row0", "row2"]


def test_load_reads_a_file_saved_without_skipped_labels(tmp_path: Path) -> None:
    import json

    meta = {"format": "jupyter-mlx-embed/embeddings", "version": 1, "model": MODEL}
    path = tmp_path / "older.npz"
    np.savez(path, vectors=np.eye(2), texts=np.array(["a", "b"]), meta=np.array(json.dumps(meta)))
    loaded = Embeddings.load(path)
    assert loaded.texts == ["a", "b"] and loaded.skipped == []


def test_load_rejects_an_npz_that_is_not_embeddings(tmp_path: Path) -> None:
    path = tmp_path / "other.npz"
    np.savez(path, vectors=np.eye(2), texts=np.array(["a", "b"]))
    with pytest.raises(ValueError, match="not a jupyter-mlx-embed embeddings file"):
        Embeddings.load(path)


def test_load_rejects_a_file_that_is_not_npz(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("just some text\n")
    with pytest.raises(ValueError, match="not a jupyter-mlx-embed embeddings file"):
        Embeddings.load(path)


def test_save_crash_leaves_the_existing_file_and_no_temp_file(
    emb: Embeddings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "emb.npz"
    target.write_bytes(b"the previous contents")

    def crash(file, **arrays) -> None:
        file.write(b"PK\x03\x04 half a zip file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        emb.save(target)
    assert target.read_bytes() == b"the previous contents"
    assert [p.name for p in tmp_path.iterdir()] == ["emb.npz"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_save_gives_the_file_the_usual_permissions(emb: Embeddings, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = emb.save(tmp_path / "emb.npz")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


# -- display --------------------------------------------------------------------------------


def test_repr_gives_count_model_and_dimensions(emb: Embeddings) -> None:
    assert repr(emb) == "Embeddings(6 texts, model='all-MiniLM-L6-v2', dimensions=384)"
    assert repr(emb[0]) == "Embeddings(1 text, model='all-MiniLM-L6-v2', dimensions=384)"


def test_repr_html_summarises_and_shows_the_first_five_texts(emb: Embeddings) -> None:
    page = emb._repr_html_()
    assert "6 texts" in page and MODEL in page and "384 dimensions" in page
    assert TEXTS[4] in page and TEXTS[5] not in page
    assert "… and 1 more" in page


def test_repr_html_escapes_and_shortens_texts() -> None:
    texts = ["<script>alert('x')</script>", "word " * 40]
    page = Embeddings(texts, np.eye(2), MODEL)._repr_html_()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert ("word " * 40).strip() not in page and "…" in page
    assert "more" not in page


def test_search_results_repr_is_a_table_of_rank_score_and_text(emb: Embeddings) -> None:
    results = emb.search(PASSWORD_QUERY, k=2)
    text = repr(results)
    assert PASSWORD_QUERY in text and "rank" in text and "score" in text
    assert f"   1  {results[0].score:6.3f}  {TEXTS[0]}" in text


def test_search_results_repr_html_escapes_query_and_texts() -> None:
    e = Embeddings(["<b>bold</b>", "plain"], np.eye(2), MODEL)
    page = e.search("<i>q</i>", k=2)._repr_html_()
    assert "<table" in page and "<b>" not in page and "<i>" not in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "&lt;i&gt;q&lt;/i&gt;" in page


def test_search_results_behave_as_a_sequence_of_hits(emb: Embeddings) -> None:
    results = emb.search(PASSWORD_QUERY, k=3)
    assert all(isinstance(hit, Hit) for hit in results)
    assert results.texts == [hit.text for hit in results]
    top = results[:1]
    assert isinstance(top, SearchResults) and len(top) == 1 and top.query == PASSWORD_QUERY


# -- pandas ---------------------------------------------------------------------------------


def test_to_pandas_has_text_and_embedding_columns(emb: Embeddings) -> None:
    pytest.importorskip("pandas")
    frame = emb.to_pandas()
    assert list(frame.columns) == ["text", "embedding"]
    assert frame["text"].tolist() == TEXTS
    cell = frame["embedding"].iloc[2]
    assert cell.dtype == np.float32 and cell.shape == (384,)
    np.testing.assert_array_equal(cell, emb.vectors[2])


def test_search_results_to_pandas_has_rank_index_score_text(emb: Embeddings) -> None:
    pytest.importorskip("pandas")
    frame = emb.search(PASSWORD_QUERY, k=2).to_pandas()
    assert list(frame.columns) == ["rank", "index", "score", "text"]
    assert frame["text"].iloc[0] == TEXTS[0] and frame["rank"].tolist() == [1, 2]


def test_to_pandas_without_pandas_says_how_to_install_it(
    emb: Embeddings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        emb.to_pandas()
    with pytest.raises(ImportError, match="pip install pandas"):
        emb.search(PASSWORD_QUERY, k=1).to_pandas()


def test_rank_of_scores_computed_once_matches_search(emb: Embeddings) -> None:
    vector = emb.vectors[3]
    ranked = emb.rank(emb.similarity(vector)[:, 0], 4, query="q")
    searched = emb.search(vector, 4)
    assert ranked.indices.tolist() == searched.indices.tolist() and ranked.query == "q"
    np.testing.assert_array_equal(ranked.scores, searched.scores)
    with pytest.raises(ValueError, match="one score per text"):
        emb.rank(np.zeros(len(emb) + 1), 2)
    with pytest.raises(ValueError, match="k must be at least 1"):
        emb.rank(np.zeros(len(emb)), 0)
