"""The native transformer (engine/native_models.py: ModernBERT, Qwen3, Gemma 3, NomicBERT) and the
ops it is made of: each op against MLX's own ops, the whole model against the MLX forward it
replaces (mlx-embeddings', or engine/architectures' for Gemma 3) on the tiny models and on
random models at the published shapes (tests/real_models.py's configs, fewer layers), and the
AVX2 kernels in a child process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jupyter_mlx_embed import Worker
from jupyter_mlx_embed.engine import native

from .real_models import model_config

pytestmark = pytest.mark.skipif(
    not (sys.platform.startswith("linux") and os.uname().machine == "x86_64"),
    reason="the native kernels are built for Linux x86-64 only",
)

# Odd sizes on purpose: not multiples of the 8- and 16-float vectors, and a row of 1 token.
LENGTHS = [1, 7, 17, 33, 2, 64]
THREADS = (1, 2, 3)


def published(name: str, layers: int) -> dict[str, Any]:
    """A published config.json (tests/real_models.py) with fewer layers and a small
    vocabulary: the shapes of every layer, at what the tests can afford."""
    return {**model_config(name, layers), "vocab_size": 512}


#: gte-modernbert-base: a global layer (0, 3) before and after two local ones.
GTE_MODERNBERT = published("gte-modernbert-base", 4)
#: Qwen3-Embedding-0.6B: 16 query and 8 key/value heads of 128, causal.
QWEN3_EMBEDDING = published("Qwen3-Embedding-0.6B", 2)
#: embeddinggemma-300m: five sliding-window layers (257 positions both ways), then a full one.
EMBEDDINGGEMMA = published("embeddinggemma-300m", 6)
#: nomic-embed-text-v1.5: post-norm, rotary (base 1000), SwiGLU, nomic's own config keys.
NOMIC_EMBED = published("nomic-embed-text-v1.5", 2)
PUBLISHED = {
    "modernbert": GTE_MODERNBERT,
    "qwen3": QWEN3_EMBEDDING,
    "gemma3_text": EMBEDDINGGEMMA,
    "nomic_bert": NOMIC_EMBED,
}


def on_worker(worker: Worker, fn: Callable[[Any, Any], Any]) -> dict[str, Any]:
    """Run ``fn(kernels, mx)`` on the worker's MLX thread, once per instruction set."""

    def run(engine: Any) -> Any:
        import mlx.core as mx

        kernels = engine._kernels
        assert kernels is not None, engine.native_kernels.detail
        results = {}
        try:
            for isa in kernels.supported_isas():
                kernels.set_isa(isa)
                results[isa] = fn(kernels, mx)
        finally:
            kernels.set_isa(kernels.supported_isas()[0])
        return results

    return dict(worker.call(run).result())


def packed_offsets(lengths: list[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)


# ------------------------------------------------------------------------------------------
# Ops
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["layer", "layer-no-bias", "layer-no-affine", "rms"])
def test_norm_matches_mlx_norms(worker: Worker, kind: str) -> None:
    def check(k: Any, mx: Any) -> float:
        worst = 0.0
        for rows, cols in ((1, 8), (13, 37), (40, 768)):
            x = mx.random.normal((rows, cols)) * 3 + 1
            w, b = mx.random.normal((cols,)), mx.random.normal((cols,))
            for threads in THREADS:
                if kind == "rms":
                    got = k.norm(x, w, None, 1e-6, rms=True, threads=threads)
                    expected = mx.fast.rms_norm(x, w, 1e-6)
                else:
                    weight = None if kind == "layer-no-affine" else w
                    bias = b if kind == "layer" else None
                    got = k.norm(x, weight, bias, 1e-5, threads=threads)
                    expected = mx.fast.layer_norm(x, weight, bias, 1e-5)
                worst = max(worst, float(mx.abs(got - expected).max()))
        return worst

    for isa, error in on_worker(worker, check).items():
        assert error < 1e-5, isa


