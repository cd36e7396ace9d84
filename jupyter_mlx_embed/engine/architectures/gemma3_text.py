"""Gemma 3's text encoder as transformers' ``Gemma3TextModel`` runs it for EmbeddingGemma
(engine layer: the MLX forward behind ``model_type: gemma3_text``).

Two things set it apart from mlx-embeddings' ``gemma3_text`` (which also needs mlx-lm): the
sliding-window layers see only the tokens within the window, and with
``use_bidirectional_attention`` (EmbeddingGemma) that window reaches both ways, over
``sliding_window // 2 + 1`` positions (transformers' ``Gemma3TextConfig`` halves the configured
window so); the full-attention layers see the whole text. Each layer has RoPE of its own base
(``rope_local_base_freq`` for sliding layers, ``rope_theta`` for full ones).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from ...errors import ModelTypeError

_ACTIVATIONS = {"gelu_pytorch_tanh": nn.gelu_approx, "gelu_new": nn.gelu_approx, "gelu": nn.gelu}
_LAYER_TYPES = ("sliding_attention", "full_attention")


@dataclass(frozen=True)
class ModelArgs:
    """The parts of a ``Gemma3TextConfig`` that change the encoder's output (transformers'
    defaults for keys the config leaves out)."""

    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    vocab_size: int
    num_key_value_heads: int = 4
    head_dim: int = 256
    rms_norm_eps: float = 1e-6
    query_pre_attn_scalar: float = 256
    hidden_activation: str = "gelu_pytorch_tanh"
    attn_logit_softcapping: float | None = None
    #: Positions a token reaches in a sliding layer: ``|q - k| < window`` when bidirectional,
    #: ``0 <= q - k < window`` otherwise; ``None``: no window.
    window: int | None = 4096
    bidirectional: bool = False
    layer_types: tuple[str, ...] = ()
    #: ``(base, position scale)`` of RoPE for each layer type.
    rope: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> ModelArgs:
        """Read a ``config.json`` (older keys and transformers 5's ``rope_parameters``).

        Raises:
            ModelTypeError: An activation or RoPE type this encoder does not implement.
        """
        layers = int(config["num_hidden_layers"])
        types = config.get("layer_types")
        if not isinstance(types, list) or len(types) < layers:
            pattern = int(
                config.get("sliding_window_pattern") or config.get("_sliding_window_pattern") or 6
            )
            types = [
                "sliding_attention" if (i + 1) % pattern else "full_attention"
                for i in range(layers)
            ]
        unknown = sorted(set(types[:layers]) - set(_LAYER_TYPES))
        if unknown:
            raise ModelTypeError(
                f"gemma3_text: unsupported layer types {unknown}", model_type="gemma3_text"
            )
        activation = config.get("hidden_activation") or config.get("hidden_act")
        activation = activation or "gelu_pytorch_tanh"
        if activation not in _ACTIVATIONS:
            raise ModelTypeError(
                f"gemma3_text: unsupported hidden_activation {activation!r} (supported: "
                f"{', '.join(_ACTIVATIONS)})",
                model_type="gemma3_text",
            )
        bidirectional = bool(config.get("use_bidirectional_attention", False))
        sliding = config.get("sliding_window", 4096)
        window = None
        if isinstance(sliding, int) and sliding > 0:
            # As Gemma3TextConfig: the bidirectional window is stored as its full width.
            window = sliding // 2 + 1 if bidirectional else sliding
        heads = int(config["num_attention_heads"])
        return cls(
            hidden_size=int(config["hidden_size"]),
            num_hidden_layers=layers,
            intermediate_size=int(config["intermediate_size"]),
            num_attention_heads=heads,
            vocab_size=int(config["vocab_size"]),
            num_key_value_heads=int(config.get("num_key_value_heads") or 4),
            head_dim=int(config.get("head_dim") or 256),
            rms_norm_eps=float(config.get("rms_norm_eps") or 1e-6),
            query_pre_attn_scalar=float(config.get("query_pre_attn_scalar") or 256),
            hidden_activation=activation,
            attn_logit_softcapping=config.get("attn_logit_softcapping"),
            window=window,
            bidirectional=bidirectional,
            layer_types=tuple(types[:layers]),
            rope={kind: _rope(config, kind) for kind in _LAYER_TYPES},
        )


def _rope(config: dict[str, Any], layer_type: str) -> tuple[float, float]:
    """RoPE's base and position scale for one layer type, as transformers reads them."""
    full = layer_type == "full_attention"
    nested = config.get("rope_parameters")
    if isinstance(nested, dict) and isinstance(nested.get(layer_type), dict):
        params = dict(nested[layer_type])
    else:
        params = dict(config["rope_scaling"]) if full and config.get("rope_scaling") else {}
    if "rope_theta" not in params:
        params["rope_theta"] = (
            config.get("rope_theta", 1_000_000.0)
            if full
            else config.get("rope_local_base_freq", 10_000.0)
        )
    kind = params.get("rope_type", params.get("type", "default"))
    if kind == "default":
        return float(params["rope_theta"]), 1.0
    if kind == "linear":  # positions divided by the factor
        return float(params["rope_theta"]), 1.0 / float(params["factor"])
    raise ModelTypeError(
        f"gemma3_text: unsupported RoPE type {kind!r} (supported: default, linear)",
        model_type="gemma3_text",
    )


class RMSNorm(nn.Module):
    """Gemma's RMSNorm: the weight is stored as an offset from 1."""

    def __init__(self, dims: int, eps: float) -> None:
        super().__init__()
        self.weight = mx.zeros((dims,))
        self.eps = eps

    def __call__(self, x: mx.array) -> mx.array:
        return mx.fast.rms_norm(x, 1.0 + self.weight, self.eps)


class Attention(nn.Module):
    def __init__(self, args: ModelArgs, layer_type: str) -> None:
        super().__init__()
        dim, heads, kv_heads = args.hidden_size, args.num_attention_heads, args.num_key_value_heads
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, args.head_dim
        self.scale = args.query_pre_attn_scalar**-0.5
        self.softcap = args.attn_logit_softcapping
        self.rope_base, self.rope_scale = args.rope[layer_type]
        self.q_proj = nn.Linear(dim, heads * args.head_dim, bias=False)
        self.k_proj = nn.Linear(dim, kv_heads * args.head_dim, bias=False)
        self.v_proj = nn.Linear(dim, kv_heads * args.head_dim, bias=False)
        self.o_proj = nn.Linear(heads * args.head_dim, dim, bias=False)
        self.q_norm = RMSNorm(args.head_dim, args.rms_norm_eps)
        self.k_norm = RMSNorm(args.head_dim, args.rms_norm_eps)

    def _rope(self, x: mx.array) -> mx.array:
        return mx.fast.rope(
            x,
            self.head_dim,
            traditional=False,  # rotate_half, as transformers
            base=self.rope_base,
            scale=self.rope_scale,
            offset=0,
        )

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        b, n, _ = x.shape
        q = self.q_proj(x).reshape(b, n, self.heads, -1).transpose(0, 2, 1, 3)
        k = self.k_proj(x).reshape(b, n, self.kv_heads, -1).transpose(0, 2, 1, 3)
        v = self.v_proj(x).reshape(b, n, self.kv_heads, -1).transpose(0, 2, 1, 3)
        q, k = self._rope(self.q_norm(q)), self._rope(self.k_norm(k))
        if self.softcap is None:
            out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=mask)
        else:
            repeats = self.heads // self.kv_heads
            k, v = mx.repeat(k, repeats, axis=1), mx.repeat(v, repeats, axis=1)
            scores = (q @ k.transpose(0, 1, 3, 2)) * self.scale
            scores = mx.tanh(scores / self.softcap) * self.softcap + mask
            out = mx.softmax(scores, axis=-1, precise=True) @ v
        return self.o_proj(out.transpose(0, 2, 1, 3).reshape(b, n, -1))


