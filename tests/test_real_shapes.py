"""Our vectors against sentence-transformers' on random models at the published shapes (#24).

Each model of :mod:`tests.real_models` (published config, tensor names and dtype, a tokenizer
of the published kind) is embedded by our worker and by ``SentenceTransformer`` on the same
folder: short, over-long (truncated), non-English and prompted texts must give vectors with a
cosine of at least 0.9999. sentence-transformers runs in float32 (it would load
Qwen3-Embedding's bfloat16 weights as bfloat16; the engine computes in float32 on the CPU).

The published layer counts, widths and vocabularies are kept. Models whose published
``max_seq_length`` would make one long text cost minutes on a CPU are truncated at a shorter
length (:data:`CASES`), still past ModernBERT's local window (128) and EmbeddingGemma's
sliding window (512).
Set ``JME_REAL_MODELS_DIR`` to keep the built models between sessions (they take a minute),
and ``JME_REAL_LAYERS=N`` for a quick run with at most N layers per model.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jupyter_mlx_embed import EngineConfig, Worker

from .real_models import PUBLISHED, build_model, layer_count

pytest.importorskip("sentence_transformers")
torch = pytest.importorskip("torch")

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Case:
    """How one published model is checked.

    Attributes:
        max_seq_length: Truncation length for the test (``None``: the published one).
        prompts: The published prompt names checked.
    """

    max_seq_length: int | None = None
    prompts: tuple[str, ...] = ()


CASES = {
    "bge-base-en-v1.5": Case(),  # 512, as published
    "gte-modernbert-base": Case(max_seq_length=256),  # published: 8192
    "Qwen3-Embedding-0.6B": Case(max_seq_length=256, prompts=("query",)),  # published: 32768
    "embeddinggemma-300m": Case(max_seq_length=1024, prompts=("query", "document")),  # 2048
    "nomic-embed-text-v1.5": Case(max_seq_length=512, prompts=("query", "document")),  # 8192
    "multilingual-e5-base": Case(),  # 512, as published
}

SHORT = [
    "The cat sat on the mat.",
    "quick brown fox",
    "A",
    "How do I read a file line by line in Python?",
    "Embeddings map texts to vectors, and similar texts get similar vectors.",
]
NON_ENGLISH = [
    "Le café est très chaud, n'est-ce pas ?",
    "Die Straße über den Bächen führt zur Brücke.",
    "東京の天気は晴れです。",
    "我喜欢机器学习。",
    "한국어 문장입니다.",
    "Привет, мир!",
    "Emoji 🎉🚀👍🏽 and a family 👨‍👩‍👧‍👦",
    "naïve façade — coöperate",
]
SPACING = ["  leading and trailing spaces  ", "tab\tand\nnewline", "double  space"]
_PARAGRAPH = (
    "A function definition is an executable statement. Its execution binds the function name "
    "in the current local namespace to a function object, a wrapper around the executable "
    "code for the function. The function definition does not execute the function body; "
    "this gets executed only when the function is called. "
)
LONG = _PARAGRAPH * 40  # well over 1,024 tokens with any of the tokenizers


@dataclass
class Pair:
    """Our worker and the sentence-transformers model on one folder."""

    name: str
    folder: Path
    max_seq_length: int
    worker: Worker
    reference: Any

    def ours(self, texts: list[str], **options: Any) -> tuple[np.ndarray, tuple[int, ...]]:
        result = self.worker.submit(texts, model=self.folder.name, **options).result()
        return result.vectors, result.token_counts

    def theirs(self, texts: list[str], **options: Any) -> np.ndarray:
        return self.reference.encode(
            texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True, **options
        )


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.min(np.sum(a * b, axis=1)))


@pytest.fixture(scope="session")
def real_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    kept = os.environ.get("JME_REAL_MODELS_DIR")
    return Path(kept) if kept else tmp_path_factory.mktemp("real-models")


@pytest.fixture(scope="module", params=list(CASES))
def pair(request: pytest.FixtureRequest, real_root: Path) -> Iterator[Pair]:
    """One model at a time (pytest groups the tests by model): both sides of the largest
    hold ~2.5 GB of float32 weights each."""
    from sentence_transformers import SentenceTransformer

    name = request.param
    case = CASES[name]
    cap = os.environ.get("JME_REAL_LAYERS")
    layers = min(int(cap), layer_count(PUBLISHED[name].config)) if cap else None
    folder = build_model(name, real_root, layers=layers, max_seq_length=case.max_seq_length)
    reference = SentenceTransformer(
        str(folder), device="cpu", model_kwargs={"dtype": torch.float32}
    )
    worker = Worker(EngineConfig(model_roots=(folder.parent,), cache=False, max_loaded_models=1))
    max_len = case.max_seq_length or PUBLISHED[name].max_seq_length
    try:
        yield Pair(name, folder, max_len, worker, reference)
    finally:
        worker.close(cancel_pending=True)
        del reference
        gc.collect()


def test_transformers_loads_every_tensor_and_no_other(pair: Pair) -> None:
    # The published names as transformers reads them (it renames some checkpoints' own
    # names, e.g. NomicBERT's): none missing, none left over, no shape mismatched.
    from transformers import AutoModel

    model, info = AutoModel.from_pretrained(
        str(pair.folder), dtype=torch.bfloat16, output_loading_info=True
    )
    del model
    unexpected = set(info["unexpected_keys"]) - {"embeddings.position_ids"}  # saved by < 4.31
    assert (info["missing_keys"], unexpected, info["mismatched_keys"]) == (set(), set(), set())


def test_token_ids_match_sentence_transformers(pair: Pair) -> None:
    texts = [*SHORT, *NON_ENGLISH, *SPACING, LONG]
    features = pair.reference.tokenize(texts)
    theirs = [
        [int(t) for t, m in zip(ids, mask, strict=True) if m]
        for ids, mask in zip(features["input_ids"], features["attention_mask"], strict=True)
    ]
    spec = pair.worker.registry.resolve(pair.folder.name)
    ours = pair.worker.call(lambda engine: engine.load(spec).tokenizer.encode_texts(texts))
    assert ours.result() == theirs


def test_short_texts_match_sentence_transformers(pair: Pair) -> None:
    ours, _ = pair.ours(SHORT)
    assert _min_cosine(ours, pair.theirs(SHORT)) >= 0.9999


def test_distinct_texts_give_distinct_vectors(pair: Pair) -> None:
    # Random weights must not collapse every text onto one vector, or the cosine checks
    # here would prove nothing.
    ours, _ = pair.ours(SHORT)
    similarity = ours @ ours.T - 2 * np.eye(len(SHORT))
    assert float(similarity.max()) < 0.999


def test_long_text_is_truncated_as_sentence_transformers_does(pair: Pair) -> None:
    # Alone: the other tests' batches already mix lengths, and padding a second row to the
    # long one would double the cost of the slowest test.
    ours, counts = pair.ours([LONG])
    assert counts == (pair.max_seq_length,)
    assert _min_cosine(ours, pair.theirs([LONG])) >= 0.9999


def test_non_english_texts_match_sentence_transformers(pair: Pair) -> None:
    ours, _ = pair.ours(NON_ENGLISH)
    assert _min_cosine(ours, pair.theirs(NON_ENGLISH)) >= 0.9999


def test_named_prompts_match_sentence_transformers(pair: Pair) -> None:
    # One test per model looping over its prompts: an indirect parametrization would load
    # each prompted model a second time.
    prompts = CASES[pair.name].prompts
    if not prompts:
        pytest.skip(f"{pair.name} publishes no prompts")
    texts = [*SHORT[:3], NON_ENGLISH[2]]
    for prompt_name in prompts:
        ours, _ = pair.ours(texts, prompt_name=prompt_name)
        theirs = pair.theirs(texts, prompt_name=prompt_name)
        assert _min_cosine(ours, theirs) >= 0.9999, prompt_name
