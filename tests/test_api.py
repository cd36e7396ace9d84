"""The public Python API: ``embed``, ``aembed`` and ``info`` through the process's worker."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest

import jupyter_mlx_embed as jme


@pytest.fixture(scope="module", autouse=True)
def default_worker() -> Iterator[jme.Worker]:
    worker = jme.configure()
    yield worker
    worker.close()


def test_string_gives_one_vector(corpus, reference) -> None:
    vector = jme.embed(corpus[0])
    assert vector.shape == (384,) and vector.dtype == np.float32
    assert float(vector @ reference["embeddings"][0]) >= 0.9999


@pytest.mark.parametrize("kind", [list, tuple, np.array, iter])
def test_iterables_give_a_matrix(kind, corpus, reference) -> None:
    vectors = jme.embed(kind(corpus[:3]))
    assert vectors.shape == (3, 384)
    cos = np.sum(vectors * reference["embeddings"][:3], axis=1)
    assert cos.min() >= 0.9999


def test_empty_list_gives_empty_matrix() -> None:
    assert jme.embed([]).shape == (0, 384)
    assert jme.embed([], dimensions=8).shape == (0, 8)


def test_dimensions_argument() -> None:
    vector = jme.embed("a short text", dimensions=32)
    assert vector.shape == (32,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("bad", [123, b"bytes", None, [1.5]])
def test_bad_input_types_raise_invalid_request(bad) -> None:
    with pytest.raises(jme.InvalidRequestError):
        jme.embed(bad)


def test_unknown_model_raises_not_found() -> None:
    with pytest.raises(jme.ModelNotFoundError, match="does not exist"):
        jme.embed("text", model="nobody/nothing")


def test_aembed_awaits_without_blocking_the_loop(corpus) -> None:
    async def main() -> tuple[list[np.ndarray], int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        tick_task = asyncio.ensure_future(ticker())
        vectors = await asyncio.gather(*(jme.aembed(text) for text in corpus[:12]))
        tick_task.cancel()
        return list(vectors), ticks

    vectors, ticks = asyncio.run(main())
    expected = jme.embed(corpus[:12])
    np.testing.assert_allclose(np.stack(vectors), expected, atol=2e-5)
    assert ticks > 0


def test_info_lists_versions_device_blas_and_counters() -> None:
    jme.embed("warm up")
    info = jme.info()
    assert info["version"] == jme.__version__
    assert info["mlx_version"].count(".") >= 1
    assert info["device"].startswith("Device(")
    assert info["blas"]["fast"] is True
    assert "all-MiniLM-L6-v2" in info["loaded_models"]
    assert info["queue_depth"] == 0
    assert info["tokens"] > 0 and info["batches"] > 0


def test_errors_name_the_callers_own_index() -> None:
    texts = ["fine"] * 300 + [""]
    with pytest.raises(jme.InvalidRequestError, match=r"^input\[300\] is an empty string"):
        jme.embed(texts)
    with pytest.raises(TypeError, match=r"^input\[2\] is int, not a string"):
        jme.embed(["a", "b", 3])


def test_more_texts_than_one_request_holds_are_sent_in_chunks() -> None:
    texts = [f"sentence number {i}" for i in range(2100)]  # more than max_inputs (2048)
    vectors = jme.embed(texts)
    assert vectors.shape == (2100, 384)
    np.testing.assert_allclose(vectors[2099], jme.embed(texts[2099]), atol=1e-5)


def test_empty_input_does_not_rehash_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from jupyter_mlx_embed import registry

    def hashed(path: object) -> str:
        raise AssertionError(f"embed([]) hashed {path}")

    monkeypatch.setattr(registry, "sha256_file", hashed)
    assert jme.embed([]).shape == (0, 384)
    assert jme.embed([], dimensions=5).shape == (0, 5)
