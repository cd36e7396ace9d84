"""Cross-encoders' classification heads: one relevance score per (query, document) pair
from the encoder's last hidden state, as transformers' ``*ForSequenceClassification`` and
sentence-transformers' ``CrossEncoder.predict`` compute it (engine layer).

The encoder is the embedding architecture itself (``bert``, ``xlm_roberta``, ``modernbert``),
loaded from the checkpoint's encoder tensors; the head's tensors are loaded into
:class:`ScoreHead`, named as below:

- ``bert``: the pooler (``bert.pooler.dense``: the first token, dense, tanh), then
  ``classifier``;
- ``roberta``: ``classifier.dense`` on the first token, tanh, then ``classifier.out_proj``;
- ``modernbert``: the first token or the mean (``classifier_pooling``: the spec's
  ``pooling``), ``head.dense``, the ``classifier_activation``, ``head.norm``, then
  ``classifier``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from ...errors import ModelLoadError, ModelTypeError
from ...modelspec import Reranker
from .dense import ACTIVATIONS

#: The checkpoint's prefix of the encoder's tensors, per head (stripped before loading them).
_ENCODER_PREFIX = {"bert": "bert.", "roberta": "roberta.", "modernbert": ""}
#: Checkpoint tensor prefix -> the head's own name for it, per head.
_HEAD_TENSORS = {
    "bert": {"bert.pooler.dense.": "dense.", "classifier.": "classifier."},
    "roberta": {"classifier.dense.": "dense.", "classifier.out_proj.": "classifier."},
    "modernbert": {"head.dense.": "dense.", "head.norm.": "norm.", "classifier.": "classifier."},
}
#: ModernBERT's ``classifier_activation`` values, as transformers' ACT2FN computes them.
_HEAD_ACTIVATIONS: dict[str, Callable[[mx.array], mx.array]] = {
    **{name: ACTIVATIONS[name] for name in ("gelu", "tanh", "relu", "silu")},  # gelu: exact
    "gelu_new": nn.gelu_approx,
    "gelu_pytorch_tanh": nn.gelu_approx,
}


def encoder_config(reranker: Reranker, config: dict[str, Any]) -> dict[str, Any]:
    """``config.json`` as the embedding architecture's ``ModelArgs`` should read it for the
    encoder alone (no classification head; XLM-R's checkpoint has no pooler)."""
    config = dict(config)
    if reranker.head == "roberta":
        config["add_pooling_layer"] = False
    if reranker.head == "modernbert":
        config["architectures"] = ["ModernBertModel"]
    return config


def split_weights(reranker: Reranker, weights: dict[str, Any]) -> tuple[dict, dict]:
    """The checkpoint's tensors split into the encoder's (prefix stripped) and the head's
    (renamed for :class:`ScoreHead`). BERT's pooler goes to both (the encoder has one)."""
    prefix, renames = _ENCODER_PREFIX[reranker.head], _HEAD_TENSORS[reranker.head]
    encoder, head = {}, {}
    for key, value in weights.items():
        source = next((s for s in renames if key.startswith(s)), None)
        if source is not None:
            head[renames[source] + key[len(source) :]] = value
        if key.startswith(prefix) and (source is None or reranker.head == "bert"):
            encoder[key[len(prefix) :]] = value
    return encoder, head


class ScoreHead(nn.Module):
    """The classification head of a cross-encoder and its activation: (pairs, hidden) pooled
    hidden states (the model's ``pooling``) -> (pairs, 2): each pair's score (the activation
    applied) and its logit."""

    def __init__(self, reranker: Reranker, config: dict[str, Any]) -> None:
        super().__init__()
        hidden = int(config["hidden_size"])
        self._reranker = reranker
        bias = reranker.head != "modernbert" or bool(config.get("classifier_bias", False))
        self.dense = nn.Linear(hidden, hidden, bias=bias)
        self.classifier = nn.Linear(hidden, 1)
        if reranker.head == "modernbert":
            if reranker.head_activation not in _HEAD_ACTIVATIONS:
                raise ModelTypeError(
                    f"ModernBERT with classifier_activation {reranker.head_activation!r} is not "
                    f"supported (supported: {', '.join(_HEAD_ACTIVATIONS)})"
                )
            self.norm = nn.LayerNorm(
                hidden,
                eps=float(config.get("norm_eps", 1e-5)),
                bias=bool(config.get("norm_bias", False)),
            )

    def __call__(self, pooled: mx.array) -> mx.array:
        r = self._reranker
        x = self.dense(pooled)
        if r.head == "modernbert":
            x = self.norm(_HEAD_ACTIVATIONS[r.head_activation](x))
        else:
            x = mx.tanh(x)
        logits = self.classifier(x)[:, 0]
        return mx.stack([ACTIVATIONS[r.activation](logits), logits], axis=1)


def load_head(reranker: Reranker, config: dict[str, Any], weights: dict, name: str) -> ScoreHead:
    """The head with the checkpoint's tensors (:func:`split_weights`' second part).

    Raises:
        ModelLoadError: The checkpoint lacks a tensor of the head, or has one of another shape.
    """
    head = ScoreHead(reranker, config)
    try:
        head.load_weights(list(weights.items()), strict=True)
    except ValueError as exc:
        raise ModelLoadError(f"Model '{name}': its classification head: {exc}") from exc
    return head
