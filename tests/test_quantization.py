"""Small vectors for vector stores: ``encoding_format`` int8, uint8, binary and ubinary on the
HTTP endpoint (fixed ranges: a text's vector never depends on its batch), the bits
sentence-transformers gives, ``Embeddings.quantize``, and what they do to retrieval with a
trained model (the bundled all-MiniLM-L6-v2 on real prose)."""

from __future__ import annotations

import base64
import importlib.util
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import jupyter_mlx_embed as jme
from jupyter_mlx_embed.quantization import (
    calibration_ranges,
    dequantize,
    fixed_ranges,
    quantize,
)
from jupyter_mlx_embed.standalone import ThreadedServer
from jupyter_mlx_embed.worker import Worker

TOKEN = "quantization-secret"
TEXTS = [
    "The kitten chased a ball of yarn.",
    "Revenue rose twelve percent.",
    "Knead the dough, then let it rise.",
]


@pytest.fixture(scope="module")
def worker() -> Iterator[Worker]:
    jme.set_transport("local")
    worker = jme.configure(cache=False)
    yield worker
    worker.close()


@pytest.fixture(scope="module")
def server(worker: Worker) -> Iterator[str]:
    served = ThreadedServer.start(worker, port=0, token=TOKEN)
    yield served.url
    served.stop_soon().result(timeout=30)


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url + "/embeddings",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_binary_formats_are_sentence_transformers_bits() -> None:
    from sentence_transformers.util.quantization import quantize_embeddings

    vectors = np.random.default_rng(0).standard_normal((5, 100)).astype(np.float32)
    for precision in ("binary", "ubinary"):
        expected = quantize_embeddings(vectors, precision)
        got = quantize(vectors, precision)
        assert got.dtype == expected.dtype and got.shape == (5, 13)
        np.testing.assert_array_equal(got, expected)


def test_int8_levels_within_one_of_sentence_transformers() -> None:
    from sentence_transformers.util.quantization import quantize_embeddings

    vectors = np.random.default_rng(1).standard_normal((50, 64)).astype(np.float32)
    ranges = calibration_ranges(vectors)
    for precision in ("int8", "uint8"):
        expected = quantize_embeddings(vectors, precision, ranges=ranges)
        got = quantize(vectors, precision, ranges)
        assert got.dtype == expected.dtype
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
        step = (ranges[1] - ranges[0]) / 255
        assert np.all(np.abs(dequantize(got, precision, ranges) - vectors) <= step / 2 + 1e-6)


def test_values_outside_the_fixed_range_are_clipped_not_wrapped() -> None:
    half = fixed_ranges(16)[1, 0]
    vectors = np.array([[3 * half] * 8 + [-3 * half] * 8], dtype=np.float32)
    assert quantize(vectors, "int8").tolist() == [[127] * 8 + [-128] * 8]
    with pytest.raises(ValueError, match="precision must be one of"):
        quantize(vectors, "int4")
    with pytest.raises(ValueError, match=r"shape \(2, 16\)"):
        quantize(vectors, "int8", np.zeros((2, 4)))


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_endpoint_encoding_formats(server: str, precision: str) -> None:
    status, body = post(server, {"input": TEXTS, "encoding_format": precision})
    assert status == 200
    got = np.array([item["embedding"] for item in body["data"]])
    floats = jme.embed(TEXTS)
    assert got.tolist() == quantize(floats, precision).tolist()
    assert got.shape == (3, 384 if "int8" in precision else 48)
    # A text's vector is the same alone as in a batch: the ranges are fixed.
    status, alone = post(server, {"input": TEXTS[1], "encoding_format": precision})
    assert alone["data"][0]["embedding"] == got[1].tolist()


def test_endpoint_formats_with_dimensions_and_a_bad_format(server: str) -> None:
    status, body = post(server, {"input": TEXTS, "encoding_format": "int8", "dimensions": 64})
    assert status == 200
    expected = quantize(jme.embed(TEXTS, dimensions=64), "int8")  # ranges of 64 dimensions
    assert [item["embedding"] for item in body["data"]] == expected.tolist()
    status, body = post(server, {"input": TEXTS, "encoding_format": "int4"})
    assert status == 400 and body["error"]["param"] == "encoding_format"
    assert "int8, uint8, binary, ubinary" in body["error"]["message"]
    status, body = post(server, {"input": TEXTS, "encoding_format": "base64"})
    decoded = [np.frombuffer(base64.b64decode(item["embedding"]), "<f4") for item in body["data"]]
    np.testing.assert_allclose(decoded, jme.embed(TEXTS), atol=1e-6)


def test_embeddings_quantize(worker: Worker) -> None:
    from jupyter_mlx_embed.embeddings import Embeddings

    embeddings = Embeddings(TEXTS, jme.embed(TEXTS), "all-MiniLM-L6-v2")
    vectors = np.asarray(embeddings)
    np.testing.assert_array_equal(
        embeddings.quantize("int8"), quantize(vectors, "int8", calibration_ranges(vectors))
    )
    np.testing.assert_array_equal(embeddings.quantize("int8", "fixed"), quantize(vectors, "int8"))
    assert embeddings.quantize("ubinary").shape == (3, 48)
    with pytest.raises(ValueError, match="ranges must be"):
        embeddings.quantize("int8", "loose")


def _corpus() -> object:
    path = Path(__file__).parents[1] / "bench" / "corpus.py"
    spec = importlib.util.spec_from_file_location("bench_corpus", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _overlap(scores: np.ndarray, reference: np.ndarray, k: int = 10) -> float:
    got = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    ref = np.argsort(-reference, axis=1, kind="stable")[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got, ref, strict=True)]))


@pytest.mark.slow
def test_retrieval_overlap_with_float_vectors(worker: Worker) -> None:
    """Top-10 overlap with float32's ranking on real prose (bench/bench_vector_formats.py
    reports the full table: 0.995 for int8, 0.71 for binary, 0.97 rescored)."""
    from jupyter_mlx_embed.registry import bundled_model_path

    corpus = _corpus()
    tok = corpus.load_tokenizer(bundled_model_path())  # type: ignore[attr-defined]
    pool = corpus.sentences(tok, 500, seed=1)  # type: ignore[attr-defined]
    q, d = jme.embed(pool[:100]), jme.embed(pool[100:])
    reference = q @ d.T
    int8 = dequantize(quantize(q, "int8"), "int8") @ dequantize(quantize(d, "int8"), "int8").T
    assert _overlap(int8, reference) >= 0.98
    bits_q = np.unpackbits(quantize(q, "ubinary"), axis=1).astype(np.float32) * 2 - 1
    bits_d = np.unpackbits(quantize(d, "ubinary"), axis=1).astype(np.float32) * 2 - 1
    assert 0.5 <= _overlap(bits_q @ bits_d.T, reference) < 0.98
