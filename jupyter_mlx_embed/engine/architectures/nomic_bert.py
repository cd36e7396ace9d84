"""NomicBERT (nomic-embed-text v1 and v1.5) as nomic's own code and transformers'
``NomicBertModel`` run it (engine layer: the MLX forward behind ``model_type: nomic_bert``).

A post-norm BERT without position embeddings: word and token-type embeddings and a LayerNorm,
then blocks of bidirectional attention with RoPE over the whole head (base
``rotary_emb_base``, 1000) and a SwiGLU MLP (``fc2(fc11(x) * silu(fc12(x)))``), each followed by
its residual and LayerNorm; no biases. Parameters carry nomic's checkpoint names (``emb_ln``,
``encoder.layers.N.attn.Wqkv``, ``mlp.fc11``...); ``sanitize`` also takes transformers' names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from ...errors import ModelTypeError


@dataclass(frozen=True)
class ModelArgs:
    """A NomicBERT ``config.json``: nomic's keys (``n_embd``, ``n_layer``...) or transformers'."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    vocab_size: int
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    rope_base: float = 1000.0

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> ModelArgs:
        """Read a ``config.json``.

        Raises:
            ModelTypeError: A variant this encoder does not implement (partial, interleaved or
                scaled rotary, causal attention, pre-norm, biases, an MLP other than SwiGLU).
        """

        def first(*keys: str, default: Any = None) -> Any:
            for key in keys:
                if config.get(key) is not None:
                    return config[key]
            return default

        variants = {
            "rotary_emb_fraction": (first("rotary_emb_fraction", default=1.0), 1.0),
            "rotary_emb_interleaved": (bool(config.get("rotary_emb_interleaved")), False),
            "rotary_scaling_factor": (config.get("rotary_scaling_factor"), None),
            "rotary_emb_scale_base": (config.get("rotary_emb_scale_base"), None),
            "causal": (bool(config.get("causal")), False),
            "prenorm": (bool(config.get("prenorm")), False),
            "qkv_proj_bias": (bool(config.get("qkv_proj_bias")), False),
            "mlp_fc1_bias": (bool(config.get("mlp_fc1_bias")), False),
            "mlp_fc2_bias": (bool(config.get("mlp_fc2_bias")), False),
            "use_rms_norm": (bool(config.get("use_rms_norm")), False),
            "parallel_block": (bool(config.get("parallel_block")), False),
            "activation": (first("activation_function", "hidden_act", default="swiglu"), None),
        }
        for key, (value, supported) in variants.items():
            ok = value in ("swiglu", "silu") if key == "activation" else value == supported
            if not ok:
                raise ModelTypeError(
                    f"nomic_bert: {key}={value!r} is not supported (supported: the "
                    "nomic-embed-text v1/v1.5 layout)",
                    model_type="nomic_bert",
                )
        rope = config.get("rope_parameters")
        if isinstance(rope, dict) and rope.get("rope_type", "default") != "default":
            raise ModelTypeError(
                f"nomic_bert: RoPE type {rope.get('rope_type')!r} is not supported",
                model_type="nomic_bert",
            )
        base = rope.get("rope_theta") if isinstance(rope, dict) else None
        return cls(
            hidden_size=int(first("n_embd", "hidden_size")),
            num_hidden_layers=int(first("n_layer", "num_hidden_layers")),
            num_attention_heads=int(first("n_head", "num_attention_heads")),
            intermediate_size=int(first("n_inner", "intermediate_size")),
            vocab_size=int(config["vocab_size"]),
            type_vocab_size=int(first("type_vocab_size", default=2)),
            layer_norm_eps=float(first("layer_norm_epsilon", "layer_norm_eps", default=1e-12)),
            rope_base=float(base or first("rotary_emb_base", default=1000.0)),
        )


