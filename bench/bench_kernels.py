"""The C++ kernels of the CPU fast path against the MLX-op path they replace, in one process.

Run it directly (no extra dependencies)::

    python bench/bench_kernels.py [--rounds N] [--streams N] [--isa avx2|avx512] [--json OUT]

Two parts, each taking turns between the variants round by round (the machine drifts, so only
the ratios measured here mean anything; >1: the native kernels are faster):

- per op, ns per element of its output, at the model's shapes for one sentence of 23 tokens
  and one stream's share of 32 rows of 24 and of 200 tokens (all-MiniLM-L6-v2: 384 wide, 12
  heads, 1536 in the feed-forward; with 4 streams, 8 rows), each on one thread: the fused
  QKV product (native on packed weights / MLX's matmul on the bound BLAS), the feed-forward's
  up product + bias + GELU (native, fused / BLAS then the MLX-op rational-erf GELU compiled /
  BLAS then ``nn.gelu``), residual add + LayerNorm
  (native / the op-by-op LayerNorm of ``cpu_kernels`` / ``mx.fast.layer_norm``), attention
  from the fused projection of unpadded rows, head split included (native /
  ``cpu_kernels.attention`` compiled);
- end to end, ``Engine.embed`` on the bundled model for batches of 32 x 24 and 32 x 200
  tokens (real text): tokens per second of wall time and per second of process CPU time
  (the work of all streams; less disturbed by other load) with and without the native
  kernels, the minimum cosine
  between their vectors, and the share of the GEMM floor each reaches (the time of the
  forward's matrix products alone, at the same shapes on the same streams, divided by the
  forward's time: 100% would mean nothing but the BLAS costs time).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import corpus
import numpy as np

from jupyter_mlx_embed.config import EngineConfig
from jupyter_mlx_embed.engine import native
from jupyter_mlx_embed.engine.mlx_engine import Engine
from jupyter_mlx_embed.registry import ModelRegistry

DIM, HEADS, HIDDEN = 384, 12, 1536
SHAPES = ((32, 24), (32, 200))
OP_SHAPES = ((1, 23), *SHAPES)  # the ops also at one sentence's rows


def best_time(fn: Callable[[], Any], mx: Any, repeats: int) -> float:
    """Best wall time of ``repeats`` evaluated calls, seconds (after one warm-up call)."""
    mx.eval(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        mx.eval(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def op_cases(mx: Any, kernels: Any, batch: int, length: int) -> dict[str, dict[str, Any]]:
    """Per op: output size and the variants, each a no-argument callable building the op."""
    import mlx.nn as nn

    from jupyter_mlx_embed.engine import cpu_kernels

    rows = batch * length
    x, w_i, bias = (
        mx.random.normal((rows, DIM)),
        mx.random.normal((HIDDEN, DIM)),
        mx.random.normal((HIDDEN,)),
    )
    w_qkv = mx.random.normal((3 * DIM, DIM))
    packed_i, packed_qkv_w = kernels.pack_linear(w_i), kernels.pack_linear(w_qkv)
    h, res = mx.random.normal((rows, DIM)), mx.random.normal((rows, DIM))
    b, g, beta = (mx.random.normal((DIM,)) for _ in range(3))
    # Attention on rows without padding (what packing gains is the end-to-end part's).
    qkv = mx.random.normal((batch, length, 3 * DIM)) * 0.3
    packed_qkv = qkv.reshape(rows, 3 * DIM)
    offsets = mx.arange(0, rows + 1, length, dtype=mx.int32)
    key_mask = mx.zeros((batch, 1, length, 1))
    mean_weights = mx.full((DIM, 1), 1.0 / DIM)
    gelu_ops = mx.compile(lambda y, bb: cpu_kernels.gelu(y + bb))
    attend_ops = mx.compile(
        lambda t, m: cpu_kernels.attention(
            *(
                t[..., i * DIM : (i + 1) * DIM]
                .reshape(batch, length, HEADS, DIM // HEADS)
                .transpose(0, 2, 1, 3)
                for i in range(3)
            ),
            m,
        ).reshape(batch, length, DIM)
    )

    def norm_ops() -> Any:
        x = h + (res + b)
        centred = x - x @ mean_weights
        scale = mx.rsqrt(mx.square(centred) @ mean_weights + 1e-12)
        return centred * scale * g + beta

    return {
        "QKV product": {
            "elements": rows * 3 * DIM,
            "native": lambda: kernels.linear(x, packed_qkv_w, 3 * DIM),
            "BLAS matmul": lambda: x @ w_qkv.T,
        },
        "up product+bias+GELU": {
            "elements": rows * HIDDEN,
            "native": lambda: kernels.linear(x, packed_i, HIDDEN, bias, gelu=True),
            "BLAS + MLX ops (compiled)": lambda: gelu_ops(x @ w_i.T, bias),
            "BLAS + nn.gelu": lambda: nn.gelu(x @ w_i.T + bias),
        },
        "add+LayerNorm": {
            "elements": rows * DIM,
            "native": lambda: kernels.add_layernorm(h, res, b, g, beta, 1e-12),
            "MLX ops": norm_ops,
            "mx.fast.layer_norm": lambda: mx.fast.layer_norm(h + res + b, g, beta, 1e-12),
        },
        "attention": {
            "elements": rows * DIM,
            "native": lambda: kernels.attention(packed_qkv, offsets, HEADS),
            "MLX ops (compiled)": lambda: attend_ops(qkv, key_mask),
        },
    }


def bench_ops(mx: Any, kernels: Any, rounds: int, streams: int) -> list[dict[str, Any]]:
    results = []
    for rows, length in OP_SHAPES:
        batch = max(1, rows // streams)  # one stream's share, as the forward runs them
        for op, case in op_cases(mx, kernels, batch, length).items():
            elements = case.pop("elements")
            per_round: dict[str, list[float]] = {name: [] for name in case}
            for _ in range(rounds):
                for name, fn in case.items():
                    per_round[name].append(best_time(fn, mx, 5) / elements * 1e9)
            ns = {name: statistics.median(v) for name, v in per_round.items()}
            ratios = {
                name: statistics.median(
                    o / n for o, n in zip(per_round[name], per_round["native"], strict=True)
                )
                for name in case
                if name != "native"
            }
            results.append({"shape": f"{batch}x{length}", "op": op, "ns": ns, "ratios": ratios})
            cells = ", ".join(f"{name} {value:.2f}" for name, value in ns.items())
            speedups = ", ".join(f"{value:.1f}x vs {name}" for name, value in ratios.items())
            print(f"{batch}x{length:<4} {op:<14} ns/element: {cells}  | native {speedups}")
    return results


def token_rows(tok: Any, batch: int, length: int) -> list[list[int]]:
    """``batch`` rows of exactly ``length`` real token ids (passages cut, [CLS] ... [SEP])."""
    texts = corpus.paragraphs(tok, batch, lo=max(length, 128), hi=256)
    ids = [enc.ids for enc in tok.encode_batch(texts, add_special_tokens=True)]
    return [[*row[: length - 1], row[-1]] for row in ids]


def gemm_floor(mx: Any, model: Any, tokens: int, streams: int) -> Callable[[], list[Any]]:
    """The forward's matrix products alone (the model's weights, ``tokens`` rows cut into
    ``streams`` parts on their own streams, as the fast path runs them): its time is the
    floor that the BLAS sets, measured in the same run as the forward passes."""
    parts = [len(p) for p in np.array_split(np.arange(tokens), streams)]
    queues = [mx.new_stream(mx.cpu) for _ in parts]
    inputs = [mx.random.normal((rows, DIM)) for rows in parts]
    layers = [
        (
            mx.concatenate([a.query.weight, a.key.weight, a.value.weight]),
            layer.attention.output.dense.weight,
            layer.intermediate.dense.weight,
            layer.output.dense.weight,
        )
        for layer in model.encoder.layer
        for a in [layer.attention.self]
    ]

    def run() -> list[Any]:
        outputs = []
        for x, queue in zip(inputs, queues, strict=True):
            with mx.stream(queue):
                for w_qkv, w_o, w_i, w_d in layers:
                    outputs += [x @ w_qkv.T, x @ w_o.T]
                    x = (x @ w_i.T) @ w_d.T
                outputs.append(x)
        return outputs

    return run


def bench_forward(engine: Engine, loaded: Any, kernels: Any, rounds: int) -> list[dict[str, Any]]:
    import mlx.core as mx

    from jupyter_mlx_embed.engine.cpu_kernels import FastEncoder
    from jupyter_mlx_embed.engine.mlx_engine import _build_model

    streams = engine._config.cpu_streams
    # A copy of the stock model: the engine's own let its layers' matrices go once packed.
    stock = _build_model(mx, loaded.spec)
    stock.set_dtype(mx.float32)
    variants = {
        "native": FastEncoder(stock, loaded.spec.model_type, streams, kernels=kernels),
        "MLX ops": FastEncoder(stock, loaded.spec.model_type, streams),
    }
    tok = corpus.load_tokenizer(loaded.spec.path)
    return [
        forward_shape(engine, loaded, variants, token_rows(tok, batch, length), rounds)
        for batch, length in SHAPES
    ]


def forward_shape(
    engine: Engine, loaded: Any, variants: dict[str, Any], rows: list[list[int]], rounds: int
) -> dict[str, Any]:
    """Wall and CPU time of ``Engine.embed(rows)`` per variant and of the GEMM floor."""
    import mlx.core as mx

    batch, length = len(rows), len(rows[0])
    tokens = batch * length
    vectors = {}
    for name, fast in variants.items():
        loaded.fast = fast
        vectors[name] = engine.embed(loaded, rows)  # warm-up (traces the MLX-op path)
    floor = gemm_floor(mx, loaded.model, tokens, engine._config.cpu_streams)
    mx.eval(floor())

    def embed_with(fast: Any) -> None:
        loaded.fast = fast
        engine.embed(loaded, rows)

    runs: dict[str, Callable[[], Any]] = {
        **{name: lambda fast=fast: embed_with(fast) for name, fast in variants.items()},
        "GEMMs only": lambda: mx.eval(floor()),
    }
    # Per round and variant: (wall, process CPU) seconds per pass. CPU time counts the work
    # of all the streams' threads, and a busy machine disturbs it less than wall time.
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    repeats = 3 if length > 100 else 10
    for _ in range(rounds):
        for name, run in runs.items():
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(repeats):
                run()
            times[name].append(
                ((time.perf_counter() - wall) / repeats, (time.process_time() - cpu) / repeats)
            )

    def paired(a: str, b: str, clock: int) -> list[float]:
        return [x[clock] / y[clock] for x, y in zip(times[a], times[b], strict=True)]

    cos = float(np.min(np.sum(vectors["native"] * vectors["MLX ops"], axis=1)))
    result: dict[str, Any] = {"shape": f"{batch}x{length}", "min_cos": cos}
    for clock, label in ((0, "wall"), (1, "cpu")):
        ratios = paired("MLX ops", "native", clock)
        rates = {name: tokens / statistics.median(t[clock] for t in times[name]) for name in runs}
        # GEMM-only time / forward time: how close each variant gets to the BLAS floor.
        share = {name: statistics.median(paired("GEMMs only", name, clock)) for name in variants}
        result[label] = {
            "tokens_per_s": rates,
            "native_speedup": statistics.median(ratios),
            "native_speedup_range": [min(ratios), max(ratios)],
            "gemm_floor_share": share,
        }
        print(
            f"forward {batch}x{length:<4} {label:<4} tokens/s: native {rates['native']:,.0f}, "
            f"MLX ops {rates['MLX ops']:,.0f}, GEMMs only {rates['GEMMs only']:,.0f} | native "
            f"{statistics.median(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}]; GEMM "
            f"floor share: native {share['native']:.0%}, MLX ops {share['MLX ops']:.0%}"
        )
    # Cores busy (CPU time / wall time): below the cores the streams could use, the machine
    # was shared with other work and the wall-time ratios are unreliable.
    busy = {name: statistics.median(c / w for w, c in times[name]) for name in runs}
    result["cores_busy"] = busy
    print(
        f"forward {batch}x{length:<4} min cos native vs MLX ops {cos:.7f}; cores busy: "
        + ", ".join(f"{name} {value:.2f}" for name, value in busy.items())
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--streams", type=int, default=EngineConfig().cpu_streams)
    parser.add_argument("--isa", choices=("avx2", "avx512"), default=None)
    parser.add_argument("--skip-ops", action="store_true", help="end to end only")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    engine = Engine(EngineConfig(cpu_streams=args.streams))  # preloads the BLAS, imports MLX
    import mlx.core as mx

    kernels = native.load_kernels()
    if kernels is None:
        print(f"native kernels unavailable: {native.kernels_info().detail}", file=sys.stderr)
        return 1
    if args.isa:
        kernels.set_isa(args.isa)
    print(f"kernels: {kernels.isa()}, BLAS: {engine.blas.name}, streams: {args.streams}")
    report: dict[str, Any] = {"isa": kernels.isa(), "streams": args.streams}
    if not args.skip_ops:
        report["ops"] = bench_ops(mx, kernels, args.rounds, args.streams)
    loaded = engine.load(ModelRegistry(EngineConfig()).resolve(None))
    report["forward"] = bench_forward(engine, loaded, kernels, args.rounds)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