@pytest.mark.parametrize("activation", ["gelu", "silu", "gelu_tanh"])
def test_gated_linear_matches_activation_times_gate(worker: Worker, activation: str) -> None:
    """The gated product (weights packed by pack_glu, the activation in the product's tile)
    against MLX's activations: outputs that are no multiple of a half panel, rows that are no
    multiple of a tile, biases, the residual added, and one to three threads."""

    def check(k: Any, mx: Any) -> float:
        import mlx.nn as nn

        act = {"gelu": nn.gelu, "silu": nn.silu, "gelu_tanh": nn.gelu_approx}[activation]
        worst = 0.0
        for cols, depth, rows in ((5, 3, 1), (37, 17, 7), (64, 33, 13), (1152, 768, 25)):
            a, g = mx.random.normal((cols, depth)), mx.random.normal((cols, depth))
            a_bias, g_bias = mx.random.normal((cols,)), mx.random.normal((cols,))
            x, residual = mx.random.normal((rows, depth)), mx.random.normal((rows, cols))
            packed, bias = k.pack_glu(a, g), k.pack_glu_bias(a_bias, g_bias)
            expected = act(x @ a.T + a_bias) * (x @ g.T + g_bias) + residual
            scale = float(mx.abs(expected).max())
            for threads in THREADS:
                got = k.linear(
                    x, packed, cols, bias, threads=threads, glu=activation, residual=residual
                )
                worst = max(worst, float(mx.abs(got - expected).max()) / scale)
            plain = k.linear(x, packed, cols, glu=activation)
            worst = max(worst, float(mx.abs(plain - act(x @ a.T) * (x @ g.T)).max()) / scale)
        return worst

    for isa, error in on_worker(worker, check).items():
        assert error < 2e-5, isa


def test_linear_adds_the_residual(worker: Worker) -> None:
    def check(k: Any, mx: Any) -> float:
        w, bias = mx.random.normal((75, 37)), mx.random.normal((75,))
        x, residual = mx.random.normal((3, 5, 37)), mx.random.normal((3, 5, 75))
        expected = x @ w.T + bias + residual
        return max(
            float(
                mx.abs(
                    k.linear(x, k.pack_linear(w), 75, bias, threads=t, residual=residual) - expected
                ).max()
            )
            for t in THREADS
        )

    for isa, error in on_worker(worker, check).items():
        assert error < 1e-4, isa


