"""A faster forward pass for BERT-family encoders on MLX's CPU backend (engine-private).

MLX's CPU elementwise kernels are scalar and single-threaded on x86, so the exact erf-GELU and
softmax dominate the forward pass, not the matrix products (see BENCHMARKS.md). This module
runs the same weights through the same post-LayerNorm BERT computation with:

- GELU from a rational approximation of erf (max abs error 1.5e-7 against exact erf-GELU);
- softmax with a polynomial exp (relative error < 2e-5), both plain MLX ops that
  ``mx.compile`` fuses into loops; the padding mask and the softmax sum ride along in the
  attention matrix products, leaving two passes over the scores;
- the attention and feed-forward blocks compiled per padded shape (lengths rounded up to a
  multiple of 8, which bounds recompilation) with the weights as arguments, so one trace
  serves every layer;
- LayerNorm left out of the compiled blocks: fused, its per-row statistics become broadcast
  inputs and the loop runs strided and scalar, while op by op MLX runs vectorised row
  kernels, and the row sums are matrix-vector products (figures in BENCHMARKS.md);
- each batch cut into parts of about equal work, run on separate CPU streams, which MLX runs
  on separate threads (its only way to use more than one core for non-BLAS work).

Where the C++ kernels of :mod:`.native` load (Linux x86-64, built at install time), the same
forward runs on them instead: matrix products on weights packed once (the feed-forward's
bias and exact-erf GELU fused in), residual add + LayerNorm, and attention reading the heads
in place from one fused QKV product, all vectorised (AVX2 or AVX-512), with every part of a
batch packed (its tokens only, no padding: only the attention needs to know where each
sequence starts) and nothing compiled per shape. A small batch is cut into fewer parts than
streams (one text: one part), and each part's steps use the spare cores. The MLX-op version
above is the fallback when they are unavailable.

Only the CPU device uses it; on Metal and CUDA the stock mlx-embeddings forward runs as is.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NamedTuple

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .partition import balanced_bounds, packed_bounds, packed_parts, padded_length

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
    constant, that constant becomes a strided input and the whole loop runs strided and
    scalar. Materialising ``z*z`` and evaluating both polynomials with
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


def attention(q: mx.array, k: mx.array, v: mx.array, key_mask: mx.array) -> mx.array:
    """Softmax(q k^T + key_mask) v for (batch, heads, length, width) inputs (q already
    scaled), returned as (batch, length, heads, width) so that merging the heads needs no copy.

    The additive mask rides along in the score product (q gains a column of ones, k the mask
    column), and v gains a column of ones, so the product that weights the values also sums
    the weights. The only passes over the length x length scores are the row maximum and one
    fused exponential.
    """
    ones = mx.ones((*q.shape[:-1], 1), dtype=q.dtype)
    width = q.shape[-1]
    queries = mx.concatenate([q, ones], axis=-1)
    keys = mx.concatenate([k, mx.broadcast_to(key_mask, ones.shape)], axis=-1)
    values = mx.concatenate([v, ones], axis=-1)
    scores = queries @ keys.transpose(0, 1, 3, 2)
    weights = exp_shifted(scores, mx.max(scores, axis=-1, keepdims=True))
    summed = (weights @ values).transpose(0, 2, 1, 3)
    return summed[..., :width] / summed[..., width:]


def split_segments(ids: mx.array, vocab: int) -> tuple[mx.array, mx.array]:
    """Token ids and token types of rows whose second segment's ids are offset by ``vocab``
    (how a reranker's pairs travel through the worker, which knows only rows of ids)."""
    types = (ids >= vocab).astype(mx.int32)
    return ids - types * vocab, types


def _cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


#: A packed batch part's forward pass: (token ids (tokens,), positions in their sequences
#: (numpy, tokens), offsets (sequences + 1,), threads) -> hidden states (tokens, dim).
PackedForward = Callable[[mx.array, np.ndarray, mx.array, int], mx.array]


def run_packed(
    streams: list[Any],
    threads: int,
    ids: np.ndarray,
    mask: np.ndarray,
    forward: PackedForward,
    pool: Callable[[mx.array, mx.array], mx.array],
) -> mx.array:
    """Pooled vectors (rows x dim) of right-padded ``ids``/``mask`` through a native forward.

    Rows keep their order and are cut into parts of about equal work (fewer for small
    batches: :func:`~.partition.packed_parts`), each part packed (its tokens only, no
    padding) and run on its own stream; the hidden states are gathered back into (rows,
    longest, dim) for pooling. ``threads`` is what a batch uses in all: a part gets its share.

    Args:
        streams: CPU streams, one per part at most.
        threads: Threads in all (the parts' streams and their helpers).
        ids: Token ids (rows x longest), right-padded.
        mask: 1 for real tokens, 0 for padding (same shape).
        forward: The part's forward pass (see :data:`PackedForward`).
        pool: Pools (rows, longest, dim) hidden states under a (rows, longest) mask.

    Returns:
        The pooled vectors, rows in the order given.
    """
    lengths = mask.sum(axis=1).astype(np.int64)
    bounds = packed_bounds(lengths, packed_parts(int(lengths.sum()), len(streams)))
    # Fewer parts than streams (one text, say): each part's steps use the spare threads.
    part_threads = max(1, threads // (len(bounds) - 1))
    outputs = []
    for i, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        part = lengths[lo:hi]
        width = int(part.max())
        valid = np.arange(width)[None, :] < part[:, None]
        offsets = np.concatenate([[0], np.cumsum(part)]).astype(np.int32)
        positions = np.broadcast_to(np.arange(width, dtype=np.int32), valid.shape)
        gather = np.where(valid, offsets[:-1, None] + positions, 0).astype(np.int32)
        with mx.stream(streams[i]):
            hidden = forward(
                mx.array(ids[lo:hi, :width][valid].astype(np.int32)),
                positions[valid],
                mx.array(offsets),
                part_threads,
            )
            outputs.append(pool(hidden[mx.array(gather)], mx.array(valid, dtype=mx.float32)))
    mx.eval(*outputs)
    return outputs[0] if len(outputs) == 1 else mx.concatenate(outputs, axis=0)


@dataclass(frozen=True)
class Packing:
    """How the native path packs weights for its matrix products: the kernels module and the
    products' precision (``fp32``; ``bf16``: weights rounded to bfloat16 once, here, and each
    product's inputs as it reads them, with float32 sums)."""

    kernels: ModuleType
    precision: str = "fp32"

    def linear(self, weight: mx.array) -> mx.array:
        """A linear layer's (out, in) weight, packed."""
        return self.kernels.pack_linear(weight, precision=self.precision)

    def glu(self, activated: mx.array, gate: mx.array) -> mx.array:
        """A gated product's two (out, in) weights, packed as one."""
        return self.kernels.pack_glu(activated, gate, precision=self.precision)


class _Layer(NamedTuple):
    """One encoder layer's weights, rearranged for :class:`FastEncoder`.

    The attention scale is folded into the query projection. The key bias is dropped: it adds
    ``q . b_k`` to every score of a query's row, which softmax cancels. The value bias passes
    through attention unchanged (the weights of a row sum to 1), so it is folded into the
    output bias as ``b_o + W_o b_v``. Both are exact up to float rounding.
    """

    attention: tuple[mx.array, ...]  # W_q * scale, b_q * scale, W_k, W_v, W_o
    attention_bias: mx.array  # b_o + W_o b_v
    norm1: tuple[mx.array, mx.array]
    feed_forward: tuple[mx.array, ...]  # W_i, b_i, W_d
    feed_forward_bias: mx.array  # b_d
    norm2: tuple[mx.array, mx.array]


def pack_releasing(packed: Sequence[Sequence[mx.array | None]], stock: Sequence[Any]) -> None:
    """Compute each layer's packed arrays (``packed[i]``, still lazy: they read the stock
    weights), then let go of the matrices of the stock layer ``stock[i]`` they came from, one
    layer at a time: the native path replaces the stock forward, which can no longer run, and
    the model holds each weight once, never twice (at most one layer's copy while loading)."""
    for arrays, layer in zip(packed, stock, strict=True):
        mx.eval([a for a in arrays if a is not None])
        for _, module in layer.named_modules():
            if isinstance(module, nn.Linear):
                module.weight = mx.zeros((0,))
    mx.clear_cache()


def _prepare_layer(layer: Any, heads: int) -> _Layer:
    att, out = layer.attention.self, layer.attention.output
    scale = 1.0 / math.sqrt(att.query.weight.shape[0] // heads)
    prepared = _Layer(
        attention=(
            att.query.weight * scale,
            att.query.bias * scale,
            att.key.weight,
            att.value.weight,
            out.dense.weight,
        ),
        attention_bias=out.dense.bias + out.dense.weight @ att.value.bias,
        norm1=(out.LayerNorm.weight, out.LayerNorm.bias),
        feed_forward=(
            layer.intermediate.dense.weight,
            layer.intermediate.dense.bias,
            layer.output.dense.weight,
        ),
        feed_forward_bias=layer.output.dense.bias,
        norm2=(layer.output.LayerNorm.weight, layer.output.LayerNorm.bias),
    )
    mx.eval(prepared)
    return prepared


def _native_layer(packing: Packing, layer: _Layer) -> list[mx.array]:
    """One layer's inputs to the native ``encoder`` op, in its order: the weights packed once
    for its matrix products (the query, key and value projections as one (3 dim, dim)
    product, of whose biases only the query's remains: see :class:`_Layer`), the biases and
    the LayerNorms."""
    w_q, b_q, w_k, w_v, w_o = layer.attention
    w_i, b_i, w_d = layer.feed_forward
    pack = packing.linear
    inputs = [
        pack(mx.concatenate([w_q, w_k, w_v])),
        b_q,
        pack(w_o),
        layer.attention_bias,
        *layer.norm1,
        pack(w_i),
        b_i,
        pack(w_d),
        layer.feed_forward_bias,
        *layer.norm2,
    ]
    return inputs


class FastEncoder:
    """Runs a loaded ``mlx_embeddings`` BERT or XLM-RoBERTa model with the CPU kernels above.

    Args:
        model: The loaded stock model (its weights are used as they are, so they must be
            float: the engine dequantizes MLX-quantized checkpoints first).
        model_type: ``bert`` or ``xlm_roberta``.
        streams: CPU streams to split each batch over.
        kernels: The C++ kernels module (:func:`.native.load_kernels`); None runs the
            MLX-op version of the fast path (compiled per shape, JIT-built by g++).
        precision: The native products' precision (see :class:`Packing`).
        segments: The vocabulary size where ids carry token types (:func:`split_segments`:
            a reranker's pairs), else 0 (every token is of type 0).
        keep_stock: With ``kernels``, keep the stock layers' matrices (the model's stock
            forward still runs), rather than let them go once packed (:func:`pack_releasing`).
    """

    def __init__(
        self,
        model: Any,
        model_type: str,
        streams: int = 2,
        kernels: ModuleType | None = None,
        precision: str = "fp32",
        segments: int = 0,
        keep_stock: bool = True,
    ) -> None:
        self._model = model
        self._segments = segments
        self._kernels = kernels
        self._xlmr = model_type == "xlm_roberta"
        config = model.config
        self._heads = config.num_attention_heads
        self._eps = config.layer_norm_eps
        self._pad = getattr(config, "pad_token_id", 1) if self._xlmr else 0
        # The MLX-op path's weights; or the native encoder's inputs, its matrix products'
        # weights packed once, here.
        self._layers: list[_Layer] = []
        self._native_layers: list[mx.array] = []
        if kernels:
            packing = Packing(kernels, precision)
            stock = model.encoder.layer
            packed = [_native_layer(packing, _prepare_layer(layer, self._heads)) for layer in stock]
            if keep_stock:
                mx.eval(packed)
            else:
                pack_releasing(packed, stock)
            self._native_layers = [a for layer in packed for a in layer]
        else:
            self._layers = [_prepare_layer(layer, self._heads) for layer in model.encoder.layer]
        dim = model.embeddings.word_embeddings.weight.shape[1]
        self._mean_weights = mx.full((dim, 1), 1.0 / dim)
        self._streams = [mx.new_stream(mx.cpu) for _ in range(max(1, streams))]
        # Threads a native batch uses in all (its parts' streams and their helpers).
        self._threads = min(len(self._streams), _cores())
        # Compiled functions are traced per stream (a traced graph is tied to its stream).
        # They take the weights as arguments, so one trace per batch shape serves every layer.
        self._embed = [mx.compile(self._embeddings) for _ in self._streams]
        self._attend = [mx.compile(self._attention_block) for _ in self._streams]
        self._feed = [mx.compile(self._feed_forward_block) for _ in self._streams]

    def _embeddings(self, ids: mx.array, mask: mx.array) -> tuple[mx.array, mx.array]:
        emb = self._model.embeddings
        if self._xlmr:  # RoBERTa counts positions from padding_idx + 1, skipping pads
            positions = (mx.cumsum(mask, axis=1) * mask).astype(mx.int32) + self._pad
        else:
            positions = mx.arange(ids.shape[1], dtype=mx.int32)[None, :]
        x = self._tokens(ids) + emb.position_embeddings.weight[positions]
        return x, ((1.0 - mask) * -10000.0)[:, None, :, None]

    def _tokens(self, ids: mx.array) -> mx.array:
        """Word plus token type embeddings of ``ids``."""
        emb = self._model.embeddings
        if not self._segments:
            return emb.word_embeddings.weight[ids] + emb.token_type_embeddings.weight[0]
        ids, types = split_segments(ids, self._segments)
        return emb.word_embeddings.weight[ids] + emb.token_type_embeddings.weight[types]

    def _attention_block(
        self, x: mx.array, residual: mx.array, key_mask: mx.array, *w: mx.array
    ) -> mx.array:
        wq, bq, wk, wv, wo = w
        batch, length, dim = x.shape
        heads = self._heads
        width = dim // heads

        def split(t: mx.array) -> mx.array:
            return t.reshape(batch, length, heads, width).transpose(0, 2, 1, 3)

        context = attention(
            split(mx.addmm(bq, x, wq.T)), split(x @ wk.T), split(x @ wv.T), key_mask
        )
        return context.reshape(batch, length, dim) @ wo.T + residual

    def _feed_forward_block(
        self, x: mx.array, residual: mx.array, wi: mx.array, bi: mx.array, wd: mx.array
    ) -> mx.array:
        return gelu(mx.addmm(bi, x, wi.T)) @ wd.T + residual

    def _norm(self, h: mx.array, weight: mx.array, bias: mx.array) -> mx.array:
        """LayerNorm, traced op by op on purpose (see the module docstring)."""
        mean = h @ self._mean_weights
        centred = h - mean
        scale = mx.rsqrt(mx.square(centred) @ self._mean_weights + self._eps)
        return centred * scale * weight + bias

    def _native_forward(
        self, ids: mx.array, positions: mx.array, offsets: mx.array, threads: int
    ) -> mx.array:
        """Hidden states (tokens x dim) of a packed batch, on the C++ kernels (:mod:`.native`).

        Every token is a row of one matrix (the sequences one after the other, no padding),
        so only the attention needs to know where each sequence starts: ``offsets``. No
        ``mx.compile``, hence no trace per shape and no JIT compiler at run time. All layers
        run as one op, on ``threads`` threads.
        """
        k = self._kernels
        assert k is not None
        emb = self._model.embeddings
        h = self._tokens(ids) + emb.position_embeddings.weight[positions]
        x = k.add_layernorm(h, None, None, emb.LayerNorm.weight, emb.LayerNorm.bias, self._eps)
        return k.encoder(x, offsets, self._native_layers, self._heads, self._eps, threads)

    def _native_call(
        self, mask: np.ndarray, ids: np.ndarray, pool: Callable[[mx.array, mx.array], mx.array]
    ) -> mx.array:
        """:meth:`__call__` on the native kernels (:func:`run_packed`)."""
        first_position = self._pad + 1 if self._xlmr else 0  # RoBERTa skips padding_idx

        def forward(
            ids: mx.array, positions: np.ndarray, offsets: mx.array, threads: int
        ) -> mx.array:
            return self._native_forward(ids, mx.array(positions + first_position), offsets, threads)

        return run_packed(self._streams, self._threads, ids, mask, forward, pool)

    def _forward(self, i: int, ids: mx.array, mask: mx.array) -> mx.array:
        h, key_mask = self._embed[i](ids, mask)
        norm = self._model.embeddings.LayerNorm
        x = self._norm(h, norm.weight, norm.bias)
        for layer in self._layers:
            # The output biases ride on the residuals, added op by op (vectorised) rather than
            # as broadcast inputs of the compiled blocks (which would make their loops strided).
            h = self._attend[i](x, x + layer.attention_bias, key_mask, *layer.attention)
            x = self._norm(h, *layer.norm1)
            h = self._feed[i](x, x + layer.feed_forward_bias, *layer.feed_forward)
            x = self._norm(h, *layer.norm2)
        return x

    def __call__(
        self, ids: np.ndarray, mask: np.ndarray, pool: Callable[[mx.array, mx.array], mx.array]
    ) -> mx.array:
        """Pooled vectors (rows x dim) for right-padded ``ids`` and ``mask`` (numpy).

        Rows are sorted by length and cut into parts of about equal work
        (:func:`~.partition.balanced_bounds`), one per stream; each part is padded to its own
        longest row, rounded up to a multiple of ``partition.LENGTH_BUCKET``.
        """
        if self._kernels is not None:
            return self._native_call(mask, ids, pool)
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
