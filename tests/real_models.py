"""Random-weight embedding models at their published shapes, file layouts and dtypes.

Speed does not depend on weight values, so issue #24's checks and benchmarks need no model
hub: each builder writes a folder that jupyter_mlx_embed and sentence-transformers both load,
with the published ``config.json`` (the source repository is named beside each), a
``model.safetensors`` with the published tensor names, shapes and dtype, a real tokenizer of
the published kind (trained here on a few thousand lines of Python's own help text plus some
non-English lines) with the published special tokens, ids and post-processing, and the
sentence-transformers files (modules, pooling, prompts, Dense layers). The embedding matrix
keeps the published vocabulary size; the trained vocabulary is smaller, and filler entries
put the special tokens at their published ids. Weights are random (normal, std 0.02; norms
near 1), so distinct texts give distinct vectors.

Folders are cached under a caller's folder, keyed by the builder's parameters, so a test
session and the benchmark each build a model once::

    folder = build_model("gte-modernbert-base", Path.home() / ".cache/jupyter-mlx-embed-bench")

or ``python tests/real_models.py ROOT [NAME ...] [--layers N] [--max-seq-length N]``.
Only numpy, ``tokenizers`` and ``sentencepiece`` are needed (no torch, no MLX): safetensors
files, bfloat16 included, are written here.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import shutil
import struct
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Bump when a builder's output changes: cached folders of older builds are then rebuilt.
BUILD_VERSION = 3
#: Tokens a tokenizer is trained to (the published vocabularies are 30k-262k; the rest of
#: each embedding matrix is never looked up, which costs nothing at inference).
TRAINED_VOCAB = 8000
INIT_STD = 0.02
NORM_STD = 0.1  # norm weights 1 + N(0, 0.1): a norm weight applied wrongly shows

# (name, shape, init): init is "normal" (N(0, 0.02)), "norm" (1 + N(0, 0.1)), "offset_norm"
# (N(0, 0.1): Gemma's RMSNorm multiplies by 1 + weight) or "position_ids" (arange, int64).
Tensor = tuple[str, tuple[int, ...], str]


# ---------------------------------------------------------------------------------------
# Published configurations (config.json as in each model's repository; only the layer
# count and, for tests, the sentence-transformers max_seq_length are ever changed).

#: BAAI/bge-base-en-v1.5, config.json (BertModel, saved by transformers 4.30).
BGE_BASE_EN_V1_5: dict[str, Any] = {
    "architectures": ["BertModel"],
    "attention_probs_dropout_prob": 0.1,
    "classifier_dropout": None,
    "gradient_checkpointing": False,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "id2label": {"0": "LABEL_0"},
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "label2id": {"LABEL_0": 0},
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "model_type": "bert",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "torch_dtype": "float32",
    "transformers_version": "4.30.0",
    "type_vocab_size": 2,
    "use_cache": True,
    "vocab_size": 30522,
}

#: Alibaba-NLP/gte-modernbert-base, config.json (ModernBertModel, transformers 4.48).
GTE_MODERNBERT_BASE: dict[str, Any] = {
    "architectures": ["ModernBertModel"],
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
    "initializer_cutoff_factor": 2.0,
    "initializer_range": 0.02,
    "intermediate_size": 1152,
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
    "torch_dtype": "float32",
    "transformers_version": "4.48.0",
    "vocab_size": 50368,
}

#: Qwen/Qwen3-Embedding-0.6B, config.json (weights in bfloat16, saved as Qwen3Model).
QWEN3_EMBEDDING_0_6B: dict[str, Any] = {
    "architectures": ["Qwen3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151643,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 1024,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "max_position_embeddings": 32768,
    "max_window_layers": 28,
    "model_type": "qwen3",
    "num_attention_heads": 16,
    "num_hidden_layers": 28,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000,
    "sliding_window": None,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.51.3",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 151669,
}

#: google/embeddinggemma-300m, config.json (Gemma3TextModel, transformers 4.57.0.dev0):
#: every 6th layer attends globally, the others within a sliding window of 512.
EMBEDDINGGEMMA_300M: dict[str, Any] = {
    "_sliding_window_pattern": 6,
    "architectures": ["Gemma3TextModel"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "attn_logit_softcapping": None,
    "bos_token_id": 2,
    "dtype": "float32",
    "eos_token_id": 1,
    "final_logit_softcapping": None,
    "head_dim": 256,
    "hidden_activation": "gelu_pytorch_tanh",
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 1152,
    "layer_types": [
        "full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(24)
    ],
    "max_position_embeddings": 2048,
    "model_type": "gemma3_text",
    "num_attention_heads": 3,
    "num_hidden_layers": 24,
    "num_key_value_heads": 1,
    "pad_token_id": 0,
    "query_pre_attn_scalar": 256,
    "rms_norm_eps": 1e-06,
    "rope_local_base_freq": 10000.0,
    "rope_scaling": None,
    "rope_theta": 1000000.0,
    "sliding_window": 512,
    "transformers_version": "4.57.0.dev0",
    "use_bidirectional_attention": True,
    "use_cache": True,
    "vocab_size": 262144,
}

#: intfloat/multilingual-e5-base, config.json (XLMRobertaModel, transformers 4.29).
MULTILINGUAL_E5_BASE: dict[str, Any] = {
    "architectures": ["XLMRobertaModel"],
    "attention_probs_dropout_prob": 0.1,
    "bos_token_id": 0,
    "classifier_dropout": None,
    "eos_token_id": 2,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 514,
    "model_type": "xlm-roberta",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "output_past": True,
    "pad_token_id": 1,
    "position_embedding_type": "absolute",
    "torch_dtype": "float32",
    "transformers_version": "4.29.0.dev0",
    "type_vocab_size": 1,
    "use_cache": True,
    "vocab_size": 250002,
}

#: nomic-ai/nomic-embed-text-v1.5, config.json (nomic's own NomicBertModel keys; transformers 5
#: maps the model type to its native NomicBERT and renames the checkpoint's tensors). The
#: ``auto_map`` to nomic's remote code is left out: no hub here, and transformers ignores it
#: without ``trust_remote_code``.
NOMIC_EMBED_TEXT_V1_5: dict[str, Any] = {
    "activation_function": "swiglu",
    "architectures": ["NomicBertModel"],
    "attn_pdrop": 0.0,
    "bos_token_id": None,
    "causal": False,
    "dense_seq_output": True,
    "embd_pdrop": 0.0,
    "eos_token_id": None,
    "fused_bias_fc": True,
    "fused_dropout_add_ln": True,
    "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-12,
    "max_trained_positions": 2048,
    "mlp_fc1_bias": False,
    "mlp_fc2_bias": False,
    "model_type": "nomic_bert",
    "n_embd": 768,
    "n_head": 12,
    "n_inner": 3072,
    "n_layer": 12,
    "n_positions": 8192,
    "pad_vocab_size_multiple": 64,
    "parallel_block": False,
    "parallel_block_tied_norm": False,
    "prenorm": False,
    "qkv_proj_bias": False,
    "reorder_and_upcast_attn": False,
    "resid_pdrop": 0.0,
    "rotary_emb_base": 1000,
    "rotary_emb_fraction": 1.0,
    "rotary_emb_interleaved": False,
    "rotary_emb_scale_base": None,
    "rotary_scaling_factor": None,
    "scale_attn_by_inverse_layer_idx": False,
    "scale_attn_weights": True,
    "summary_activation": None,
    "summary_first_dropout": 0.0,
    "summary_proj_to_labels": True,
    "summary_type": "cls_index",
    "summary_use_proj": True,
    "torch_dtype": "float32",
    "transformers_version": "4.37.2",
    "type_vocab_size": 2,
    "use_cache": True,
    "use_flash_attn": True,
    "use_rms_norm": False,
    "use_xentropy": True,
    "vocab_size": 30528,
}

#: nomic-ai/nomic-embed-text-v1.5, config_sentence_transformers.json "prompts".
NOMIC_PROMPTS = {
    "query": "search_query: ",
    "document": "search_document: ",
    "classification": "classification: ",
    "clustering": "clustering: ",
}
#: google/embeddinggemma-300m, config_sentence_transformers.json "prompts".
EMBEDDINGGEMMA_PROMPTS = {
    "query": "task: search result | query: ",
    "document": "title: none | text: ",
    "BitextMining": "task: search result | query: ",
    "Clustering": "task: clustering | query: ",
    "Classification": "task: classification | query: ",
    "InstructionRetrieval": "task: code retrieval | query: ",
    "MultilabelClassification": "task: classification | query: ",
    "PairClassification": "task: sentence similarity | query: ",
    "Reranking": "task: search result | query: ",
    "Retrieval": "task: search result | query: ",
    "Retrieval-query": "task: search result | query: ",
    "Retrieval-document": "title: none | text: ",
    "STS": "task: sentence similarity | query: ",
    "Summarization": "task: summarization | query: ",
}
#: Qwen/Qwen3-Embedding-0.6B, config_sentence_transformers.json "prompts".
QWEN3_EMBEDDING_PROMPTS = {
    "query": "Instruct: Given a web search query, retrieve relevant passages that answer "
    "the query\nQuery:",
    "document": "",
}


# ---------------------------------------------------------------------------------------
# Tensor layouts: the names and shapes each published model.safetensors holds.


def _bert_layout(c: dict[str, Any]) -> Iterator[Tensor]:
    """BertModel / XLMRobertaModel as saved by transformers < 4.31 (position_ids kept)."""
    h, inner = c["hidden_size"], c["intermediate_size"]
    yield "embeddings.word_embeddings.weight", (c["vocab_size"], h), "normal"
    yield "embeddings.position_embeddings.weight", (c["max_position_embeddings"], h), "normal"
    yield "embeddings.token_type_embeddings.weight", (c["type_vocab_size"], h), "normal"
    yield "embeddings.LayerNorm.weight", (h,), "norm"
    yield "embeddings.LayerNorm.bias", (h,), "normal"
    yield "embeddings.position_ids", (1, c["max_position_embeddings"]), "position_ids"
    for i in range(c["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        for part in ("query", "key", "value"):
            yield f"{p}attention.self.{part}.weight", (h, h), "normal"
            yield f"{p}attention.self.{part}.bias", (h,), "normal"
        yield f"{p}attention.output.dense.weight", (h, h), "normal"
        yield f"{p}attention.output.dense.bias", (h,), "normal"
        yield f"{p}attention.output.LayerNorm.weight", (h,), "norm"
        yield f"{p}attention.output.LayerNorm.bias", (h,), "normal"
        yield f"{p}intermediate.dense.weight", (inner, h), "normal"
        yield f"{p}intermediate.dense.bias", (inner,), "normal"
        yield f"{p}output.dense.weight", (h, inner), "normal"
        yield f"{p}output.dense.bias", (h,), "normal"
        yield f"{p}output.LayerNorm.weight", (h,), "norm"
        yield f"{p}output.LayerNorm.bias", (h,), "normal"
    yield "pooler.dense.weight", (h, h), "normal"
    yield "pooler.dense.bias", (h,), "normal"


def _nomic_layout(c: dict[str, Any]) -> Iterator[Tensor]:
    """nomic's NomicBertModel (post-norm, SwiGLU, rotary; no linear biases)."""
    h, inner = c["n_embd"], c["n_inner"]
    yield "embeddings.word_embeddings.weight", (c["vocab_size"], h), "normal"
    yield "embeddings.token_type_embeddings.weight", (c["type_vocab_size"], h), "normal"
    yield "emb_ln.weight", (h,), "norm"
    yield "emb_ln.bias", (h,), "normal"
    for i in range(c["n_layer"]):
        p = f"encoder.layers.{i}."
        yield f"{p}attn.Wqkv.weight", (3 * h, h), "normal"
        yield f"{p}attn.out_proj.weight", (h, h), "normal"
        yield f"{p}mlp.fc11.weight", (inner, h), "normal"
        yield f"{p}mlp.fc12.weight", (inner, h), "normal"
        yield f"{p}mlp.fc2.weight", (h, inner), "normal"
        for norm in ("norm1", "norm2"):
            yield f"{p}{norm}.weight", (h,), "norm"
            yield f"{p}{norm}.bias", (h,), "normal"


