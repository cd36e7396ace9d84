"""The ``precision`` setting: bfloat16 (AVX512_BF16) and int8 (AVX2, AVX512_VNNI) products on
the native CPU path, checked against references rounded the same way, whole models against
float32 and sentence-transformers, and the vector cache kept apart per precision."""

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


def cpu_bf16_products() -> list[str]:
    """What can run bfloat16 products on this CPU (from /proc/cpuinfo), the preferred first:
    AMX tiles, AVX512_BF16."""
    flags = Path("/proc/cpuinfo").read_text()
    return [
        kind
        for kind, flag in (("amx", "amx_bf16"), ("avx512_bf16", "avx512_bf16"))
        if flag in flags
    ]


def cpu_has_int8(isa: str) -> bool:
    """Whether the ``isa`` kernels have int8 products on this CPU (from /proc/cpuinfo)."""
    return isa == "avx2" or "avx512_vnni" in Path("/proc/cpuinfo").read_text()


def to_int8(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows rounded to int8 steps of their largest magnitude / 127 (ties to even), as float64
    values and their (rows, 1) scales."""
    a = a.astype(np.float64)
    scale = np.abs(a).max(axis=1, keepdims=True) / 127
    return np.clip(np.round(a / np.where(scale == 0, 1, scale)), -127, 127), scale


#: Where a depth is a multiple of this, int8 products rotate inputs and weights in blocks
#: of this many values by the orthonormal Hadamard matrix of this order (Sylvester's).
ROTATION_BLOCK = 64


def rotated(a: np.ndarray) -> np.ndarray:
    """Rows of ``a`` rotated as the int8 products rotate them (where the depth allows)."""
    depth = a.shape[1]
    if depth % ROTATION_BLOCK:
        return a
    hadamard = np.ones((1, 1))
    while len(hadamard) < ROTATION_BLOCK:
        hadamard = np.block([[hadamard, hadamard], [hadamard, -hadamard]])
    blocks = a.astype(np.float64).reshape(len(a), depth // ROTATION_BLOCK, ROTATION_BLOCK)
    return (blocks @ hadamard / np.sqrt(ROTATION_BLOCK)).reshape(a.shape)


def to_bf16(a: np.ndarray) -> np.ndarray:
    """float32 values rounded to bfloat16 (to nearest, ties to even), as float64."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return rounded.astype(np.uint32).view(np.float32).astype(np.float64)


def operands(rows: int, depth: int, cols: int) -> dict[str, np.ndarray]:
    """Inputs, a weight, a gate, a bias and a residual of one product's shape."""
    rng = np.random.default_rng(rows)
    return {
        "x": rng.standard_normal((rows, depth)).astype(np.float32),
        "w": (rng.standard_normal((cols, depth)) / np.sqrt(depth)).astype(np.float32),
        "gate": (rng.standard_normal((cols, depth)) / np.sqrt(depth)).astype(np.float32),
        "bias": rng.standard_normal(cols).astype(np.float32),
        "residual": rng.standard_normal((rows, cols)).astype(np.float32),
    }


def products(k: Any, mx: Any, o: dict[str, np.ndarray], precision: str) -> dict[str, np.ndarray]:
    """The kernels' products at ``precision``: plain on 1 and 2 threads, onto a residual, and
    gated (SiLU)."""
    cols = o["w"].shape[0]
    xs, bs = mx.array(o["x"]), mx.array(o["bias"])
    packed = k.pack_linear(mx.array(o["w"]), precision=precision)
    glu = k.pack_glu(mx.array(o["w"]), mx.array(o["gate"]), precision=precision)
    glu_bias = k.pack_glu_bias(bs, mx.zeros((cols,)))
    assert packed.dtype == {"bf16": mx.bfloat16, "int8": mx.int8}[precision]
    out = {f"plain{t}": k.linear(xs, packed, cols, bs, threads=t) for t in (1, 2)}
    out["residual"] = k.linear(xs, packed, cols, residual=mx.array(o["residual"]), threads=2)
    out["glu"] = k.linear(xs, glu, cols, glu_bias, glu="silu", threads=2)
    return {name: np.array(v) for name, v in out.items()}


def expected_products(
    product: np.ndarray, gated: np.ndarray, o: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """What :func:`products` should give, from the reference's x @ w.T and x @ gate.T."""
    bias = o["bias"]
    silu = (product + bias) / (1 + np.exp(-(product + bias)))
    return {
        "plain1": product + bias,
        "plain2": product + bias,
        "residual": product + o["residual"],
        "glu": silu * gated,
    }


def on_kernels(worker: Worker, fn: Callable[[Any, Any], Any]) -> Any:
    """``fn(kernels, mx)`` on the worker's MLX thread."""

    def run(engine: Any) -> Any:
        import mlx.core as mx

        assert engine._kernels is not None, engine.native_kernels.detail
        return fn(engine._kernels, mx)

    return worker.call(run).result()


def test_kernels_say_whether_they_have_bf16_products(worker: Worker) -> None:
    has, kind = on_kernels(worker, lambda k, mx: (k.has_bf16(), k.bf16_products()))
    assert has == cpu_has_bf16()
    assert kind == next(iter(cpu_bf16_products()), "")


def test_bf16_products_refuse_what_the_cpu_lacks(worker: Worker) -> None:
    def run(k: Any, mx: Any) -> list[str]:
        errors = []
        for name in ("amx", "avx512_bf16", "fp16"):
            if name in cpu_bf16_products():
                continue
            try:
                k.set_bf16_products(name)
            except ValueError as exc:
                errors.append(str(exc))
        return errors

    errors = on_kernels(worker, run)
    assert len(errors) == 3 - len(cpu_bf16_products()), errors
    assert "must be 'amx' or 'avx512_bf16', got 'fp16'" in errors[-1]


@pytest.mark.parametrize("kind", ["amx", "avx512_bf16"])
@pytest.mark.parametrize(
    ("rows", "depth", "cols"),
    [
        (1, 37, 75),  # an odd depth (a zero pads the last pair), cols past one panel
        (13, 384, 130),
        (250, 517, 33),  # more rows than one row block, depth over two depth blocks, odd
        (40, 4304, 40),  # AMX: two row tiles and one more; a depth of 134.5 tile steps
    ],
)
def test_bf16_products_match_a_bf16_rounded_reference(
    worker: Worker, kind: str, rows: int, depth: int, cols: int
) -> None:
    if kind not in cpu_bf16_products():
        pytest.skip(f"this CPU lacks {kind}")
    o = operands(rows, depth, cols)
    x, w = o["x"], o["w"]

    def run(k: Any, mx: Any) -> dict[str, np.ndarray]:
        k.set_bf16_products(kind)
        try:
            return products(k, mx, o, "bf16")
        finally:
            k.set_bf16_products(cpu_bf16_products()[0])

    got = on_kernels(worker, run)
    expected = expected_products(to_bf16(x) @ to_bf16(w).T, to_bf16(x) @ to_bf16(o["gate"]).T, o)
    for name, value in expected.items():
        error = np.abs(got[name] - value).max() / np.abs(value).max()
        assert error < 2e-6, (name, error)
    # The rounding is the products' own: float32 weights give visibly other values.
    assert (
        np.abs(got["plain1"] - (x.astype(np.float64) @ w.T.astype(np.float64) + o["bias"])).max()
        > 1e-4
    )


def test_kernels_say_whether_they_have_int8_products(worker: Worker) -> None:
    def run(k: Any, mx: Any) -> dict[str, bool]:
        isas = k.supported_isas()
        try:
            found = {}
            for isa in isas:
                k.set_isa(isa)
                found[isa] = k.has_int8()
            return found
        finally:
            k.set_isa(isas[0])

    found = on_kernels(worker, run)
    assert found == {isa: cpu_has_int8(isa) for isa in found}


@pytest.mark.parametrize(
    ("rows", "depth", "cols"),
    [
        (1, 37, 75),  # a depth that is no multiple of 4 (zeros pad the last quad)
        (13, 384, 130),
        (250, 2100, 33),  # more rows than one row block, depth over two depth blocks
    ],
)
def test_int8_products_match_an_int8_rounded_reference(
    worker: Worker, rows: int, depth: int, cols: int
) -> None:
    """Every instruction set's int8 products compute the same integer sums as numpy on
    inputs and weights rotated and rounded the same way: plain, with a residual, gated, on 1
    or 2 threads; rows of zeros give zeros."""
    o = operands(rows, depth, cols)
    zero = rows // 2 if rows > 1 else None
    if zero is not None:
        o["x"][zero] = 0
    x, w, bias = o["x"], o["w"], o["bias"]

    def run(k: Any, mx: Any) -> dict[str, dict[str, np.ndarray]]:
        isas, found = k.supported_isas(), {}
        try:
            for isa in isas:
                k.set_isa(isa)
                if k.has_int8():
                    found[isa] = products(k, mx, o, "int8")
        finally:
            k.set_isa(isas[0])
        return found

    found = on_kernels(worker, run)
    assert found, "no instruction set with int8 products"
    # Inputs and weights rotated alike where the depth allows (384 here), then rounded.
    (xq, xs), (wq, ws) = to_int8(rotated(x)), to_int8(rotated(w))
    gq, gs = to_int8(rotated(o["gate"]))
    expected = expected_products((xq @ wq.T) * xs * ws.T, (xq @ gq.T) * xs * gs.T, o)
    for isa, got in found.items():
        for name, value in expected.items():
            # float32 rounding of the scaling, and inputs on a rounding tie (x * 127 / max in
            # float32 against numpy's float64 division) one step apart
            error = np.abs(got[name] - value).max() / np.abs(value).max()
            assert error < 1e-4, (isa, name, error)
        if zero is not None:
            assert np.all(got["plain1"][zero] == bias)
    # The rounding is the products' own: float32 weights give visibly other values.
    some = next(iter(found.values()))["plain1"]
    assert np.abs(some - (x.astype(np.float64) @ w.T.astype(np.float64) + bias)).max() > 1e-3


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
    assert "precision must be 'fp32', 'bf16' or 'int8'" in errors[2]


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_one_model_is_packed_at_one_precision(worker: Worker, precision: str) -> None:
    """The whole-model ops refuse weights packed at two precisions."""
    has = on_kernels(worker, lambda k, mx: {"bf16": k.has_bf16(), "int8": k.has_int8()})
    if not has[precision]:
        pytest.skip(f"the kernels in use lack {precision} products")
    spec = worker.registry.resolve(None)

    def run(engine: Any) -> str:
        import mlx.core as mx

        k = engine._kernels
        layers = list(engine.load(spec).fast._native_layers[:12])
        dim = layers[3].shape[0]
        layers[2] = k.pack_linear(mx.eye(dim), precision=precision)  # the output weight
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


@pytest.mark.parametrize(
    ("model_type", "lengths"),
    [("modernbert", [9, 40, 1, 200]), ("qwen3", [9, 40, 1, 200]), ("gemma3_text", [9, 300, 1])],
)
def test_int8_prenorm_models_stay_near_the_stock_forward(
    worker: Worker, model_type: str, lengths: list[int]
) -> None:
    if not on_kernels(worker, lambda k, mx: k.has_int8()):
        pytest.skip("the kernels in use lack int8 products")
    config = PUBLISHED[model_type]
    result = worker.call(
        lambda engine: compare_with_stock(
            random_model(model_type, config), model_type, lengths, precision="int8"
        )
    ).result()
    assert result["mean_cos"] >= 0.99, result
    assert result["last_cos"] >= 0.99, result
