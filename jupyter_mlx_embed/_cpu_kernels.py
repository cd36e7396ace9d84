"""A faster forward pass for BERT-family encoders on MLX's CPU backend (engine-private).

MLX's CPU elementwise kernels are scalar and single-threaded on x86, so the exact erf-GELU and
softmax dominate the forward pass, not the matrix products (see BENCHMARKS.md). This module
runs the same weights through the same post-LayerNorm BERT computation with:

- GELU from a rational approximation of erf (max abs error 1.5e-7 against exact erf-GELU);
- softmax with a polynomial exp (relative error < 1e-6), both plain MLX ops that
  ``mx.compile`` fuses into single loops;
- the whole encoder compiled per padded shape (lengths rounded up to a multiple of 8, which
  bounds recompilation);
- each batch split across CPU streams, which MLX runs on separate threads (its only way to use
  more than one core for non-BLAS work).

Only the CPU device uses it; on Metal and CUDA the stock mlx-embeddings forward runs as is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import mlx.core as mx
import numpy as np

#: Architectures this forward reproduces (post-LN BERT encoders with erf-GELU).
FAST_MODEL_TYPES = ("bert", "xlm_roberta")
LENGTH_BUCKET = 8

# Rational approximation of erf on [-4, 4]: x * P(x^2) / Q(x^2) (the coefficients used by
# Eigen and XLA for float32).
_ERF_P = (
    -2.72614225801306e-10,
    2.77068142495902e-08,
    -2.10102402082508e-06,
    -5.69250639462346e-05,
    -7.34990630326855e-04,
    -2.95459980854025e-03,
    -1.60960333262415e-02,
)
_ERF_Q = (
    -1.45660718464996e-05,
    -2.13374055278905e-04,
    -1.68282697438203e-03,
    -7.37332916720468e-03,
    -1.42647390514189e-02,
)


def _horner(coefficients: tuple[float, ...], x: mx.array) -> mx.array:
    result = mx.full(x.shape, coefficients[0], dtype=x.dtype)
    for c in coefficients[1:]:
        result = result * x + c
    return result


def gelu(x: mx.array) -> mx.array:
    """x/2 * (1 + erf(x/sqrt 2)) with a rational erf."""
    z = mx.clip(x * (1.0 / math.sqrt(2.0)), -4.0, 4.0)
    z2 = z * z
    erf = z * _horner(_ERF_P, z2) / _horner(_ERF_Q, z2)
    return 0.5 * x * (1.0 + erf)


def softmax(x: mx.array) -> mx.array:
    """Softmax over the last axis with exp(z) = (Taylor_7(z/256))^256 for z <= 0."""
    z = mx.maximum(x - mx.max(x, axis=-1, keepdims=True), -87.0) * (1.0 / 256.0)
    e = 1.0 + z * (
        1.0 + z / 2 * (1.0 + z / 3 * (1.0 + z / 4 * (1.0 + z / 5 * (1.0 + z / 6 * (1.0 + z / 7)))))
    )
    for _ in range(8):
        e = e * e
    return e / mx.sum(e, axis=-1, keepdims=True)


def _layer_norm(x: mx.array, ln: Any, eps: float) -> mx.array:
    return mx.fast.layer_norm(x, ln.weight, ln.bias, eps)


def _linear(x: mx.array, layer: Any) -> mx.array:
    return mx.addmm(layer.bias, x, layer.weight.T)


class FastEncoder:
    """Runs a loaded ``mlx_embeddings`` BERT or XLM-RoBERTa model with the CPU kernels above.

    Args:
        model: The loaded stock model (its weights are used as they are).
        model_type: ``bert`` or ``xlm_roberta``.
        streams: CPU streams to split each batch over.
    """

    def __init__(self, model: Any, model_type: str, streams: int = 2) -> None:
        self._model = model
        self._xlmr = model_type == "xlm_roberta"
        config = model.config
        self._heads = config.num_attention_heads
        self._eps = config.layer_norm_eps
        self._pad = getattr(config, "pad_token_id", 1) if self._xlmr else 0
        self._streams = [mx.new_stream(mx.cpu) for _ in range(max(1, streams))]
        # One compiled function per stream: a traced graph is tied to its stream.
        self._compiled = [mx.compile(self._forward) for _ in self._streams]

    def _forward(self, ids: mx.array, mask: mx.array) -> mx.array:
        m = self._model
        emb = m.embeddings
        batch, length = ids.shape
        if self._xlmr:  # RoBERTa counts positions from padding_idx + 1, skipping pads
            positions = (mx.cumsum(mask, axis=1) * mask).astype(mx.int32) + self._pad
        else:
            positions = mx.arange(length, dtype=mx.int32)[None, :]
        x = (
            emb.word_embeddings.weight[ids]
            + emb.position_embeddings.weight[positions]
            + emb.token_type_embeddings.weight[0]
        )
        x = _layer_norm(x, emb.LayerNorm, self._eps)
        additive = ((1.0 - mask) * -10000.0)[:, None, None, :]
        heads = self._heads
        width = x.shape[-1] // heads
        scale = 1.0 / math.sqrt(width)
        for layer in m.encoder.layer:
            att = layer.attention.self

            def split(t: mx.array) -> mx.array:
                return t.reshape(batch, length, heads, width).transpose(0, 2, 1, 3)

            q = split(_linear(x, att.query))
            k = split(_linear(x, att.key))
            v = split(_linear(x, att.value))
            probs = softmax((q @ k.transpose(0, 1, 3, 2)) * scale + additive)
            context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, -1)
            out = layer.attention.output
            x = _layer_norm(_linear(context, out.dense) + x, out.LayerNorm, self._eps)
            hidden = gelu(_linear(x, layer.intermediate.dense))
            x = _layer_norm(
                _linear(hidden, layer.output.dense) + x, layer.output.LayerNorm, self._eps
            )
        return x

    def __call__(
        self, ids: np.ndarray, mask: np.ndarray, pool: Callable[[mx.array, mx.array], mx.array]
    ) -> mx.array:
        """Pooled vectors (rows x dim) for right-padded ``ids`` and ``mask`` (numpy).

        Rows are split into contiguous parts, one per stream; each part is cut to its own
        longest row (rows arrive sorted by length) rounded up to a multiple of 8.
        """
        rows = ids.shape[0]
        parts = min(len(self._streams), rows)
        bounds = np.linspace(0, rows, parts + 1).astype(int)
        lengths = mask.sum(axis=1).astype(int)
        outputs = []
        for i in range(parts):
            lo, hi = bounds[i], bounds[i + 1]
            width = -(-int(lengths[lo:hi].max()) // LENGTH_BUCKET) * LENGTH_BUCKET
            part_ids = np.full((hi - lo, width), self._pad, dtype=np.int32)
            part_mask = np.zeros((hi - lo, width), dtype=np.float32)
            used = min(width, ids.shape[1])
            part_ids[:, :used] = ids[lo:hi, :used]
            part_mask[:, :used] = mask[lo:hi, :used]
            with mx.stream(self._streams[i]):
                m = mx.array(part_mask)
                outputs.append(pool(self._compiled[i](mx.array(part_ids), m), m))
        mx.eval(*outputs)
        return outputs[0] if parts == 1 else mx.concatenate(outputs, axis=0)
