"""Random-weight SigLIP image-text models at their published shapes, file layouts and dtypes.

The image-text counterpart of :mod:`tests.real_models`, whose helpers it reuses: each builder
writes a folder that transformers' ``SiglipModel``, ``SiglipTokenizer`` and
``SiglipImageProcessor`` load, as Google publishes it: ``config.json`` (the published one,
which leaves most sizes at ``SiglipTextConfig`` / ``SiglipVisionConfig`` defaults), a float32
``model.safetensors`` with the published tensor names and shapes, ``preprocessor_config.json``,
a SentencePiece ``spiece.model`` (unigram, trained here on local text, with the published
special ids: ``</s>`` 1, ``<unk>`` 2), ``tokenizer_config.json`` and
``special_tokens_map.json``, and no ``tokenizer.json``. Weights are random (normal, std 0.02;
norms near 1).

    folder = build_siglip("siglip-base-patch16-224", Path.home() / ".cache/jme-siglip")

or ``python tests/siglip_models.py ROOT [NAME ...] [--layers N]``. Building needs numpy and
``sentencepiece`` only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__:
    from . import real_models
else:  # run as a script: python tests/siglip_models.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests import real_models

Tensor = real_models.Tensor

#: Bump when the builder's output changes (real_models' BUILD_VERSION is in the key too).
BUILD_VERSION = 1

#: transformers' SiglipTextConfig / SiglipVisionConfig defaults, for the sizes the published
#: config.json files leave out (what SiglipModel builds from them).
TEXT_DEFAULTS = {
    "vocab_size": 32000,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 64,
}
VISION_DEFAULTS = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 16,
}

#: google/siglip-base-patch16-224, config.json (SiglipModel, saved by transformers 4.37).
SIGLIP_BASE_PATCH16_224: dict[str, Any] = {
    "architectures": ["SiglipModel"],
    "initializer_factor": 1.0,
    "model_type": "siglip",
    "text_config": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "model_type": "siglip_text_model",
        "num_attention_heads": 12,
        "num_hidden_layers": 12,
        "vocab_size": 32000,
    },
    "torch_dtype": "float32",
    "transformers_version": "4.37.0.dev0",
    "vision_config": {
        "hidden_size": 768,
        "image_size": 224,
        "intermediate_size": 3072,
        "model_type": "siglip_vision_model",
        "num_attention_heads": 12,
        "num_hidden_layers": 12,
        "patch_size": 16,
    },
}

#: google/siglip-so400m-patch14-384, config.json.
SIGLIP_SO400M_PATCH14_384: dict[str, Any] = {
    "architectures": ["SiglipModel"],
    "initializer_factor": 1.0,
    "model_type": "siglip",
    "text_config": {
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "model_type": "siglip_text_model",
        "num_attention_heads": 16,
        "num_hidden_layers": 27,
    },
    "torch_dtype": "float32",
    "transformers_version": "4.37.0.dev0",
    "vision_config": {
        "hidden_size": 1152,
        "image_size": 384,
        "intermediate_size": 4304,
        "model_type": "siglip_vision_model",
        "num_attention_heads": 16,
        "num_hidden_layers": 27,
        "patch_size": 14,
    },
}


@dataclass(frozen=True)
class PublishedSiglip:
    """One published SigLIP checkpoint: its repository and ``config.json``."""

    repo: str
    config: dict[str, Any]


SIGLIPS = {
    "siglip-base-patch16-224": PublishedSiglip(
        "google/siglip-base-patch16-224", SIGLIP_BASE_PATCH16_224
    ),
    "siglip-so400m-patch14-384": PublishedSiglip(
        "google/siglip-so400m-patch14-384", SIGLIP_SO400M_PATCH14_384
    ),
}


def towers(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The text and vision configs with transformers' defaults filled in."""
    return (
        {**TEXT_DEFAULTS, **config.get("text_config", {})},
        {**VISION_DEFAULTS, **config.get("vision_config", {})},
    )


