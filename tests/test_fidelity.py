"""The bundled model's vectors equal sentence-transformers' (reference fixture)."""

from __future__ import annotations

import numpy as np

from jupyter_mlx_embed import Worker


def test_vectors_match_sentence_transformers(worker: Worker, corpus, reference) -> None:
    result = worker.submit(corpus).result()
    cos = np.sum(result.vectors * reference["embeddings"], axis=1)
    assert result.vectors.shape == reference["embeddings"].shape
    assert cos.min() >= 0.9999, f"worst row {int(cos.argmin())}: cos {cos.min():.6f}"


def test_token_counts_match_sentence_transformers(worker: Worker, corpus, reference) -> None:
    result = worker.submit(corpus).result()
    assert list(result.token_counts) == reference["token_counts"].tolist()
    assert max(result.token_counts) == 256  # the long inputs were truncated to max_seq_length
    assert result.prompt_tokens == int(reference["token_counts"].sum())


def test_vectors_do_not_depend_on_batch_company(worker: Worker, corpus) -> None:
    together = worker.submit(corpus).result().vectors
    alone = np.stack([worker.submit([text]).result().vectors[0] for text in corpus[:8]])
    np.testing.assert_allclose(alone, together[:8], atol=2e-5)


def test_vectors_are_unit_length_float32(worker: Worker, corpus) -> None:
    vectors = worker.submit(corpus[:5]).result().vectors
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_dimensions_keeps_prefix_and_renormalises(worker: Worker, corpus) -> None:
    full = worker.submit(corpus[:4]).result().vectors
    short = worker.submit(corpus[:4], dimensions=64).result().vectors
    assert short.shape == (4, 64)
    expected = full[:, :64] / np.linalg.norm(full[:, :64], axis=1, keepdims=True)
    np.testing.assert_allclose(short, expected, atol=1e-6)


def test_token_id_input_equals_text_input(worker: Worker) -> None:
    from tokenizers import Tokenizer

    text = "Token ids without special tokens give the same vector as the text."
    spec = worker.registry.resolve(None)
    tokenizer = Tokenizer.from_file(str(spec.path / "tokenizer.json"))
    tokenizer.no_padding()  # the file pads to 128; OpenAI-style token inputs are unpadded
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    by_text = worker.submit([text]).result()
    by_ids = worker.submit([ids]).result()
    np.testing.assert_allclose(by_ids.vectors, by_text.vectors, atol=1e-6)
    assert by_ids.token_counts == by_text.token_counts
