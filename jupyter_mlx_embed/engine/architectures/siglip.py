"""SigLIP (engine layer: the MLX forward behind ``model_type: siglip``), as transformers'
``SiglipModel.get_text_features`` and ``get_image_features`` compute them.

Two pre-norm transformer towers of the same layer shape (LayerNorm with bias, attention with
biased q/k/v/out projections, an MLP of fc1, the tanh GELU and fc2):

- text: token and position embeddings, the layers without a mask (the texts come padded to
  the full context, as the model was trained), a final LayerNorm, the last position's state
  through ``head`` (a linear layer);
- image: the picture cut into patches (a strided convolution, here one product over the
  flattened patches), plus position embeddings, the layers, a LayerNorm, then the
  attention-pooling head: one learnt probe attends over the patches, then a LayerNorm and an
  MLP with a residual.

Parameters carry the checkpoint's names; ``sanitize`` flattens the patch convolution's kernel
and takes mlx-community conversions (kernel stored (out, kh, kw, in)) as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from ...errors import ModelTypeError
from ...modelspec import SIGLIP_TEXT_DEFAULTS, SIGLIP_VISION_DEFAULTS

_GELU = {"gelu_pytorch_tanh": "precise", "gelu_new": "precise", "gelu": "none"}


@dataclass(frozen=True)
class Tower:
    """One tower's sizes."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    layer_norm_eps: float
    approx: str  # nn.GELU's: "precise" (tanh) or "none" (exact)


@dataclass(frozen=True)
class ModelArgs:
    """A SigLIP ``config.json``."""

    text: Tower
    vision: Tower
    vocab_size: int
    positions: int
    projection_size: int
    image_size: int
    patch_size: int
    channels: int
    vision_head: bool

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> ModelArgs:
        """Read a ``config.json`` (transformers' defaults where it is silent).

        Raises:
            ModelTypeError: An activation other than the GELUs, or no attention-pooling head.
        """
        text = {**SIGLIP_TEXT_DEFAULTS, **(config.get("text_config") or {})}
        vision = {**SIGLIP_VISION_DEFAULTS, **(config.get("vision_config") or {})}

        def tower(c: dict[str, Any]) -> Tower:
            approx = _GELU.get(str(c["hidden_act"]))
            if approx is None:
                raise ModelTypeError(
                    f"SigLIP with hidden_act {c['hidden_act']!r} is not supported "
                    f"(supported: {', '.join(_GELU)})",
                    model_type="siglip",
                )
            return Tower(
                hidden_size=int(c["hidden_size"]),
                intermediate_size=int(c["intermediate_size"]),
                num_hidden_layers=int(c["num_hidden_layers"]),
                num_attention_heads=int(c["num_attention_heads"]),
                layer_norm_eps=float(c["layer_norm_eps"]),
                approx=approx,
            )

        if vision.get("vision_use_head", True) is False:
            raise ModelTypeError(
                "SigLIP without the image tower's attention-pooling head is not supported",
                model_type="siglip",
            )
        return cls(
            text=tower(text),
            vision=tower(vision),
            vocab_size=int(text["vocab_size"]),
            positions=int(text["max_position_embeddings"]),
            projection_size=int(text.get("projection_size") or text["hidden_size"]),
            image_size=int(vision["image_size"]),
            patch_size=int(vision["patch_size"]),
            channels=int(vision["num_channels"]),
            vision_head=True,
        )


class Attention(nn.Module):
    """Multi-head attention with biased projections, no mask."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def __call__(self, x: mx.array) -> mx.array:
        b, t, d = x.shape

        def split(y: mx.array) -> mx.array:
            return y.reshape(b, t, self.heads, -1).transpose(0, 2, 1, 3)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.out_proj(out.transpose(0, 2, 1, 3).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, approx: str) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU(approx=approx)

    def __call__(self, x: mx.array) -> mx.array:
        return self.fc2(self.act(self.fc1(x)))


class EncoderLayer(nn.Module):
    def __init__(self, t: Tower) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(t.hidden_size, eps=t.layer_norm_eps)
        self.self_attn = Attention(t.hidden_size, t.num_attention_heads)
        self.layer_norm2 = nn.LayerNorm(t.hidden_size, eps=t.layer_norm_eps)
        self.mlp = MLP(t.hidden_size, t.intermediate_size, t.approx)

    def __call__(self, x: mx.array) -> mx.array:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nn.Module):
    def __init__(self, t: Tower) -> None:
        super().__init__()
        self.layers = [EncoderLayer(t) for _ in range(t.num_hidden_layers)]

    def __call__(self, x: mx.array) -> mx.array:
        for layer in self.layers:
            x = layer(x)
        return x


class TextEmbeddings(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(args.vocab_size, args.text.hidden_size)
        self.position_embedding = nn.Embedding(args.positions, args.text.hidden_size)


class TextModel(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.embeddings = TextEmbeddings(args)
        self.encoder = Encoder(args.text)
        self.final_layer_norm = nn.LayerNorm(args.text.hidden_size, eps=args.text.layer_norm_eps)
        self.head = nn.Linear(args.text.hidden_size, args.projection_size)


class PatchEmbeddings(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        side = args.patch_size
        dim = args.vision.hidden_size
        # The convolution's kernel flattened as (out, kh * kw * in): see Model.sanitize.
        self.patch_embedding = nn.Linear(side * side * args.channels, dim)
        self.position_embedding = nn.Embedding((args.image_size // side) ** 2, dim)


class PackedAttention(nn.Module):
    """``nn.MultiheadAttention``'s parameters: the packed q/k/v projection and the output."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.in_proj_weight = mx.zeros((3 * dim, dim))
        self.in_proj_bias = mx.zeros((3 * dim,))
        self.out_proj = nn.Linear(dim, dim)