def _encoder(prefix: str, c: dict[str, Any]) -> Iterator[Tensor]:
    h, inter = c["hidden_size"], c["intermediate_size"]
    for i in range(c["num_hidden_layers"]):
        p = f"{prefix}encoder.layers.{i}."
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            yield f"{p}self_attn.{proj}.weight", (h, h), "normal"
            yield f"{p}self_attn.{proj}.bias", (h,), "normal"
        for norm in ("layer_norm1", "layer_norm2"):
            yield f"{p}{norm}.weight", (h,), "norm"
            yield f"{p}{norm}.bias", (h,), "normal"
        yield f"{p}mlp.fc1.weight", (inter, h), "normal"
        yield f"{p}mlp.fc1.bias", (inter,), "normal"
        yield f"{p}mlp.fc2.weight", (h, inter), "normal"
        yield f"{p}mlp.fc2.bias", (h,), "normal"


def _layout(config: dict[str, Any]) -> Iterator[Tensor]:
    """SiglipModel's tensors, in the published order of names."""
    text, vision = towers(config)
    h = text["hidden_size"]
    yield "logit_bias", (1,), "normal"
    yield "logit_scale", (1,), "normal"
    yield (
        "text_model.embeddings.position_embedding.weight",
        (
            text["max_position_embeddings"],
            h,
        ),
        "normal",
    )
    yield "text_model.embeddings.token_embedding.weight", (text["vocab_size"], h), "normal"
    yield from _encoder("text_model.", text)
    yield "text_model.final_layer_norm.weight", (h,), "norm"
    yield "text_model.final_layer_norm.bias", (h,), "normal"
    yield "text_model.head.weight", (text.get("projection_size") or h, h), "normal"
    yield "text_model.head.bias", (text.get("projection_size") or h,), "normal"
    v, patch = vision["hidden_size"], vision["patch_size"]
    positions = (vision["image_size"] // patch) ** 2
    yield (
        "vision_model.embeddings.patch_embedding.weight",
        (
            v,
            vision["num_channels"],
            patch,
            patch,
        ),
        "normal",
    )
    yield "vision_model.embeddings.patch_embedding.bias", (v,), "normal"
    yield "vision_model.embeddings.position_embedding.weight", (positions, v), "normal"
    yield from _encoder("vision_model.", vision)
    yield "vision_model.post_layernorm.weight", (v,), "norm"
    yield "vision_model.post_layernorm.bias", (v,), "normal"
    p = "vision_model.head."
    yield f"{p}probe", (1, 1, v), "normal"
    yield f"{p}attention.in_proj_weight", (3 * v, v), "normal"
    yield f"{p}attention.in_proj_bias", (3 * v,), "normal"
    yield f"{p}attention.out_proj.weight", (v, v), "normal"
    yield f"{p}attention.out_proj.bias", (v,), "normal"
    yield f"{p}layernorm.weight", (v,), "norm"
    yield f"{p}layernorm.bias", (v,), "normal"
    yield f"{p}mlp.fc1.weight", (vision["intermediate_size"], v), "normal"
    yield f"{p}mlp.fc1.bias", (vision["intermediate_size"],), "normal"
    yield f"{p}mlp.fc2.weight", (v, vision["intermediate_size"]), "normal"
    yield f"{p}mlp.fc2.bias", (v,), "normal"


def _tokenizer(folder: Path, config: dict[str, Any]) -> None:
    """SigLIP's SentencePiece unigram as published: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, no
    BOS; ``</s>`` both pads and ends a text; 64 tokens; only ``input_ids`` (no mask)."""
    proto = real_models._train_sentencepiece(
        "unigram", hard_vocab_limit=False, pad_id=0, eos_id=1, unk_id=2, bos_id=-1
    )
    (folder / "spiece.model").write_bytes(proto)
    text, _ = towers(config)
    special = {"lstrip": True, "normalized": False, "rstrip": True, "single_word": False}
    real_models._write_json(
        folder / "tokenizer_config.json",
        {
            "added_tokens_decoder": {
                "1": {"content": "</s>", **special, "special": True},
                "2": {"content": "<unk>", **special, "special": True},
            },
            "additional_special_tokens": [],
            "clean_up_tokenization_spaces": True,
            "do_lower_case": True,
            "eos_token": "</s>",
            "model_input_names": ["input_ids"],
            "model_max_length": text["max_position_embeddings"],
            "pad_token": "</s>",
            "processor_class": "SiglipProcessor",
            "sp_model_kwargs": {},
            "tokenizer_class": "SiglipTokenizer",
            "unk_token": "<unk>",
        },
    )
    token = {"lstrip": True, "normalized": False, "rstrip": True, "single_word": False}
    real_models._write_json(
        folder / "special_tokens_map.json",
        {
            "eos_token": {"content": "</s>", **token},
            "pad_token": {"content": "</s>", **token},
            "unk_token": {"content": "<unk>", **token},
        },
    )


def _preprocessor(folder: Path, config: dict[str, Any]) -> None:
    _, vision = towers(config)
    size = vision["image_size"]
    real_models._write_json(
        folder / "preprocessor_config.json",
        {
            "do_normalize": True,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": [0.5, 0.5, 0.5],
            "image_processor_type": "SiglipImageProcessor",
            "image_std": [0.5, 0.5, 0.5],
            "processor_class": "SiglipProcessor",
            "resample": 3,
            "rescale_factor": 0.00392156862745098,
            "size": {"height": size, "width": size},
        },
    )


def siglip_config(name: str, layers: int | None = None) -> dict[str, Any]:
    """The published ``config.json`` of ``name``, with ``layers`` layers per tower if given."""
    import json

    config = json.loads(json.dumps(SIGLIPS[name].config))
    if layers is not None:
        for tower in ("text_config", "vision_config"):
            config[tower]["num_hidden_layers"] = layers
    return config


def _write(folder: Path, name: str, layers: int | None, seed: int) -> None:
    config = siglip_config(name, layers)
    real_models._write_json(folder / "config.json", config)
    real_models.write_safetensors(folder / "model.safetensors", list(_layout(config)), "F32", seed)
    _tokenizer(folder, config)
    _preprocessor(folder, config)
    count = towers(config)[1]["num_hidden_layers"]
    (folder / "README.md").write_text(
        f"Random weights at the published shapes of {SIGLIPS[name].repo} ({count} layers per "
        "tower), built by tests/siglip_models.py for tests and benchmarks. Not a real model.\n"
    )


def build_siglip(name: str, root: Path, layers: int | None = None, *, seed: int = 0) -> Path:
    """The folder of the SigLIP checkpoint ``name`` under ``root``, built on first use.

    Args:
        name: A key of :data:`SIGLIPS`.
        root: The cache folder; each set of parameters gets its own sub-folder.
        layers: Fewer layers per tower than published (default: the published count).
        seed: Seed of the random weights.
    """
    if name not in SIGLIPS:
        raise KeyError(f"unknown SigLIP model {name!r}; known: {', '.join(SIGLIPS)}")
    count = layers or towers(SIGLIPS[name].config)[1]["num_hidden_layers"]
    return real_models.cached_folder(
        root,
        f"{name}-{count}L",
        [BUILD_VERSION, real_models.BUILD_VERSION, name, layers, seed],
        lambda work: _write(work, name, layers, seed),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="cache folder of the built models")
    parser.add_argument("names", nargs="*", help=f"models (default: all): {', '.join(SIGLIPS)}")
    parser.add_argument("--layers", type=int, help="fewer layers per tower than published")
    args = parser.parse_args(argv)
    for name in args.names or SIGLIPS:
        print(build_siglip(name, args.root, args.layers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
