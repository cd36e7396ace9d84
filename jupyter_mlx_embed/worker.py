"""The worker: one thread that owns MLX, a bounded request queue and dynamic batching.

Requests from any thread are queued; the worker thread takes every request that arrives
within a short window, tokenizes them, sorts all their rows by length, cuts the rows into
forward passes bounded by a token budget (rows x longest row) and scatters the vectors back
to the request they came from. Each request has its own future; errors travel through it
and never stop the thread.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from .config import EngineConfig
from .errors import EmbedError, InvalidRequestError, OverloadedError, WorkerClosedError
from .modelspec import ModelSpec
from .registry import ModelRegistry
from .results import EmbedResult
from .validation import check_dimensions, check_inputs

log = logging.getLogger(__name__)
T = TypeVar("T")

_STOP = object()


@dataclass
class _Request:
    inputs: Sequence[str] | Sequence[Sequence[int]]
    tokens: bool
    model: str | None
    dimensions: int | None
    truncate: bool
    future: Future[EmbedResult]
    first_index: int = 0
    rows: list[list[int]] = field(default_factory=list)
    out: np.ndarray | None = None
    spec: ModelSpec | None = None


@dataclass
class _Call:
    fn: Callable[[Any], Any]
    future: Future[Any]


@dataclass
class WorkerStats:
    """Counters kept by the worker thread (read from any thread)."""

    requests: int = 0
    requests_failed: int = 0
    inputs: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    batches: int = 0
    #: (rows, padded length) of the most recent forward passes.
    recent_batches: deque[tuple[int, int]] = field(default_factory=lambda: deque(maxlen=512))


class Worker:
    """Owns the MLX thread of this process and serves embedding requests.

    Args:
        config: Engine settings; ``EngineConfig.from_env()`` when omitted.
        registry: Model registry; one built from ``config`` when omitted.
    """

    def __init__(
        self, config: EngineConfig | None = None, *, registry: ModelRegistry | None = None
    ) -> None:
        global _owner
        self.config = config or EngineConfig.from_env()
        self.registry = registry or ModelRegistry(self.config)
        self.stats = WorkerStats()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=self.config.queue_size)
        self._closing = threading.Event()
        self._ready = threading.Event()
        self._engine: Any = None
        self._engine_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mlx-embed-worker", daemon=True)
        with _owner_lock:
            if current_worker() is not None:
                raise RuntimeError(
                    "Another Worker already owns MLX in this process; close it first, or share "
                    "it through jupyter_mlx_embed.get_worker()"
                )
            self._thread.start()
            _owner = weakref.ref(self)

    # -- submission (any thread) -------------------------------------------------------

    def submit(
        self,
        inputs: Sequence[str] | Sequence[Sequence[int]],
        *,
        model: str | None = None,
        dimensions: int | None = None,
        truncate: bool | None = None,
        first_index: int = 0,
    ) -> Future[EmbedResult]:
        """Queue texts (or token-id rows) for embedding.

        Args:
            inputs: Non-empty texts, or rows of token ids without special tokens.
            model: Model name; the configured default when ``None``.
            dimensions: Keep the first ``dimensions`` values and renormalise.
            truncate: Truncate over-long inputs (default from config) instead of failing.
            first_index: Index of ``inputs[0]`` in the caller's whole input (a chunk's
                offset), so that error messages name the caller's own index.

        Returns:
            A future resolving to an :class:`EmbedResult`.

        Raises:
            InvalidRequestError: The inputs are malformed.
            OverloadedError: The queue is full.
            WorkerClosedError: The worker is closed.
        """
        tokens = check_inputs(inputs, max_inputs=self.config.max_inputs, first_index=first_index)
        check_dimensions(dimensions)
        request = _Request(
            inputs=inputs,
            tokens=tokens,
            model=model,
            dimensions=dimensions,
            truncate=self.config.truncate if truncate is None else truncate,
            future=Future(),
            first_index=first_index,
        )
        self._put(request)
        return request.future

    def call(self, fn: Callable[[Any], T]) -> Future[T]:
        """Run ``fn(engine)`` on the worker thread (for work that must touch MLX)."""
        call: _Call = _Call(fn=fn, future=Future())
        self._put(call)
        return call.future

    def preload(self, model: str | None = None) -> Future[Any]:
        """Load a model now instead of on its first request."""
        return self.call(lambda engine: engine.load(self.registry.resolve(model)).spec)

    def _put(self, item: _Request | _Call) -> None:
        if self._closing.is_set():
            raise WorkerClosedError("The embedding worker is shut down")
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            raise OverloadedError(
                f"The embedding worker's queue is full ({self.config.queue_size} requests "
                "pending); retry shortly"
            ) from None

    # -- state --------------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        """Requests waiting to be taken by the worker thread."""
        return self._queue.qsize()

    @property
    def alive(self) -> bool:
        """Whether the worker thread is running."""
        return self._thread.is_alive()

    def info(self, timeout: float | None = 60.0) -> dict[str, Any]:
        """Engine facts and counters as plain data (waits for the engine to start)."""
        self._ready.wait(timeout)
        engine = self._engine
        data: dict[str, Any] = {
            "state": "closed" if self._closing.is_set() else "ready" if engine else "starting",
            "queue_depth": self.queue_depth,
            "queue_size": self.config.queue_size,
            "default_model": self.config.default_model,
            "requests": self.stats.requests,
            "requests_failed": self.stats.requests_failed,
            "inputs": self.stats.inputs,
            "tokens": self.stats.tokens,
            "padded_tokens": self.stats.padded_tokens,
            "batches": self.stats.batches,
            "token_budget": self.config.token_budget,
        }
        if engine is not None:
            data.update(
                mlx_version=engine.mlx_version,
                device=engine.device,
                blas={
                    "name": engine.blas.name,
                    "path": engine.blas.path,
                    "fast": engine.blas.fast,
                    "detail": engine.blas.detail,
                },
                loaded_models=list(self._loaded_names),
                malloc_tuned=engine.malloc_tuned,
            )
        elif self._engine_error is not None:
            data.update(state="failed", error=str(self._engine_error))
        return data

    _loaded_names: tuple[str, ...] = ()

    def close(self, timeout: float | None = 30.0, *, cancel_pending: bool = False) -> None:
        """Stop accepting work, finish (or fail) what is queued and join the thread.

        Args:
            timeout: Seconds to wait for the thread.
            cancel_pending: Fail queued requests with :class:`WorkerClosedError` instead of
                finishing them.
        """
        if not self._closing.is_set():
            self._closing.set()
            if cancel_pending:
                self._fail_queued(WorkerClosedError("The embedding worker was shut down"))
            self._queue.put(_STOP)  # blocking: the stop marker must get in
        if threading.get_ident() != self._thread.ident:
            self._thread.join(timeout)
            if not self._thread.is_alive():
                _wait_os_thread_exit(self._thread.native_id)

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the worker thread ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            from .engine.mlx_engine import Engine

            self._engine = Engine(self.config)
        except BaseException as exc:
            log.exception("the MLX engine failed to start")
            self._engine_error = exc
        finally:
            self._ready.set()
        stopping = False
        while not stopping:
            window, stopping = self._take_window()
            if window:
                self._serve(window)
        # The stop marker may overtake requests put while closing; fail those.
        self._fail_queued(WorkerClosedError("The embedding worker was shut down"))

    def _take_window(self) -> tuple[list[_Request | _Call], bool]:
        """Block for one item, then gather what is queued and what arrives within the window.

        The window is only waited for under load (the previous window held several requests):
        a lone request on an idle worker starts at once, so batching costs it no latency.
        """
        first = self._queue.get()
        if first is _STOP:
            return [], True
        window = [first]
        wait = self.config.batch_window_ms / 1000.0 if self._under_load else 0.0
        deadline = time.monotonic() + wait
        try:
            return self._gather(window, deadline)
        finally:
            self._under_load = len(window) > 1

    _under_load = False

    def _gather(
        self, window: list[_Request | _Call], deadline: float
    ) -> tuple[list[_Request | _Call], bool]:
        while True:
            remaining = deadline - time.monotonic()
            try:
                item = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else (self._queue.get_nowait())
                )
            except queue.Empty:
                return window, False
            if item is _STOP:
                return window, True
            window.append(item)

    def _fail_queued(self, error: EmbedError) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP and item.future.set_running_or_notify_cancel():
                item.future.set_exception(error)

    def _serve(self, window: list[_Request | _Call]) -> None:
        live = [item for item in window if item.future.set_running_or_notify_cancel()]
        if self._engine is None:
            error = WorkerClosedError(f"The MLX engine failed to start: {self._engine_error}")
            for item in live:
                item.future.set_exception(error)
            return
        requests: dict[str | None, list[_Request]] = {}
        for item in live:
            if isinstance(item, _Call):
                _settle(item.future, item.fn, self._engine)
            else:
                requests.setdefault(item.model, []).append(item)
        for name, group in requests.items():
            try:
                self._serve_model(name, group)
            except BaseException as exc:
                log.exception("unexpected failure while serving model %s", name)
                for request in group:
                    _fail(request.future, exc)
            finally:
                self._loaded_names = tuple(self._engine.loaded_models)
        for item in live:
            if isinstance(item, _Request):
                self.stats.requests += 1
                if item.future.exception() is not None:
                    self.stats.requests_failed += 1

    def _serve_model(self, name: str | None, group: list[_Request]) -> None:
        try:
            spec = self.registry.resolve(name)
            loaded = self._engine.load(spec)
        except EmbedError as exc:
            for request in group:
                request.future.set_exception(exc)
            return
        pending = [r for r in group if self._prepare(r, spec, loaded.tokenizer)]
        rows = sorted(
            ((len(row), r, i) for r in pending for i, row in enumerate(r.rows)),
            key=lambda item: item[0],
        )
        for batch in _cut_batches(rows, self.config.token_budget, self.config.max_batch_size):
            owners = {id(r): r for _, r, _ in batch}
            try:
                vectors = self._engine.embed(loaded, [r.rows[i] for _, r, i in batch])
            except Exception as exc:
                log.exception("forward pass failed")
                for request in owners.values():
                    _fail(request.future, exc)
                continue
            for (_, request, i), vector in zip(batch, vectors, strict=True):
                assert request.out is not None
                request.out[i] = vector
            self.stats.batches += 1
            self.stats.padded_tokens += len(batch) * batch[-1][0]
            self.stats.recent_batches.append((len(batch), batch[-1][0]))
        for request in pending:
            if not request.future.done():
                request.future.set_result(_finish(request, spec))

    def _prepare(self, request: _Request, spec: ModelSpec, tokenizer: Any) -> bool:
        """Tokenize and check one request; fail its future and return False on error."""
        try:
            check_dimensions(request.dimensions, spec.dimension, model=spec.name)
            encode = tokenizer.wrap_token_ids if request.tokens else tokenizer.encode_texts
            rows = encode(
                request.inputs, truncate=request.truncate, first_index=request.first_index
            )
            total = sum(len(r) for r in rows)
            if total > self.config.max_request_tokens:
                raise InvalidRequestError(
                    f"This request has {total} tokens, more than the maximum of "
                    f"{self.config.max_request_tokens} tokens per request",
                    param="input",
                    code="max_tokens_per_request",
                )
        except EmbedError as exc:
            request.future.set_exception(exc)
            return False
        request.rows = rows
        request.spec = spec
        request.out = np.empty((len(rows), spec.dimension), dtype=np.float32)
        self.stats.inputs += len(rows)
        self.stats.tokens += total
        return True


def _cut_batches(
    rows: list[tuple[int, _Request, int]], budget: int, max_rows: int
) -> list[list[tuple[int, _Request, int]]]:
    """Split length-sorted rows into batches whose padded size stays within ``budget``.

    A row longer than the budget forms a batch of its own.
    """
    batches: list[list[tuple[int, _Request, int]]] = []
    current: list[tuple[int, _Request, int]] = []
    for item in rows:
        length = item[0]
        # Rows are sorted, so the newest row is the longest: padded = rows x its length.
        if current and ((len(current) + 1) * length > budget or len(current) >= max_rows):
            batches.append(current)
            current = []
        current.append(item)
    if current:
        batches.append(current)
    return batches


def _finish(request: _Request, spec: ModelSpec) -> EmbedResult:
    vectors = request.out
    assert vectors is not None
    if request.dimensions is not None and request.dimensions < spec.dimension:
        vectors = np.ascontiguousarray(vectors[:, : request.dimensions])
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors /= np.maximum(norms, 1e-12)
    return EmbedResult(
        vectors=vectors, model=spec.name, token_counts=tuple(len(r) for r in request.rows)
    )


def _wait_os_thread_exit(native_id: int | None, timeout: float = 2.0) -> None:
    """Wait until the OS thread behind a joined Python thread is gone (Linux).

    ``Thread.join`` returns before the OS thread runs its C++ thread-local destructors; MLX
    has some that take the GIL, which aborts the process if the interpreter is finalizing
    by then. Waiting here makes ``close()`` followed by interpreter exit safe.
    """
    if native_id is None or not os.path.isdir("/proc/self/task"):
        return
    task = f"/proc/self/task/{native_id}"
    deadline = time.monotonic() + timeout
    while os.path.exists(task) and time.monotonic() < deadline:
        time.sleep(0.001)


def _close_owner() -> None:
    """At exit, stop the worker that owns MLX (at most one runs: see ``_owner``)."""
    worker = _owner() if _owner is not None else None
    if worker is not None:
        worker.close(timeout=5.0, cancel_pending=True)


def current_worker() -> Worker | None:
    """The live worker that owns MLX in this process, if any (whoever started it: the Python
    API, the server extension or the standalone server)."""
    worker = _owner() if _owner is not None else None
    return worker if worker is not None and worker.alive else None


# MLX is thread-affine: at most one live worker thread per process may use it.
_owner_lock = threading.Lock()
_owner: weakref.ref[Worker] | None = None
atexit.register(_close_owner)


def _settle(future: Future[T], fn: Callable[[Any], T], arg: Any) -> None:
    try:
        future.set_result(fn(arg))
    except BaseException as exc:  # noqa: BLE001 - delivered to the caller
        future.set_exception(exc)


def _fail(future: Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
