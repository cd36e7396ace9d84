"""The ``precision`` setting through the worker: reported by info(), bfloat16 vectors close
to sentence-transformers', and the vector cache kept apart per precision (a module of its
own: each test's worker must be the process's only one)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from jupyter_mlx_embed import Worker
from jupyter_mlx_embed.identity import model_identity

from .test_precision import cpu_bf16_products, cpu_has_bf16, pytestmark  # noqa: F401


def test_precision_is_reported_and_bf16_vectors_stay_close_to_sentence_transformers(
    make_worker: Callable[..., Worker], corpus: list[str], reference: dict[str, np.ndarray]
) -> None:
    w = make_worker(precision="bf16")
    info = w.info()["precision"]
    vectors = w.submit(corpus).result().vectors
    w.close()
    if not cpu_has_bf16():
        assert info["in_use"] == "fp32" and "AVX512_BF16" in info["detail"], info
        return
    assert (
        info
        == {
            "setting": "bf16",
            "in_use": "bf16",
            "detail": info["detail"],
        }
        and f"{cpu_bf16_products()[0].upper()} products" in info["detail"]
    )
    expected = reference["embeddings"]
    cosines = np.sum(vectors * expected, axis=1)
    assert cosines.min() >= 0.999, cosines.min()
    assert np.abs(vectors - expected).max() > 1e-5  # bfloat16 did run


def test_vectors_are_cached_per_precision(
    make_worker: Callable[..., Worker], tmp_path: Path, corpus: list[str]
) -> None:
    texts = corpus[:20]
    first = make_worker(precision="bf16", cache=True, cache_dir=str(tmp_path))
    spec = first.registry.resolve(None)
    bf16 = first.submit(texts).result().vectors
    first.close()
    assert model_identity(spec, precision="bf16") != model_identity(spec)
    assert model_identity(spec, precision="fp32") == model_identity(spec)
    second = make_worker(cache=True, cache_dir=str(tmp_path))
    fp32 = second.submit(texts).result().vectors
    second.close()
    fresh = make_worker()
    expected = fresh.submit(texts).result().vectors
    np.testing.assert_array_equal(fp32, expected)  # computed, not bf16's from the cache
    if cpu_has_bf16():
        assert np.abs(bf16 - fp32).max() > 1e-5


def test_int8_is_reported_and_its_vectors_stay_near_sentence_transformers(
    make_worker: Callable[..., Worker], corpus: list[str], reference: dict[str, np.ndarray]
) -> None:
    """int8 runs wherever the native kernels do (AVX2 at least): faster, and a little further
    from float32 than bf16 (BENCHMARKS.md: min cosine about 0.99 on a real corpus)."""
    w = make_worker(precision="int8")
    info = w.info()["precision"]
    vectors = w.submit(corpus).result().vectors
    w.close()
    assert info["setting"] == "int8" and info["in_use"] == "int8", info
    assert "int8 products" in info["detail"]
    cosines = np.sum(vectors * reference["embeddings"], axis=1)
    assert cosines.min() >= 0.98, cosines.min()
    assert cosines.mean() >= 0.995, cosines.mean()
