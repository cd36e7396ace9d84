"""sentence-transformers Dense modules, EmbeddingGemma (gemma3_text) and NomicBERT: our vectors
equal sentence-transformers' own on the same tiny folders (with prompts, and with ``dimensions``
against ``truncate_dim``), Dense files count in a model's identity, and broken Dense modules are
refused when the model is resolved or loaded.

sentence-transformers (and torch) run in a subprocess, as the tiny models are built: this
process keeps MLX alone, on its worker thread.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from jupyter_mlx_embed import EngineConfig, ModelLoadError, ModelTypeError, Worker
from jupyter_mlx_embed.identity import model_identity
from jupyter_mlx_embed.modelspec import DenseModule, read_model_spec

from .tiny_models import GEMMA_PROMPTS, write_dense

# The long text is wider than the tiny EmbeddingGemma's sliding window (|q - k| < 4), and the
# batch pads the short ones.
TEXTS = [
    "the cat sat on the mat",
    "quick brown fox",
    "music",
    "the sun and the moon over the river water at night rain snow cold warm tree leaf",
    "python code data table",
]
COMPARED = ("tiny-gemma3-mean", "tiny-nomic-mean", "tiny-bert-dense")
PROMPTS = ("query", "document", "STS", "Retrieval-document")
SIZES = (128, 256)

_REFERENCE = """
import sys, json
import numpy as np
from sentence_transformers import SentenceTransformer

root, out, texts, prompts, sizes = sys.argv[1], sys.argv[2], *map(json.loads, sys.argv[3:])
found = {}
for name in ("tiny-gemma3-mean", "tiny-nomic-mean", "tiny-bert-dense"):
    model = SentenceTransformer(f"{root}/{name}", device="cpu")
    found[name] = model.encode(texts)
    if name == "tiny-gemma3-mean":
        for prompt in prompts:
            found[f"{name}/{prompt}"] = model.encode(texts, prompt_name=prompt)
        for size in sizes:
            cut = SentenceTransformer(f"{root}/{name}", device="cpu", truncate_dim=size)
            found[f"{name}/{size}"] = cut.encode(texts)