def _modernbert_layout(c: dict[str, Any]) -> Iterator[Tensor]:
    """ModernBertModel: no biases, no norm biases; layer 0 has no attention norm."""
    h, inner = c["hidden_size"], c["intermediate_size"]
    yield "embeddings.tok_embeddings.weight", (c["vocab_size"], h), "normal"
    yield "embeddings.norm.weight", (h,), "norm"
    for i in range(c["num_hidden_layers"]):
        p = f"layers.{i}."
        if i:
            yield f"{p}attn_norm.weight", (h,), "norm"
        yield f"{p}attn.Wqkv.weight", (3 * h, h), "normal"
        yield f"{p}attn.Wo.weight", (h, h), "normal"
        yield f"{p}mlp_norm.weight", (h,), "norm"
        yield f"{p}mlp.Wi.weight", (2 * inner, h), "normal"
        yield f"{p}mlp.Wo.weight", (h, inner), "normal"
    yield "final_norm.weight", (h,), "norm"


def _decoder_layout(c: dict[str, Any], *, gemma: bool) -> Iterator[Tensor]:
    """Qwen3Model / Gemma3TextModel (no ``model.`` prefix, no lm_head: tied embeddings)."""
    h, inner, hd = c["hidden_size"], c["intermediate_size"], c["head_dim"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    norm = "offset_norm" if gemma else "norm"
    yield "embed_tokens.weight", (c["vocab_size"], h), "normal"
    for i in range(c["num_hidden_layers"]):
        p = f"layers.{i}."
        yield f"{p}self_attn.q_proj.weight", (q, h), "normal"
        yield f"{p}self_attn.k_proj.weight", (kv, h), "normal"
        yield f"{p}self_attn.v_proj.weight", (kv, h), "normal"
        yield f"{p}self_attn.o_proj.weight", (h, q), "normal"
        yield f"{p}self_attn.q_norm.weight", (hd,), norm
        yield f"{p}self_attn.k_norm.weight", (hd,), norm
        yield f"{p}mlp.gate_proj.weight", (inner, h), "normal"
        yield f"{p}mlp.up_proj.weight", (inner, h), "normal"
        yield f"{p}mlp.down_proj.weight", (h, inner), "normal"
        yield f"{p}input_layernorm.weight", (h,), norm
        yield f"{p}post_attention_layernorm.weight", (h,), norm
        if gemma:
            yield f"{p}pre_feedforward_layernorm.weight", (h,), norm
            yield f"{p}post_feedforward_layernorm.weight", (h,), norm
    yield "norm.weight", (h,), norm


# ---------------------------------------------------------------------------------------
# safetensors, written here: numpy has no bfloat16 and safetensors.numpy cannot store it.

_ITEMSIZE = {"F32": 4, "BF16": 2, "I64": 8}
_CHUNK = 1 << 22  # values generated at a time (16 MiB of float32)


def _bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns, rounded to nearest even (as torch rounds)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def _chunks(shape: tuple[int, ...], init: str, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """A tensor's values in row blocks (so a 262144 x 768 embedding never sits in memory twice)."""
    if init == "position_ids":
        yield np.arange(math.prod(shape), dtype=np.int64)
        return
    rows, per_row = shape[0], math.prod(shape[1:])
    step = max(1, _CHUNK // per_row)
    for start in range(0, rows, step):
        block = rng.standard_normal((min(step, rows - start), per_row), dtype=np.float32)
        block *= NORM_STD if init in ("norm", "offset_norm") else INIT_STD
        if init == "norm":
            block += 1.0
        yield block


def write_safetensors(path: Path, tensors: list[Tensor], dtype: str, seed: int) -> None:
    """Write random ``tensors`` to ``path`` in ``dtype`` ("F32" or "BF16"; position ids I64).

    Args:
        path: The file to write.
        tensors: Names, shapes and init kinds.
        dtype: The safetensors dtype of the float tensors.
        seed: Seed of the random values.
    """
    rng = np.random.default_rng(seed)
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    kinds = []
    for name, shape, init in tensors:
        kind = "I64" if init == "position_ids" else dtype
        size = math.prod(shape) * _ITEMSIZE[kind]
        header[name] = {
            "dtype": kind,
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
        kinds.append(kind)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for (_, shape, init), kind in zip(tensors, kinds, strict=True):
            for block in _chunks(shape, init, rng):
                f.write((_bfloat16_bits(block) if kind == "BF16" else block).tobytes())


# ---------------------------------------------------------------------------------------
# Tokenizers of the published kinds, trained on local text.

#: Non-English lines mixed into the training text so that accents, CJK and emoji get pieces.
_MULTILINGUAL = (
    "Le café est très chaud, n'est-ce pas ? Où est la gare ? Ça va très bien, merci.",
    "Die Straße über den Bächen führt zur Brücke; Äpfel und Öl kosten fünf Euro.",
    "El niño comió una manzana mientras leía el periódico en la mañana soleada.",
    "A ação começou às três horas e terminou à noite, disse o coração.",
    "東京の天気は晴れです。明日は雨が降るかもしれません。日本語の文章です。",
    "我喜欢机器学习和自然语言处理。今天天气很好，我们去公园散步吧。",  # noqa: RUF001
    "한국어 문장입니다. 오늘 날씨가 좋네요. 기계 학습을 공부하고 있어요.",
    "Привет, мир! Машинное обучение и обработка естественного языка.",
    "Καλημέρα κόσμε. Η μηχανική μάθηση είναι ενδιαφέρουσα.",  # noqa: RUF001
    "مرحبا بالعالم. التعلم الآلي ومعالجة اللغة الطبيعية.",
    "नमस्ते दुनिया। मशीन लर्निंग और प्राकृतिक भाषा प्रसंस्करण।",
    "Emoji party 🎉🚀👍🏽 with friends 😀🙂 and a family 👨‍👩‍👧‍👦 under the 🌍 sun ☀️.",
    "Naïve façade, coöperate, résumé, piñata, smörgåsbord, crème brûlée, déjà vu.",
)


def training_lines() -> list[str]:
    """A few thousand lines of local text: the prose of Python's help topics, plus
    :data:`_MULTILINGUAL` repeated (same on every machine with the same Python)."""
    from pydoc_data.topics import topics

    lines = [
        line.strip() for key in sorted(topics) for line in topics[key].splitlines() if line.strip()
    ]
    return lines + list(_MULTILINGUAL) * 40


def _train_byte_level_bpe(normalizer: Any, pre_tokenizer: Any) -> tuple[dict, list]:
    """Vocab (ids 0..n-1) and merges of a byte-level BPE trained on :func:`training_lines`."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=TRAINED_VOCAB,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(training_lines(), trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return dict(model["vocab"]), merges


def _fill(vocab: dict[str, int], size: int) -> dict[str, int]:
    """``vocab`` with never-produced filler entries appended up to ``size`` entries, so that
    the special tokens added next get their published ids."""
    out = dict(vocab)
    i = 0
    while len(out) < size:
        out.setdefault(f"<|unused_{i}|>", len(out))
        i += 1
    return out


def _added(content: str, *, special: bool = True, lstrip: bool = False) -> Any:
    from tokenizers import AddedToken

    return AddedToken(content, special=special, normalized=False, lstrip=lstrip)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _wordpiece_tokenizer(folder: Path, config: dict[str, Any], max_length: int) -> None:
    """bert-base-uncased's WordPiece, as bge-base-en-v1.5 and nomic-embed-text-v1.5 publish it
    (the bundled all-MiniLM-L6-v2's files: the same 30522 tokens)."""
    from jupyter_mlx_embed.registry import bundled_model_path

    bundled = bundled_model_path()
    if bundled is None:
        raise RuntimeError("the bundled model (its WordPiece tokenizer) is not installed")
    shutil.copy(bundled / "vocab.txt", folder / "vocab.txt")
    data = json.loads((bundled / "tokenizer.json").read_text(encoding="utf-8"))
    data["truncation"] = data["padding"] = None
    _write_json(folder / "tokenizer.json", data)
    specials = {
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
        "pad_token": "[PAD]",
        "sep_token": "[SEP]",
        "unk_token": "[UNK]",
    }
    _write_json(folder / "special_tokens_map.json", specials)
    _write_json(
        folder / "tokenizer_config.json",
        {
            "clean_up_tokenization_spaces": True,
            "do_basic_tokenize": True,
            "do_lower_case": True,
            "model_max_length": max_length,
            "never_split": None,
            "strip_accents": None,
            "tokenize_chinese_chars": True,
            "tokenizer_class": "BertTokenizer",
            **specials,
        },
    )


def _modernbert_tokenizer(folder: Path, config: dict[str, Any], max_length: int) -> None:
    """ModernBERT's byte-level BPE (OLMo's), [CLS] $A [SEP], specials at 50280-50284."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    pre = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    vocab, merges = _train_byte_level_bpe(normalizers.NFC(), pre)
    specials = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
    vocab = _fill(vocab, 50280)
    for token in specials:
        vocab[token] = len(vocab)
    tok = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=merges,
            dropout=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([_added(t, lstrip=t == "[MASK]") for t in specials])
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    assert (cls, sep, vocab["[PAD]"]) == (
        config["cls_token_id"],
        config["sep_token_id"],
        config["pad_token_id"],
    )
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    tok.save(str(folder / "tokenizer.json"))
    specials_map = {
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
        "pad_token": "[PAD]",
        "sep_token": "[SEP]",
        "unk_token": "[UNK]",
    }
    _write_json(folder / "special_tokens_map.json", specials_map)
    _write_json(
        folder / "tokenizer_config.json",
        {
            "clean_up_tokenization_spaces": True,
            "model_input_names": ["input_ids", "attention_mask"],
            "model_max_length": max_length,
            "tokenizer_class": "PreTrainedTokenizerFast",
            **specials_map,
        },
    )


#: Qwen2's pre-tokenizer regex (tokenizer.json of the Qwen2/Qwen3 family).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
#: Qwen3's added tokens from id 151643 on, in order (special or not, as published).
QWEN3_ADDED = (
    *((t, True) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")),
    *((t, True) for t in ("<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>")),
    *((t, True) for t in ("<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>")),
    *((t, True) for t in ("<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")),
    ("<tool_call>", False),
    ("</tool_call>", False),
    *((t, False) for t in ("<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>")),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)


def _qwen3_tokenizer(folder: Path, config: dict[str, Any], max_length: int) -> None:
    """Qwen2's byte-level BPE with Qwen3-Embedding's post-processor (``$A <|endoftext|>``)."""
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    def pre() -> Any:
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(
                    add_prefix_space=False, trim_offsets=False, use_regex=False
                ),
            ]
        )

    vocab, merges = _train_byte_level_bpe(normalizers.NFC(), pre())
    vocab = _fill(vocab, 151643)
    tok = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=merges,
            dropout=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre()
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    for token, special in QWEN3_ADDED:  # one at a time: ids follow the published order
        if special:
            tok.add_special_tokens([_added(token)])
        else:
            tok.add_tokens([_added(token, special=False)])
    eos = tok.token_to_id("<|endoftext|>")
    assert eos == config["eos_token_id"] and tok.get_vocab_size() == config["vocab_size"]
    tok.post_processor = processors.TemplateProcessing(
        single="$A:0 <|endoftext|>:0",
        pair="$A:0 <|endoftext|>:0 $B:1 <|endoftext|>:1",
        special_tokens=[("<|endoftext|>", eos)],
    )
    tok.save(str(folder / "tokenizer.json"))
    _write_json(folder / "vocab.json", vocab)
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
    )
    additional = [t for t, special in QWEN3_ADDED[1:13] if special]
    _write_json(
        folder / "special_tokens_map.json",
        {
            "additional_special_tokens": additional,
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
        },
    )
    _write_json(
        folder / "tokenizer_config.json",
        {
            "add_prefix_space": False,
            "additional_special_tokens": additional,
            "bos_token": None,
            "clean_up_tokenization_spaces": False,
            "eos_token": "<|im_end|>",
            "errors": "replace",
            "model_max_length": 131072,
            "pad_token": "<|endoftext|>",
            "padding_side": "left",
            "split_special_tokens": False,
            "tokenizer_class": "Qwen2Tokenizer",
            "unk_token": None,
        },
    )


def _train_sentencepiece(model_type: str, **options: Any) -> bytes:
    """A SentencePiece model (serialized proto) trained on :func:`training_lines`."""
    import sentencepiece as spm

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(training_lines()),
        model_writer=out,
        model_type=model_type,
        vocab_size=TRAINED_VOCAB,
        character_coverage=1.0,
        num_threads=2,
        minloglevel=2,
        **options,
    )
    return out.getvalue()


def _gemma_tokenizer(folder: Path, config: dict[str, Any], max_length: int) -> None:
    """Gemma 3's SentencePiece BPE with byte fallback (``tokenizer.model``) and its
    ``tokenizer.json`` conversion; EmbeddingGemma adds ``<bos>`` and ``<eos>``."""
    import sentencepiece as spm
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    controls = ["<mask>", "[multimodal]", "<start_of_turn>", "<end_of_turn>"]
    proto = _train_sentencepiece(
        "bpe",
        byte_fallback=True,
        split_digits=True,
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        normalization_rule_name="identity",
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        control_symbols=controls,
    )
    (folder / "tokenizer.model").write_bytes(proto)
    sp = spm.SentencePieceProcessor(model_proto=proto)
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    special = [i for i in range(sp.get_piece_size()) if sp.is_control(i) or sp.is_unknown(i)]
    mergeable = {
        p: i
        for p, i in vocab.items()
        if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i))
    }
    tok = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=_sentencepiece_merges(mergeable),
            unk_token="<unk>",
            fuse_unk=True,
            byte_fallback=True,
            dropout=None,
        )
    )
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous", invert=False)
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    tok.add_special_tokens([_added(sp.id_to_piece(i)) for i in special])
    assert (vocab["<pad>"], vocab["<eos>"], vocab["<bos>"]) == (
        config["pad_token_id"],
        config["eos_token_id"],
        config["bos_token_id"],
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<bos>:0 $A:0 <eos>:0",
        pair="<bos>:0 $A:0 <eos>:0 <bos>:1 $B:1 <eos>:1",
        special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])],
    )
    tok.save(str(folder / "tokenizer.json"))
    specials_map = {
        "bos_token": "<bos>",
        "eos_token": "<eos>",
        "mask_token": "<mask>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
    }
    _write_json(folder / "special_tokens_map.json", specials_map)
    _write_json(
        folder / "tokenizer_config.json",
        {
            "add_bos_token": True,
            "add_eos_token": True,
            "clean_up_tokenization_spaces": False,
            "model_max_length": max_length,
            "sp_model_kwargs": {},
            "spaces_between_special_tokens": False,
            "tokenizer_class": "GemmaTokenizer",
            "use_default_system_prompt": False,
            **specials_map,
        },
    )


def _sentencepiece_merges(vocab: dict[str, int]) -> list[tuple[str, str]]:
    """BPE merges implied by a SentencePiece BPE vocabulary (as transformers' converter
    derives them): every split of a piece into two pieces, ranked by the merged piece's id."""
    found = []
    for piece, rank in vocab.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                found.append((rank, vocab[left], vocab[right], left, right))
    found.sort()
    return [(left, right) for *_, left, right in found]


def _xlmr_tokenizer(folder: Path, config: dict[str, Any], max_length: int) -> None:
    """XLM-RoBERTa's SentencePiece unigram (``sentencepiece.bpe.model``, despite the name)
    with fairseq's id offset, and its ``tokenizer.json`` conversion; ``<mask>`` is 250001."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    proto = _train_sentencepiece(
        "unigram", hard_vocab_limit=False, unk_id=0, bos_id=1, eos_id=2, pad_id=-1
    )
    (folder / "sentencepiece.bpe.model").write_bytes(proto)
    sp = spm.SentencePieceProcessor(model_proto=proto)
    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString(proto)
    # fairseq's dictionary: <s> <pad> </s> <unk>, then the pieces after SentencePiece's three.
    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [(sp.id_to_piece(i), sp.get_score(i)) for i in range(3, sp.get_piece_size())]
    pieces += [(f"<|unused_{i}|>", -100.0) for i in range(config["vocab_size"] - 1 - len(pieces))]
    pieces.append(("<mask>", 0.0))
    tok = Tokenizer(models.Unigram(pieces, unk_id=3, byte_fallback=False))
    charsmap = model.normalizer_spec.precompiled_charsmap
    tok.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(charsmap), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.add_special_tokens([_added(t) for t in ("<s>", "<pad>", "</s>", "<unk>")])
    tok.add_special_tokens([_added("<mask>", lstrip=True)])
    assert tok.token_to_id("<mask>") == config["vocab_size"] - 1
    tok.post_processor = processors.TemplateProcessing(
        single="<s>:0 $A:0 </s>:0",
        pair="<s>:0 $A:0 </s>:0 </s>:0 $B:0 </s>:0",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    tok.save(str(folder / "tokenizer.json"))
    specials_map = {
        "bos_token": "<s>",
        "cls_token": "<s>",
        "eos_token": "</s>",
        "mask_token": {"content": "<mask>", "lstrip": True, "normalized": False},
        "pad_token": "<pad>",
        "sep_token": "</s>",
        "unk_token": "<unk>",
    }
    _write_json(folder / "special_tokens_map.json", specials_map)
    _write_json(
        folder / "tokenizer_config.json",
        {
            "clean_up_tokenization_spaces": True,
            "model_max_length": max_length,
            "tokenizer_class": "XLMRobertaTokenizer",
            **{k: v if isinstance(v, str) else v["content"] for k, v in specials_map.items()},
        },
    )


# ---------------------------------------------------------------------------------------
# The published models.


@dataclass(frozen=True)
class Published:
    """What one published model's folder holds, short of its trained weights.

    Attributes:
        repo: The Hugging Face repository it copies.
        config: Its ``config.json``.
        dtype: The safetensors dtype of its weights.
        layout: Its tensors' names, shapes and init kinds, from a config.
        tokenizer: Writes its tokenizer files into a folder (``config``, max length).
        pooling: sentence-transformers' ``pooling_mode_*`` key it sets.
        max_seq_length: ``sentence_bert_config.json``'s.
        prompts: ``config_sentence_transformers.json``'s.
        dense: ``(in, out)`` of each sentence-transformers Dense layer after pooling (no bias,
            identity activation), in order.
        normalize: Whether ``modules.json`` ends in a Normalize module.
    """

    repo: str
    config: dict[str, Any]
    dtype: str
    layout: Callable[[dict[str, Any]], Iterator[Tensor]]
    tokenizer: Callable[[Path, dict[str, Any], int], None]
    pooling: str
    max_seq_length: int
    prompts: dict[str, str] = field(default_factory=dict)
    dense: tuple[tuple[int, int], ...] = ()
    normalize: bool = True


PUBLISHED: dict[str, Published] = {
    "bge-base-en-v1.5": Published(
        repo="BAAI/bge-base-en-v1.5",
        config=BGE_BASE_EN_V1_5,
        dtype="F32",
        layout=_bert_layout,
        tokenizer=_wordpiece_tokenizer,
        pooling="pooling_mode_cls_token",
        max_seq_length=512,
    ),
    "gte-modernbert-base": Published(
        repo="Alibaba-NLP/gte-modernbert-base",
        config=GTE_MODERNBERT_BASE,
        dtype="F32",
        layout=_modernbert_layout,
        tokenizer=_modernbert_tokenizer,
        pooling="pooling_mode_cls_token",
        max_seq_length=8192,
    ),
    "Qwen3-Embedding-0.6B": Published(
        repo="Qwen/Qwen3-Embedding-0.6B",
        config=QWEN3_EMBEDDING_0_6B,
        dtype="BF16",
        layout=lambda c: _decoder_layout(c, gemma=False),
        tokenizer=_qwen3_tokenizer,
        pooling="pooling_mode_lasttoken",
        max_seq_length=32768,
        prompts=QWEN3_EMBEDDING_PROMPTS,
    ),
    "embeddinggemma-300m": Published(
        repo="google/embeddinggemma-300m",
        config=EMBEDDINGGEMMA_300M,
        dtype="F32",
        layout=lambda c: _decoder_layout(c, gemma=True),
        tokenizer=_gemma_tokenizer,
        pooling="pooling_mode_mean_tokens",
        max_seq_length=2048,
        prompts=EMBEDDINGGEMMA_PROMPTS,
        dense=((768, 3072), (3072, 768)),
    ),
    "nomic-embed-text-v1.5": Published(
        repo="nomic-ai/nomic-embed-text-v1.5",
        config=NOMIC_EMBED_TEXT_V1_5,
        dtype="F32",
        layout=_nomic_layout,
        tokenizer=_wordpiece_tokenizer,
        pooling="pooling_mode_mean_tokens",
        max_seq_length=8192,
        prompts=NOMIC_PROMPTS,
    ),
    "multilingual-e5-base": Published(
        repo="intfloat/multilingual-e5-base",
        config=MULTILINGUAL_E5_BASE,
        dtype="F32",
        layout=_bert_layout,
        tokenizer=_xlmr_tokenizer,
        pooling="pooling_mode_mean_tokens",
        max_seq_length=512,
    ),
}

_POOLING_KEYS = (
    "pooling_mode_cls_token",
    "pooling_mode_mean_tokens",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)
_ST_VERSIONS = {"sentence_transformers": "3.4.1", "transformers": "4.51.3", "pytorch": "2.6.0"}


def layer_count(config: dict[str, Any]) -> int:
    """A config's layers (nomic's own key is ``n_layer``)."""
    return int(config.get("num_hidden_layers") or config["n_layer"])


def width(config: dict[str, Any]) -> int:
    """A config's hidden size (nomic's own key is ``n_embd``)."""
    return int(config.get("hidden_size") or config["n_embd"])


def model_config(name: str, layers: int | None = None) -> dict[str, Any]:
    """The published ``config.json`` of ``name``, with ``layers`` layers if given."""
    config = json.loads(json.dumps(PUBLISHED[name].config))
    if layers is not None:
        published = layer_count(config)
        if not 1 <= layers <= published:
            raise ValueError(f"layers must be 1-{published}, got {layers}")
        config["num_hidden_layers"] = layers
        if "n_layer" in config:  # transformers' NomicBERT reads num_hidden_layers (default 12)
            config["n_layer"] = layers
        if "layer_types" in config:
            config["layer_types"] = config["layer_types"][:layers]
        if "max_window_layers" in config:
            config["max_window_layers"] = min(config["max_window_layers"], layers)
    return config


def _sentence_transformers_files(folder: Path, card: Published, config: dict, max_len: int) -> None:
    modules: list[dict[str, Any]] = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    (folder / "1_Pooling").mkdir()
    pooling = {"word_embedding_dimension": width(config)}
    pooling |= {key: key == card.pooling for key in _POOLING_KEYS}
    pooling["include_prompt"] = True
    _write_json(folder / "1_Pooling" / "config.json", pooling)
    for width_in, width_out in card.dense:
        idx = len(modules)
        path = f"{idx}_Dense"
        (folder / path).mkdir()
        _write_json(
            folder / path / "config.json",
            {
                "in_features": width_in,
                "out_features": width_out,
                "bias": False,
                "activation_function": "torch.nn.modules.linear.Identity",
            },
        )
        write_safetensors(
            folder / path / "model.safetensors",
            [("linear.weight", (width_out, width_in), "normal")],
            "F32",
            seed=1000 + idx,
        )
        modules.append(
            {
                "idx": idx,
                "name": str(idx),
                "path": path,
                "type": "sentence_transformers.models.Dense",
            }
        )
    if card.normalize:
        idx = len(modules)
        modules.append(
            {
                "idx": idx,
                "name": str(idx),
                "path": f"{idx}_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
    _write_json(folder / "modules.json", modules)
    _write_json(
        folder / "sentence_bert_config.json", {"max_seq_length": max_len, "do_lower_case": False}
    )
    _write_json(
        folder / "config_sentence_transformers.json",
        {
            "__version__": _ST_VERSIONS,
            "prompts": card.prompts,
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
    )


def _write_model(
    folder: Path, name: str, layers: int | None, max_seq_length: int | None, seed: int
) -> None:
    card = PUBLISHED[name]
    config = model_config(name, layers)
    max_len = max_seq_length or card.max_seq_length
    _write_json(folder / "config.json", config)
    write_safetensors(folder / "model.safetensors", list(card.layout(config)), card.dtype, seed)
    card.tokenizer(folder, config, max_len)
    _sentence_transformers_files(folder, card, config, max_len)
    (folder / "README.md").write_text(
        f"Random weights at the published shapes of {card.repo} ({layer_count(config)} "
        f"layers), built by tests/real_models.py for tests and benchmarks. Not a real model.\n"
    )


def build_model(
    name: str,
    root: Path,
    *,
    layers: int | None = None,
    max_seq_length: int | None = None,
    seed: int = 0,
) -> Path:
    """The folder of ``name`` under ``root``, built on first use.

    Args:
        name: A key of :data:`PUBLISHED` (e.g. ``"gte-modernbert-base"``).
        root: The cache folder; each set of parameters gets its own sub-folder.
        layers: Fewer layers than published (default: the published count).
        max_seq_length: sentence-transformers' truncation length instead of the published
            one (tests use a short one to check truncation cheaply).
        seed: Seed of the random weights.

    Returns:
        The model folder (its name is ``name`` plus a key of the parameters).
    """
    if name not in PUBLISHED:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(PUBLISHED)}")
    count = layers or layer_count(PUBLISHED[name].config)
    return cached_folder(
        root,
        f"{name}-{count}L",
        [BUILD_VERSION, name, layers, max_seq_length, seed],
        lambda work: _write_model(work, name, layers, max_seq_length, seed),
    )


def cached_folder(root: Path, stem: str, key: list[Any], write: Callable[[Path], None]) -> Path:
    """``root/STEM-DIGEST`` (DIGEST: of ``key``, the builder's parameters), written by
    ``write(folder)`` on first use: built aside and renamed into place, so that a half-built
    folder is never found, and another process building it meanwhile does no harm."""
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:10]
    folder = Path(root) / f"{stem}-{digest}"
    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{stem}-", dir=folder.parent))
    try:
        write(work)
        work.chmod(0o755)  # mkdtemp's 0700 would hide the folder from other users
        try:
            os.rename(work, folder)
        except OSError:  # built meanwhile by another process
            if not (folder / "config.json").is_file():
                raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="cache folder of the built models")
    parser.add_argument("names", nargs="*", help=f"models (default: all): {', '.join(PUBLISHED)}")
    parser.add_argument("--layers", type=int, help="fewer layers than published")
    parser.add_argument("--max-seq-length", type=int, help="sentence-transformers truncation")
    args = parser.parse_intermixed_args(argv)
    for name in args.names or PUBLISHED:
        print(build_model(name, args.root, layers=args.layers, max_seq_length=args.max_seq_length))
    return 0


if __name__ == "__main__":
    sys.exit(main())
