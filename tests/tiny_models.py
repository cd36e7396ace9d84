"""Build tiny random embedding models on disk for tests (run as a script in a subprocess).

Each model folder holds a real ``config.json``, random ``model.safetensors`` with the parameter
names and shapes of the ``mlx_embeddings`` architecture (or of ours, in
``jupyter_mlx_embed/engine/architectures``), a word-level ``tokenizer.json`` and a
sentence-transformers pooling config; some also have sentence-transformers ``Dense`` modules
(:data:`TINY_DENSE`) and prompts. Run ``python tests/tiny_models.py OUT_DIR``; MLX is used only to
read parameter shapes, in this separate process's main thread. The folders load in
sentence-transformers too (tests/test_dense_modules.py compares with it).
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "rug",
    "bird",
    "flew",
    "over",
    "house",
    "quick",
    "brown",
    "fox",
    "jumps",
    "lazy",
    "river",
    "water",
    "blue",
    "green",
    "red",
    "sky",
    "sun",
    "moon",
    "star",
    "night",
    "day",
    "tree",
    "leaf",
    "wind",
    "rain",
    "snow",
    "cold",
    "warm",
    "music",
    "song",
    "piano",
    "guitar",
    "drum",
    "code",
    "python",
    "data",
    "table",
    "model",
    "vector",
    "search",
    "query",
    "text",
]

# (folder name, model_type, pooling mode)
TINY_MODELS: list[tuple[str, str, str]] = [
    ("tiny-bert-cls", "bert", "cls"),
    ("tiny-bert-max", "bert", "max"),
    ("tiny-xlmr-mean", "xlm_roberta", "mean"),
    ("tiny-modernbert-cls", "modernbert", "cls"),
    ("tiny-modernbert-mean", "modernbert", "mean"),
    ("tiny-qwen3-last", "qwen3", "lasttoken"),
    ("tiny-gemma3-mean", "gemma3_text", "mean"),
    ("tiny-nomic-mean", "nomic_bert", "mean"),
    ("tiny-bert-dense", "bert", "cls"),
]

_IDENTITY = "torch.nn.modules.linear.Identity"
#: sentence-transformers Dense modules after pooling, by model: EmbeddingGemma's shape (two
#: bias-free Identity layers, out to 768 values so that Matryoshka sizes 128-512 apply) and a
#: LaBSE-like one (bias, and no activation named: Dense's default, Tanh).
TINY_DENSE: dict[str, list[dict[str, Any]]] = {
    "tiny-gemma3-mean": [
        {"in_features": 32, "out_features": 128, "bias": False, "activation_function": _IDENTITY},
        {"in_features": 128, "out_features": 768, "bias": False, "activation_function": _IDENTITY},
    ],
    "tiny-bert-dense": [{"in_features": 32, "out_features": 16, "bias": True}],
}
#: EmbeddingGemma's prompts (its config_sentence_transformers.json), a few of them.
GEMMA_PROMPTS = {
    "query": "task: search result | query: ",
    "document": "title: none | text: ",
    "Retrieval-query": "task: search result | query: ",
    "Retrieval-document": "title: none | text: ",
    "Clustering": "task: clustering | query: ",
    "STS": "task: sentence similarity | query: ",
}

_BASE = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
}


def _configs(vocab: int) -> dict[str, dict[str, Any]]:
    return {
        "bert": {
            **_BASE,
            "model_type": "bert",
            "architectures": ["BertModel"],
            "vocab_size": vocab,
            "max_position_embeddings": 64,
            "type_vocab_size": 2,
            "pad_token_id": 0,
            "layer_norm_eps": 1e-12,
        },
        "xlm_roberta": {
            **_BASE,
            "model_type": "xlm-roberta",
            "architectures": ["XLMRobertaModel"],
            "vocab_size": vocab,
            "max_position_embeddings": 66,
            "type_vocab_size": 1,
            "pad_token_id": 1,
            "layer_norm_eps": 1e-5,
        },
        "modernbert": {
            **_BASE,
            "model_type": "modernbert",
            "architectures": ["ModernBertModel"],
            "vocab_size": vocab,
            "max_position_embeddings": 64,
            "global_attn_every_n_layers": 2,
            "local_attention": 16,
            "pad_token_id": 0,
        },
        "gemma3_text": {
            **_BASE,
            "num_hidden_layers": 3,
            "model_type": "gemma3_text",
            "architectures": ["Gemma3TextModel"],
            "vocab_size": vocab,
            "num_key_value_heads": 2,
            "head_dim": 8,
            "query_pre_attn_scalar": 16,
            "max_position_embeddings": 64,
            "rms_norm_eps": 1e-6,
            "hidden_activation": "gelu_pytorch_tanh",
            "rope_theta": 1_000_000.0,
            "rope_local_base_freq": 10_000.0,
            # Bidirectional: sliding layers see |q - k| < 6 // 2 + 1, fewer than a long text.
            "sliding_window": 6,
            "use_bidirectional_attention": True,
            "layer_types": ["sliding_attention", "sliding_attention", "full_attention"],
            "attn_logit_softcapping": None,
            "final_logit_softcapping": None,
            "pad_token_id": 0,
            "bos_token_id": 2,
            "eos_token_id": 5,
        },
        "nomic_bert": {
            # transformers' keys and nomic's own (nomic-embed-text-v1.5's config.json).
            **_BASE,
            "n_embd": _BASE["hidden_size"],
            "n_layer": _BASE["num_hidden_layers"],
            "n_head": _BASE["num_attention_heads"],
            "n_inner": _BASE["intermediate_size"],
            "model_type": "nomic_bert",
            "architectures": ["NomicBertModel"],
            "vocab_size": vocab,
            "type_vocab_size": 2,
            "max_position_embeddings": 64,
            "layer_norm_eps": 1e-12,
            "layer_norm_epsilon": 1e-12,
            "hidden_act": "silu",
            "activation_function": "swiglu",
            "rotary_emb_base": 1000,
            "rotary_emb_fraction": 1.0,
            "rotary_emb_interleaved": False,
            "prenorm": False,
            "qkv_proj_bias": False,
            "mlp_fc1_bias": False,
            "mlp_fc2_bias": False,
            "pad_token_id": 0,
        },
        "qwen3": {
            **_BASE,
            "model_type": "qwen3",
            "architectures": ["Qwen3ForCausalLM"],
            "vocab_size": vocab,
            "num_key_value_heads": 2,
            "head_dim": 8,
            "max_position_embeddings": 64,
            "rope_theta": 10000.0,
            "tie_word_embeddings": False,
            "pad_token_id": 0,
        },
    }


def _tokenizer(model_type: str) -> tuple[dict[str, Any], int]:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    specials = ["[PAD]", "<pad>", "[CLS]", "[SEP]", "[UNK]", "<eos>"]
    vocab = {tok: i for i, tok in enumerate([*specials, *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if model_type == "qwen3":  # decoder embedders append an end token and pool it
        tok.post_processor = processors.TemplateProcessing(
            single="$A <eos>", special_tokens=[("<eos>", vocab["<eos>"])]
        )
    elif model_type == "gemma3_text":  # EmbeddingGemma: <bos> text <eos>
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A <eos>",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("<eos>", vocab["<eos>"])],
        )
    else:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
        )
    return json.loads(tok.to_str()), len(vocab)


def _random_weights(model_type: str, config: dict[str, Any], seed: int) -> dict[str, np.ndarray]:
    from mlx.utils import tree_flatten

    own = ("gemma3_text", "nomic_bert")  # jupyter_mlx_embed.engine.architectures.OWN_MODEL_TYPES
    package = (
        "jupyter_mlx_embed.engine.architectures" if model_type in own else "mlx_embeddings.models"
    )
    arch = importlib.import_module(f"{package}.{model_type}")
    model = arch.Model(arch.ModelArgs.from_dict(config))
    rng = np.random.default_rng(seed)
    weights = {}
    for name, param in tree_flatten(model.parameters()):
        shape = tuple(param.shape)
        if (
            name.endswith("norm.weight")
            or "LayerNorm.weight" in name
            or name.endswith(("_norm.weight", "norm1.weight", "norm2.weight", "emb_ln.weight"))
        ):
            weights[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            weights[name] = (0.2 * rng.standard_normal(shape)).astype(np.float32)
    return weights


def _module(idx: int, path: str, kind: str) -> dict[str, Any]:
    return {
        "idx": idx,
        "name": str(idx),
        "path": path,
        "type": f"sentence_transformers.models.{kind}",
    }


def write_dense(folder: Path, config: dict[str, Any], seed: int) -> Path:
    """Write one sentence-transformers Dense module (config and ``linear`` weights)."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_in, n_out = config["in_features"], config["out_features"]
    # Scaled so that the output stays of the input's size (and Tanh does not saturate).
    weights = {"linear.weight": (rng.standard_normal((n_out, n_in)) / n_in**0.5).astype(np.float32)}
    if config.get("bias", True):
        weights["linear.bias"] = (0.1 * rng.standard_normal(n_out)).astype(np.float32)
    save_file(weights, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def write_model(
    folder: Path,
    model_type: str,
    pooling: str,
    seed: int = 0,
    dense: list[dict[str, Any]] | None = None,
) -> Path:
    """Write one tiny model folder and return its path.

    Args:
        dense: Configs of sentence-transformers Dense modules to put after pooling.
    """
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer, vocab = _tokenizer(model_type)
    config = _configs(vocab)[model_type]
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    # What transformers' AutoTokenizer needs to pad a batch as sentence-transformers does (our
    # tokenizer reads tokenizer.json only).
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "pad_token": "<pad>" if model_type == "xlm_roberta" else "[PAD]",
                "unk_token": "[UNK]",
                "padding_side": "right",
            }
        )
    )
    save_file(_random_weights(model_type, config, seed), str(folder / "model.safetensors"))
    modules = [_module(0, "", "Transformer"), _module(1, "1_Pooling", "Pooling")]
    for i, dense_config in enumerate(dense or [], start=2):
        modules.append(_module(i, f"{i}_Dense", "Dense"))
        write_dense(folder / f"{i}_Dense", dense_config, seed=100 * seed + i)
    modules.append(_module(len(modules), f"{len(modules)}_Normalize", "Normalize"))
    (folder / "modules.json").write_text(json.dumps(modules))
    keys = {
        "cls": "pooling_mode_cls_token",
        "mean": "pooling_mode_mean_tokens",
        "max": "pooling_mode_max_tokens",
        "lasttoken": "pooling_mode_lasttoken",
    }
    pool = {key: key == keys[pooling] for key in keys.values()}
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": config["hidden_size"], **pool})
    )
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 24}))
    if model_type == "gemma3_text":
        (folder / "config_sentence_transformers.json").write_text(
            json.dumps({"prompts": GEMMA_PROMPTS, "default_prompt_name": None})
        )
    return folder


def build_all(out: Path) -> None:
    """Write every model of :data:`TINY_MODELS` under ``out``."""
    for seed, (name, model_type, pooling) in enumerate(TINY_MODELS):
        write_model(out / name, model_type, pooling, seed=seed, dense=TINY_DENSE.get(name))


if __name__ == "__main__":
    build_all(Path(sys.argv[1]))