np.savez(out, **found)
"""


@pytest.fixture(scope="module")
def reference(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """sentence-transformers' vectors of the tiny models (plain, prompted, truncated)."""
    if importlib.util.find_spec("sentence_transformers") is None:
        pytest.skip("sentence-transformers is not installed")
    out = tmp_path_factory.mktemp("st") / "reference.npz"
    args = [json.dumps(TEXTS), json.dumps(PROMPTS), json.dumps(SIZES)]
    done = subprocess.run(
        [sys.executable, "-c", _REFERENCE, str(model_root), str(out), *args],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.fail(f"sentence-transformers failed:\n{done.stderr[-3000:]}")
    with np.load(out) as data:
        return {key: data[key] for key in data.files}


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.parametrize("name", COMPARED)
def test_vectors_match_sentence_transformers(worker: Worker, reference, name: str) -> None:
    got = worker.submit(TEXTS, model=name).result().vectors
    np.testing.assert_allclose(got, reference[name], atol=2e-6)


@pytest.mark.parametrize("prompt_name", PROMPTS)
def test_embeddinggemma_prompts_match_sentence_transformers(
    worker: Worker, reference, prompt_name: str
) -> None:
    got = worker.submit(TEXTS, model="tiny-gemma3-mean", prompt_name=prompt_name).result()
    np.testing.assert_allclose(got.vectors, reference[f"tiny-gemma3-mean/{prompt_name}"], atol=2e-6)


@pytest.mark.parametrize("size", SIZES)
def test_dimensions_match_truncate_dim_renormalised(worker: Worker, reference, size: int) -> None:
    # sentence-transformers truncates after its Normalize module, leaving shorter vectors;
    # `dimensions` renormalises them (as OpenAI does), so the directions must agree.
    got = worker.submit(TEXTS, model="tiny-gemma3-mean", dimensions=size).result().vectors
    assert got.shape == (len(TEXTS), size)
    np.testing.assert_allclose(got, _unit(reference[f"tiny-gemma3-mean/{size}"]), atol=2e-6)


def test_spec_reads_the_dense_modules(model_root: Path) -> None:
    spec = read_model_spec(model_root / "tiny-gemma3-mean", name="g", source="root")
    assert (spec.model_type, spec.pooling, spec.dimension) == ("gemma3_text", "mean", 768)
    assert spec.dense == (
        DenseModule(model_root / "tiny-gemma3-mean" / "2_Dense", 32, 128, False, "identity"),
        DenseModule(model_root / "tiny-gemma3-mean" / "3_Dense", 128, 768, False, "identity"),
    )
    assert spec.prompts == GEMMA_PROMPTS and spec.default_prompt_name is None
    labse_like = read_model_spec(model_root / "tiny-bert-dense", name="b", source="root")
    assert labse_like.dense[0].activation == "tanh" and labse_like.dense[0].bias  # defaults


def test_sliding_window_layers_see_only_nearby_tokens(worker: Worker) -> None:
    # mlx-embeddings' gemma3_text lets every layer see the whole text; a window as wide as the
    # text ("gemma3-wide") must change the long text's vector and leave a one-word text alone.
    narrow = worker.submit(TEXTS, model="tiny-gemma3-mean").result().vectors
    widened = worker.submit(TEXTS, model="gemma3-wide").result().vectors
    np.testing.assert_allclose(narrow[2], widened[2], atol=1e-6)
    assert float(narrow[3] @ widened[3]) < 0.9999


def test_dense_runs_on_the_cpu_fast_path(worker: Worker) -> None:
    # The fast path's pooling callback applies the Dense modules too (bert is one of its
    # architectures), and the vectors match sentence-transformers above.
    if "cpu" not in worker.call(lambda engine: engine.device).result():
        pytest.skip("the fast path runs on the CPU device only")
    spec = worker.registry.resolve("tiny-bert-dense")
    assert worker.call(lambda engine: engine.load(spec).fast is not None).result()


@pytest.mark.parametrize(
    "edit",
    [
        lambda f: write_dense(
            f / "2_Dense", json.loads((f / "2_Dense" / "config.json").read_text()), seed=7
        ),
        lambda f: (f / "2_Dense" / "config.json").write_text(
            json.dumps({**json.loads((f / "2_Dense" / "config.json").read_text()), "bias": True})
        ),
    ],
    ids=["weights", "config"],
)
def test_dense_module_files_change_the_identity(model_root: Path, tmp_path: Path, edit) -> None:
    a = shutil.copytree(model_root / "tiny-gemma3-mean", tmp_path / "a")
    b = shutil.copytree(model_root / "tiny-gemma3-mean", tmp_path / "b")
    edit(b)
    same = read_model_spec(tmp_path / "b", name="b", source="root")
    assert model_identity(read_model_spec(a, name="a", source="root")) != model_identity(same)


def _edit_dense_config(folder: Path, **changes: object) -> None:
    path = folder / "2_Dense" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _reorder_modules(folder: Path, order: tuple[int, ...]) -> None:
    modules = json.loads((folder / "modules.json").read_text())
    (folder / "modules.json").write_text(json.dumps([modules[i] for i in order]))


def _wrong_shape(folder: Path) -> None:
    # The config says 32 -> 128, the weights are 32 -> 64: found only when the model loads.
    config = json.loads((folder / "2_Dense" / "config.json").read_text())
    write_dense(folder / "2_Dense", {**config, "out_features": 64}, seed=3)
    (folder / "2_Dense" / "config.json").write_text(json.dumps(config))


# Broken copies of tiny-gemma3-mean: (edit, error, message), refused when resolved.
BROKEN = {
    "no-weights": (
        lambda f: (f / "2_Dense" / "model.safetensors").unlink(),
        ModelLoadError,
        "Dense module '2_Dense' has no model.safetensors",
    ),
    "bin-only": (
        lambda f: (f / "2_Dense" / "model.safetensors").rename(f / "2_Dense" / "pytorch_model.bin"),
        ModelLoadError,
        "only pytorch_model.bin",
    ),
    "no-config": (
        lambda f: (f / "3_Dense" / "config.json").unlink(),
        ModelLoadError,
        "'3_Dense' has no valid config.json",
    ),
    "sizes": (
        lambda f: _edit_dense_config(f, in_features=16),
        ModelLoadError,
        "takes vectors of 16 values but gets 32",
    ),
    "activation": (
        lambda f: _edit_dense_config(f, activation_function="my_package.Swish"),
        ModelTypeError,
        "activation 'my_package.Swish'.*supported: Identity, Tanh",
    ),
    "token-level": (
        lambda f: _edit_dense_config(f, module_input_name="token_embeddings"),
        ModelTypeError,
        "Dense layers on the pooled sentence_embedding",
    ),
    "order": (
        lambda f: _reorder_modules(f, (0, 2, 1, 3, 4)),
        ModelTypeError,
        "Transformer -> Dense -> Pooling",
    ),
}


@pytest.fixture(scope="module")
def extra_root(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Variants of the tiny models: a wider sliding window, broken Dense modules, a NomicBERT
    variant we do not implement."""
    root = tmp_path_factory.mktemp("dense-models")
    wide = shutil.copytree(model_root / "tiny-gemma3-mean", root / "gemma3-wide")
    config = json.loads((wide / "config.json").read_text())
    (wide / "config.json").write_text(json.dumps({**config, "sliding_window": 128}))
    for key, (edit, _, _) in BROKEN.items():
        edit(shutil.copytree(model_root / "tiny-gemma3-mean", root / f"broken-{key}"))
    _wrong_shape(shutil.copytree(model_root / "tiny-gemma3-mean", root / "broken-shape"))
    partial = shutil.copytree(model_root / "tiny-nomic-mean", root / "nomic-partial-rotary")
    config = json.loads((partial / "config.json").read_text())
    (partial / "config.json").write_text(json.dumps({**config, "rotary_emb_fraction": 0.5}))
    return root


@pytest.fixture(scope="module")
def worker(model_root: Path, extra_root: Path) -> Iterator[Worker]:
    """The tiny models and their variants (one worker: MLX has one owner per process)."""
    config = EngineConfig(model_roots=(model_root, extra_root), max_loaded_models=16, cache=False)
    with Worker(config) as w:
        yield w


@pytest.mark.parametrize("key", BROKEN)
def test_broken_dense_module_is_refused_when_resolved(
    worker: Worker, extra_root: Path, key: str
) -> None:
    _, error, message = BROKEN[key]
    with pytest.raises(error, match=message):
        read_model_spec(extra_root / f"broken-{key}", name="broken", source="root")
    with pytest.raises(error, match=message):
        worker.submit(["the cat"], model=f"broken-{key}").result()


def test_dense_weights_of_the_wrong_shape_fail_the_load(worker: Worker) -> None:
    with pytest.raises(ModelLoadError, match="Dense module '2_Dense' cannot be loaded"):
        worker.submit(["the cat"], model="broken-shape").result()
    assert worker.submit(["the cat"], model="tiny-gemma3-mean").result().vectors.shape == (1, 768)


def test_nomic_variant_we_do_not_implement_is_refused_at_load(worker: Worker) -> None:
    with pytest.raises(ModelTypeError, match=r"rotary_emb_fraction=0\.5 is not supported"):
        worker.submit(["the cat"], model="nomic-partial-rotary").result()