class MLP(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(args.hidden_size, args.intermediate_size, bias=False)
        self.up_proj = nn.Linear(args.hidden_size, args.intermediate_size, bias=False)
        self.down_proj = nn.Linear(args.intermediate_size, args.hidden_size, bias=False)
        self.act = _ACTIVATIONS[args.hidden_activation]

    def __call__(self, x: mx.array) -> mx.array:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, args: ModelArgs, layer_type: str) -> None:
        super().__init__()
        self.layer_type = layer_type
        self.self_attn = Attention(args, layer_type)
        self.mlp = MLP(args)
        eps = args.rms_norm_eps
        self.input_layernorm = RMSNorm(args.hidden_size, eps)
        self.post_attention_layernorm = RMSNorm(args.hidden_size, eps)
        self.pre_feedforward_layernorm = RMSNorm(args.hidden_size, eps)
        self.post_feedforward_layernorm = RMSNorm(args.hidden_size, eps)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        h = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), mask))
        return h + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(h)))


class Model(nn.Module):
    """``Gemma3TextModel``: token ids to last hidden states, parameters named as its
    checkpoints name them (``embed_tokens``, ``layers.N...``, ``norm``)."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.args = args
        self.embed_tokens = nn.Embedding(args.vocab_size, args.hidden_size)
        self.layers = [DecoderLayer(args, kind) for kind in args.layer_types]
        self.norm = RMSNorm(args.hidden_size, args.rms_norm_eps)

    def _masks(self, attention_mask: mx.array, dtype: mx.Dtype) -> dict[str, mx.array]:
        """Additive masks (B, 1, T, T) per layer type. Blocked pairs get the dtype's lowest
        value rather than -inf, so that a padding row whose window holds no text token gives
        finite values (it is pooled with weight 0, and 0 * nan would be nan)."""
        n = attention_mask.shape[1]
        pos = mx.arange(n)
        offset = pos[:, None] - pos[None, :]  # query - key
        keys = (attention_mask > 0)[:, None, None, :]
        args = self.args
        full = keys if args.bidirectional else keys & (offset >= 0)
        sliding = full
        if args.window is not None:
            near = mx.abs(offset) < args.window if args.bidirectional else offset < args.window
            sliding = full & near
        zero, low = mx.array(0.0, dtype), mx.array(mx.finfo(dtype).min, dtype)
        return {
            "full_attention": mx.where(full, zero, low),
            "sliding_attention": mx.where(sliding, zero, low),
        }

    def __call__(self, inputs: mx.array, attention_mask: mx.array | None = None) -> mx.array:
        """Last hidden states (B, T, hidden) of right- or left-padded ``inputs`` (B, T)."""
        if attention_mask is None:
            attention_mask = mx.ones(inputs.shape)
        h = self.embed_tokens(inputs)
        # transformers scales by sqrt(hidden) held as a float32 tensor cast to the weights' type.
        h = h * mx.array(self.args.hidden_size**0.5, mx.float32).astype(h.dtype)
        masks = self._masks(attention_mask, h.dtype)
        for layer in self.layers:
            h = layer(h, masks[layer.layer_type])
        return self.norm(h)

    def sanitize(self, weights: dict[str, mx.array]) -> dict[str, mx.array]:
        """Checkpoint tensors onto this model: ``Gemma3ForCausalLM`` and MLX conversions prefix
        ``model.``; a language-model head or RoPE buffers are not used."""
        out = {}
        for key, value in weights.items():
            if key.startswith("lm_head.") or "rotary_emb." in key:
                continue
            out[key.removeprefix("model.")] = value
        return out
