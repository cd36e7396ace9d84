"""Shared fixtures: tiny on-the-fly models, broken model folders, and one real worker."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from jupyter_mlx_embed import EngineConfig, Worker

TESTS = Path(__file__).parent
DATA = TESTS / "data"

# The persistent vector cache would let one test's vectors (or a previous run's) answer
# another's and hide forward passes that tests count; tests/test_cache.py turns it on.
os.environ["JUPYTER_MLX_EMBED_CACHE"] = "false"


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model root holding the tiny random models and deliberately broken ones."""
    root = tmp_path_factory.mktemp("models")
    # Built in a subprocess: it reads parameter shapes through MLX, which must stay on the
    # worker thread inside this test process.
    subprocess.run([sys.executable, str(TESTS / "tiny_models.py"), str(root)], check=True)

    corrupt = root / "broken-weights"
    shutil.copytree(root / "tiny-bert-cls", corrupt)
    weights = corrupt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])

    chat = root / "chat-llama"
    shutil.copytree(root / "tiny-bert-cls", chat)
    (chat / "modules.json").unlink()
    (chat / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llama",
                "architectures": ["LlamaForCausalLM"],
                "hidden_size": 32,
                "vocab_size": 60,
            }
        )
    )
    odd = root / "odd-type"
    shutil.copytree(root / "tiny-bert-cls", odd)
    config = json.loads((odd / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps({**config, "model_type": "gpt_neox"}))

    no_tok = root / "no-tokenizer"
    shutil.copytree(root / "tiny-bert-cls", no_tok)
    (no_tok / "tokenizer.json").unlink()
    return root


@pytest.fixture(scope="module")
def worker(model_root: Path) -> Iterator[Worker]:
    """A real worker serving the bundled model and the tiny models (one per test module:
    MLX allows one owner thread per process, so modules that need other settings make their
    own with ``make_worker``)."""
    config = EngineConfig(
        model_roots=(model_root,), max_loaded_models=16, cache=False, allow_token_ids=True
    )
    with Worker(config) as w:
        yield w


@pytest.fixture(scope="module")
def default_worker() -> Iterator[Worker]:
    """This process's own worker, the default transport's, closed after the module: a worker
    left behind would own MLX and refuse the next module's (``Worker`` allows one)."""
    import jupyter_mlx_embed as jme

    jme.set_transport("local")
    worker = jme.configure()
    yield worker
    worker.close()


@pytest.fixture
def make_worker(model_root: Path) -> Iterator[Callable[..., Worker]]:
    """Factory for a worker with custom settings, closed after the test."""
    made: list[Worker] = []

    def make(**settings: object) -> Worker:
        settings.setdefault("model_roots", (model_root,))
        settings.setdefault("cache", False)
        w = Worker(EngineConfig(**settings))  # type: ignore[arg-type]
        made.append(w)
        return w

    yield make
    for w in made:
        w.close(cancel_pending=True)


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    """The fidelity corpus (unicode, emoji, whitespace, one-word, >256-token inputs)."""
    return json.loads((DATA / "fidelity_corpus.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def reference() -> dict[str, np.ndarray]:
    """sentence-transformers vectors and token counts for the corpus."""
    with np.load(DATA / "minilm_reference.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="session")
def reranker_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the rerankers at published shapes are built (``JME_REAL_MODELS_DIR`` keeps them
    between sessions, as for the embedding models of ``test_real_shapes.py``)."""
    kept = os.environ.get("JME_REAL_MODELS_DIR")
    return Path(kept) if kept else tmp_path_factory.mktemp("rerankers")


@pytest.fixture(scope="session")
def ms_marco(reranker_root: Path) -> Path:
    """cross-encoder/ms-marco-MiniLM-L6-v2 at its published shape (random weights)."""
    from .reranker_models import build_reranker

    return build_reranker("ms-marco-MiniLM-L6-v2", reranker_root)


@pytest.fixture(scope="session")
def siglip(reranker_root: Path) -> Path:
    """google/siglip-base-patch16-224 at its published shapes and file layout (random
    weights), 2 layers per tower (the layer shape is what is checked, not the depth)."""
    from .siglip_models import build_siglip

    return build_siglip("siglip-base-patch16-224", reranker_root, layers=2)


@pytest.fixture(scope="session")
def siglip_so400m(reranker_root: Path) -> Path:
    """google/siglip-so400m-patch14-384 (1152 wide, 14-pixel patches at 384: 729 a picture),
    1 layer per tower."""
    from .siglip_models import build_siglip

    return build_siglip("siglip-so400m-patch14-384", reranker_root, layers=1)
