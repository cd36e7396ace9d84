"""The ``precision`` setting: bfloat16 products on the native CPU path (AVX512_BF16), checked
against references rounded the same way, whole models against float32 and
sentence-transformers, and the vector cache kept apart per precision."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jupyter_mlx_embed import Worker

from .test_native_models import PUBLISHED, compare_with_stock, random_model

pytestmark = pytest.mark.skipif(
    not (sys.platform.startswith("linux") and os.uname().machine == "x86_64"),
    reason="the native kernels are built for Linux x86-64 only",
)


def cpu_has_bf16() -> bool:
    """Whether this CPU runs AVX512_BF16 (read from /proc/cpuinfo, not from our module)."""
    return "avx512_bf16" in Path("/proc/cpuinfo").read_text()


needs_bf16 = pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU lacks AVX512_BF16")


def to_bf16(a: np.ndarray) -> np.ndarray:
    """float32 values rounded to bfloat16 (to nearest, ties to even), as float64."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return rounded.astype(np.uint32).view(np.float32).astype(np.float64)


def on_kernels(worker: Worker, fn: Callable[[Any, Any], Any]) -> Any:
    """``fn(kernels, mx)`` on the worker's MLX thread."""

    def run(engine: Any) -> Any:
        import mlx.core as mx

        assert engine._kernels is not None, engine.native_kernels.detail
        return fn(engine._kernels, mx)

    return worker.call(run).result()


def test_kernels_say_whether_they_have_bf16_products(worker: Worker) -> None:
    assert on_kernels(worker, lambda k, mx: k.has_bf16()) == cpu_has_bf16()


@needs_bf16
@pytest.mark.parametrize(
    ("rows", "depth", "cols"),
    [
        (1, 37, 75),  # an odd depth (a zero pads the last pair), cols past one panel
        (13, 384, 130),
        (250, 517, 33),  # more rows than one row block, depth over two depth blocks, odd
    ],
)
def test_bf16_products_match_a_bf16_rounded_reference(
    worker: Worker, rows: int, depth: int, cols: int
) -> None:
    rng = np.random.default_rng(rows)
    x = rng.standard_normal((rows, depth)).astype(np.float32)
    w = (rng.standard_normal((cols, depth)) / np.sqrt(depth)).astype(np.float32)
    gate = (rng.standard_normal((cols, depth)) / np.sqrt(depth)).astype(np.float32)
    bias = rng.standard_normal(cols).astype(np.float32)
    residual = rng.standard_normal((rows, cols)).astype(np.float32)

    def run(k: Any, mx: Any) -> dict[str, np.ndarray]:
        xs, bs = mx.array(x), mx.array(bias)
        packed = k.pack_linear(mx.array(w), precision="bf16")
        glu = k.pack_glu(mx.array(w), mx.array(gate), precision="bf16")
        glu_bias = k.pack_glu_bias(bs, mx.zeros((cols,)))
        assert packed.dtype == mx.bfloat16
        out = {f"plain{t}": k.linear(xs, packed, cols, bs, threads=t) for t in (1, 2)} | {
            "residual": k.linear(xs, packed, cols, residual=mx.array(residual), threads=2),
            "glu": k.linear(xs, glu, cols, glu_bias, glu="silu", threads=2),
        }
        return {name: np.array(v) for name, v in out.items()}

    got = on_kernels(worker, run)
    product = to_bf16(x) @ to_bf16(w).T
    gated = to_bf16(x) @ to_bf16(gate).T
    silu = (product + bias) / (1 + np.exp(-(product + bias)))
    expected = {
        "plain1": product + bias,
        "plain2": product + bias,
        "residual": product + residual,
        "glu": silu * gated,
    }
    for name, value in expected.items():
        error = np.abs(got[name] - value).max() / np.abs(value).max()
        assert error < 2e-6, (name, error)
    # The rounding is the products' own: float32 weights give visibly other values.
    assert (
        np.abs(got["plain1"] - (x.astype(np.float64) @ w.T.astype(np.float64) + bias)).max() > 1e-4
    )


def test_bf16_is_refused_where_the_kernels_lack_it(worker: Worker) -> None:
    def run(k: Any, mx: Any) -> list[str]:
        errors = []
        isas = k.supported_isas()
        try:
            k.set_isa("avx2")
            assert not k.has_bf16()
            for call in (
                lambda: k.pack_linear(mx.zeros((4, 8)), precision="bf16"),
                lambda: k.pack_glu(mx.zeros((4, 8)), mx.zeros((4, 8)), precision="bf16"),
                lambda: k.pack_linear(mx.zeros((4, 8)), precision="int4"),
            ):
                try:
                    call()
                except ValueError as exc:
                    errors.append(str(exc))
        finally:
            k.set_isa(isas[0])
        return errors

    errors = on_kernels(worker, run)
    assert len(errors) == 3
    assert all("AVX512_BF16" in e for e in errors[:2]), errors
    assert "precision must be 'fp32' or 'bf16'" in errors[2]


@needs_bf16
def test_one_model_is_packed_at_one_precision(worker: Worker) -> None:
    """The whole-model ops refuse weights packed at two precisions."""
    spec = worker.registry.resolve(None)

    def run(engine: Any) -> str:
        import mlx.core as mx

        k = engine._kernels
        layers = list(engine.load(spec).fast._native_layers[:12])
        dim = layers[3].shape[0]
        layers[2] = k.pack_linear(mx.eye(dim), precision="bf16")  # the output weight
        x = mx.zeros((3, dim))
        try:
            mx.eval(k.encoder(x, mx.array([0, 3]), layers, 12, 1e-12))
        except ValueError as exc:
            return str(exc)
        return "accepted"

    assert "must be packed with the precision of layers[0]" in worker.call(run).result()


@needs_bf16
@pytest.mark.parametrize(
    ("model_type", "lengths"),
    [("modernbert", [9, 40, 1, 200]), ("qwen3", [9, 40, 1, 200]), ("gemma3_text", [9, 300, 1])],
)
def test_bf16_prenorm_models_stay_close_to_the_stock_forward(
    worker: Worker, model_type: str, lengths: list[int]
) -> None:
    config = PUBLISHED[model_type]
    result = worker.call(
        lambda engine: compare_with_stock(
            random_model(model_type, config), model_type, lengths, precision="bf16"
        )
    ).result()
    assert result["mean_cos"] >= 0.999, result
    assert result["last_cos"] >= 0.999, result
    assert result["token_cos"] >= 0.99, result
