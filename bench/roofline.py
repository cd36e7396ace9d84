"""The matrix-multiply roofline of bench_embed.py: the best sgemm rate at a BERT layer's shapes.

A BERT encoder spends nearly all of its arithmetic in six matrix products per layer (query,
key, value and attention output, hidden x hidden; feed-forward up and down, hidden x
intermediate and back). The roofline is the rate at which the BLAS that the engine binds runs
those six products for M rows (a batch's tokens), weighted as they occur in a layer, divided
by the model's FLOPs per token: no side can embed faster without fewer FLOPs or a faster
sgemm. Attention's two batched products are counted in the FLOPs at that same rate.
The same six products are also timed in ONNX Runtime (its own sgemm, MLAS), since a faster
sgemm on the machine would put its real ceiling higher than the engine's BLAS does.

Run directly, it reports which BLAS MLX bound and how fast it runs (no extra dependencies)::

    python bench/roofline.py [--rows M] [--hidden 384] [--intermediate 1536]

prints JSON: the preload and the bound BLAS, a 512^3 float32 matmul's GFLOP/s (about 100 and
more on a fast BLAS against about 5 on mlx-cpu's reference BLAS) and one layer's six products
on M rows (:class:`GemmMeter`).
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import json
import os
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

REPEATS = 7  # timed repetitions of one layer's products; the fastest counts (best we can get)
_SET_THREADS = ("scipy_openblas_set_num_threads", "openblas_set_num_threads")


def layer_shapes(hidden: int, intermediate: int) -> list[tuple[int, int]]:
    """(in, out) of the six linear layers of one BERT layer."""
    return [(hidden, hidden)] * 4 + [(hidden, intermediate), (intermediate, hidden)]


def flop_per_token(config: dict[str, Any], lengths: Sequence[int]) -> float:
    """FLOPs per real token for texts of ``lengths`` tokens (padding not counted).

    Linear layers cost the same per token; attention's scores (q k^T) and context (p v) cost
    ``4 * hidden * L`` per token of a length-``L`` text, averaged over the tokens.
    """
    hidden, layers = int(config["hidden_size"]), int(config["num_hidden_layers"])
    linear = 2 * sum(k * n for k, n in layer_shapes(hidden, int(config["intermediate_size"])))
    mean_length = sum(n * n for n in lengths) / sum(lengths)  # per-token average of L
    return float(layers * (linear + 4 * hidden * mean_length))


class GemmMeter:
    """Times sgemm through MLX on the CPU with the BLAS jupyter_mlx_embed binds (its own process).

    Two layouts are tried, and the faster counts: one product at a time with one BLAS thread
    per core, and the rows split over one CPU stream per core with one BLAS thread each (the
    engine's layout).
    """

    def __init__(self, hidden: int, intermediate: int) -> None:
        from jupyter_mlx_embed.engine import blas, blas_probe

        #: What the engine's policy loaded: done before mlx.core is imported, as it does.
        self.preloaded = blas.preload_fast_blas()
        import mlx.core as mx

        self._mx = mx
        self.blas = blas_probe.detect_bound_blas(self.preloaded)
        self._cores = os.cpu_count() or 1
        process = ctypes.CDLL(None)
        setters = [getattr(process, name, None) for name in _SET_THREADS]
        self._set_threads = next((f for f in setters if f is not None), None)
        self._weights = [
            mx.random.normal((n, k)) * k**-0.5 for k, n in layer_shapes(hidden, intermediate)
        ]
        mx.eval(self._weights)

    def _layer_seconds(self, m: int, streams: int) -> float:
        mx = self._mx
        parts = [(mx.new_stream(mx.cpu), m // streams + (i < m % streams)) for i in range(streams)]
        inputs = [
            [mx.random.normal((rows, w.shape[1])) for w in self._weights] for _, rows in parts
        ]
        mx.eval(inputs)
        best = float("inf")
        for repeat in range(REPEATS + 2):  # two untimed warm-ups
            start = time.perf_counter()
            outputs = [
                mx.matmul(x, w.T, stream=stream)
                for (stream, _), xs in zip(parts, inputs, strict=True)
                for x, w in zip(xs, self._weights, strict=True)
            ]
            mx.eval(outputs)
            if repeat >= 2:
                best = min(best, time.perf_counter() - start)
        return best

    def gflops(self, m: int) -> dict[str, float]:
        """GFLOP/s of one layer's six products on ``m`` rows, per layout and the best."""
        flop = 2 * m * sum(int(w.shape[0] * w.shape[1]) for w in self._weights)
        rates = {}
        layouts = [1] if self._set_threads is None else [1, self._cores]
        for streams in layouts:
            if self._set_threads is not None:
                self._set_threads(self._cores // streams)
            threads = "default" if self._set_threads is None else self._cores // streams
            name = f"{streams} stream(s) x {threads} BLAS thread(s)"
            rates[name] = flop / self._layer_seconds(m, streams) / 1e9
        rates["best"] = max(rates.values())
        return rates


def square_gflops(mx: Any, n: int = 512, repeats: int = 5) -> float:
    """GFLOP/s of an n x n by n x n float32 matmul through MLX (median of ``repeats``, after
    two warm-ups): the quick check of which BLAS MLX runs."""
    a, b = mx.random.normal((n, n)), mx.random.normal((n, n))
    mx.eval(a, b)
    for _ in range(2):
        mx.eval(a @ b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        mx.eval(a @ b)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


class MlasMeter:
    """Times the same six products as :class:`GemmMeter` in ONNX Runtime (MLAS, default threads)."""

    def __init__(self, hidden: int, intermediate: int) -> None:
        import onnxruntime
        from onnx import TensorProto, helper, numpy_helper

        self._shapes = layer_shapes(hidden, intermediate)
        rng = np.random.default_rng(0)
        weights, nodes = [], []
        for i, (k, n) in enumerate(self._shapes):
            w = rng.standard_normal((k, n), dtype=np.float32) * np.float32(k**-0.5)
            weights.append(numpy_helper.from_array(w, f"w{i}"))
            nodes.append(helper.make_node("MatMul", [f"x{k}", f"w{i}"], [f"y{i}"]))
        widths = sorted({k for k, _ in self._shapes})
        graph = helper.make_graph(
            nodes,
            "bert_layer_products",
            [helper.make_tensor_value_info(f"x{k}", TensorProto.FLOAT, ["m", k]) for k in widths],
            [
                helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, ["m", n])
                for i, (_, n) in enumerate(self._shapes)
            ],
            weights,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        self._session = onnxruntime.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        self._widths = widths

    def gflops(self, m: int) -> float:
        """GFLOP/s of one layer's six products on ``m`` rows (fastest of the repeats)."""
        rng = np.random.default_rng(m)
        feed = {f"x{k}": rng.standard_normal((m, k), dtype=np.float32) for k in self._widths}
        best = float("inf")
        for repeat in range(REPEATS + 2):  # two untimed warm-ups
            start = time.perf_counter()
            self._session.run(None, feed)
            if repeat >= 2:
                best = min(best, time.perf_counter() - start)
        return 2 * m * sum(k * n for k, n in self._shapes) / best / 1e9


def main(argv: list[str] | None = None) -> int:
    """Print the bound BLAS and its GFLOP/s as JSON (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=32 * 24, help="rows of the layer (768)")
    parser.add_argument("--hidden", type=int, default=384, help="hidden size (384)")
    parser.add_argument("--intermediate", type=int, default=1536, help="feed-forward (1536)")
    args = parser.parse_args(argv)
    meter = GemmMeter(args.hidden, args.intermediate)
    preloaded = meter.preloaded
    report = {
        "preload": dataclasses.asdict(preloaded) if preloaded else None,
        "bound": dataclasses.asdict(meter.blas),
        "matmul_512_gflops": round(square_gflops(meter._mx), 1),
        "layer_gflops": {k: round(v, 1) for k, v in meter.gflops(args.rows).items()},
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
