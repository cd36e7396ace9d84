"""The worker thread: batching, isolation between requests, overload, errors and shutdown."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from jupyter_mlx_embed import (
    InvalidRequestError,
    ModelLoadError,
    ModelNotFoundError,
    ModelTypeError,
    OverloadedError,
    WorkerClosedError,
)

WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "the",
    "mat",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "river",
    "water",
]


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 20)))) for _ in range(n)]


def _block(worker) -> threading.Event:
    """Occupy the worker thread until the returned event is set."""
    gate = threading.Event()
    blocker = worker.call(lambda engine: gate.wait(30))
    while not blocker.running():  # the worker has taken the blocker off the queue
        threading.Event().wait(0.01)
    return gate


def test_concurrent_requests_each_get_their_own_vectors(make_worker) -> None:
    worker = make_worker(batch_window_ms=20)
    texts = _texts(40)
    expected = {t: v for t, v in zip(texts, worker.submit(texts).result().vectors, strict=True)}
    batches_before = worker.stats.batches
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda t: worker.submit([t]).result(), texts))
    for text, result in zip(texts, results, strict=True):
        np.testing.assert_allclose(result.vectors[0], expected[text], atol=2e-5)
    # Concurrent single-text requests were coalesced into far fewer forward passes.
    assert worker.stats.batches - batches_before < len(texts) // 2


def test_batches_respect_the_token_budget(make_worker) -> None:
    worker = make_worker(token_budget=64, max_batch_size=8)
    texts = _texts(60, seed=1)
    result = worker.submit(texts).result()
    assert result.vectors.shape[0] == 60
    shapes = list(worker.stats.recent_batches)
    assert len(shapes) > 1
    for rows, width in shapes:
        assert rows <= 8
        assert rows * width <= 64 or rows == 1


def test_input_longer_than_budget_runs_alone(make_worker) -> None:
    worker = make_worker(token_budget=16)
    long_text = " ".join(WORDS * 3)
    result = worker.submit([long_text, "cat"], model="tiny-bert-cls").result(timeout=60)
    assert result.vectors.shape == (2, 32)
    assert (1, 24) in worker.stats.recent_batches


def test_order_is_restored_after_length_sorting(make_worker) -> None:
    worker = make_worker()
    texts = ["a much longer sentence about a cat on a mat", "dog", "the river", "fox"]
    together = worker.submit(texts).result().vectors
    for i, text in enumerate(texts):
        np.testing.assert_allclose(
            worker.submit([text]).result().vectors[0], together[i], atol=2e-5
        )


def test_full_queue_fails_fast_with_overload(make_worker) -> None:
    worker = make_worker(queue_size=2, batch_window_ms=0)
    gate = _block(worker)
    queued = [worker.submit(["cat"]), worker.submit(["dog"])]
    with pytest.raises(OverloadedError) as info:
        worker.submit(["fox"])
    assert info.value.status == 429
    gate.set()
    assert all(f.result(timeout=60).vectors.shape == (1, 384) for f in queued)


def test_close_finishes_pending_requests(make_worker) -> None:
    worker = make_worker()
    futures = [worker.submit([t]) for t in _texts(10, seed=2)]
    worker.close()
    assert not worker.alive
    assert all(f.result(timeout=0).vectors.shape == (1, 384) for f in futures)
    with pytest.raises(WorkerClosedError):
        worker.submit(["late"])


def test_close_can_fail_pending_requests(make_worker) -> None:
    worker = make_worker(batch_window_ms=0)
    gate = _block(worker)
    pending = worker.submit(["never served"])
    closer = threading.Thread(target=worker.close, kwargs={"cancel_pending": True})
    closer.start()
    gate.set()
    closer.join(30)
    with pytest.raises(WorkerClosedError):
        pending.result(timeout=5)


def test_close_can_fail_requests_being_prepared_and_served(make_worker) -> None:
    worker = make_worker()
    long = " ".join(["the quick brown fox jumps over the lazy dog"] * 20)
    served = worker.submit([f"{i} {long}" for i in range(1500)])  # many forward passes
    while worker.stats.batches == 0:
        time.sleep(0.005)
    prepared = worker.submit([f"{i} {long} {long}" for i in range(1500)])  # being tokenized
    batches = worker.stats.batches
    worker.close(timeout=30, cancel_pending=True)
    assert not worker.alive
    for future in (served, prepared):
        with pytest.raises(WorkerClosedError):
            future.result(timeout=0)
    assert worker.stats.batches <= batches + 1, "the served request kept running"


def test_cancelled_request_is_skipped(make_worker) -> None:
    worker = make_worker(batch_window_ms=0)
    gate = _block(worker)
    cancelled = worker.submit(["cancelled"])
    kept = worker.submit(["kept"])
    assert cancelled.cancel()
    gate.set()
    assert kept.result(timeout=60).vectors.shape == (1, 384)
    assert worker.stats.inputs == 1


def test_only_one_worker_owns_mlx(make_worker) -> None:
    make_worker()
    with pytest.raises(RuntimeError, match="already owns MLX"):
        make_worker()


def test_engine_refuses_calls_from_other_threads(make_worker) -> None:
    worker = make_worker()
    engine = worker.call(lambda e: e).result()
    spec = worker.registry.resolve(None)
    with pytest.raises(RuntimeError, match="other than its worker thread"):
        engine.load(spec)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([], "must not be empty"),
        ("just a string", "list of strings"),
        ([""], "empty string"),
        (["ok", 3], "must be a string"),
        ([[1, 2], []], "empty token list"),
        ([[1, "x"]], "integer token ids"),
        ([[1, 2], "text"], "list of token ids"),
        ([[True]], "integer token ids"),
        ([1.5, {"a": 1}], r"input\[0\] must be a string or a list of token ids, got float"),
    ],
)
def test_malformed_inputs_are_rejected_at_submit(make_worker, inputs, message) -> None:
    worker = make_worker(allow_token_ids=True)
    with pytest.raises(InvalidRequestError, match=message):
        worker.submit(inputs)


def test_too_many_inputs_rejected(make_worker) -> None:
    worker = make_worker(max_inputs=3)
    with pytest.raises(InvalidRequestError, match="maximum of 3"):
        worker.submit(["a", "b", "c", "d"])


def test_token_ids_are_refused_unless_allowed(make_worker) -> None:
    with pytest.raises(InvalidRequestError, match="check_embedding_ctx_length=False") as info:
        make_worker().submit([[7592, 2088]])
    assert info.value.code == "token_ids_not_accepted"


def test_token_ids_outside_vocabulary_rejected(make_worker) -> None:
    worker = make_worker(allow_token_ids=True)
    with pytest.raises(InvalidRequestError, match=r"\[0, 30522\)"):
        worker.submit([[101, 30522]]).result()
    with pytest.raises(InvalidRequestError):
        worker.submit([[-1]]).result()


@pytest.mark.parametrize("dimensions", [0, -3, 385, 1.5, True])
def test_bad_dimensions_rejected(make_worker, dimensions) -> None:
    worker = make_worker()
    with pytest.raises(InvalidRequestError) as info:
        worker.submit(["cat"], dimensions=dimensions).result()
    assert info.value.param == "dimensions"


def test_over_long_input_rejected_when_truncation_disabled(make_worker) -> None:
    worker = make_worker(truncate=False)
    with pytest.raises(InvalidRequestError, match="maximum context length of 24") as info:
        worker.submit([" ".join(WORDS * 2)], model="tiny-bert-cls").result()
    assert info.value.code == "context_length_exceeded"


def test_request_token_limit(make_worker) -> None:
    worker = make_worker(max_request_tokens=10)
    with pytest.raises(InvalidRequestError, match="maximum of 10 tokens"):
        worker.submit(["the cat sat on the mat", "the dog sat on the rug"]).result()


@pytest.mark.parametrize(
    "name", ["../etc", "/etc/passwd", "a/../../b", "tiny-bert-cls/..", "~root", "x/y/z", ""]
)
def test_paths_are_just_unknown_model_names(make_worker, name) -> None:
    worker = make_worker()
    with pytest.raises(ModelNotFoundError):
        worker.submit(["cat"], model=name).result()


def test_unknown_model_is_404(make_worker) -> None:
    worker = make_worker()
    with pytest.raises(ModelNotFoundError) as info:
        worker.submit(["cat"], model="no-such-model").result()
    assert info.value.status == 404
    assert info.value.code == "model_not_found"


def test_chat_model_is_rejected_naming_its_type(make_worker) -> None:
    worker = make_worker()
    with pytest.raises(ModelTypeError, match=r"LlamaForCausalLM.*llama") as info:
        worker.submit(["cat"], model="chat-llama").result()
    assert info.value.status == 400
    assert info.value.model_type == "llama"


def test_unsupported_architecture_is_rejected(make_worker) -> None:
    worker = make_worker()
    with pytest.raises(ModelTypeError, match="gpt_neox"):
        worker.submit(["cat"], model="odd-type").result()


@pytest.mark.parametrize("name", ["broken-weights", "no-tokenizer"])
def test_broken_model_fails_alone_and_worker_keeps_serving(make_worker, name) -> None:
    worker = make_worker()
    good = worker.submit(["before"])
    bad = worker.submit(["cat"], model=name)
    also_good = worker.submit(["after"], model="tiny-bert-cls")
    with pytest.raises(ModelLoadError):
        bad.result()
    assert good.result().vectors.shape == (1, 384)
    assert also_good.result().vectors.shape == (1, 32)
    assert worker.submit(["still fine"]).result().vectors.shape == (1, 384)


def test_least_recently_used_model_is_evicted(make_worker) -> None:
    worker = make_worker(max_loaded_models=2)
    for name in ["tiny-bert-cls", "tiny-xlmr-mean", "tiny-qwen3-last"]:
        worker.submit(["cat"], model=name).result()
    assert worker.info()["loaded_models"] == ["tiny-xlmr-mean", "tiny-qwen3-last"]


def test_a_new_workers_info_reports_its_cache(make_worker, tmp_path) -> None:
    # Asked before any request: info() waits for the engine, and the cache is open by then.
    info = make_worker(cache=True, cache_dir=tmp_path).info()
    assert info["state"] == "ready" and info["cache"]["enabled"] is True


def test_info_reports_engine_state(make_worker) -> None:
    worker = make_worker()
    worker.submit(["cat", "dog"]).result()
    info = worker.info()
    assert info["state"] == "ready"
    assert info["loaded_models"] == ["all-MiniLM-L6-v2"]
    assert info["inputs"] == 2 and info["tokens"] == 6 and info["batches"] == 1
    assert info["device"].startswith("Device(")
    assert {"name", "path", "fast"} <= set(info["blas"])
    on_cpu_linux = sys.platform == "linux" and "cpu" in info["device"]
    assert info["malloc_tuned"] is on_cpu_linux


@pytest.mark.parametrize(("fast", "streams"), [(True, 1), (True, 3), (False, 1)])
def test_cpu_paths_match_sentence_transformers(make_worker, corpus, reference, fast, streams):
    worker = make_worker(cpu_fast_path=fast, cpu_streams=streams)
    result = worker.submit(corpus).result()
    cos = np.sum(result.vectors * reference["embeddings"], axis=1)
    assert cos.min() >= 0.9999
    uses_fast = worker.call(lambda e: e.load(worker.registry.resolve(None)).fast).result()
    assert (uses_fast is not None) == fast


def test_fast_path_keeps_row_order_for_unsorted_rows(make_worker) -> None:
    worker = make_worker(cpu_streams=3)
    texts = _texts(23, seed=4)

    def embed_both(engine):
        loaded = engine.load(worker.registry.resolve(None))
        rows = loaded.tokenizer.encode_texts(texts, truncate=True)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        assert order != list(range(len(rows)))  # the rows really are unsorted
        unsorted = engine.embed(loaded, rows)
        by_length = engine.embed(loaded, [rows[i] for i in order])
        return unsorted, by_length, order

    unsorted, by_length, order = worker.call(embed_both).result()
    np.testing.assert_allclose(unsorted[order], by_length, atol=1e-5)


def test_messages_count_from_the_callers_first_index(make_worker) -> None:
    worker = make_worker(truncate=False)
    with pytest.raises(InvalidRequestError, match=r"^input\[301\] is an empty string"):
        worker.submit(["ok", ""], first_index=300)
    long_text = " ".join(WORDS * 2)
    future = worker.submit(["ok", long_text], model="tiny-bert-cls", first_index=300)
    with pytest.raises(InvalidRequestError, match=r"^input\[301\] has \d+ tokens"):
        future.result()


def test_text_that_is_not_valid_unicode_is_rejected(make_worker) -> None:
    with pytest.raises(InvalidRequestError, match=r"input\[1\] is not valid Unicode"):
        make_worker().submit(["fine", "bad \ud800 surrogate"])


def test_cpu_kernels_match_exact_functions(worker) -> None:
    """The fast path's GELU and exponential against MLX's exact ones, on the worker thread."""

    def errors(engine) -> dict[str, float]:
        import mlx.core as mx

        from jupyter_mlx_embed.engine import cpu_kernels as kernels

        x = mx.linspace(-12.0, 12.0, 3 * 16_001).reshape(1, 3, -1)  # odd width, 3-d
        exact_gelu = 0.5 * x * (1.0 + mx.erf(x / 2**0.5))
        coefficients = (0.5, -1.25, 2.0, 0.75, -3.0, 1.5, 0.25)
        shift = mx.max(x, axis=-1, keepdims=True)
        gelu = mx.compile(kernels.gelu)(x)
        exp = mx.compile(kernels.exp_shifted)(x, shift)
        return {
            "gelu": mx.max(mx.abs(gelu - exact_gelu)).item(),
            "exp": mx.max(mx.abs(exp - mx.exp(x - shift)) / mx.exp(x - shift)).item(),
            "estrin": mx.max(
                mx.abs(
                    kernels._estrin(coefficients, x * 0.1)
                    - kernels._polynomial(coefficients, x * 0.1)
                )
            ).item(),
        }

    found = worker.call(errors).result()
    assert found["gelu"] < 2e-6
    assert found["exp"] < 3e-5
    assert found["estrin"] < 1e-5


def test_mlx_without_a_backend_names_the_extras(tmp_path: Path) -> None:
    # On Linux the mlx package is only the bindings; without mlx-cpu or mlx-cuda-12 its
    # import fails for want of libmlx.so. A stand-in package fails the same way.
    fake = tmp_path / "mlx"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "core.py").write_text(
        'raise ImportError("libmlx.so: cannot open shared object file: No such file")\n'
    )
    code = (
        "import jupyter_mlx_embed as jme\n"
        "try:\n"
        "    jme.embed(['hello'])\n"
        "except jme.EmbedError as exc:\n"
        "    print(exc)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "JUPYTER_MLX_EMBED_CACHE": "false"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert "install jupyter-mlx-embed[cpu] (CPU) or jupyter-mlx-embed[cuda]" in done.stdout
    assert "libmlx.so" in done.stdout
