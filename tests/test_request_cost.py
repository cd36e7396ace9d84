"""A request's cost is bounded before the worker pays it, and no request waits for another's
tokenizing or for more than the next forward pass: prompts, over-limit requests, huge texts,
fairness per pass, and the length rule before the cache."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from jupyter_mlx_embed import EngineConfig, InvalidRequestError, Worker
from jupyter_mlx_embed.validation import MAX_PROMPT_CHARS

#: About 1,400 words (7 KB): far past the bundled model's 256-token context.
LONG = " ".join(["statistics notebook embedding river"] * 350)
#: About 120 tokens.
MEDIUM = " ".join(["the quick brown fox jumps over the lazy dog near the river bank"] * 9)


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """A worker with its vector cache on (every text in this module is new to it)."""
    folder = tmp_path_factory.mktemp("cache")
    with Worker(EngineConfig(cache=True, cache_dir=str(folder))) as w:
        yield w


def _wait_until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def test_prompt_over_the_character_limit_is_refused_at_submit(worker) -> None:
    prompt = "instruction " * (MAX_PROMPT_CHARS // 10)
    started = time.monotonic()
    with pytest.raises(InvalidRequestError, match=r"prompt has .* characters") as info:
        worker.submit(["a question"] * 2048, prompt=prompt)
    assert info.value.param == "prompt" and info.value.code == "prompt_too_long"
    assert time.monotonic() - started < 0.5
    assert worker.queue_depth == 0


def test_prompt_that_fills_the_models_context_is_refused_once(worker) -> None:
    prompt = "word " * (MAX_PROMPT_CHARS // 5 - 1)  # within the characters, 400+ tokens
    tokens = worker.stats.tokens
    with pytest.raises(InvalidRequestError, match="leaves no room for the input") as info:
        worker.submit(["a question"] * 2048, prompt=prompt).result(timeout=30)
    assert info.value.param == "prompt" and info.value.code == "prompt_too_long"
    assert worker.stats.tokens == tokens, "the inputs were tokenized after all"


@pytest.mark.parametrize("field", ["prompt", "prompt_name"])
def test_lone_surrogate_in_a_prompt_is_an_invalid_request(worker, field) -> None:
    with pytest.raises(InvalidRequestError, match="not valid Unicode") as info:
        worker.submit(["a question"], **{field: "query\ud800: "})
    assert info.value.param == field


def test_over_limit_request_is_refused_without_tokenizing_all_of_it(worker) -> None:
    with pytest.raises(InvalidRequestError, match=r"has at least .* more than the maximum"):
        worker.submit([f"{i} {LONG}" for i in range(2048)]).result(timeout=30)


def test_small_request_is_not_held_up_by_a_large_ones_tokenizing(worker) -> None:
    inputs = worker.stats.inputs
    large = worker.submit([f"{i} {LONG}" for i in range(1100)])  # 281k tokens: under the limit
    small = worker.submit(["a short question"])
    assert small.result(timeout=30).vectors.shape == (1, 384)
    # The worker counts a request's inputs once it is tokenized.
    assert worker.stats.inputs == inputs + 1, (
        "the small request waited for the large one's tokenizing"
    )
    assert large.result(timeout=300).vectors.shape == (1100, 384)


def test_new_requests_join_the_next_forward_pass_behind_large_ones(worker) -> None:
    large = [worker.submit([f"{k} {i} {MEDIUM}" for i in range(600)]) for k in range(3)]
    _wait_until(lambda: worker.stats.batches > 0 and worker._active)
    waited = []
    for i in range(8):
        before = worker.stats.batches
        worker.submit([f"question {i}"]).result(timeout=60)
        waited.append(worker.stats.batches - before)
        if all(f.done() for f in large):
            break
    assert not all(f.done() for f in large), "the large requests ended too soon to tell"
    # The pass running when it arrived, then its own: never a round of all three.
    assert max(waited) <= 2, waited
    for future in large:
        assert future.result(timeout=300).vectors.shape == (600, 384)


def test_length_rule_applies_before_the_cache(worker) -> None:
    worker.submit([LONG]).result(timeout=30)  # cached, truncated to the context
    worker._cache.flush()
    with pytest.raises(InvalidRequestError, match="maximum context length") as info:
        worker.submit([LONG], truncate=False).result(timeout=30)
    assert info.value.code == "context_length_exceeded"
    short = worker.submit(["short and cached"]).result(timeout=30)
    worker._cache.flush()
    again = worker.submit(["short and cached"], truncate=False).result(timeout=30)
    assert worker.stats.cache_hits >= 1
    assert (again.vectors == short.vectors).all()
