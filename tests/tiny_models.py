"""Build tiny random embedding models on disk for tests (run as a script in a subprocess).

Each model folder holds a real ``config.json``, random ``model.safetensors`` with the parameter
names and shapes of the ``mlx_embeddings`` architecture, a word-level ``tokenizer.json`` and a
sentence-transformers pooling config. Run ``python tests/tiny_models.py OUT_DIR``; MLX is used
only to read parameter shapes, in this separate process's main thread.
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
]

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
    else:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
        )
    return json.loads(tok.to_str()), len(vocab)


def _random_weights(model_type: str, config: dict[str, Any], seed: int) -> dict[str, np.ndarray]:
    from mlx.utils import tree_flatten

    arch = importlib.import_module(f"mlx_embeddings.models.{model_type}")
    model = arch.Model(arch.ModelArgs.from_dict(config))
    rng = np.random.default_rng(seed)
    weights = {}
    for name, param in tree_flatten(model.parameters()):
        shape = tuple(param.shape)
        if (
            name.endswith("norm.weight")
            or "LayerNorm.weight" in name
            or name.endswith("_norm.weight")
        ):
            weights[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            weights[name] = (0.2 * rng.standard_normal(shape)).astype(np.float32)
    return weights


def write_model(folder: Path, model_type: str, pooling: str, seed: int = 0) -> Path:
    """Write one tiny model folder and return its path."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer, vocab = _tokenizer(model_type)
    config = _configs(vocab)[model_type]
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    save_file(_random_weights(model_type, config, seed), str(folder / "model.safetensors"))
    (folder / "modules.json").write_text(
        json.dumps(
            [
                {
                    "idx": 0,
                    "name": "0",
                    "path": "",
                    "type": "sentence_transformers.models.Transformer",
                },
                {
                    "idx": 1,
                    "name": "1",
                    "path": "1_Pooling",
                    "type": "sentence_transformers.models.Pooling",
                },
                {
                    "idx": 2,
                    "name": "2",
                    "path": "2_Normalize",
                    "type": "sentence_transformers.models.Normalize",
                },
            ]
        )
    )
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
    return folder


def build_all(out: Path) -> None:
    """Write every model of :data:`TINY_MODELS` under ``out``."""
    for seed, (name, model_type, pooling) in enumerate(TINY_MODELS):
        write_model(out / name, model_type, pooling, seed=seed)


if __name__ == "__main__":
    build_all(Path(sys.argv[1]))