class Embeddings(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(args.vocab_size, args.hidden_size)
        self.token_type_embeddings = nn.Embedding(args.type_vocab_size, args.hidden_size)

    def __call__(self, inputs: mx.array) -> mx.array:
        # Every token is of type 0 (sentence-transformers passes no token types).
        return self.word_embeddings(inputs) + self.token_type_embeddings.weight[0]


class Attention(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.heads = args.num_attention_heads
        self.head_dim = args.hidden_size // args.num_attention_heads
        self.rope_base = args.rope_base
        self.Wqkv = nn.Linear(args.hidden_size, 3 * args.hidden_size, bias=False)
        self.out_proj = nn.Linear(args.hidden_size, args.hidden_size, bias=False)

    def _rope(self, x: mx.array) -> mx.array:
        # rotate_half (not interleaved) over the whole head, as rotary_emb_fraction 1.0
        return mx.fast.rope(
            x, self.head_dim, traditional=False, base=self.rope_base, scale=1.0, offset=0
        )

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        b, n, _ = x.shape
        qkv = self.Wqkv(x).reshape(b, n, 3, self.heads, self.head_dim).transpose(2, 0, 3, 1, 4)
        q, k, v = self._rope(qkv[0]), self._rope(qkv[1]), qkv[2]
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.head_dim**-0.5, mask=mask)
        return self.out_proj(out.transpose(0, 2, 1, 3).reshape(b, n, -1))


class GatedMLP(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.fc11 = nn.Linear(args.hidden_size, args.intermediate_size, bias=False)
        self.fc12 = nn.Linear(args.hidden_size, args.intermediate_size, bias=False)
        self.fc2 = nn.Linear(args.intermediate_size, args.hidden_size, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        return self.fc2(self.fc11(x) * nn.silu(self.fc12(x)))


class Block(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.attn = Attention(args)
        self.mlp = GatedMLP(args)
        self.norm1 = nn.LayerNorm(args.hidden_size, eps=args.layer_norm_eps)
        self.norm2 = nn.LayerNorm(args.hidden_size, eps=args.layer_norm_eps)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        h = self.norm1(x + self.attn(x, mask))
        return self.norm2(h + self.mlp(h))


class Encoder(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.layers = [Block(args) for _ in range(args.num_hidden_layers)]


class Model(nn.Module):
    """``NomicBertModel``: token ids to last hidden states."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.args = args
        self.embeddings = Embeddings(args)
        self.emb_ln = nn.LayerNorm(args.hidden_size, eps=args.layer_norm_eps)
        self.encoder = Encoder(args)

    def __call__(self, inputs: mx.array, attention_mask: mx.array | None = None) -> mx.array:
        """Last hidden states (B, T, hidden) of padded ``inputs`` (B, T)."""
        if attention_mask is None:
            attention_mask = mx.ones(inputs.shape)
        h = self.emb_ln(self.embeddings(inputs))
        keys = (attention_mask > 0)[:, None, None, :]
        mask = mx.where(keys, mx.array(0.0, h.dtype), mx.array(mx.finfo(h.dtype).min, h.dtype))
        for layer in self.encoder.layers:
            h = layer(h, mask)
        return h

    def sanitize(self, weights: dict[str, mx.array]) -> dict[str, mx.array]:
        """Checkpoint tensors onto this model: nomic's names as they are; transformers'
        (``layers.N.self_attn.q_proj``...) renamed, q/k/v stacked into ``Wqkv``; heads dropped."""
        renames = [
            (r"^(nomic_bert|bert)\.", ""),
            (r"^embeddings\.LayerNorm\.", "emb_ln."),
            (r"^layers\.", "encoder.layers."),
            (r"\.self_attn\.o_proj\.", ".attn.out_proj."),
            (r"\.mlp\.up_proj\.", ".mlp.fc11."),
            (r"\.mlp\.gate_proj\.", ".mlp.fc12."),
            (r"\.mlp\.down_proj\.", ".mlp.fc2."),
            (r"\.post_attention_layernorm\.", ".norm1."),
            (r"\.post_mlp_layernorm\.", ".norm2."),
        ]
        out: dict[str, mx.array] = {}
        split: dict[str, dict[str, mx.array]] = {}
        for key, value in weights.items():
            for pattern, replacement in renames:
                key = re.sub(pattern, replacement, key)
            if key.startswith(("cls.", "pooler.", "lm_head.")) or "rotary_emb." in key:
                continue
            found = re.match(r"^(.*)\.self_attn\.([qkv])_proj\.weight$", key)
            if found:
                split.setdefault(found.group(1), {})[found.group(2)] = value
                continue
            out[key] = value
        for prefix, parts in split.items():
            out[f"{prefix}.attn.Wqkv.weight"] = mx.concatenate(
                [parts["q"], parts["k"], parts["v"]], axis=0
            )
        return out