def reference_attention(
    mx: Any,
    qkv: Any,
    lengths: list[int],
    heads: int,
    kv_heads: int,
    window: int = -1,
    causal: bool = False,
    q_norm: Any = None,
    k_norm: Any = None,
    theta: float = 0.0,
) -> Any:
    """Attention of each packed sequence on its own with MLX's ops: RMSNorm, mx.fast.rope,
    the key/value heads repeated, and a mask of the window and causal order."""
    width = qkv.shape[1] // (heads + 2 * kv_heads)
    outputs, at = [], 0
    for n in lengths:
        rows = qkv[at : at + n]
        at += n

        def split(first: int, count: int, rows: Any = rows, n: int = n) -> Any:
            part = rows[:, first * width : (first + count) * width]
            return part.reshape(n, count, width).transpose(1, 0, 2)

        q, k, v = split(0, heads), split(heads, kv_heads), split(heads + kv_heads, kv_heads)
        if q_norm is not None:
            q, k = mx.fast.rms_norm(q, q_norm, 1e-6), mx.fast.rms_norm(k, k_norm, 1e-6)
        if theta:
            q, k = (
                mx.fast.rope(t, width, traditional=False, base=theta, scale=1.0, offset=0)
                for t in (q, k)
            )
        k, v = (mx.repeat(t, heads // kv_heads, axis=0) for t in (k, v))
        i = np.arange(n)
        allowed = np.ones((n, n), dtype=bool)
        if window >= 0:
            allowed &= np.abs(i[:, None] - i[None, :]) <= window
        if causal:
            allowed &= i[None, :] <= i[:, None]
        mask = mx.array(np.where(allowed, 0.0, -np.inf).astype(np.float32))
        weights = mx.softmax(q @ k.transpose(0, 2, 1) + mask, axis=-1)
        outputs.append((weights @ v).transpose(1, 0, 2).reshape(n, heads * width))
    return mx.concatenate(outputs)


@pytest.mark.parametrize(
    ("heads", "kv_heads", "width"), [(4, 2, 8), (3, 3, 20), (16, 8, 128), (3, 1, 12)]
)
@pytest.mark.parametrize(
    ("window", "causal", "norms", "theta"),
    [
        (-1, False, False, 0.0),  # BERT-like, with grouped key/value heads
        (-1, True, True, 1e6),  # Qwen3
        (64, False, False, 160000.0),  # a ModernBERT local layer (mostly wider than these)
        (5, False, False, 1e4),  # a window shorter than most sequences
        (3, True, True, 10.0),  # causal and windowed, a fast rotation
        (0, False, True, 0.0),  # each token sees itself only
    ],
)
def test_attention_matches_masked_softmax_per_sequence(
    worker: Worker,
    heads: int,
    kv_heads: int,
    width: int,
    window: int,
    causal: bool,
    norms: bool,
    theta: float,
) -> None:
    """Packed sequences of different lengths (1 token included), grouped key/value heads,
    sliding windows shorter and longer than the sequences, causal masks, per-head RMSNorm
    and rotary embeddings, on one to three threads."""
    batches = [LENGTHS, [1], [130, 3]]

    def check(k: Any, mx: Any) -> float:
        worst = 0.0
        for lengths in batches:
            qkv = mx.random.normal((sum(lengths), (heads + 2 * kv_heads) * width))
            qkv = qkv * mx.concatenate(  # scaled queries, as a model's
                [mx.full((heads * width,), width**-0.5), mx.ones((2 * kv_heads * width,))]
            )
            q_norm = (1 + 0.1 * mx.random.normal((width,))) * width**-0.5 if norms else None
            k_norm = 1 + 0.1 * mx.random.normal((width,)) if norms else None
            expected = reference_attention(
                mx, qkv, lengths, heads, kv_heads, window, causal, q_norm, k_norm, theta
            )
            offsets = mx.array(packed_offsets(lengths))
            for threads in THREADS:
                got = k.attention(
                    qkv,
                    offsets,
                    heads,
                    None,
                    threads,
                    kv_heads=kv_heads,
                    window=window,
                    causal=causal,
                    q_norm=q_norm,
                    k_norm=k_norm,
                    norm_eps=1e-6,
                    rope_theta=theta,
                )
                worst = max(worst, float(mx.abs(got - expected).max()))
        return worst

    for isa, error in on_worker(worker, check).items():
        assert error < 2e-5, isa


def test_bad_arguments_are_named(worker: Worker) -> None:
    def check(k: Any, mx: Any) -> list[str]:
        messages = []
        x = mx.zeros((3, 8))
        glu = k.pack_glu(mx.zeros((5, 8)), mx.zeros((5, 8)))
        offsets = mx.array([0, 3])
        settings: dict[str, Any] = {
            "heads": 2,
            "kv_heads": 2,
            "head_dim": 4,
            "norm": "layer",
            "eps": 1e-5,
            "activation": "gelu",
            "causal": False,
            "windows": [-1],
            "rope_thetas": [0.0],
        }
        for call in (
            lambda: k.norm(x, mx.ones((7,))),
            lambda: k.attention(mx.zeros((4, 40)), mx.array([0, 4]), 4, kv_heads=3),
            lambda: k.attention(mx.zeros((4, 36)), mx.array([0, 4]), 4, kv_heads=2),
            lambda: k.attention(mx.zeros((4, 30)), mx.array([0, 4]), 2, rope_theta=1e4),
            lambda: k.linear(x, glu, 5, glu="relu"),
            lambda: k.linear(x, glu, 33, glu="silu"),
            lambda: k.linear(x, glu, 5, mx.zeros((5,)), glu="silu"),
            lambda: k.pack_glu(mx.zeros((5, 8)), mx.zeros((6, 8))),
            lambda: k.transformer(x, offsets, [None] * 4, [None] * 18, **settings),
            lambda: k.transformer(
                x, offsets, [None] * 4, [None] * 18, **{**settings, "norm": "batch"}
            ),
            lambda: k.transformer(
                x, offsets, [None] * 4, [None] * 18, **{**settings, "windows": [-1, -1]}
            ),
        ):
            with pytest.raises(ValueError) as caught:
                call()
            messages.append(str(caught.value))
        return messages

    for messages in on_worker(worker, check).values():
        assert messages[0].startswith("weight must have shape (8,)")
        assert messages[1].startswith("heads must be a multiple of kv_heads")
        assert "(heads + 2 * kv_heads) * head width" in messages[2]
        assert messages[3].startswith("rope_theta needs an even head width")
        assert messages[4].startswith("activation must be 'gelu', 'silu' or 'gelu_tanh'")
        assert messages[5].startswith("cols must be the packed weight's output features")
        assert messages[6].startswith("bias (from pack_glu_bias) must have shape")
        assert messages[7].startswith("activated and gate must be (out, in) weights")
        assert messages[8].startswith("layers[2] is required")
        assert messages[9].startswith("norm must be 'layer' or 'rms'")
        assert messages[10].startswith("layers must hold 18 arrays or None per layer")


# ------------------------------------------------------------------------------------------
# Whole models
# ------------------------------------------------------------------------------------------


def random_model(model_type: str, config: dict[str, Any], seed: int = 0) -> Any:
    """The engine's model of ``model_type`` with random weights (norms near 1), float32."""
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_unflatten

    from jupyter_mlx_embed.engine.mlx_engine import _architecture

    arch = _architecture(model_type)
    model = arch.Model(arch.ModelArgs.from_dict(config))
    rng = np.random.default_rng(seed)
    weights = []
    for name, param in tree_flatten(model.parameters()):
        shape = tuple(param.shape)
        if ("norm" in name or "_ln" in name) and name.endswith("weight"):  # Gemma's: from 1
            value = (model_type != "gemma3_text") + 0.1 * rng.standard_normal(shape)
        elif name.endswith("bias"):
            value = 0.1 * rng.standard_normal(shape)
        else:  # about unit-variance outputs, as trained layers have
            value = rng.standard_normal(shape) / np.sqrt(shape[-1] if len(shape) > 1 else 1)
        weights.append((name, mx.array(value.astype(np.float32))))
    model.update(tree_unflatten(weights))
    mx.eval(model.parameters())
    model.eval()
    return model


def stock_hidden(model: Any, model_type: str, ids: Any, mask: Any) -> Any:
    """The stock forward's last hidden state (the engine's ``_hidden``: mlx-embeddings', or
    engine/architectures' for gemma3_text)."""
    if model_type in ("gemma3_text", "nomic_bert"):
        return model(ids, attention_mask=mask)
    if model_type == "qwen3":
        return model.model(ids, attention_mask=mask)
    return model.model(ids, attention_mask=mask, return_dict=True)["last_hidden_state"]


def compare_with_stock(
    model: Any, model_type: str, lengths: list[int], streams: int = 2, precision: str = "fp32"
) -> dict[str, float]:
    """Minimum cosine and largest relative difference between the native (products at
    ``precision``) and the stock hidden states of every real token of a right-padded batch,
    and of the last-token and mean vectors (on the caller's MLX thread)."""
    import mlx.core as mx

    from jupyter_mlx_embed.engine import native as native_module
    from jupyter_mlx_embed.engine.native_models import PreNormEncoder, prenorm_encoder

    kernels = native_module.load_kernels()
    encoder = prenorm_encoder(model, model_type, kernels, streams, precision=precision)
    assert isinstance(encoder, PreNormEncoder)
    rng = np.random.default_rng(len(lengths))
    longest = max(lengths)
    vocab = encoder._embeddings.shape[0]
    ids = rng.integers(0, vocab, size=(len(lengths), longest)).astype(np.int32)
    mask = (np.arange(longest)[None, :] < np.array(lengths)[:, None]).astype(np.float32)
    ids[mask == 0] = 0
    # Hidden states as they come, each part's padded to the batch's longest (parts are padded
    # to their own).
    got = np.array(
        encoder(ids, mask, lambda h, m: mx.pad(h, [(0, 0), (0, longest - h.shape[1]), (0, 0)]))
    )
    expected = np.array(stock_hidden(model, model_type, mx.array(ids), mx.array(mask)))
    real = mask.astype(bool)
    a, b = got[real], expected[real]
    cos = np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    last = np.array(lengths) - 1
    rows = np.arange(len(lengths))
    pooled = {
        "last": (got[rows, last], expected[rows, last]),
        "mean": ((got * mask[..., None]).sum(1), (expected * mask[..., None]).sum(1)),
    }
    result = {
        "token_cos": float(cos.min()),
        "relative": float(np.abs(a - b).max() / np.abs(b).max()),
    }
    for name, (x, y) in pooled.items():
        result[f"{name}_cos"] = float(
            np.min(np.sum(x * y, axis=1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1))
        )
    return result


@pytest.mark.parametrize(
    "name", ["tiny-modernbert-cls", "tiny-qwen3-last", "tiny-gemma3-mean", "tiny-nomic-mean"]
)
def test_tiny_models_run_the_native_transformer(worker: Worker, name: str) -> None:
    """tests/test_architectures.py compares these models' vectors with the stock forward; this
    makes sure that they come from the native transformer."""
    from jupyter_mlx_embed.engine.native_models import PreNormEncoder

    spec = worker.registry.resolve(name)
    fast = worker.call(lambda engine: engine.load(spec).fast).result()
    assert isinstance(fast, PreNormEncoder)


@pytest.mark.parametrize(
    ("model_type", "lengths"),
    [
        # ModernBERT's local window (64 on either side) shorter than the passages and longer
        # than the sentences.
        ("modernbert", [9, 40, 1, 200, 150, 23]),
        # Causal, grouped key/value heads; the last token of each sequence pooled.
        ("qwen3", [9, 40, 1, 200, 23]),
        # One key/value head of 256; texts longer than the sliding window (256 either way).
        ("gemma3_text", [9, 40, 1, 300, 600, 23]),
        # Post-norm: the residual sums normalised.
        ("nomic_bert", [9, 40, 1, 200, 23]),
    ],
)
def test_published_shapes_match_the_stock_forward(
    worker: Worker, model_type: str, lengths: list[int]
) -> None:
    config = PUBLISHED[model_type]
    result = worker.call(
        lambda engine: compare_with_stock(random_model(model_type, config), model_type, lengths)
    ).result()
    assert result["token_cos"] >= 0.9999, result
    assert result["last_cos"] >= 0.99999, result
    assert result["mean_cos"] >= 0.99999, result


FEATURES = {
    # Biases on every projection and norm, a tiny sliding window.
    "modernbert": {
        "attention_bias": True,
        "mlp_bias": True,
        "norm_bias": True,
        "local_attention": 4,
        "global_attn_every_n_layers": 2,
        "num_hidden_layers": 3,
    },
    # Query, key and value biases; one key/value head.
    "qwen3": {"attention_bias": True, "num_key_value_heads": 1, "head_dim": 16},
    # Causal (EmbeddingGemma's base, Gemma 3), a sliding window of 3 back, the exact GELU.
    "gemma3_text": {
        "use_bidirectional_attention": False,
        "sliding_window": 3,
        "hidden_activation": "gelu",
        "num_key_value_heads": 2,
        "num_attention_heads": 4,
        "head_dim": 16,
        "query_pre_attn_scalar": 16,
        "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
        "num_hidden_layers": 3,
    },
}


@pytest.mark.parametrize("model_type", list(FEATURES))
def test_model_features_beyond_the_published_configs(worker: Worker, model_type: str) -> None:
    """What the published configs leave out and the architecture allows, on one stream and
    on three."""
    config = {**PUBLISHED[model_type], **FEATURES[model_type]}
    config.update(hidden_size=64, intermediate_size=72, num_attention_heads=4)

    def run(engine: Any) -> list[dict[str, float]]:
        model = random_model(model_type, config, seed=3)
        return [compare_with_stock(model, model_type, LENGTHS, streams) for streams in (1, 3)]

    for result in worker.call(run).result():
        assert result["token_cos"] >= 0.9999, result
        assert result["relative"] < 1e-4, result


def test_transformer_gives_the_same_states_on_one_thread_and_on_three(worker: Worker) -> None:
    def run(engine: Any) -> float:
        import mlx.core as mx

        from jupyter_mlx_embed.engine.native_models import prenorm_encoder

        model = random_model("qwen3", {**QWEN3_EMBEDDING, "num_hidden_layers": 1}, seed=5)
        encoder = prenorm_encoder(model, "qwen3", engine._kernels)
        assert encoder is not None
        offsets = mx.array(packed_offsets(LENGTHS))
        ids = mx.array(np.arange(sum(LENGTHS), dtype=np.int32) % 512)
        one, three = (encoder.forward(ids, offsets, threads) for threads in (1, 3))
        return float(mx.abs(one - three).max() / mx.abs(one).max())

    assert worker.call(run).result() < 1e-5


def test_unsupported_activation_keeps_the_stock_forward(worker: Worker) -> None:
    def run(engine: Any) -> Any:
        import mlx.nn as nn

        from jupyter_mlx_embed.engine.native_models import prenorm_encoder

        model = random_model("modernbert", {**GTE_MODERNBERT, "num_hidden_layers": 1})
        model.model.layers[0].mlp.act = nn.GELU(approx="fast")
        return prenorm_encoder(model, "modernbert", engine._kernels)

    assert worker.call(run).result() is None


TEXTS = ["the cat sat on the mat", "music", "the sun and the moon over the river water at night"]


def _child_vectors(model_root: Path, names: list[str], **env: str) -> dict[str, Any]:
    """info()["native_kernels"] and each model's vectors for :data:`TEXTS`, from a fresh
    process with ``env`` set."""
    code = (
        "import json, sys\n"
        "from jupyter_mlx_embed import EngineConfig, Worker\n"
        "texts = json.loads(sys.argv[1])\n"
        "config = EngineConfig.from_env(cache=False, model_roots=(sys.argv[2],))\n"
        "with Worker(config) as w:\n"
        "    out = {'info': w.info()['native_kernels']}\n"
        "    for name in sys.argv[3:]:\n"
        "        out[name] = w.submit(texts, model=name).result().vectors.tolist()\n"
        "    print(json.dumps(out))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(TEXTS), str(model_root), *names],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.splitlines()[-1]))


def test_avx2_kernels_give_the_same_vectors(worker: Worker, model_root: Path) -> None:
    """An AVX2-only CPU runs other tiles and panel widths; forced here (where the CPU may have
    AVX-512 too), in a child process sharing the built extension through the usual cache."""
    names = ["tiny-modernbert-mean", "tiny-qwen3-last", "tiny-gemma3-mean", "tiny-nomic-mean"]
    child = _child_vectors(model_root, names, **{native.ENV_VAR: "avx2"})
    assert child["info"]["isa"] == "avx2"
    for name in names:
        expected = worker.submit(TEXTS, model=name).result().vectors
        got = np.array(child[name])
        assert float(np.min(np.sum(got * expected, axis=1))) >= 0.99999, name


# ------------------------------------------------------------------------------------------
# The AVX-512 copy's code, on any AVX2 machine
# ------------------------------------------------------------------------------------------

#: A C++ harness for the vectorised kernels' entry points (csrc/simd_*.cpp): products (plain,
#: GELU, GLU with each activation, added to a residual, biases; shapes past a tile, a depth
#: block and a row block, panels split as threads split them), attention (grouped key/value
#: heads, windows, causal, q/k norms, rotary embeddings, tail rows) and norms, each against a
#: double-precision reference. It takes AttentionSpec and the entry points' declarations from
#: csrc/spec.h, as the module does.
SIMD_HARNESS = r"""
// Runs the 8- and 16-float builds of csrc/simd_*.cpp against double-precision references and
// prints, per width, the worst product (relative), attention and norm (absolute) errors.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "spec.h"

using namespace jme_native;
using Floats = std::vector<float>;

struct Kernels {
  decltype(&avx2::norm_rows) norm_rows;
  decltype(&avx2::attention_scratch) attention_scratch;
  decltype(&avx2::attention) attention;
  decltype(&avx2::panel_width) panel_width;
  decltype(&avx2::product_scratch) product_scratch;
  decltype(&avx2::packed_product) packed_product;
};

std::mt19937 rng(1);

Floats normal(size_t n, float scale = 1.0f, float mean = 0.0f) {
  std::normal_distribution<float> d(mean, scale);
  Floats v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

double activate(int kind, double x) {
  if (kind == 1) return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
  if (kind == 2) return x / (1 + std::exp(-x));
  if (kind == 3) return 0.5 * x * (1 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
  return x;
}

// mode: activation | 4 (GLU) | 8 (added to c); the panels split in two calls, as threads do.
double product_error(const Kernels& k, int64_t m, int64_t depth, int64_t n, int mode, bool bias) {
  const int64_t panel = k.panel_width(), half = panel / 2;
  const bool glu = mode & 4;
  const Floats a = normal(m * depth), w = normal(n * depth, 0.2f), g = normal(n * depth, 0.2f);
  const Floats wb = normal(n), gb = normal(n), residual = normal(m * n);
  const int64_t panels = glu ? (n + half - 1) / half : (n + panel - 1) / panel;
  Floats packed(panels * depth * panel, 0.0f), glu_bias(panels * panel, 0.0f);
  for (int64_t p = 0; p < panels; ++p) {
    for (int64_t j = 0; j < panel; ++j) {
      const bool gate = glu && j >= half;
      const int64_t row = glu ? p * half + j % half : p * panel + j;
      if (row >= n) continue;
      for (int64_t d = 0; d < depth; ++d)
        packed[(p * depth + d) * panel + j] = (gate ? g : w)[row * depth + d];
      glu_bias[p * panel + j] = (gate ? gb : wb)[row];
    }
  }
  Floats c = mode & 8 ? residual : Floats(m * n, 0.0f), scratch(k.product_scratch());
  const float* b = bias ? (glu ? glu_bias.data() : wb.data()) : nullptr;
  for (auto [first, last] : {std::pair<int64_t, int64_t>{0, panels / 2}, {panels / 2, panels}})
    k.packed_product(a.data(), packed.data(), b, mode, c.data(), m, depth, n, first, last,
                     scratch.data());
  double worst = 0, largest = 1e-9;
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t col = 0; col < n; ++col) {
      double x = bias ? wb[col] : 0, y = bias ? gb[col] : 0;
      for (int64_t d = 0; d < depth; ++d) {
        x += double(a[r * depth + d]) * w[col * depth + d];
        y += double(a[r * depth + d]) * g[col * depth + d];
      }
      double expected = glu ? activate(mode & 3, x) * y : activate(mode & 3, x);
      if (mode & 8) expected += residual[r * n + col];
      worst = std::max(worst, std::abs(expected - c[r * n + col]));
      largest = std::max(largest, std::abs(expected));
    }
  }
  return worst / largest;
}

struct Case {
  int heads, kv_heads, width, window;
  bool causal, norms;
  double theta;
};

// One head's projection as attention() prepares it: RMS-normalised, then rotated.
std::vector<double> prepared(const float* x, const Case& c, const Floats& norm, int position) {
  std::vector<double> v(x, x + c.width), out;
  if (c.norms) {
    double squares = 0;
    for (double e : v) squares += e * e;
    const double scale = 1 / std::sqrt(squares / c.width + 1e-6);
    for (int i = 0; i < c.width; ++i) v[i] *= scale * norm[i];
  }
  out = v;
  for (int i = 0, half = c.width / 2; c.theta > 0 && i < half; ++i) {
    const double angle = position * std::pow(c.theta, -2.0 * i / c.width);
    out[i] = v[i] * std::cos(angle) - v[i + half] * std::sin(angle);
    out[i + half] = v[i] * std::sin(angle) + v[i + half] * std::cos(angle);
  }
  return out;
}

double attention_error(const Kernels& k, const std::vector<int>& lengths, const Case& c) {
  std::vector<int32_t> offsets{0};
  for (int n : lengths) offsets.push_back(offsets.back() + n);
  const int64_t stride = (c.heads + 2 * c.kv_heads) * c.width, dim = c.heads * c.width;
  const Floats qkv = normal(offsets.back() * stride, 0.5f);
  const Floats q_norm = normal(c.width, 0.1f, 1.0f), k_norm = normal(c.width, 0.1f, 1.0f);
  const int longest = *std::max_element(lengths.begin(), lengths.end());
  Floats rope(longest * c.width);
  for (int t = 0; t < longest; ++t) {
    for (int i = 0, half = c.width / 2; i < half; ++i) {
      const double angle = t * std::pow(c.theta, -2.0 * i / c.width);
      rope[t * c.width + i] = float(std::cos(angle));
      rope[t * c.width + half + i] = float(std::sin(angle));
    }
  }
  const int64_t side = c.window < 0 ? int64_t{1} << 40 : c.window;
  const AttentionSpec spec{c.heads,
                           c.kv_heads,
                           c.width,
                           side,
                           c.causal ? 0 : side,
                           nullptr,
                           c.norms ? q_norm.data() : nullptr,
                           c.norms ? k_norm.data() : nullptr,
                           1e-6f,
                           c.theta > 0 ? rope.data() : nullptr};
  Floats out(offsets.back() * dim), scratch(k.attention_scratch(longest, c.width));
  const int64_t pairs = int64_t(lengths.size()) * c.heads;
  for (auto [first, last] : {std::pair<int64_t, int64_t>{0, pairs / 3}, {pairs / 3, pairs}})
    k.attention(&spec, qkv.data(), offsets.data(), out.data(), scratch.data(), first, last);
  double worst = 0;
  for (size_t b = 0; b < lengths.size(); ++b) {
    const int n = lengths[b];
    const float* rows = qkv.data() + offsets[b] * stride;
    for (int h = 0; h < c.heads; ++h) {
      const int kvh = h / (c.heads / c.kv_heads);
      const float* keys = rows + dim + kvh * c.width;
      const float* values = rows + dim + (c.kv_heads + kvh) * c.width;
      for (int i = 0; i < n; ++i) {
        const auto q = prepared(rows + i * stride + h * c.width, c, q_norm, i);
        std::vector<double> weights(n, 0.0);
        double top = -1e300, total = 0;
        for (int j = std::max<int64_t>(0, i - side); j <= std::min<int64_t>(n - 1, i + spec.right);
             ++j) {
          const auto key = prepared(keys + j * stride, c, k_norm, j);
          for (int d = 0; d < c.width; ++d) weights[j] += q[d] * key[d];
          top = std::max(top, weights[j]);
        }
        for (int j = 0; j < n; ++j) {
          const bool seen = j >= i - side && j <= i + spec.right;
          weights[j] = seen ? std::exp(weights[j] - top) : 0.0;
          total += weights[j];
        }
        for (int d = 0; d < c.width; ++d) {
          double expected = 0;
          for (int j = 0; j < n; ++j) expected += weights[j] * values[j * stride + d];
          const float got = out[(offsets[b] + i) * dim + h * c.width + d];
          worst = std::max(worst, std::abs(expected / total - got));
        }
      }
    }
  }
  return worst;
}

// mode: 1 (RMSNorm rather than LayerNorm) | 2 (added to out); no bias with RMSNorm here.
double norm_error(const Kernels& k, int64_t cols, int mode) {
  const int64_t rows = 5;
  const Floats x = normal(rows * cols, 3.0f), gamma = normal(cols), beta = normal(cols);
  const Floats before = normal(rows * cols);
  Floats out = before;
  k.norm_rows(x.data(), gamma.data(), mode & 1 ? nullptr : beta.data(), out.data(), rows, cols,
              1e-5f, mode);
  double worst = 0;
  for (int64_t r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (int64_t c = 0; c < cols && !(mode & 1); ++c) mean += x[r * cols + c] / double(cols);
    for (int64_t c = 0; c < cols; ++c) var += std::pow(x[r * cols + c] - mean, 2) / cols;
    for (int64_t c = 0; c < cols; ++c) {
      double expected = (x[r * cols + c] - mean) / std::sqrt(var + 1e-5) * gamma[c];
      expected += (mode & 1 ? 0 : beta[c]) + (mode & 2 ? before[r * cols + c] : 0);
      worst = std::max(worst, std::abs(expected - out[r * cols + c]));
    }
  }
  return worst;
}

int main() {
  const Kernels isas[] = {
      {avx2::norm_rows, avx2::attention_scratch, avx2::attention, avx2::panel_width,
       avx2::product_scratch, avx2::packed_product},
      {avx512::norm_rows, avx512::attention_scratch, avx512::attention, avx512::panel_width,
       avx512::product_scratch, avx512::packed_product}};
  const std::vector<Case> cases{
      {4, 2, 8, -1, false, false, 0.0},  {16, 8, 128, -1, true, true, 1e6},
      {3, 3, 20, 5, false, false, 1e4},  {3, 1, 256, 3, true, true, 10.0},
      {2, 2, 36, 0, false, true, 0.0},   {12, 12, 64, 40, false, false, 160000.0}};
  const std::vector<std::vector<int>> batches{{1, 7, 17, 33, 2, 64}, {1}, {130, 3}};
  for (const Kernels& k : isas) {
    double product = 0, attention = 0, norm = 0;
    for (int64_t m : {1, 5, 13, 25, 250})
      for (int64_t depth : {5, 17, 130, 300})
        for (int64_t n : {7, 37, 64, 100})
          for (int mode : {0, 1, 8, 1 | 8, 4 | 1, 4 | 2, 4 | 3})
            for (bool bias : {false, true})
              product = std::max(product, product_error(k, m, depth, n, mode, bias));
    for (const Case& c : cases)
      for (const auto& lengths : batches)
        attention = std::max(attention, attention_error(k, lengths, c));
    for (int64_t cols : {1, 8, 17, 37, 768})
      for (int mode : {0, 1, 2, 3}) norm = std::max(norm, norm_error(k, cols, mode));
    std::printf("%d %.3e %.3e %.3e\n", int(k.panel_width() / 2), product, attention, norm);
  }
}
"""


def test_sixteen_wide_kernels_match_references_lowered_to_avx2(tmp_path: Path) -> None:
    """The AVX-512 copy of the vectorised kernels (16-float vectors, 32-column panels, 12-row
    tiles and query blocks, 128-row depth blocks) compiled with AVX2 flags only, so that GCC
    lowers each vector to two ymm operations: the same code paths run on CPUs without AVX-512."""
    cxx = shutil.which("g++")
    if cxx is None:
        pytest.skip("needs g++")
    csrc = Path(native.__file__).with_name("csrc")
    flags = ["-std=c++20", "-O2", "-mavx2", "-mfma", "-fno-math-errno", "-fno-trapping-math",
             f"-I{csrc}"]  # fmt: skip
    objects = []
    for isa, width in (("avx2", 8), ("avx512", 16)):
        for simd in sorted(csrc.glob("simd_*.cpp")):
            obj = tmp_path / f"{simd.stem}{width}.o"
            subprocess.run(
                [cxx, *flags, "-Wno-psabi", f"-DJME_ISA={isa}", f"-DJME_WIDTH={width}", "-c",
                 "-o", str(obj), str(simd)],
                check=True, capture_output=True, timeout=300,
            )  # fmt: skip
            objects.append(str(obj))
    source = tmp_path / "harness.cpp"
    source.write_text(SIMD_HARNESS, encoding="utf-8")
    program = tmp_path / "harness"
    subprocess.run(
        [cxx, *flags, "-o", str(program), str(source), *objects],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    lines = subprocess.run(
        [str(program)], check=True, capture_output=True, text=True, timeout=600
    ).stdout.split()
    results = {int(lines[i]): [float(x) for x in lines[i + 1 : i + 4]] for i in (0, 4)}
    for width, (product, attention, norm) in results.items():
        assert product < 2e-5, width
        assert attention < 1e-4, width
        assert norm < 1e-5, width
