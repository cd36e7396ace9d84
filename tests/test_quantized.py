"""MLX-quantized checkpoints (mlx-community 4-bit and 8-bit conversions) load and embed.

The checkpoints are built on the fly (``quantized_models.py``, in a subprocess: MLX must stay
on the worker thread in this process) from the bundled all-MiniLM-L6-v2 and from two tiny
models. On the CPU the engine dequantizes them at load and runs the CPU fast path; with
``cpu_fast_path=False`` it keeps MLX's quantized kernels, the reference for "the checkpoint's
own output". Each worker runs inside one fixture and is closed before the next starts.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jupyter_mlx_embed import EngineConfig, Worker
from jupyter_mlx_embed.errors import ModelLoadError
from jupyter_mlx_embed.modelspec import Quantization, read_model_spec
from jupyter_mlx_embed.registry import bundled_model_path

TESTS = Path(__file__).parent

# (folder, source, bits, group size); the tiny models are 32 wide, so groups of 32.
CHECKPOINTS = [
    ("minilm-8bit", "bundled", 8, 64),
    ("minilm-4bit", "bundled", 4, 64),
    ("tiny-xlmr-4bit", "tiny-xlmr-mean", 4, 32),  # the fast path's other architecture
    ("tiny-qwen3-4bit", "tiny-qwen3-last", 4, 32),  # no fast path: dequantized stock forward
]
MINILM = ("minilm-8bit", "minilm-4bit")
TINY_TEXTS = ["the cat sat on the mat", "quick brown fox", "music", "the sun over the river"]
# Corpus rows for the slow stock quantized forward: plain, one word, CJK, Arabic, emoji, ZWJ
# emoji, numbers, code and a 128-token passage.
STOCK_ROWS = [0, 13, 16, 18, 20, 21, 30, 31, 33]

pytestmark = pytest.mark.skipif(bundled_model_path() is None, reason="bundled model missing")


@pytest.fixture(scope="module")
def quantized_root(tmp_path_factory: pytest.TempPathFactory, model_root: Path) -> Path:
    root = tmp_path_factory.mktemp("quantized")
    args = []
    for name, source, bits, group_size in CHECKPOINTS:
        folder = bundled_model_path() if source == "bundled" else model_root / source
        args += [str(folder), str(root / name), str(bits), str(group_size)]
    subprocess.run([sys.executable, str(TESTS / "quantized_models.py"), *args], check=True)
    return root


def _facts(engine: Any, spec: Any) -> dict[str, Any]:
    """On the worker thread: how the engine holds the loaded model."""
    from mlx.utils import tree_flatten

    loaded = engine.load(spec)
    return {
        "device_cpu": "cpu" in engine.device,
        "fast": loaded.fast is not None,
        "quantized_layers": [p for p, m in loaded.model.named_modules() if "scales" in m],
        "dtypes": {str(v.dtype) for _, v in tree_flatten(loaded.model.parameters())},
    }


def _run(root: Path, fast_path: bool, corpus: list[str], rows: list[int]) -> dict[str, Any]:
    """Vectors and load facts of every checkpoint from one worker, closed on return."""
    texts = [corpus[i] for i in rows]
    out: dict[str, Any] = {}
    # The slow stock run gets a small token budget, so the short rows are not padded to the
    # passage's length (the default budget puts them all in one batch). No vector cache: the
    # stock run must compute what the fast run already computed.
    budget = {} if fast_path else {"token_budget": 256}
    config = EngineConfig(
        model_roots=(root,), max_loaded_models=8, cpu_fast_path=fast_path, cache=False, **budget
    )
    with Worker(config) as worker:
        if fast_path:
            out["fp32"] = worker.submit(texts).result().vectors
        for name, *_ in CHECKPOINTS:
            spec = worker.registry.resolve(name)
            facts = worker.call(lambda engine, s=spec: _facts(engine, s)).result()
            inputs = texts if name in MINILM else TINY_TEXTS
            out[name] = {"vectors": worker.submit(inputs, model=name).result().vectors, **facts}
    return out


@pytest.fixture(scope="module")
def fast(quantized_root: Path, corpus: list[str]) -> dict[str, Any]:
    """The default worker (CPU fast path on) over the whole corpus."""
    return _run(quantized_root, True, corpus, list(range(len(corpus))))


@pytest.fixture(scope="module")
def stock(quantized_root: Path, corpus: list[str]) -> dict[str, Any]:
    """A ``cpu_fast_path=False`` worker: MLX's quantized kernels (slow on the CPU)."""
    return _run(quantized_root, False, corpus, STOCK_ROWS)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_spec_reads_the_quantization_block(quantized_root: Path) -> None:
    spec = read_model_spec(quantized_root / "minilm-4bit", name="q", source="root")
    assert spec.quantization == Quantization(group_size=64, bits=4, mode="affine")
    fp32 = read_model_spec(bundled_model_path(), name="fp32", source="bundled")  # type: ignore[arg-type]
    assert fp32.quantization is None


