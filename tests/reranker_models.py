"""Random-weight cross-encoder (reranker) models at their published shapes, layouts and dtypes.

The reranking counterpart of :mod:`tests.real_models`, whose helpers it reuses: each builder
writes a folder that ``sentence_transformers.CrossEncoder`` and transformers'
``AutoModelForSequenceClassification`` both load, with the published ``config.json`` (the
source repository is named beside each), a ``model.safetensors`` with the published tensor
names, shapes and dtype (the ``*ForSequenceClassification`` prefixes and heads), a real
tokenizer of the published kind trained on local text with the published special tokens, ids
and pair template, and no sentence-transformers module files (cross-encoders publish none:
the activation is read from ``config.json``'s ``sentence_transformers`` key, else Sigmoid for
one label). Weights are random: normal with std 0.02 as in :mod:`tests.real_models`, except
the last projection of the BERT and XLM-R heads (to the one label), whose std is raised
(:attr:`PublishedReranker.head_std`) so that distinct pairs get clearly distinct scores.

Folders are cached under a caller's folder, keyed by the builder's parameters::

    folder = build_reranker("bge-reranker-base", Path.home() / ".cache/jme-rerankers", layers=2)

or ``python tests/reranker_models.py ROOT [NAME ...] [--layers N] [--max-length N] [--check]``
(``--check`` loads each built folder with sentence-transformers and transformers, see
:func:`check`). Building needs only numpy, ``tokenizers`` and ``sentencepiece``; checking
needs torch, transformers and sentence-transformers.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

if __package__:
    from . import real_models
else:  # run as a script: python tests/reranker_models.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests import real_models

Tensor = real_models.Tensor

#: Bump when a builder's output changes (real_models' own BUILD_VERSION is in the key too).
BUILD_VERSION = 1


# ---------------------------------------------------------------------------------------
# Published configurations (config.json as in each model's repository; only the layer
# count is ever changed).

#: cross-encoder/ms-marco-MiniLM-L6-v2, config.json (BertForSequenceClassification) as
#: published since the repository's sentence-transformers v4 update (renamed from
#: ms-marco-MiniLM-L-6-v2): the activation moved from ``sbert_ce_default_activation_function``
#: to the ``sentence_transformers`` key. The two version strings are assumed (not seen here).
MS_MARCO_MINILM_L6_V2: dict[str, Any] = {
    "architectures": ["BertForSequenceClassification"],
    "attention_probs_dropout_prob": 0.1,
    "classifier_dropout": None,
    "gradient_checkpointing": False,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 384,
    "id2label": {"0": "LABEL_0"},
    "initializer_range": 0.02,
    "intermediate_size": 1536,
    "label2id": {"LABEL_0": 0},
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "model_type": "bert",
    "num_attention_heads": 12,
    "num_hidden_layers": 6,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "sentence_transformers": {
        "activation_fn": "torch.nn.modules.activation.Sigmoid",
        "version": "4.0.1",
    },
    "torch_dtype": "float32",
    "transformers_version": "4.50.3",
    "type_vocab_size": 2,
    "use_cache": True,
    "vocab_size": 30522,
}

#: A BERT-base cross-encoder (12 x 768: the shape of the ms-marco fine-tunes of
#: bert-base-uncased): ms-marco-MiniLM-L6-v2's config at bert-base-uncased's sizes, without
#: the sentence-transformers key (older CrossEncoder checkpoints have none: sigmoid applies).
BERT_BASE_RERANKER: dict[str, Any] = {
    key: value for key, value in MS_MARCO_MINILM_L6_V2.items() if key != "sentence_transformers"
} | {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12}

#: BAAI/bge-reranker-base, config.json (XLMRobertaForSequenceClassification, transformers
#: 4.33.3; its local ``_name_or_path`` left out). No sentence-transformers key: CrossEncoder
#: applies Sigmoid to its one label.
BGE_RERANKER_BASE: dict[str, Any] = {
    "architectures": ["XLMRobertaForSequenceClassification"],
    "attention_probs_dropout_prob": 0.1,
    "bos_token_id": 0,
    "classifier_dropout": None,
    "eos_token_id": 2,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "id2label": {"0": "LABEL_0"},
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "label2id": {"LABEL_0": 0},
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 514,
    "model_type": "xlm-roberta",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "output_past": True,
    "pad_token_id": 1,
    "position_embedding_type": "absolute",
    "torch_dtype": "float32",
    "transformers_version": "4.33.3",
    "type_vocab_size": 1,
    "use_cache": True,
    "vocab_size": 250002,
}

#: Alibaba-NLP/gte-reranker-modernbert-base, config.json (ModernBertForSequenceClassification,
#: transformers 4.48.0.dev0; its ``_name_or_path`` left out): mean pooling over the tokens,
#: then dense (no bias) -> GELU -> LayerNorm (no bias) -> classifier.
GTE_RERANKER_MODERNBERT_BASE: dict[str, Any] = {
    "architectures": ["ModernBertForSequenceClassification"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 50281,
    "classifier_activation": "gelu",
    "classifier_bias": False,
    "classifier_dropout": 0.0,
    "classifier_pooling": "mean",
    "cls_token_id": 50281,
    "decoder_bias": True,
    "deterministic_flash_attn": False,
    "embedding_dropout": 0.0,
    "eos_token_id": 50282,
    "global_attn_every_n_layers": 3,
    "global_rope_theta": 160000.0,
    "gradient_checkpointing": False,
    "hidden_activation": "gelu",
    "hidden_size": 768,
    "id2label": {"0": "LABEL_0"},
    "initializer_cutoff_factor": 2.0,
    "initializer_range": 0.02,
    "intermediate_size": 1152,
    "label2id": {"LABEL_0": 0},
    "layer_norm_eps": 1e-05,
    "local_attention": 128,
    "local_rope_theta": 10000.0,
    "max_position_embeddings": 8192,
    "mlp_bias": False,
    "mlp_dropout": 0.0,
    "model_type": "modernbert",
    "norm_bias": False,
    "norm_eps": 1e-05,
    "num_attention_heads": 12,
    "num_hidden_layers": 22,
    "pad_token_id": 50283,
    "position_embedding_type": "absolute",
    "sep_token_id": 50282,
    "sparse_pred_ignore_index": -100,
    "sparse_prediction": False,
    "torch_dtype": "float32",
    "transformers_version": "4.48.0.dev0",
    "vocab_size": 50368,
}


# ---------------------------------------------------------------------------------------
# Tensor layouts: the encoders' tensors come from real_models' layouts, prefixed.
# Init kind "logits" marks a head's last projection (to the labels): N(0, the card's
# head_std), or real_models' N(0, 0.02) where the card has none (see _write_weights).


def _prefixed(prefix: str, tensors: Iterator[Tensor]) -> Iterator[Tensor]:
    for name, shape, init in tensors:
        yield prefix + name, shape, init


def _bert_classifier_layout(c: dict[str, Any]) -> Iterator[Tensor]:
    """BertForSequenceClassification: ``bert.`` (pooler included; ``position_ids`` kept, as
    in the checkpoints of transformers < 4.31 this one descends from), then ``classifier``."""
    yield from _prefixed("bert.", real_models._bert_layout(c))
    yield "classifier.weight", (len(c["id2label"]), c["hidden_size"]), "logits"
    yield "classifier.bias", (len(c["id2label"]),), "normal"


def _xlmr_classifier_layout(c: dict[str, Any]) -> Iterator[Tensor]:
    """XLMRobertaForSequenceClassification as saved by transformers 4.33: ``roberta.`` with
    no pooler and no ``position_ids`` (a non-persistent buffer since 4.31), then the
    ``classifier.dense`` -> tanh -> ``classifier.out_proj`` head."""
    h = c["hidden_size"]
    for name, shape, init in real_models._bert_layout(c):
        if not name.startswith("pooler.") and name != "embeddings.position_ids":
            yield "roberta." + name, shape, init
    yield "classifier.dense.weight", (h, h), "normal"
    yield "classifier.dense.bias", (h,), "normal"
    yield "classifier.out_proj.weight", (len(c["id2label"]), h), "logits"
    yield "classifier.out_proj.bias", (len(c["id2label"]),), "normal"


def _modernbert_classifier_layout(c: dict[str, Any]) -> Iterator[Tensor]:
    """ModernBertForSequenceClassification: ``model.``, then ``head`` (dense and norm, no
    biases: ``classifier_bias`` and ``norm_bias`` false) and ``classifier`` (with bias)."""
    h = c["hidden_size"]
    yield from _prefixed("model.", real_models._modernbert_layout(c))
    yield "head.dense.weight", (h, h), "normal"
    if c["classifier_bias"]:
        yield "head.dense.bias", (h,), "normal"
    yield "head.norm.weight", (h,), "norm"
    if c["norm_bias"]:
        yield "head.norm.bias", (h,), "normal"
    yield "classifier.weight", (len(c["id2label"]), h), "logits"
    yield "classifier.bias", (len(c["id2label"]),), "normal"


def _write_weights(
    path: Path, tensors: list[Tensor], dtype: str, seed: int, head_std: float | None
) -> None:
    """real_models' :func:`write_safetensors` (which knows no "logits" init: it writes those
    at std 0.02), then, given ``head_std``, the "logits" tensors overwritten in place at it."""
    normal = [(name, shape, "normal" if i == "logits" else i) for name, shape, i in tensors]
    real_models.write_safetensors(path, normal, dtype, seed)
    if head_std is None:
        return
    assert dtype == "F32"
    heads = [(name, shape) for name, shape, init in tensors if init == "logits"]
    rng = np.random.default_rng(seed + 1)
    with path.open("r+b") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
        for name, shape in heads:
            start, end = header[name]["data_offsets"]
            values = rng.standard_normal(math.prod(shape), dtype=np.float32) * head_std
            assert values.nbytes == end - start
            f.seek(8 + size + start)
            f.write(values.tobytes())


# ---------------------------------------------------------------------------------------
# The published models.


@dataclass(frozen=True)
class PublishedReranker:
    """What one published cross-encoder's folder holds, short of its trained weights.

    Attributes:
        repo: The Hugging Face repository it copies.
        config: Its ``config.json``.
        dtype: The safetensors dtype of its weights.
        layout: Its tensors' names, shapes and init kinds, from a config.
        tokenizer: Writes its tokenizer files into a folder (``config``, max length):
            real_models' writer of the same tokenizer kind.
        max_length: Its ``tokenizer_config.json`` ``model_max_length`` (CrossEncoder's
            truncation length, capped at ``max_position_embeddings``).
        head_std: Std of the head's last projection weight (``None``: real_models' 0.02).
            At 0.02 the BERT and XLM-R heads, fed tanh outputs of rms ~0.3 that vary little
            from pair to pair, give sigmoid scores within ~0.01 of each other (std
            0.002-0.004 over :data:`CHECK_PAIRS`); at 0.3, std 0.02-0.06. ModernBERT's head
            ends in a LayerNorm (inputs of rms ~1): 0.02 already gives std ~0.07.
    """

    repo: str
    config: dict[str, Any]
    dtype: str
    layout: Callable[[dict[str, Any]], Iterator[Tensor]]
    tokenizer: Callable[[Path, dict[str, Any], int], None]
    max_length: int
    head_std: float | None = None


RERANKERS: dict[str, PublishedReranker] = {
    "ms-marco-MiniLM-L6-v2": PublishedReranker(
        repo="cross-encoder/ms-marco-MiniLM-L6-v2",
        config=MS_MARCO_MINILM_L6_V2,
        dtype="F32",
        layout=_bert_classifier_layout,
        tokenizer=real_models._wordpiece_tokenizer,  # [CLS] $A [SEP] $B:1 [SEP]:1
        max_length=512,
        head_std=0.3,
    ),
    "bert-base-reranker": PublishedReranker(
        repo="a BERT-base cross-encoder (bert-base-uncased fine-tuned on MS MARCO)",
        config=BERT_BASE_RERANKER,
        dtype="F32",
        layout=_bert_classifier_layout,
        tokenizer=real_models._wordpiece_tokenizer,
        max_length=512,
        head_std=0.3,
    ),
    "bge-reranker-base": PublishedReranker(
        repo="BAAI/bge-reranker-base",
        config=BGE_RERANKER_BASE,
        dtype="F32",
        layout=_xlmr_classifier_layout,
        tokenizer=real_models._xlmr_tokenizer,  # <s> $A </s> </s> $B </s>, all type id 0
        max_length=512,
        head_std=0.3,
    ),
    "gte-reranker-modernbert-base": PublishedReranker(
        repo="Alibaba-NLP/gte-reranker-modernbert-base",
        config=GTE_RERANKER_MODERNBERT_BASE,
        dtype="F32",
        layout=_modernbert_classifier_layout,
        tokenizer=real_models._modernbert_tokenizer,  # [CLS] $A [SEP] $B [SEP]
        max_length=8192,
    ),
}


def reranker_config(name: str, layers: int | None = None) -> dict[str, Any]:
    """The published ``config.json`` of ``name``, with ``layers`` layers if given."""
    config = json.loads(json.dumps(RERANKERS[name].config))
    if layers is not None:
        published = real_models.layer_count(config)
        if not 1 <= layers <= published:
            raise ValueError(f"layers must be 1-{published}, got {layers}")
        config["num_hidden_layers"] = layers
    return config


def _write_reranker(
    folder: Path, name: str, layers: int | None, max_length: int | None, seed: int
) -> None:
    card = RERANKERS[name]
    config = reranker_config(name, layers)
    real_models._write_json(folder / "config.json", config)
    tensors = list(card.layout(config))
    _write_weights(folder / "model.safetensors", tensors, card.dtype, seed, card.head_std)
    card.tokenizer(folder, config, max_length or card.max_length)
    count = real_models.layer_count(config)
    (folder / "README.md").write_text(
        f"Random weights at the published shapes of {card.repo} ({count} layers), built by "
        f"tests/reranker_models.py for tests and benchmarks. Not a real model.\n"
    )


def build_reranker(
    name: str,
    root: Path,
    layers: int | None = None,
    max_length: int | None = None,
    *,
    seed: int = 0,
) -> Path:
    """The folder of the cross-encoder ``name`` under ``root``, built on first use.

    Args:
        name: A key of :data:`RERANKERS` (e.g. ``"ms-marco-MiniLM-L6-v2"``).
        root: The cache folder; each set of parameters gets its own sub-folder.
        layers: Fewer layers than published (default: the published count).
        max_length: The tokenizer's ``model_max_length`` (CrossEncoder's truncation
            length) instead of the published one.
        seed: Seed of the random weights.

    Returns:
        The model folder (its name is ``name`` plus a key of the parameters).
    """
    if name not in RERANKERS:
        raise KeyError(f"unknown reranker {name!r}; known: {', '.join(RERANKERS)}")
    count = layers or real_models.layer_count(RERANKERS[name].config)
    return real_models.cached_folder(
        root,
        f"{name}-{count}L",
        [BUILD_VERSION, real_models.BUILD_VERSION, name, layers, max_length, seed],
        lambda work: _write_reranker(work, name, layers, max_length, seed),
    )


# ---------------------------------------------------------------------------------------
# A check of a built folder with the reference libraries (not a pytest test: the tests
# that use these folders are elsewhere).

#: Eight distinct (query, document) pairs.
CHECK_PAIRS = [
    ("how do I read a file", "Use open() and iterate over the file object line by line."),
    ("how do I read a file", "The giant panda is a bear species endemic to China."),
    ("what is a lambda", "A lambda expression creates an anonymous function."),
    ("what is a lambda", "Le café est très chaud, n'est-ce pas ?"),
    ("q", "d"),
    ("東京の天気", "東京の天気は晴れです。明日は雨が降るかもしれません。"),
    ("sort a list", "sorted() returns a new sorted list from the items in an iterable."),
    ("sort a list", "Emoji party 🎉🚀 with friends 😀 under the 🌍 sun."),
]


def _long_pair(tokenizer: Any, max_length: int) -> tuple[str, str]:
    """A query and a document of local text, each alone longer than ``max_length`` tokens
    (so that longest-first truncation cuts both), the query a little shorter."""
    lines = real_models.training_lines()
    text, i = "", 0
    while len(tokenizer(text, add_special_tokens=False, verbose=False).input_ids) < max_length + 64:
        chunk = " ".join(lines[i : i + 200])
        text, i = f"{text} {chunk}".strip(), i + 200
    query = " ".join(text.split()[: int(len(text.split()) * 0.8)])
    return query, text


def check(folder: Path | str) -> dict[str, Any]:
    """Load ``folder`` with ``CrossEncoder`` and ``AutoModelForSequenceClassification``;
    raise ``AssertionError`` on any missing/unexpected/mismatched weight or load warning,
    scores outside (0, 1), too flat (std <= 1e-3) or repeated for distinct pairs, or a pair
    tokenization of ``tokenizers`` (``tokenizer.json``, longest-first truncation) that
    differs from CrossEncoder's own on a pair needing truncation.

    Returns:
        What was measured: scores, their std, the truncation length and token counts.
    """
    import logging
    import warnings

    import torch
    from sentence_transformers import CrossEncoder
    from tokenizers import Tokenizer
    from transformers import AutoModelForSequenceClassification

    folder = Path(folder)
    records: list[logging.LogRecord] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = _Keep(level=logging.WARNING)
    loggers = [logging.getLogger(n) for n in ("transformers", "sentence_transformers")]
    for log in loggers:
        log.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = CrossEncoder(str(folder), device="cpu")
            scores = np.asarray(model.predict(CHECK_PAIRS, batch_size=8), dtype=np.float64)
            hf, info = AutoModelForSequenceClassification.from_pretrained(
                folder, output_loading_info=True, dtype=torch.float32
            )
    finally:
        for log in loggers:
            log.removeHandler(handler)
    messages = [r.getMessage() for r in records] + [str(w.message) for w in caught]
    flags = ("weight", "initialized", "key", "load report", "missing", "unexpected", "mismatch")
    weight_messages = [m for m in messages if any(f in m.lower() for f in flags)]
    assert not weight_messages, weight_messages
    problems = {k: v for k, v in info.items() if v}
    assert not problems, problems
    assert ((scores > 0) & (scores < 1)).all(), scores
    assert scores.std() > 1e-3, scores
    assert len(set(scores.tolist())) == len(CHECK_PAIRS), scores

    # The pair tokenization: tokenizers alone against CrossEncoder's own preprocessing.
    max_length = model.max_seq_length
    query, document = _long_pair(model.tokenizer, max_length)
    theirs = model.preprocess([(query, document)])
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.enable_truncation(max_length, strategy="longest_first")
    ours = tok.encode(query, document)
    their_ids = theirs["input_ids"][0].tolist()
    assert ours.ids == their_ids, (ours.ids[:20], their_ids[:20])
    if "token_type_ids" in theirs:
        assert ours.type_ids == theirs["token_type_ids"][0].tolist()
    assert len(ours.ids) == max_length
    del hf
    return {
        "class": type(model.model).__name__,
        "layers": model.config.num_hidden_layers,
        "activation": type(model.activation_fn).__name__,
        "scores": [round(s, 4) for s in scores.tolist()],
        "std": round(float(scores.std()), 4),
        "max_length": max_length,
        "long_pair_tokens": len(ours.ids),
        "type_ids": sorted(set(ours.type_ids)),
        "warnings": messages,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="cache folder of the built models")
    parser.add_argument("names", nargs="*", help=f"models (default: all): {', '.join(RERANKERS)}")
    parser.add_argument("--layers", type=int, help="fewer layers than published")
    parser.add_argument("--max-length", type=int, help="tokenizer model_max_length")
    parser.add_argument("--check", action="store_true", help="load and check each folder")
    args = parser.parse_intermixed_args(argv)
    for name in args.names or RERANKERS:
        folder = build_reranker(name, args.root, layers=args.layers, max_length=args.max_length)
        print(folder, flush=True)
        if args.check:
            print(json.dumps(check(folder), ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
