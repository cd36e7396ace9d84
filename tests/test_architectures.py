"""Tiny random models of each architecture pool exactly as their sentence-transformers config says.

The reference pools each text's own (unpadded) last hidden state in numpy (and applies the
model's Dense modules to it), so this also checks that padding inside a batch does not leak
into the pooled vectors.
"""

from __future__ import annotations

import numpy as np
import pytest

from jupyter_mlx_embed import Worker
from jupyter_mlx_embed.modelspec import ModelSpec

from .tiny_models import TINY_DENSE, TINY_MODELS

TEXTS = [
    "the cat sat on the mat",
    "quick brown fox",
    "music",
    "the sun and the moon over the river water at night",
    "python code data table",
]


def _token_states(engine, loaded, row: list[int]) -> np.ndarray:
    """The last hidden state (tokens x dim) of one unpadded row by the stock forward (of a
    copy of the model: the engine's native path let the stock layers' matrices go), on the
    worker thread."""
    import dataclasses

    import mlx.core as mx

    from jupyter_mlx_embed.engine.mlx_engine import _build_model

    stock = _build_model(mx, loaded.spec)
    stock.set_dtype(mx.float32)
    loaded = dataclasses.replace(loaded, model=stock, fast=None, fast_images=None)
    ids = mx.array(np.asarray([row], dtype=np.int32))
    hidden = engine._hidden(loaded, ids, mx.ones(ids.shape, dtype=mx.float32))
    mx.eval(hidden)
    return np.array(hidden[0], dtype=np.float32, copy=True)


def _numpy_pool(hidden: np.ndarray, mode: str, *, normalise: bool = True) -> np.ndarray:
    pooled = {
        "cls": lambda h: h[0],
        "mean": lambda h: h.mean(axis=0),
        "max": lambda h: h.max(axis=0),
        "lasttoken": lambda h: h[-1],
    }[mode](hidden)
    return pooled / np.linalg.norm(pooled) if normalise else pooled


def _numpy_dense(spec: ModelSpec, pooled: np.ndarray) -> np.ndarray:
    """The model's Dense modules on a pooled (not yet normalised) vector, then normalised."""
    from safetensors.numpy import load_file

    activations = {"identity": lambda x: x, "tanh": np.tanh}
    for dense in spec.dense:
        weights = load_file(str(dense.path / "model.safetensors"))
        pooled = weights["linear.weight"] @ pooled + weights.get("linear.bias", 0.0)
        pooled = activations[dense.activation](pooled)
    return pooled / np.linalg.norm(pooled)


@pytest.mark.parametrize(("name", "model_type", "pooling"), TINY_MODELS)
def test_pooling_matches_numpy_reference(
    worker: Worker, name: str, model_type: str, pooling: str
) -> None:
    spec = worker.registry.resolve(name)
    assert (spec.model_type, spec.pooling) == (model_type, pooling)
    assert len(spec.dense) == len(TINY_DENSE.get(name, []))
    result = worker.submit(TEXTS, model=name).result()
    assert result.vectors.shape == (len(TEXTS), spec.dimension)

    def reference(engine, text: str) -> np.ndarray:
        loaded = engine.load(spec)
        row = loaded.tokenizer.encode_texts([text])[0]
        hidden = _token_states(engine, loaded, row)
        return _numpy_dense(spec, _numpy_pool(hidden, pooling, normalise=False))

    for text, vector in zip(TEXTS, result.vectors, strict=True):
        expected = worker.call(lambda engine, t=text: reference(engine, t)).result()
        assert float(expected @ vector) >= 0.9999


def test_pooling_modes_give_different_vectors(worker: Worker) -> None:
    # Same weights (seed 0 vs 1 differ, so compare modes on one model via token states).
    spec = worker.registry.resolve("tiny-bert-cls")

    def both(engine) -> tuple[np.ndarray, np.ndarray]:
        loaded = engine.load(spec)
        hidden = _token_states(engine, loaded, loaded.tokenizer.encode_texts([TEXTS[3]])[0])
        return _numpy_pool(hidden, "cls"), _numpy_pool(hidden, "mean")

    cls, mean = worker.call(both).result()
    vector = worker.submit([TEXTS[3]], model="tiny-bert-cls").result().vectors[0]
    assert float(cls @ vector) > 0.9999
    assert float(mean @ vector) < 0.999


def test_decoder_model_counts_its_end_token(worker: Worker) -> None:
    result = worker.submit(["quick brown fox"], model="tiny-qwen3-last").result()
    assert result.token_counts == (4,)  # three words and the appended end token


def test_truncates_to_sentence_transformers_max_seq_length(worker: Worker) -> None:
    long_text = " ".join(["tree leaf wind rain"] * 20)
    result = worker.submit([long_text], model="tiny-bert-cls").result()
    assert result.token_counts == (24,)


def test_modernbert_mlp_uses_the_gelu_its_config_names(worker: Worker) -> None:
    """transformers' ``gelu`` is the exact erf GELU; mlx-embeddings builds the tanh one."""
    spec = worker.registry.resolve("tiny-modernbert-cls")

    def activation_of_first_layer(engine) -> tuple[float, float]:
        import mlx.core as mx  # on the worker thread, after its BLAS preload

        act = engine.load(spec).model.model.layers[0].mlp.act
        x = mx.array([1.5])
        return float(act(x)[0]), float((x * (1 + mx.erf(x / 2**0.5)) / 2)[0])

    got, exact_erf = worker.call(activation_of_first_layer).result()
    assert got == pytest.approx(exact_erf, abs=1e-7)
