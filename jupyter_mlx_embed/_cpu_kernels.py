"""A faster forward pass for BERT-family encoders on MLX's CPU backend (engine-private).

MLX's CPU elementwise kernels are scalar and single-threaded on x86, so the exact erf-GELU and
softmax dominate the forward pass, not the matrix products (see BENCHMARKS.md). This module
runs the same weights through the same post-LayerNorm BERT computation with:

- GELU from a rational approximation of erf (max abs error 1.5e-7 against exact erf-GELU);
- softmax with a polynomial exp (relative error < 2e-5), both plain MLX ops that
  ``mx.compile`` fuses into single loops; the scale, the padding mask and the softmax sum ride
  along in the attention matrix products, leaving two passes over the scores;
- one encoder layer compiled per padded shape (lengths rounded up to a multiple of 8, which
  bounds recompilation) with the weights as arguments, so one trace serves every layer;
- each batch cut into parts of about equal work, run on separate CPU streams, which MLX runs
  on separate threads (its only way to use more than one core for non-BLAS work).

Only the CPU device uses it; on Metal and CUDA the stock mlx-embeddings forward runs as is.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import mlx.core as mx
import numpy as np

from .batching import balanced_bounds, padded_length

#: Architectures this forward reproduces (post-LN BERT encoders with erf-GELU).
FAST_MODEL_TYPES = ("bert", "xlm_roberta")

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


def _polynomial(coefficients: tuple[float, ...], x: mx.array) -> mx.array:
    """Horner's rule, highest degree first, starting from scalars rather than a filled array
    (one array input fewer for the fused loop)."""
    result = coefficients[0] * x + coefficients[1]
    for c in coefficients[2:]:
        result = result * x + c
    return result


def _estrin(coefficients: tuple[float, ...], x: mx.array) -> mx.array:
    """Estrin's scheme, highest degree first: pairs ``a + b*x`` combined with x^2, x^4, ...

    The same polynomial as :func:`_polynomial` in a graph of logarithmic rather than linear
    depth, which keeps it inside one of MLX's fused loops (their depth is limited to 11).
    """
    low_first = coefficients[::-1]
    terms: list[Any] = [
        low_first[i] + low_first[i + 1] * x for i in range(0, len(low_first) - 1, 2)
    ]
    if len(low_first) % 2:
        terms.append(low_first[-1])  # a scalar; the pairing below broadcasts it
    power = x * x
    while len(terms) > 1:
        paired = [terms[i] + terms[i + 1] * power for i in range(0, len(terms) - 1, 2)]
        terms = paired + terms[len(paired) * 2 :]
        power = power * power
    return terms[0]


def gelu(x: mx.array) -> mx.array:
    """x/2 * (1 + erf(x/sqrt 2)) with a rational erf, as two contiguous fused loops.

    MLX cuts a fused loop where its graph gets too deep; when the cut lands on a broadcast
    constant, that constant becomes a strided input and the whole loop runs strided and scalar
    (twice as slow, measured). Materialising ``z*z`` and evaluating both polynomials with
    Estrin's scheme puts the cut there instead: one loop writes ``z*z``, one the result.
    """
    z = mx.clip(x * (1.0 / math.sqrt(2.0)), -4.0, 4.0)
    z2 = mx.contiguous(z * z)
    half_x = 0.5 * x
    return half_x + (half_x * z) * (_estrin(_ERF_P, z2) / _estrin(_ERF_Q, z2))


_EXP_TAYLOR = tuple(1.0 / math.factorial(n) for n in range(7, -1, -1))


def exp_shifted(x: mx.array, shift: mx.array) -> mx.array:
    """exp(x - shift) for x <= shift, as Taylor_7(z/256)^256 with z = x - shift clamped at -87
    (relative error < 2e-5; 1e-38 below the clamp)."""
    z = mx.maximum(x - shift, -87.0) * (1.0 / 256.0)
    e = _polynomial(_EXP_TAYLOR, z)
    for _ in range(8):
        e = e * e
    return e


def attention(q: mx.array, k: mx.array, v: mx.array, key_mask: mx.array, scale: float) -> mx.array:
    """Softmax(q k^T * scale + key_mask) v for (batch, heads, length, width) inputs, returned
    as (batch, length, heads, width) so that merging the heads needs no copy.

    The scale and the additive mask ride along in the score product (q gains a column of
    ones, k the mask column), and v gains a column of ones, so the product that weights the
    values also sums the weights. The only passes over the length x length scores are the
    row maximum and one fused exponential.
    """
    ones = mx.ones((*q.shape[:-1], 1), dtype=q.dtype)
    width = q.shape[-1]
    queries = mx.concatenate([q * scale, ones], axis=-1)
    keys = mx.concatenate([k, mx.broadcast_to(key_mask, ones.shape)], axis=-1)
    values = mx.concatenate([v, ones], axis=-1)
    scores = queries @ keys.transpose(0, 1, 3, 2)
    weights = exp_shifted(scores, mx.max(scores, axis=-1, keepdims=True))
    summed = (weights @ values).transpose(0, 2, 1, 3)
    return summed[..., :width] / summed[..., width:]


def _layer_weights(layer: Any) -> tuple[mx.array, ...]:
    """One encoder layer's weights, in the order :meth:`FastEncoder._encoder_layer` takes."""
    att, out = layer.attention.self, layer.attention.output
    return (
        att.query.weight,
        att.query.bias,
        att.key.weight,
        att.key.bias,
        att.value.weight,
        att.value.bias,
        out.dense.weight,
        out.dense.bias,
        out.LayerNorm.weight,
        out.LayerNorm.bias,
        layer.intermediate.dense.weight,
        layer.intermediate.dense.bias,
        layer.output.dense.weight,
        layer.output.dense.bias,
        layer.output.LayerNorm.weight,
        layer.output.LayerNorm.bias,
    )


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
        self._layers = [_layer_weights(layer) for layer in model.encoder.layer]
        self._streams = [mx.new_stream(mx.cpu) for _ in range(max(1, streams))]
        # Compiled functions are traced per stream (a traced graph is tied to its stream).
        # The layer function takes its weights as arguments, so one trace per batch shape
        # serves every layer.
        self._embed = [mx.compile(self._embeddings) for _ in self._streams]
        self._layer = [mx.compile(self._encoder_layer) for _ in self._streams]

    def _embeddings(self, ids: mx.array, mask: mx.array) -> tuple[mx.array, mx.array]:
        emb = self._model.embeddings
        if self._xlmr:  # RoBERTa counts positions from padding_idx + 1, skipping pads
            positions = (mx.cumsum(mask, axis=1) * mask).astype(mx.int32) + self._pad
        else:
            positions = mx.arange(ids.shape[1], dtype=mx.int32)[None, :]
        x = (
            emb.word_embeddings.weight[ids]
            + emb.position_embeddings.weight[positions]
            + emb.token_type_embeddings.weight[0]
        )
        x = mx.fast.layer_norm(x, emb.LayerNorm.weight, emb.LayerNorm.bias, self._eps)
        return x, ((1.0 - mask) * -10000.0)[:, None, :, None]

    def _encoder_layer(self, x: mx.array, key_mask: mx.array, *w: mx.array) -> mx.array:
        (wq, bq, wk, bk, wv, bv, wo, bo, n1w, n1b, wi, bi, wd, bd, n2w, n2b) = w
        batch, length, dim = x.shape
        heads = self._heads
        width = dim // heads

        def split(t: mx.array) -> mx.array:
            return t.reshape(batch, length, heads, width).transpose(0, 2, 1, 3)

        q = split(mx.addmm(bq, x, wq.T))
        k = split(mx.addmm(bk, x, wk.T))
        v = split(mx.addmm(bv, x, wv.T))
        context = attention(q, k, v, key_mask, 1.0 / math.sqrt(width))
        context = context.reshape(batch, length, dim)
        x = mx.fast.layer_norm(mx.addmm(bo, context, wo.T) + x, n1w, n1b, self._eps)
        hidden = gelu(mx.addmm(bi, x, wi.T))
        return mx.fast.layer_norm(mx.addmm(bd, hidden, wd.T) + x, n2w, n2b, self._eps)

    def _forward(self, i: int, ids: mx.array, mask: mx.array) -> mx.array:
        x, key_mask = self._embed[i](ids, mask)
        for weights in self._layers:
            x = self._layer[i](x, key_mask, *weights)
        return x

    def __call__(
        self, ids: np.ndarray, mask: np.ndarray, pool: Callable[[mx.array, mx.array], mx.array]
    ) -> mx.array:
        """Pooled vectors (rows x dim) for right-padded ``ids`` and ``mask`` (numpy).

        Rows are sorted by length and cut into parts of about equal work
        (:func:`~.batching.balanced_bounds`), one per stream; each part is padded to its own
        longest row, rounded up to a multiple of ``batching.LENGTH_BUCKET``.
        """
        lengths = mask.sum(axis=1).astype(int)
        order = np.argsort(lengths, kind="stable")
        bounds = balanced_bounds(lengths[order], len(self._streams))
        outputs = []
        for i, (lo, hi) in enumerate(itertools.pairwise(bounds)):
            rows = order[lo:hi]
            width = padded_length(int(lengths[rows].max()))
            used = min(width, ids.shape[1])
            part_ids = np.full((hi - lo, width), self._pad, dtype=np.int32)
            part_mask = np.zeros((hi - lo, width), dtype=np.float32)
            part_ids[:, :used] = ids[rows, :used]
            part_mask[:, :used] = mask[rows, :used]
            with mx.stream(self._streams[i]):
                m = mx.array(part_mask)
                outputs.append(pool(self._forward(i, mx.array(part_ids), m), m))
        mx.eval(*outputs)
        pooled = outputs[0] if len(outputs) == 1 else mx.concatenate(outputs, axis=0)
        if np.any(order[1:] < order[:-1]):
            pooled = pooled[mx.array(np.argsort(order).astype(np.int32))]
        return pooled