def test_malformed_quantization_block_names_the_field(quantized_root: Path, tmp_path) -> None:
    folder = tmp_path / "bad"
    shutil.copytree(quantized_root / "tiny-xlmr-4bit", folder)
    config = json.loads((folder / "config.json").read_text())
    config["quantization"]["bits"] = "four"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"quantization\.bits"):
        read_model_spec(folder, name="bad", source="root")


def test_8bit_vectors_match_fp32(fast: dict[str, Any]) -> None:
    cos = _cosines(fast["minilm-8bit"]["vectors"], fast["fp32"])
    assert cos.min() >= 0.999, f"worst row {int(cos.argmin())}: cos {cos.min():.5f}"


def test_4bit_vectors_are_unit_length_and_near_fp32(fast: dict[str, Any]) -> None:
    # Measured on this corpus: min 0.896 (an emoji line), mean 0.954; unrelated corpus texts
    # sit near 0.05 and near-paraphrases near 0.9, so the bounds leave room for MLX and BLAS
    # rounding while failing any wrong unpacking (which lands near 0).
    vectors = fast["minilm-4bit"]["vectors"]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cos = _cosines(vectors, fast["fp32"])
    assert cos.min() >= 0.85, f"worst row {int(cos.argmin())}: cos {cos.min():.5f}"
    assert cos.mean() >= 0.93


@pytest.mark.parametrize("name", ["minilm-8bit", "minilm-4bit", "tiny-xlmr-4bit"])
def test_cpu_runs_the_fast_path_on_dequantized_weights(fast: dict[str, Any], name: str) -> None:
    facts = fast[name]
    if not facts["device_cpu"]:
        pytest.skip("the fast path and dequantization are for MLX's CPU device")
    assert facts["fast"]
    assert facts["quantized_layers"] == []
    assert facts["dtypes"] == {"mlx.core.float32"}


def test_cpu_dequantizes_qwen3_for_its_native_path(fast: dict[str, Any]) -> None:
    facts = fast["tiny-qwen3-4bit"]
    if not facts["device_cpu"]:
        pytest.skip("dequantization is for MLX's CPU device")
    assert facts["fast"]  # the pre-norm models run on the native kernels too (#24)
    assert facts["quantized_layers"] == []


def test_fast_path_off_keeps_the_quantized_kernels(stock: dict[str, Any]) -> None:
    facts = stock["minilm-4bit"]
    assert not facts["fast"]
    assert "encoder.layer.0.attention.self.query" in facts["quantized_layers"]
    assert "embeddings.word_embeddings" in facts["quantized_layers"]


@pytest.mark.parametrize("name", [name for name, *_ in CHECKPOINTS])
def test_dequantized_vectors_equal_the_quantized_forward(
    fast: dict[str, Any], stock: dict[str, Any], name: str
) -> None:
    mine = fast[name]["vectors"]
    if name in MINILM:
        mine = mine[STOCK_ROWS]
    cos = _cosines(mine, stock[name]["vectors"])
    assert cos.min() >= 0.9999, f"worst row {int(cos.argmin())}: cos {cos.min():.7f}"
