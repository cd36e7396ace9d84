"""Retrieval with small vectors: top-10 overlap with float32's ranking for each
``encoding_format`` precision (and ``Embeddings.quantize``'s calibrated ranges).

The bundled all-MiniLM-L6-v2 embeds a real corpus (``corpus.py``: queries are sentences of
Python's reference manual, documents its passages and other sentences); queries and documents
are quantized alike and ranked: int8/uint8 by the dot product of their dequantized values
(``quantization.dequantize``: what a store with scalar quantization scores), binary by
Hamming similarity. Reported per format: bytes a vector and the overlap (shared documents of
the top 10 / 10), mean and min over queries. Run::

    python bench/bench_vector_formats.py [--queries N] [--passages N] [--sentences N]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import bench_models
import corpus
import numpy as np

import jupyter_mlx_embed as jme
from jupyter_mlx_embed.quantization import calibration_ranges, dequantize, quantize
from jupyter_mlx_embed.registry import bundled_model_path

TOP = 10
#: Candidates a binary search keeps for float32 rescoring (the usual recipe: 4 x k).
RESCORE = 40


def top(scores: np.ndarray) -> np.ndarray:
    return np.argsort(-scores, axis=1, kind="stable")[:, :TOP]


def hamming_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bits in common between each packed row of ``a`` and of ``b``."""
    bits_a = np.unpackbits(a.view(np.uint8), axis=1).astype(np.float32) * 2 - 1
    bits_b = np.unpackbits(b.view(np.uint8), axis=1).astype(np.float32) * 2 - 1
    return bits_a @ bits_b.T


def formats(queries: np.ndarray, docs: np.ndarray) -> dict[str, Callable[[], np.ndarray]]:
    calibrated = calibration_ranges(docs)

    def levels(precision: str, ranges: np.ndarray | None) -> np.ndarray:
        q = dequantize(quantize(queries, precision, ranges), precision, ranges)
        d = dequantize(quantize(docs, precision, ranges), precision, ranges)
        return q @ d.T

    return {
        "int8 (fixed ranges: the endpoint's)": lambda: levels("int8", None),
        "uint8 (fixed ranges)": lambda: levels("uint8", None),
        "int8 (calibrated on the documents)": lambda: levels("int8", calibrated),
        "binary / ubinary": lambda: hamming_similarity(
            quantize(queries, "ubinary"), quantize(docs, "ubinary")
        ),
        f"binary, its top {RESCORE} rescored in float32": lambda: rescored(
            hamming_similarity(quantize(queries, "ubinary"), quantize(docs, "ubinary")),
            queries @ docs.T,
        ),
    }


def rescored(coarse: np.ndarray, fine: np.ndarray) -> np.ndarray:
    """``fine`` scores for each query's best ``RESCORE`` by ``coarse``, the rest last."""
    out = np.full_like(fine, -np.inf)
    keep = np.argsort(-coarse, axis=1, kind="stable")[:, :RESCORE]
    np.put_along_axis(out, keep, np.take_along_axis(fine, keep, axis=1), axis=1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--passages", type=int, default=200)
    parser.add_argument("--sentences", type=int, default=600)
    args = parser.parse_args(argv)
    folder = bundled_model_path()
    if folder is None:
        raise SystemExit("the bundled model is not installed")
    print(f"CPU: {bench_models.cpu_description()}", flush=True)
    tok = corpus.load_tokenizer(folder)
    pool = corpus.sentences(tok, args.queries + args.sentences, seed=1)
    queries, documents = pool[: args.queries], pool[args.queries :]
    documents += corpus.paragraphs(tok, args.passages)
    jme.set_transport("local")
    jme.configure(cache=False)
    q, d = jme.embed(queries), jme.embed(documents)
    reference = top(q @ d.T)
    dims = q.shape[1]
    print(f"{len(queries)} queries, {len(documents)} documents, {dims} dimensions\n")
    print("| Format | bytes a vector | top-10 overlap, mean | top-10 overlap, min |")
    print("|---|---:|---:|---:|")
    print(f"| float32 | {4 * dims} | 1.0000 | 1.00 |")
    for name, scores in formats(q, d).items():
        got = top(scores())
        shared = np.array([len(set(a) & set(b)) / TOP for a, b in zip(got, reference, strict=True)])
        size = dims if "int8" in name else -(-dims // 8)  # binary: a bit a dimension
        print(f"| {name} | {size} | {shared.mean():.4f} | {shared.min():.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
