"""A model's identity: one hash of everything in its folder that changes a vector (pure).

The weights, ``config.json``, every tokenizer and vocabulary file, the sentence-transformers
modules (pooling, Dense layers, Normalize) and settings, and what the registry read from them
(architecture, pooling, maximum length, prompts, quantization). The vector cache keys vectors
by it, and batch jobs record it in their manifests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .modelspec import ModelSpec
from .registry import BUNDLED_SHA256, sha256_file

#: Side files up to this size are hashed directly; larger ones through the memoised hash.
_SMALL_FILE_BYTES = 1 << 20
#: Files of a model folder (besides the weights) that can change its vectors: config,
#: tokenizer (tokenizer.json, vocab.txt, merges.txt, spiece.model, ...), sentence-transformers
#: settings (modules.json, sentence_bert_config.json, config_sentence_transformers.json).
_SIDE_SUFFIXES = (".json", ".txt", ".model", ".tiktoken")
_WEIGHTS = ("model*.safetensors", "*/model*.safetensors")


def _weight_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(_WEIGHTS[0])) + sorted(folder.glob(_WEIGHTS[1]))


def _module_folders(folder: Path) -> list[Path]:
    """The sentence-transformers module folders ``modules.json`` names (``1_Pooling``,
    ``2_Normalize``, ``2_Dense``, ...), only those inside ``folder``."""
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    found = []
    for module in modules if isinstance(modules, list) else []:
        sub = module.get("path") if isinstance(module, dict) else None
        sub = os.path.normpath(sub) if isinstance(sub, str) and sub else "."
        if sub != "." and not sub.startswith(("..", "/")):  # "": the Transformer (top level)
            found.append(folder / sub)
    return found


def _side_files(folder: Path) -> list[Path]:
    """Every file besides the weights that can change a model's vectors: the folder's own
    config and tokenizer files, and every file of its sentence-transformers modules (a Dense
    layer's weights included)."""
    weights = set(_weight_files(folder))
    files = {
        f
        for f in folder.iterdir()
        if f.suffix in _SIDE_SUFFIXES and not f.name.startswith(".") and f.is_file()
    }
    for module in _module_folders(folder):
        if module.is_dir():
            files.update(f for f in module.rglob("*") if f.is_file() and f not in weights)
    return sorted(files)


def _stamp(files: Sequence[Path]) -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and modification times: what changes when a file is replaced."""
    stamps = []
    for file in files:
        try:
            st = file.stat()
            stamps.append((str(file), st.st_size, st.st_mtime_ns))
        except OSError:
            stamps.append((str(file), -1, -1))
    return tuple(stamps)


def weights_hash(folder: Path, file_hash: Callable[[Path], str] = sha256_file) -> str:
    """SHA-256 over the SHA-256 of each weight file (``model*.safetensors``, also one folder
    down) of a model folder.

    Args:
        folder: The model folder.
        file_hash: Hex SHA-256 of one file's contents (a memoised one, for big files).
    """
    digest = hashlib.sha256()
    for file in _weight_files(folder):
        digest.update(file_hash(file).encode())
    return digest.hexdigest()


def model_identity(
    spec: ModelSpec,
    *,
    weights_sha256: str | None = None,
    file_hash: Callable[[Path], str] = sha256_file,
    precision: str = "fp32",
) -> str:
    """The identity of a model's vectors: a hash of everything that changes them.

    That is the weights, every other file of the folder that a tokenizer, the model or
    sentence-transformers reads (``config.json``, ``tokenizer.json`` and the other tokenizer
    and vocabulary files, ``modules.json`` and every file of its module folders: pooling,
    normalisation, dense layers; ``sentence_bert_config.json``,
    ``config_sentence_transformers.json``), and what :class:`ModelSpec` derived from them
    (architecture, pooling, truncation length, quantization, prompts). Two folders with the
    same identity give the same vectors; it needs no open cache (a batch job records it).

    Args:
        spec: The model.
        weights_sha256: The weights' hash when already known, so they are not read again;
            for the bundled model, the release's hash (which the registry checked them
            against) by default.
        file_hash: Hex SHA-256 of a file's contents, used for the weights and big files (the
            cache passes one memoised by path, size and modification time).
        precision: The engine's ``precision`` setting (vectors differ per precision; float32's
            identity is that of earlier releases).

    Returns:
        A hex digest.

    Raises:
        OSError: A weight file cannot be read.
    """
    folder = spec.path
    if weights_sha256 is None and spec.source == "bundled":
        weights_sha256 = BUNDLED_SHA256
    files: dict[str, str] = {}
    for file in _side_files(folder):
        try:
            if file.stat().st_size <= _SMALL_FILE_BYTES:
                sha = hashlib.sha256(file.read_bytes()).hexdigest()
            else:
                sha = file_hash(file)
        except OSError:  # neither the tokenizer nor the model can read it either
            sha = "unreadable"
        files[file.relative_to(folder).as_posix()] = sha
    description: dict[str, Any] = {
        "identity": 2,
        "weights": weights_sha256 or weights_hash(folder, file_hash),
        "files": files,
        "model_type": spec.model_type,
        "pooling": spec.pooling,
        "max_seq_length": spec.max_seq_length,
        "dimension": spec.dimension,
        "quantization": dataclasses.asdict(spec.quantization) if spec.quantization else None,
        "prompts": spec.prompts,
        "default_prompt_name": spec.default_prompt_name,
    }
    if precision != "fp32":
        description["precision"] = precision
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()


def folder_stamp(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and modification times of the files an identity covers (a cheap way to
    notice that a folder changed)."""
    return _stamp(_weight_files(folder) + _side_files(folder))
