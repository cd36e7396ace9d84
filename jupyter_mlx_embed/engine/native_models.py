"""Pre-norm encoders (ModernBERT, Qwen3, Gemma 3, SigLIP's two towers) and NomicBERT on the
native CPU kernels (engine-private).

The BERT family runs through :class:`~.cpu_kernels.FastEncoder`; the architectures here share
another layer shape, the pre-norm transformer, which the C++ ``transformer`` op runs whole
(:mod:`.native`): per layer a norm, one fused QKV product, attention, the output product added
to the residual, a norm, one gated (GLU) up product and the down product added to the
residual. What differs between the models is data, not code:

- ModernBERT: LayerNorm without bias (no attention norm in layer 0), GeGLU with the GELU its
  module computes (mlx-embeddings': the tanh approximation, see :func:`_gelu_kind`), rotary
  embeddings with one base on global layers and another on local ones, a sliding window of
  ``local_attention // 2`` tokens on either side on the local layers (all but every
  ``global_attn_every_n_layers``-th), an embedding norm and a final norm;
- Qwen3: RMSNorm, per-head RMSNorm of queries and keys before the rotary embedding, grouped
  key/value heads, SwiGLU, a causal mask and a final norm;
- Gemma 3 (EmbeddingGemma; engine/architectures/gemma3_text.py): RMSNorm with weights stored
  as offsets from 1, norms after attention and after the MLP too, per-head q/k RMSNorm,
  grouped key/value heads (one, for EmbeddingGemma), GeGLU with the tanh GELU, sliding-window
  layers (both ways when bidirectional) between full ones, scaled token embeddings;
- NomicBERT (engine/architectures/nomic_bert.py): post-norm (each sublayer's residual sum is
  normalised, as in BERT), LayerNorm, rotary embeddings over the whole head, SwiGLU, no
  biases; the token type 0 embedding added to every token, then the embedding norm;
- SigLIP (engine/architectures/siglip.py): LayerNorm with bias, biased q/k/v/out projections,
  a plain (not gated) MLP of fc1, the tanh GELU and fc2, learnt position embeddings, a final
  norm; the text tower reads token ids, the image tower patch embeddings (its attention
  pooling stays an MLX step: one query per picture).

Weights are rearranged once at load: the attention scale folded into the query projection
(ModernBERT) or the query norm's weights (Qwen3, Gemma 3), the query, key and value projections
packed as one product, the gate and up projections packed as one gated product whose tile
applies the activation. Batches run packed (no padding) over CPU streams, as the BERT path
(:func:`~.cpu_kernels.run_packed`). The MLX forward each replaces (mlx-embeddings', or
engine/architectures' for Gemma 3) is the reference: see tests/test_native_models.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NamedTuple

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .cpu_kernels import Packing, _cores, pack_releasing, run_packed

__all__ = ["NATIVE_MODEL_TYPES", "ImageTower", "PreNormEncoder", "prenorm_encoder", "siglip_towers"]

log = logging.getLogger(__name__)

#: Architectures :func:`prenorm_encoder` runs on the native kernels.
NATIVE_MODEL_TYPES = ("modernbert", "qwen3", "gemma3_text", "nomic_bert")

# Slots of one layer's inputs to the ``transformer`` op (its order, see csrc/ops.cpp).
_SLOTS = (
    "attn_norm",
    "attn_norm_bias",
    "qkv",
    "qkv_bias",
    "q_norm",
    "k_norm",
    "out",
    "out_bias",
    "post_attn_norm",
    "post_attn_norm_bias",
    "mlp_norm",
    "mlp_norm_bias",
    "up",
    "up_bias",
    "down",
    "down_bias",
    "post_mlp_norm",
    "post_mlp_norm_bias",
)


class UnsupportedModelError(ValueError):
    """The model has a feature the native transformer does not run (the stock forward will)."""


@dataclass(frozen=True)
class TransformerShape:
    """What the ``transformer`` op needs besides the arrays."""

    heads: int
    kv_heads: int
    head_dim: int
    norm: str  # "layer" or "rms"
    eps: float
    activation: str  # the gate's: "gelu", "silu" or "gelu_tanh"
    causal: bool
    windows: tuple[int, ...]  # per layer: keys within this distance, or -1 (all)
    rope_thetas: tuple[float, ...]  # per layer: rotary base, or 0 (none)
    embedding_scale: float = 1.0  # the token embeddings' factor (Gemma: sqrt(hidden))
    gated: bool = True  # the MLP's up product gated (GLU), else plain (SigLIP)
    post_norm: bool = False  # the post norms take the residual sum (NomicBERT), see the op


class _Parts(NamedTuple):
    """What a builder takes from a loaded model for :class:`PreNormEncoder`."""

    embeddings: mx.array
    head: list[Any]
    layers: list[Any]
    shape: TransformerShape
    stock: list[Any]  # the stock layers the packed ones replace, in their order
    offset: mx.array | None = None


class PreNormEncoder:
    """Pooled vectors of a pre-norm transformer through the native ``transformer`` op.

    Built by :func:`prenorm_encoder`; called like :class:`~.cpu_kernels.FastEncoder`.

    Args:
        kernels: The C++ kernels module (:func:`.native.load_kernels`).
        embeddings: The token embedding table (vocab, dim).
        head: The embedding norm's weight and bias, the final norm's weight and bias (None
            where absent).
        layers: Per layer, the arrays of :data:`_SLOTS` (None where absent), weights packed.
        shape: The op's settings.
        streams: CPU streams to split each batch over.
        positions: A learnt position embedding table added to the token embeddings (SigLIP),
            or None (rotary positions, or none).
        offset: A vector added to every token embedding (NomicBERT's token type 0), or None.
    """

    def __init__(
        self,
        kernels: ModuleType,
        embeddings: mx.array,
        head: Sequence[mx.array | None],
        layers: Sequence[Sequence[mx.array | None]],
        shape: TransformerShape,
        streams: int = 2,
        positions: mx.array | None = None,
        offset: mx.array | None = None,
    ) -> None:
        self._kernels = kernels
        self._embeddings = embeddings
        self._positions = positions
        self._offset = offset
        self._head = list(head)
        self._layers = [a for layer in layers for a in layer]
        self.shape = shape
        self._streams = [mx.new_stream(mx.cpu) for _ in range(max(1, streams))]
        # Threads a batch uses in all (its parts' streams and their helpers).
        self._threads = min(len(self._streams), _cores())
        arrays = (embeddings, positions, offset, *self._head, *self._layers)
        mx.eval([a for a in arrays if a is not None])

    def forward(
        self, ids: mx.array, offsets: mx.array, threads: int, positions: np.ndarray | None = None
    ) -> mx.array:
        """Hidden states (tokens x dim) of a packed batch: ``ids`` the tokens of all its
        sequences one after the other, sequence b being ``offsets[b]:offsets[b + 1]``
        (``positions``: each token's, for a learnt position table)."""
        s = self.shape
        x = self._embeddings[ids]
        if s.embedding_scale != 1.0:
            x = x * s.embedding_scale
        if self._offset is not None:
            x = x + self._offset
        if self._positions is not None and positions is not None:
            x = x + self._positions[mx.array(positions)]
        return self.transform(x, offsets, threads)

    def transform(self, x: mx.array, offsets: mx.array, threads: int) -> mx.array:
        """The layers and final norm over packed inputs ``x`` (tokens x dim)."""
        s = self.shape
        return self._kernels.transformer(
            x,
            offsets,
            self._head,
            self._layers,
            heads=s.heads,
            kv_heads=s.kv_heads,
            head_dim=s.head_dim,
            norm=s.norm,
            eps=s.eps,
            activation=s.activation,
            causal=s.causal,
            windows=list(s.windows),
            rope_thetas=list(s.rope_thetas),
            gated=s.gated,
            post_norm=s.post_norm,
            threads=threads,
        )

    def __call__(
        self, ids: np.ndarray, mask: np.ndarray, pool: Callable[[mx.array, mx.array], mx.array]
    ) -> mx.array:
        """Pooled vectors (rows x dim) for right-padded ``ids`` and ``mask`` (numpy), rows
        in their order (see :func:`~.cpu_kernels.run_packed`)."""

        def forward(
            ids: mx.array, positions: np.ndarray, offsets: mx.array, threads: int
        ) -> mx.array:
            return self.forward(ids, offsets, threads, positions)

        return run_packed(self._streams, self._threads, ids, mask, forward, pool)


def _bias(module: Any) -> mx.array | None:
    return module.get("bias")


def _norm_pair(module: Any) -> tuple[mx.array | None, mx.array | None]:
    """A norm's weight and bias; (None, None) for an identity."""
    if isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
        return module.weight, _bias(module)
    if isinstance(module, nn.Identity):
        return None, None
    raise UnsupportedModelError(f"unexpected norm {type(module).__name__}")


def _rope_theta(rope: Any, head_dim: int) -> float:
    if rope.traditional or rope.dims != head_dim or rope.scale != 1.0:
        raise UnsupportedModelError("rotary embeddings other than full-width, halves, scale 1")
    return float(rope.base)


def _layer(**arrays: mx.array | None) -> list[mx.array | None]:
    """One layer's inputs in :data:`_SLOTS` order, None for the slots not given."""
    unknown = set(arrays) - set(_SLOTS)
    assert not unknown, unknown
    return [arrays.get(slot) for slot in _SLOTS]


def _gated(
    packing: Packing,
    activated: mx.array,
    gate: mx.array,
    activated_bias: mx.array | None = None,
    gate_bias: mx.array | None = None,
) -> tuple[mx.array, mx.array | None]:
    """The up projection as one gated product, act(x @ activated.T) * (x @ gate.T): packed
    weights and bias (or None)."""
    packed = packing.glu(activated, gate)
    if activated_bias is None and gate_bias is None:
        return packed, None
    zeros = mx.zeros((activated.shape[0],))
    return packed, packing.kernels.pack_glu_bias(
        zeros if activated_bias is None else activated_bias,
        zeros if gate_bias is None else gate_bias,
    )


def _query_scale(dim: int, head_dim: int) -> mx.array:
    """Factors of a fused (queries, keys, values) projection's 3 * dim outputs that scale the
    queries by head_dim^-1/2 once, rather than every score (the rotary embedding is linear)."""
    return mx.concatenate([mx.full((dim,), head_dim**-0.5), mx.ones((2 * dim,))])


def _gelu_kind(act: Any) -> str:
    """The kernels' name for an ``nn.GELU`` module's function. mlx-embeddings' ModernBERT
    builds ``nn.GELU(approx="precise")``, which MLX computes with the tanh approximation
    (transformers' ModernBERT uses the exact erf GELU): the native path follows the module,
    so that its vectors are the stock forward's."""
    approx = getattr(act, "_approx", None) if isinstance(act, nn.GELU) else None
    if approx == "none":
        return "gelu"
    if approx in ("precise", "tanh"):
        return "gelu_tanh"
    raise UnsupportedModelError(f"activation {act!r} (only the exact and tanh GELU run)")


def _modernbert(packing: Packing, model: Any) -> _Parts:
    encoder = model.model
    config = encoder.config
    heads = config.num_attention_heads
    head_dim = config.hidden_size // heads
    pack = packing.linear
    scale = _query_scale(config.hidden_size, head_dim)
    layers, windows, thetas, activations = [], [], [], set()
    for layer in encoder.layers:
        attention, mlp = layer.attn, layer.mlp
        activations.add(_gelu_kind(mlp.act))
        qkv_bias = _bias(attention.Wqkv)
        # Wi's rows are the activated half, then the gate half.
        hidden = mlp.Wi.weight.shape[0] // 2
        wi, wi_bias = mlp.Wi.weight, _bias(mlp.Wi)
        up, up_bias = _gated(
            packing,
            wi[:hidden],
            wi[hidden:],
            None if wi_bias is None else wi_bias[:hidden],
            None if wi_bias is None else wi_bias[hidden:],
        )
        attn_norm, attn_norm_bias = _norm_pair(layer.attn_norm)
        mlp_norm, mlp_norm_bias = _norm_pair(layer.mlp_norm)
        layers.append(
            _layer(
                attn_norm=attn_norm,
                attn_norm_bias=attn_norm_bias,
                qkv=pack(attention.Wqkv.weight * scale[:, None]),
                qkv_bias=None if qkv_bias is None else qkv_bias * scale,
                out=pack(attention.Wo.weight),
                out_bias=_bias(attention.Wo),
                mlp_norm=mlp_norm,
                mlp_norm_bias=mlp_norm_bias,
                up=up,
                up_bias=up_bias,
                down=pack(mlp.Wo.weight),
                down_bias=_bias(mlp.Wo),
            )
        )
        left, right = attention.local_attention
        windows.append(-1 if (left, right) == (-1, -1) else int(left))
        if left != right:
            raise UnsupportedModelError("asymmetric sliding window")
        thetas.append(_rope_theta(attention.rotary_emb, head_dim))
    if len(activations) != 1:
        raise UnsupportedModelError("layers with different activations")
    head = [*_norm_pair(encoder.embeddings.norm), *_norm_pair(encoder.final_norm)]
    shape = TransformerShape(
        heads=heads,
        kv_heads=heads,
        head_dim=head_dim,
        norm="layer",
        eps=float(config.norm_eps),
        activation=activations.pop(),
        causal=False,
        windows=tuple(windows),
        rope_thetas=tuple(thetas),
    )
    return _Parts(encoder.embeddings.tok_embeddings.weight, head, layers, shape, encoder.layers)


def _qwen3(packing: Packing, model: Any) -> _Parts:
    decoder = model.model
    config = model.config
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = config.head_dim
    eps = float(config.rms_norm_eps)
    pack = packing.linear
    layers, thetas = [], []
    for layer in decoder.layers:
        attention, mlp = layer.self_attn, layer.mlp
        norms = (attention.q_norm, attention.k_norm, layer.input_layernorm)
        if any(n.eps != eps for n in (*norms, layer.post_attention_layernorm)):
            raise UnsupportedModelError("norms with different eps")
        projections = (attention.q_proj, attention.k_proj, attention.v_proj)
        biases = [_bias(p) for p in projections]
        qkv_bias = None
        if any(b is not None for b in biases):
            qkv_bias = mx.concatenate(
                [
                    mx.zeros((p.weight.shape[0],)) if b is None else b
                    for p, b in zip(projections, biases, strict=True)
                ]
            )
        up, up_bias = _gated(
            packing,
            mlp.gate_proj.weight,
            mlp.up_proj.weight,
            _bias(mlp.gate_proj),
            _bias(mlp.up_proj),
        )
        layers.append(
            _layer(
                attn_norm=layer.input_layernorm.weight,
                qkv=pack(mx.concatenate([p.weight for p in projections])),
                qkv_bias=qkv_bias,
                # Scores scaled once here: the query norm's weights are its last factor, and
                # the rotation is linear.
                q_norm=attention.q_norm.weight * head_dim**-0.5,
                k_norm=attention.k_norm.weight,
                out=pack(attention.o_proj.weight),
                out_bias=_bias(attention.o_proj),
                mlp_norm=layer.post_attention_layernorm.weight,
                up=up,
                up_bias=up_bias,
                down=pack(mlp.down_proj.weight),
                down_bias=_bias(mlp.down_proj),
            )
        )
        thetas.append(_rope_theta(attention.rotary_emb, head_dim))
    shape = TransformerShape(
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        norm="rms",
        eps=eps,
        activation="silu",
        causal=True,
        windows=(-1,) * len(layers),
        rope_thetas=tuple(thetas),
    )
    return _Parts(
        decoder.embed_tokens.weight,
        [None, None, decoder.norm.weight, None],
        layers,
        shape,
        decoder.layers,
    )


def _gemma3(packing: Packing, model: Any) -> _Parts:
    """EmbeddingGemma (engine/architectures/gemma3_text.py): RMSNorms whose weights are
    offsets from 1, a norm after attention and after the MLP as well as before them, queries
    scaled by query_pre_attn_scalar^-1/2, sliding-window layers (both ways when
    bidirectional) and full ones, each type with its rotary base."""
    args = model.args
    if args.attn_logit_softcapping is not None:
        raise UnsupportedModelError("attention logit soft-capping")
    activation = {"gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh", "gelu": "gelu"}
    if args.hidden_activation not in activation:
        raise UnsupportedModelError(f"hidden_activation {args.hidden_activation!r}")
    pack = packing.linear
    layers, windows, thetas = [], [], []
    for layer in model.layers:
        attention, mlp = layer.self_attn, layer.mlp
        if attention.rope_scale != 1.0:
            raise UnsupportedModelError("rotary positions scaled (linear RoPE)")
        norms = (
            attention.q_norm,
            attention.k_norm,
            layer.input_layernorm,
            layer.post_attention_layernorm,
            layer.pre_feedforward_layernorm,
            layer.post_feedforward_layernorm,
        )
        if any(n.eps != args.rms_norm_eps for n in norms):
            raise UnsupportedModelError("norms with different eps")
        q_norm, k_norm, attn_norm, post_attn, mlp_norm, post_mlp = (1.0 + n.weight for n in norms)
        up, _ = _gated(packing, mlp.gate_proj.weight, mlp.up_proj.weight)
        projections = (attention.q_proj, attention.k_proj, attention.v_proj)
        layers.append(
            _layer(
                attn_norm=attn_norm,
                qkv=pack(mx.concatenate([p.weight for p in projections])),
                # The score scale folded into the query norm's weights (its last factor).
                q_norm=q_norm * attention.scale,
                k_norm=k_norm,
                out=pack(attention.o_proj.weight),
                post_attn_norm=post_attn,
                mlp_norm=mlp_norm,
                up=up,
                down=pack(mlp.down_proj.weight),
                post_mlp_norm=post_mlp,
            )
        )
        # A sliding layer sees |q - k| < window (bidirectional) or 0 <= q - k < window.
        sliding = layer.layer_type == "sliding_attention" and args.window is not None
        windows.append(args.window - 1 if sliding else -1)
        thetas.append(float(attention.rope_base))
    shape = TransformerShape(
        heads=args.num_attention_heads,
        kv_heads=args.num_key_value_heads,
        head_dim=args.head_dim,
        norm="rms",
        eps=float(args.rms_norm_eps),
        activation=activation[args.hidden_activation],
        causal=not args.bidirectional,
        windows=tuple(windows),
        rope_thetas=tuple(thetas),
        # As the stock forward: sqrt(hidden) rounded to float32.
        embedding_scale=float(np.float32(args.hidden_size**0.5)),
    )
    return _Parts(
        model.embed_tokens.weight,
        [None, None, 1.0 + model.norm.weight, None],
        layers,
        shape,
        model.layers,
    )


def _nomic_bert(packing: Packing, model: Any) -> _Parts:
    """NomicBERT (engine/architectures/nomic_bert.py, which refuses the variants it does not
    implement): post-norm layers, SwiGLU as ``fc2(fc11(x) * silu(fc12(x)))``."""
    args = model.args
    heads = args.num_attention_heads
    head_dim = args.hidden_size // heads
    scale = _query_scale(args.hidden_size, head_dim)
    pack = packing.linear
    layers = []
    for block in model.encoder.layers:
        attention, mlp = block.attn, block.mlp
        up, _ = _gated(packing, mlp.fc12.weight, mlp.fc11.weight)
        layers.append(
            _layer(
                qkv=pack(attention.Wqkv.weight * scale[:, None]),
                out=pack(attention.out_proj.weight),
                post_attn_norm=block.norm1.weight,
                post_attn_norm_bias=block.norm1.bias,
                up=up,
                down=pack(mlp.fc2.weight),
                post_mlp_norm=block.norm2.weight,
                post_mlp_norm_bias=block.norm2.bias,
            )
        )
    shape = TransformerShape(
        heads=heads,
        kv_heads=heads,
        head_dim=head_dim,
        norm="layer",
        eps=float(args.layer_norm_eps),
        activation="silu",
        causal=False,
        windows=(-1,) * len(layers),
        rope_thetas=(float(args.rope_base),) * len(layers),
        post_norm=True,
    )
    return _Parts(
        model.embeddings.word_embeddings.weight,
        [model.emb_ln.weight, model.emb_ln.bias, None, None],
        layers,
        shape,
        model.encoder.layers,
        offset=model.embeddings.token_type_embeddings.weight[0],
    )


_BUILDERS = {
    "modernbert": _modernbert,
    "qwen3": _qwen3,
    "gemma3_text": _gemma3,
    "nomic_bert": _nomic_bert,
}


def prenorm_encoder(
    model: Any,
    model_type: str,
    kernels: ModuleType,
    streams: int = 2,
    precision: str = "fp32",
    keep_stock: bool = True,
) -> PreNormEncoder | None:
    """A :class:`PreNormEncoder` for a loaded mlx-embeddings model of
    :data:`NATIVE_MODEL_TYPES` (float weights), or None (logged) where the model has a
    feature the native transformer does not run, so that the caller keeps the stock forward.

    Args:
        model: The loaded model (``Model`` of mlx-embeddings' modernbert or qwen3, or of
            engine/architectures' gemma3_text or nomic_bert).
        model_type: One of :data:`NATIVE_MODEL_TYPES`.
        kernels: The C++ kernels module (:func:`.native.load_kernels`).
        streams: CPU streams to split each batch over.
        precision: The matrix products' precision (see :class:`Packing`).
        keep_stock: Keep the stock layers' matrices (the model's stock forward still runs),
            rather than let them go as each layer is packed (:func:`~.cpu_kernels.pack_releasing`).

    Raises:
        ValueError: ``model_type`` is not one of :data:`NATIVE_MODEL_TYPES`.
    """
    if model_type not in _BUILDERS:
        raise ValueError(f"model_type must be one of {NATIVE_MODEL_TYPES}, got {model_type!r}")
    try:
        parts = _BUILDERS[model_type](Packing(kernels, precision), model)
    except UnsupportedModelError as exc:
        log.info("%s runs the stock forward: %s", model_type, exc)
        return None
    if not keep_stock:  # every layer was read: the native path runs this model
        pack_releasing(parts.layers, parts.stock)
    return PreNormEncoder(
        kernels,
        parts.embeddings,
        parts.head,
        parts.layers,
        parts.shape,
        streams,
        offset=parts.offset,
    )


def _siglip_shape(encoder: Any, final_norm: Any) -> TransformerShape:
    """One SigLIP tower's settings for the ``transformer`` op.

    Raises:
        UnsupportedModelError: Norms with different eps, or layers with different GELUs.
    """
    first = encoder.layers[0]
    heads = first.self_attn.heads
    head_dim = first.self_attn.q_proj.weight.shape[0] // heads
    eps = float(first.layer_norm1.eps)
    activations = set()
    for layer in encoder.layers:
        if any(n.eps != eps for n in (layer.layer_norm1, layer.layer_norm2, final_norm)):
            raise UnsupportedModelError("norms with different eps")
        activations.add(_gelu_kind(layer.mlp.act))
    if len(activations) != 1:
        raise UnsupportedModelError("layers with different activations")
    count = len(encoder.layers)
    return TransformerShape(
        heads=heads,
        kv_heads=heads,
        head_dim=head_dim,
        norm="layer",
        eps=eps,
        activation=activations.pop(),
        causal=False,
        windows=(-1,) * count,
        rope_thetas=(0.0,) * count,
        gated=False,
    )


def _siglip_layers(packing: Packing, encoder: Any, shape: TransformerShape) -> list[Any]:
    """One SigLIP tower's layers for the ``transformer`` op, queries scaled once here, the
    stock layers' matrices let go as each is packed (:func:`~.cpu_kernels.pack_releasing`)."""
    pack, scale = packing.linear, shape.head_dim**-0.5
    layers = []
    for layer in encoder.layers:
        attention, mlp = layer.self_attn, layer.mlp
        projections = (attention.q_proj, attention.k_proj, attention.v_proj)
        factors = (scale, 1.0, 1.0)
        arrays = _layer(
            attn_norm=layer.layer_norm1.weight,
            attn_norm_bias=layer.layer_norm1.bias,
            qkv=pack(
                mx.concatenate([p.weight * f for p, f in zip(projections, factors, strict=True)])
            ),
            qkv_bias=mx.concatenate(
                [p.bias * f for p, f in zip(projections, factors, strict=True)]
            ),
            out=pack(attention.out_proj.weight),
            out_bias=attention.out_proj.bias,
            mlp_norm=layer.layer_norm2.weight,
            mlp_norm_bias=layer.layer_norm2.bias,
            up=pack(mlp.fc1.weight),
            up_bias=mlp.fc1.bias,
            down=pack(mlp.fc2.weight),
            down_bias=mlp.fc2.bias,
        )
        layers.append(arrays)
    pack_releasing(layers, encoder.layers)
    return layers


class ImageTower:
    """A SigLIP image tower on the native kernels: patch embeddings (an MLX product), the
    ``transformer`` op over every picture's patches with the final LayerNorm, then the
    attention-pooling head (MLX). Called with normalised ``(b, h, w, 3)`` pixels."""

    def __init__(self, model: Any, encoder: PreNormEncoder) -> None:
        self._model = model
        self._encoder = encoder
        self._threads = _cores()

    def __call__(self, pixels: mx.array) -> mx.array:
        x = self._model.embed_patches(pixels)
        b, t, d = x.shape
        offsets = mx.arange(0, b * t + 1, t, dtype=mx.int32)
        hidden = self._encoder.transform(x.reshape(b * t, d), offsets, self._threads)
        return self._model.vision_model.head(hidden.reshape(b, t, d))


def siglip_towers(
    model: Any, kernels: ModuleType, streams: int = 2, precision: str = "fp32"
) -> tuple[PreNormEncoder | None, ImageTower | None]:
    """The text tower (a :class:`PreNormEncoder` with learnt positions, called like the
    others: the engine pools its last position and applies the text head) and the
    :class:`ImageTower` of a loaded engine/architectures SigLIP; (None, None), logged, where
    the model has a feature the native transformer does not run. Once both towers can run
    natively, the stock layers' matrices are let go as each layer is packed (the stock
    forward can no longer run)."""
    packing = Packing(kernels, precision)
    text, vision = model.text_model, model.vision_model
    try:
        text_shape = _siglip_shape(text.encoder, text.final_layer_norm)
        image_shape = _siglip_shape(vision.encoder, vision.post_layernorm)
    except UnsupportedModelError as exc:
        log.info("siglip runs the stock forward: %s", exc)
        return None, None
    text_layers = _siglip_layers(packing, text.encoder, text_shape)
    image_layers = _siglip_layers(packing, vision.encoder, image_shape)
    text_head = [None, None, text.final_layer_norm.weight, text.final_layer_norm.bias]
    text_encoder = PreNormEncoder(
        kernels,
        text.embeddings.token_embedding.weight,
        text_head,
        text_layers,
        text_shape,
        streams,
        positions=text.embeddings.position_embedding.weight,
    )
    image_head = [None, None, vision.post_layernorm.weight, vision.post_layernorm.bias]
    no_tokens = mx.zeros((1, image_shape.heads * image_shape.head_dim))
    image_encoder = PreNormEncoder(kernels, no_tokens, image_head, image_layers, image_shape, 1)
    return text_encoder, ImageTower(model, image_encoder)
