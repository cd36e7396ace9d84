"""No request can starve, slow or break another: rounds, early answers, abandoned work,
queue slots, and model lookups that hang."""

from __future__ import annotations

import os
import shutil
import threading
import time
from concurrent.futures import CancelledError, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from jupyter_mlx_embed import InvalidRequestError, ModelLoadError, OverloadedError
from jupyter_mlx_embed import worker as worker_module

LONG = " ".join(["the quick brown fox jumps over the lazy dog near the river bank"] * 12)


def _wait_until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _block(worker) -> threading.Event:
    gate = threading.Event()
    blocker = worker.call(lambda engine: gate.wait(30))
    _wait_until(blocker.running)
    return gate


def test_small_request_is_answered_while_a_large_one_runs(make_worker) -> None:
    worker = make_worker()
    large = worker.submit([f"{i} {LONG}" for i in range(400)])  # ~60k tokens, many rounds
    _wait_until(lambda: worker.stats.batches > 0)
    started = time.monotonic()
    small = worker.submit(["a short question"]).result(timeout=60)
    waited = time.monotonic() - started
    assert small.vectors.shape == (1, 384)
    assert not large.done(), f"the small request waited for all of the large one ({waited:.1f}s)"
    assert large.result(timeout=300).vectors.shape == (400, 384)


def test_requests_are_answered_as_soon_as_their_rows_are_done(make_worker) -> None:
    worker = make_worker(batch_window_ms=50)
    gate = _block(worker)
    long_request = worker.submit([f"{i} {LONG}" for i in range(64)])
    short_request = worker.submit(["cat", "dog"])
    done_order: list[str] = []
    long_request.add_done_callback(lambda _: done_order.append("long"))
    short_request.add_done_callback(lambda _: done_order.append("short"))
    gate.set()  # both are served in the same round; the short rows come first
    long_request.result(timeout=120)
    assert done_order == ["short", "long"]


def test_abandoned_running_request_is_dropped_at_the_next_batch(make_worker) -> None:
    worker = make_worker()
    large = worker.submit([f"{i} {LONG}" for i in range(600)])
    _wait_until(lambda: worker.stats.batches > 0)
    assert large.cancel() is False  # already running: dropped, not cancelled in place
    with pytest.raises(CancelledError):
        large.result(timeout=30)
    batches = worker.stats.batches
    assert worker.submit(["still serving"]).result(timeout=60).vectors.shape == (1, 384)
    assert worker.stats.batches <= batches + 2, "the abandoned request kept running"
    assert worker.queue_depth == 0 and worker.stats.requests_failed == 0


def test_cancelled_queued_requests_free_their_slots_at_once(make_worker) -> None:
    worker = make_worker(queue_size=4, batch_window_ms=0)
    gate = _block(worker)
    ghosts = [worker.submit([f"ghost {i}"]) for i in range(4)]
    with pytest.raises(OverloadedError):
        worker.submit(["one too many"])
    assert all(ghost.cancel() for ghost in ghosts)
    fresh = [worker.submit([f"fresh {i}"]) for i in range(4)]  # no 429: the slots are free
    gate.set()
    assert all(f.result(timeout=60).vectors.shape == (1, 384) for f in fresh)


def test_one_bad_request_among_many_fails_alone(make_worker) -> None:
    worker = make_worker(batch_window_ms=10)
    texts = [f"text number {i} about rivers" for i in range(150)]
    expected = worker.submit(texts).result().vectors

    def send(i: int):
        if i == 75:
            return worker.submit(["fine", "broken \ud800 surrogate"])
        return worker.submit([texts[i]])

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(lambda i: _outcome(send, i), range(150)))
    assert isinstance(outcomes[75], InvalidRequestError)
    for i, outcome in enumerate(outcomes):
        if i != 75:
            np.testing.assert_allclose(outcome.vectors[0], expected[i], atol=2e-5)


def _outcome(send, i):
    try:
        return send(i).result(timeout=60)
    except InvalidRequestError as exc:
        return exc


def test_a_model_folder_that_hangs_does_not_stall_other_requests(
    make_worker, model_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_module, "RESOLVE_TIMEOUT", 1.5)
    hung = shutil.copytree(model_root / "tiny-bert-cls", tmp_path / "hung")
    (hung / "modules.json").unlink()
    os.mkfifo(hung / "modules.json")  # reading it blocks, like a file on a hung mount
    worker = make_worker(model_roots=(tmp_path, model_root))
    try:
        stuck = worker.submit(["cat"], model="hung")
        started = time.monotonic()
        for _ in range(5):
            assert worker.submit(["served meanwhile"]).result(timeout=30).vectors.shape
        assert time.monotonic() - started < 1.5 and not stuck.done()
        with pytest.raises(ModelLoadError, match="took more than"):
            stuck.result(timeout=30)
        with pytest.raises(ModelLoadError, match="took more than"):  # fails fast now
            worker.submit(["again"], model="hung").result(timeout=5)
    finally:
        with open(hung / "modules.json", "w") as fifo:  # let the lookup thread finish
            fifo.write("[]")


def test_status_is_honest_about_loading_and_work(make_worker) -> None:
    worker = make_worker()
    assert worker.info()["loaded_models"] == []
    worker.preload().result(timeout=60)
    assert worker.info()["loaded_models"] == ["all-MiniLM-L6-v2"]  # right after preload
    large = worker.submit([f"{i} {LONG}" for i in range(300)])
    _wait_until(lambda: worker.stats.batches > 0)
    seen_busy = False
    while not large.done():
        seen_busy = seen_busy or worker.info(timeout=0)["busy"]
        time.sleep(0.01)
    assert seen_busy, "a long forward-pass job never showed as busy"
    assert worker.info()["busy"] is False and worker.info()["queue_depth"] == 0