class AttentionPool(nn.Module):
    """transformers' ``SiglipMultiheadAttentionPoolingHead``: a probe attends over the
    patches (``nn.MultiheadAttention`` with packed in-projections), then LayerNorm and MLP."""

    def __init__(self, t: Tower) -> None:
        super().__init__()
        dim = t.hidden_size
        self.heads = t.num_attention_heads
        self.probe = mx.zeros((1, 1, dim))
        self.attention = PackedAttention(dim)
        self.layernorm = nn.LayerNorm(dim, eps=t.layer_norm_eps)
        self.mlp = MLP(dim, t.intermediate_size, t.approx)

    def __call__(self, x: mx.array) -> mx.array:
        b, t, d = x.shape
        w, bias = self.attention.in_proj_weight, self.attention.in_proj_bias
        heads = self.heads
        q = self.probe[0] @ w[:d].T + bias[:d]  # (1, d): the same for every picture
        kv = x @ w[d:].T + bias[d:]
        k, v = kv[..., :d], kv[..., d:]
        q = mx.broadcast_to(q.reshape(1, heads, 1, -1), (b, heads, 1, d // heads))
        k = k.reshape(b, t, heads, -1).transpose(0, 2, 1, 3)
        v = v.reshape(b, t, heads, -1).transpose(0, 2, 1, 3)
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=(d // heads) ** -0.5)
        h = self.attention.out_proj(out.transpose(0, 2, 1, 3).reshape(b, d))
        return h + self.mlp(self.layernorm(h))


class VisionModel(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.patch = args.patch_size
        self.embeddings = PatchEmbeddings(args)
        self.encoder = Encoder(args.vision)
        self.post_layernorm = nn.LayerNorm(args.vision.hidden_size, eps=args.vision.layer_norm_eps)
        self.head = AttentionPool(args.vision)


def patches(pixels: mx.array, side: int) -> mx.array:
    """``(b, h, w, c)`` pixels as ``(b, h/side * w/side, side * side * c)``: patches in
    row-major order, each flattened (row, column, channel), as the kernel is flattened. Rows
    and columns past the last whole patch are left out, as the strided convolution leaves
    them (384 pixels make 27 patches of 14)."""
    b, h, w, c = pixels.shape
    h, w = h - h % side, w - w % side
    pixels = pixels[:, :h, :w]
    x = pixels.reshape(b, h // side, side, w // side, side, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // side) * (w // side), side * side * c)


class Model(nn.Module):
    """Both towers; ``__call__`` is the text tower's final hidden states (the engine pools
    the last position and calls :meth:`project_text`), :meth:`image_features` the image
    tower's pooled vectors."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.args = args
        self.text_model = TextModel(args)
        self.vision_model = VisionModel(args)
        self.logit_scale = mx.zeros((1,))
        self.logit_bias = mx.zeros((1,))

    def __call__(self, ids: mx.array, attention_mask: mx.array | None = None) -> mx.array:
        """Final hidden states of texts padded to the context (the mask is not used: SigLIP
        reads its padding)."""
        text = self.text_model
        positions = text.embeddings.position_embedding.weight[: ids.shape[1]]
        x = text.embeddings.token_embedding(ids) + positions
        return text.final_layer_norm(text.encoder(x))

    def project_text(self, pooled: mx.array) -> mx.array:
        """The text tower's head on the pooled (last) state."""
        return self.text_model.head(pooled)

    def embed_patches(self, pixels: mx.array) -> mx.array:
        """The image tower's input: patch embeddings plus positions, ``(b, patches, dim)``."""
        vision = self.vision_model
        x = vision.embeddings.patch_embedding(patches(pixels, vision.patch))
        return x + vision.embeddings.position_embedding.weight

    def pool_image(self, hidden: mx.array) -> mx.array:
        """The image tower's vector from its last layer's states: LayerNorm, attention pool."""
        vision = self.vision_model
        return vision.head(vision.post_layernorm(hidden))

    def image_features(self, pixels: mx.array) -> mx.array:
        """``get_image_features`` of normalised ``(b, h, w, 3)`` pixels (not normalised)."""
        return self.pool_image(self.vision_model.encoder(self.embed_patches(pixels)))

    def sanitize(self, weights: dict[str, mx.array]) -> dict[str, mx.array]:
        """The checkpoint's tensors onto the parameters: position id buffers dropped, the
        patch kernel flattened (transformers' (out, in, kh, kw) or MLX's (out, kh, kw, in)), and
        mlx-embeddings' names (``text_model.text_model.``, ``in_proj.weight``) mapped back."""
        out = {}
        side, channels = self.args.patch_size, self.args.channels
        for key, value in weights.items():
            if key.endswith("position_ids"):
                continue
            if key.endswith("patch_embedding.weight") and value.ndim == 4:
                if value.shape[1:] == (channels, side, side):
                    value = value.transpose(0, 2, 3, 1)
                value = value.reshape(value.shape[0], -1)
            for tower in ("text_model", "vision_model"):  # mlx-embeddings' nesting
                key = key.replace(f"{tower}.{tower}.", f"{tower}.")
            key = key.replace("attention.in_proj.weight", "attention.in_proj_weight")
            out[key.replace("attention.in_proj.bias", "attention.in_proj_bias")] = value
        return out
