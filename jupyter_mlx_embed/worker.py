"""The worker: one thread that owns MLX, a bounded request queue and fair dynamic batching.

It serves three kinds of request: texts to embed (:meth:`Worker.submit`), pictures to embed
with an image-text model (:meth:`Worker.submit_images`: each picture a row of its patches) and
a query's documents to rerank (:meth:`Worker.rerank`: each pair a row), in the same forward
passes' rounds under the same rules.

Requests from any thread are queued; the worker thread loads their model, hands them to the
preparing thread (:mod:`.preparation`: cache lookup and tokenizing, off the MLX thread) and
serves the prepared ones one forward pass at a time, each pass chosen afresh by
:func:`.scheduling.pick_rows` (so a new request joins the next pass, whatever else runs); a
request is answered as soon as its last row is done. Model names are resolved in background
threads, so a slow or hung model folder never stalls the forward passes. Each request has its
own future; errors travel through it, fail only the request that caused them, and never stop
the thread.

Over 500 lines because :class:`Worker` is one state machine: its methods share the worker
thread's state (active, parked and preparing requests) without locks, which a split across
modules would have to expose; the pure parts already live apart (:mod:`.scheduling`,
:mod:`.preparation`, :mod:`.options`, the status shapes in :mod:`.schema`).
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
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from . import metrics
from .cache import CacheUnavailableError, EmbeddingCache
from .config import EngineConfig
from .errors import (
    EmbedError,
    InvalidRequestError,
    ModelLoadError,
    OverloadedError,
    WorkerClosedError,
)
from .modelspec import ModelSpec
from .options import EmbedOptions
from .preparation import Preparer, Request, RequestFuture, image_identity
from .registry import BUNDLED_SHA256, ModelRegistry
from .results import EmbedResult, RerankResult
from .scheduling import fresh_lanes, pick_rows
from .schema import WorkerCounters, engine_status, model_card, worker_status
from .validation import (
    check_dimensions,
    check_images,
    check_inputs,
    check_modality,
    check_prompt,
    check_rerank,
    check_task,
    model_prompt,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

_STOP = object()
#: Seconds a model lookup (reading its folder) may take before its requests fail; a folder
#: on a hung mount or a FIFO in a model root must not hold requests forever.
RESOLVE_TIMEOUT = 30.0


@dataclass
class _Call:
    fn: Callable[[Any], Any]
    future: Future[Any]


@dataclass
class _Resolved:
    """A background lookup of a model name finished (with a spec or an error)."""

    name: str
    spec: ModelSpec | None
    error: BaseException | None


@dataclass
class _Prepared:
    """The preparing thread is done with a request (prepared, or failed)."""

    request: Request


@dataclass
class WorkerStats(WorkerCounters):
    """Counters kept by the worker thread (read from any thread): those of its status, and
    the shapes of its recent forward passes."""

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
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._admitted = 0  # requests submitted and not yet done: what queue_size bounds
        self._preloading = 0
        self._admitted_lock = threading.Lock()
        self._closing = threading.Event()
        self._ready = threading.Event()
        self._engine: Any = None
        self._engine_error: BaseException | None = None
        self._cache: EmbeddingCache | None = None
        # Worker-thread state.
        self._active: list[Request] = []
        self._parked: dict[str, list[Request]] = {}
        self._preparer: Preparer | None = None
        self._preparing = 0  # requests handed to the preparer and not yet back
        self._after_fresh = False  # the last forward pass was new requests' alone
        self._cancelling = False  # close(cancel_pending=True): fail what is not answered
        self._resolving: dict[str, float] = {}
        self._busy = False
        self._under_load = False
        self._loaded_names: tuple[str, ...] = ()
        self._thread = threading.Thread(target=self._run, name="mlx-embed-worker", daemon=True)
        me = weakref.ref(self)
        metrics.watch_queue(lambda: getattr(me(), "queue_depth", 0))
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
        options: EmbedOptions | None = None,
        *,
        first_index: int = 0,
        positions: Sequence[int] | None = None,
        **fields: Any,
    ) -> RequestFuture:
        """Queue texts (or token-id rows) for embedding.

        Args:
            inputs: Non-empty texts, or rows of token ids without special tokens (only with
                ``allow_token_ids``).
            options: The request's options (model, dimensions, prompt, truncation).
            first_index: Index of ``inputs[0]`` in the caller's whole input (a chunk's
                offset), so that error messages name the caller's own index.
            positions: Instead, the caller's index of each input (the texts of a request
                that mixes texts and pictures).
            **fields: Instead of ``options``, its fields (``EmbedOptions(**fields)``).

        Returns:
            A future resolving to an :class:`EmbedResult`; cancelling it drops the request
            even once it is being served.

        Raises:
            InvalidRequestError: The inputs or options are malformed.
            OverloadedError: ``queue_size`` requests are already pending.
            WorkerClosedError: The worker is closed.
        """
        tokens = check_inputs(
            inputs,
            max_inputs=self.config.max_inputs,
            allow_token_ids=self.config.allow_token_ids,
            first_index=first_index,
        )
        if options is None:
            options = EmbedOptions(**fields)
        elif fields:
            raise TypeError("give options or its fields, not both")
        check_prompt(options.prompt_name, options.prompt, tokens=tokens)
        return self._admit(
            inputs, options, tokens=tokens, first_index=first_index, positions=positions
        )

    def submit_images(
        self,
        images: Sequence[Any],
        options: EmbedOptions | None = None,
        *,
        first_index: int = 0,
        positions: Sequence[int] | None = None,
    ) -> RequestFuture:
        """Queue pictures for embedding by an image-text model's image tower (decoded and
        resized on the preparing thread's pool, never on this worker's thread).

        Args:
            images: File paths, encoded files (bytes), PIL images or uint8 arrays.
            options: The model (an image-text model) and ``dimensions``; prompts do not apply.
            first_index: Index of ``images[0]`` in the caller's whole input.
            positions: Instead, the caller's index of each picture.

        Returns:
            A future resolving to an :class:`EmbedResult` (vectors in the images' order).

        Raises:
            InvalidRequestError: The images or options are malformed.
            OverloadedError: ``queue_size`` requests are already pending.
            WorkerClosedError: The worker is closed.
        """
        check_images(images, max_inputs=self.config.max_inputs, first_index=first_index)
        options = _without(options, ("prompt_name", "prompt"), "images")
        return self._admit(
            images, options, first_index=first_index, positions=positions, images=True
        )

    def rerank(
        self, query: str, documents: Sequence[str], options: EmbedOptions | None = None
    ) -> RequestFuture:
        """Queue a query and its documents for scoring by a reranker (a cross-encoder).

        Each (query, document) pair is one row of the forward passes, batched with every
        other request's rows under the same fairness and budgets.

        Args:
            query: The query text.
            documents: Non-empty texts, at most ``max_rerank_documents``.
            options: The model (a reranker) and truncation; ``dimensions`` and prompts do
                not apply.

        Returns:
            A future resolving to a :class:`RerankResult` (scores in the documents' order).

        Raises:
            InvalidRequestError: The query, documents or options are malformed.
            OverloadedError: ``queue_size`` requests are already pending.
            WorkerClosedError: The worker is closed.
        """
        check_rerank(query, documents, max_documents=self.config.max_rerank_documents)
        options = _without(options, ("dimensions", "prompt_name", "prompt"), "rerank")
        return self._admit(documents, options, query=query)

    def _admit(
        self,
        inputs: Sequence[str] | Sequence[Sequence[int]],
        options: EmbedOptions,
        *,
        tokens: bool = False,
        first_index: int = 0,
        query: str | None = None,
        images: bool = False,
        positions: Sequence[int] | None = None,
    ) -> RequestFuture:
        """Queue a checked request (see :class:`Request`), within ``queue_size``; its
        truncation is the options', else the worker's setting."""
        request = Request(
            inputs=inputs,
            tokens=tokens,
            images=images,
            options=options,
            truncate=self.config.truncate if options.truncate is None else options.truncate,
            future=RequestFuture(),
            first_index=first_index,
            positions=positions,
            query=query,
        )
        with self._admitted_lock:
            if self._admitted >= self.config.queue_size:
                raise OverloadedError(
                    f"The embedding worker's queue is full ({self.config.queue_size} requests "
                    "pending); retry shortly"
                )
            self._admitted += 1
        request.future.add_done_callback(lambda _: self._request_done(request))
        self._put(request)
        return request.future

    def call(self, fn: Callable[[Any], T]) -> Future[T]:
        """Run ``fn(engine)`` on the worker thread (for work that must touch MLX)."""
        call: _Call = _Call(fn=fn, future=Future())
        self._put(call)
        return call.future

    def preload(self, model: str | None = None) -> Future[Any]:
        """Load a model now instead of on its first request."""
        future = self.call(lambda engine: engine.load(self.registry.resolve(model)).spec)
        with self._admitted_lock:
            self._preloading += 1

        def done(_: Future[Any]) -> None:
            with self._admitted_lock:
                self._preloading -= 1

        future.add_done_callback(done)
        return future

    def health(self) -> str:
        """``ready``, ``loading`` (the engine starts or a preload runs) or ``failed`` (the
        engine failed to start, or the worker is closed): what a health check needs."""
        if self._engine_error is not None or self._closing.is_set():
            return "failed"
        if self._engine is None or self._preloading:
            return "loading"
        return "ready"

    def _put(self, item: Request | _Call) -> None:
        if self._closing.is_set():
            item.future.cancel()
            raise WorkerClosedError("The embedding worker is shut down")
        self._queue.put(item)

    def _request_done(self, request: Request) -> None:
        """Every request's future calls this once, from whichever thread completed it."""
        future = request.future
        error = None if future.cancelled() else future.exception()
        cancelled = future.cancelled() or isinstance(error, CancelledError)
        outcome = "cancelled" if cancelled else "ok" if error is None else _error_type(error)
        model = request.spec.name if request.spec is not None else metrics.UNKNOWN_MODEL
        metrics.REQUESTS.labels(model, outcome).inc()
        metrics.INPUTS.labels(model, outcome).inc(len(request.inputs))
        if outcome == "ok":
            metrics.REQUEST_SECONDS.labels(model).observe(time.monotonic() - request.submitted)
        with self._admitted_lock:
            self._admitted -= 1
            if future.cancelled():
                return
            self.stats.requests += 1
            if error is not None and not cancelled:
                self.stats.requests_failed += 1

    # -- state --------------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        """Requests submitted and not yet answered (what ``queue_size`` bounds)."""
        return self._admitted

    @property
    def alive(self) -> bool:
        """Whether the worker thread is running."""
        return self._thread.is_alive()

    def info(self, timeout: float | None = 60.0) -> dict[str, Any]:
        """Engine facts and counters as plain data, :func:`.schema.worker_status` (waits for
        the engine to start)."""
        self._ready.wait(timeout)
        engine = self._engine
        return worker_status(
            "closed" if self._closing.is_set() else "ready" if engine else "starting",
            self.config,
            self.stats,
            busy=self._busy,
            queue_depth=self.queue_depth,
            cache_enabled=self._cache is not None and self._cache.enabled,
            engine=None
            if engine is None
            else engine_status(engine, [self.model_card(name) for name in self._loaded_names]),
            error=None if self._engine_error is None else str(self._engine_error),
        )

    def model_card(self, name: str | None = None) -> dict[str, Any]:
        """What ``GET /v1/models/{id}`` shows of a model (:func:`.schema.model_card`): the
        OpenAI fields, then its dimensions, max input tokens, pooling, prompts, quantization
        and whether it is loaded. Reads the model's folder: call it off the event loop.

        Raises:
            EmbedError: As :meth:`ModelRegistry.resolve` raises.
        """
        spec = self.registry.resolve(name)
        return model_card(
            spec.name if name is None else name, spec, loaded=spec.name in self._loaded_names
        )

    def model_cards(self) -> list[dict[str, Any]]:
        """:meth:`model_card` of every model a request can name (those that resolve)."""
        cards = []
        for entry in self.registry.list_models():
            try:
                cards.append(self.model_card(entry.name))
            except EmbedError as exc:
                log.info("not listing %s: %s", entry.name, exc.message)
        return cards

    def close(self, timeout: float | None = 30.0, *, cancel_pending: bool = False) -> None:
        """Stop accepting work, finish (or fail) what is queued, and wait until the worker's
        thread is gone: its Python thread, then the OS thread under it (see
        :func:`_wait_os_thread_exit`), so that the interpreter may exit right after.

        Args:
            timeout: Seconds to wait for both (``None``: as long as it takes).
            cancel_pending: Fail the requests not yet answered (queued, being prepared or
                being served) with :class:`WorkerClosedError` instead of finishing them.
        """
        if not self._closing.is_set():
            if cancel_pending:
                self._cancelling = True
            self._closing.set()
            if cancel_pending:
                self._fail_queued(WorkerClosedError("The embedding worker was shut down"))
            self._queue.put(_STOP)
        if threading.get_ident() == self._thread.ident:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        self._thread.join(timeout)
        if not self._thread.is_alive():
            _wait_os_thread_exit(self._thread.native_id, deadline)

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
        try:
            self._cache = _open_cache(self.config)
        finally:
            self._ready.set()  # info() waits for this: the engine and the cache are known
        self._preparer = Preparer(self._cache, self.config.max_request_tokens, self._prepared)
        stopping = False
        while not (stopping and not self._active and not self._parked and not self._preparing):
            items, stop = self._take(block=not self._active)
            stopping = stopping or stop
            for item in items:
                self._accept(item)
            self._expire_parked()
            if self._cancelling:
                self._fail_unanswered()
            if self._active:
                try:
                    self._step()
                except Exception as exc:  # a bug, not a request's fault: fail what is active
                    log.exception("unexpected failure in the worker")
                    for request in self._active:
                        _fail(request.future, exc)
                    self._active = []
        # The stop marker may overtake requests put while closing; fail those.
        self._fail_queued(WorkerClosedError("The embedding worker was shut down"))
        self._preparer.close()
        if self._engine is not None:
            self._engine.release_thread()
        if self._cache is not None:
            self._cache.close()

    def _fail_unanswered(self) -> None:
        """``close(cancel_pending=True)``: fail what is active or parked (the preparer fails
        what it holds, and what comes back from it is failed as it arrives)."""
        closed = WorkerClosedError("The embedding worker was shut down")
        assert self._preparer is not None
        self._preparer.cancel(closed)
        for request in [*self._active, *(r for rs in self._parked.values() for r in rs)]:
            _fail(request.future, closed)
        self._active, self._parked = [], {}

    def _take(self, *, block: bool) -> tuple[list[Any], bool]:
        """Queued items: when idle, block for one (then gather those arriving within the
        batching window, under load only); while serving, just what is already queued."""
        items: list[Any] = []
        if block:
            try:
                items.append(self._queue.get(timeout=1.0 if self._parked else None))
            except queue.Empty:
                return [], False
            if items[0] is _STOP:
                return [], True
            wait = self.config.batch_window_ms / 1000.0 if self._under_load else 0.0
        else:
            wait = 0.0
        deadline = time.monotonic() + wait
        while True:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else None
                if item is None:
                    item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return items, True
            items.append(item)
        self._under_load = len(items) + len(self._active) > 1
        return items, False

    def _fail_queued(self, error: EmbedError) -> None:
        """Fail the queued requests and calls; the worker's own messages (lookups done,
        requests prepared) stay queued for it."""
        kept = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, (Request, _Call)):
                if item.future.set_running_or_notify_cancel():
                    item.future.set_exception(error)
            else:
                kept.append(item)
        for item in kept:
            self._queue.put(item)

    def _accept(self, item: Request | _Call | _Resolved | _Prepared) -> None:
        """Take one queued item on the worker thread."""
        if isinstance(item, _Prepared):
            self._preparing -= 1
            self._activate(item.request)
            return
        if isinstance(item, _Resolved):
            self._resolving.pop(item.name, None)
            for request in self._parked.pop(item.name, []):
                if item.spec is None:
                    _fail(request.future, item.error or ModelLoadError("lookup failed"))
                else:
                    self._start(request, item.spec)
            return
        if not item.future.set_running_or_notify_cancel():
            return  # cancelled while queued
        if self._engine is None:
            item.future.set_exception(
                WorkerClosedError(f"The MLX engine failed to start: {self._engine_error}")
            )
            return
        if isinstance(item, _Call):
            self._set_busy(True)
            try:
                _settle(item.future, item.fn, self._engine)
            finally:
                self._set_busy(False)
                self._loaded_names = tuple(self._engine.loaded_models)  # after a preload
            return
        metrics.QUEUE_WAIT_SECONDS.observe(time.monotonic() - item.submitted)
        name = item.options.model if item.options.model is not None else self._default(item)
        if name is None:
            _fail(item.future, _no_reranker())
            return
        spec = self.registry.cached(name)
        if spec is not None:
            self._start(item, spec)
            return
        started = self._resolving.get(name)
        if started is not None and time.monotonic() - started > RESOLVE_TIMEOUT:
            _fail(item.future, _lookup_timeout(name))
            return
        self._parked.setdefault(name, []).append(item)
        if started is None:
            self._resolving[name] = time.monotonic()
            threading.Thread(
                target=self._resolve, args=(name,), name="mlx-embed-resolve", daemon=True
            ).start()

    def _default(self, request: Request) -> str | None:
        """The model a request that names none gets (rerank: the default reranker)."""
        if request.query is None:
            return self.config.default_model
        return self.config.default_reranker

    def _resolve(self, name: str) -> None:
        """Look a model name up (reads its folder, hashes new weights for the cache) off the
        worker thread."""
        try:
            spec = self.registry.resolve(name)
            self._identity(spec)
            self._queue.put(_Resolved(name, spec, None))
        except BaseException as exc:  # noqa: BLE001 - delivered to the waiting requests
            self._queue.put(_Resolved(name, None, exc))

    def _identity(self, spec: ModelSpec) -> str | None:
        """The model's cache identity (its weights' hash is computed once, then remembered)."""
        if self._cache is None:
            return None
        known = BUNDLED_SHA256 if spec.source == "bundled" else None
        return self._cache.identity(spec, weights_sha256=known, precision=self.config.precision)

    def _expire_parked(self) -> None:
        now = time.monotonic()
        for name, started in self._resolving.items():
            if now - started > RESOLVE_TIMEOUT and name in self._parked:
                for request in self._parked.pop(name):
                    _fail(request.future, _lookup_timeout(name))

    def _start(self, request: Request, spec: ModelSpec) -> None:
        """Load the model and check what needs it, then hand the request to the preparing
        thread; any error fails this request alone."""
        try:
            loaded = self._load(spec)
            check_task(spec, "embed" if request.query is None else "rerank")
            if request.images:
                check_modality(spec, "image")
            check_dimensions(request.options.dimensions, spec.dimension, model=spec.name)
            if request.images:
                identity = self._identity(spec)
                request.identity = None if identity is None else image_identity(identity)
            elif not request.tokens and request.query is None:
                request.prefix = model_prompt(
                    spec, request.options.prompt_name, request.options.prompt
                )
                request.identity = self._identity(spec)
        except Exception as exc:
            if not isinstance(exc, EmbedError):
                log.exception("unexpected failure preparing a request for %s", spec.name)
            _fail(request.future, exc)
            return
        finally:
            self._loaded_names = tuple(self._engine.loaded_models)
        request.spec, request.loaded = spec, loaded
        assert self._preparer is not None
        self._preparing += 1
        self._preparer.add(request)

    def _prepared(self, request: Request) -> None:
        """The preparer is done with a request: serve it now when this is the worker's
        thread (a small request, prepared at once), else through the queue."""
        if threading.get_ident() == self._thread.ident:
            self._preparing -= 1
            self._activate(request)
        else:
            self._queue.put(_Prepared(request))

    def _activate(self, request: Request) -> None:
        """Serve a prepared request (answer it at once when the cache had every vector)."""
        if request.future.done():
            return  # failed while preparing
        spec = request.spec
        assert spec is not None
        total = sum(request.token_counts)
        self.stats.inputs += len(request.inputs)
        self.stats.tokens += total
        metrics.TOKENS.labels(spec.name).inc(total)
        if request.identity is not None:
            self.stats.cache_hits += request.hits
            self.stats.cache_misses += len(request.order)
            metrics.CACHE_HITS.labels(spec.name).inc(request.hits)
            metrics.CACHE_MISSES.labels(spec.name).inc(len(request.order))
        if request.remaining:
            self._active.append(request)
        else:
            request.future.set_result(_finish(request, spec))

    def _load(self, spec: ModelSpec) -> Any:
        """The loaded model (loading it first when needed, timed for the metrics)."""
        if spec.name in self._engine.loaded_models:
            return self._engine.load(spec)
        started = time.monotonic()
        self._set_busy(True)
        try:
            loaded = self._engine.load(spec)
        except BaseException:
            metrics.MODEL_LOADS.labels(spec.name, "failed").inc()
            raise
        finally:
            self._set_busy(False)
        metrics.MODEL_LOADS.labels(spec.name, "ok").inc()
        metrics.MODEL_LOAD_SECONDS.labels(spec.name).observe(time.monotonic() - started)
        return loaded

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        metrics.BUSY.set(1 if busy else 0)

    def _step(self) -> None:
        """One forward pass, of the rows :func:`pick_rows` chooses among the active requests
        of one model (the least served request's), shortest rows first; requests are answered
        as soon as they are complete, and abandoned ones are dropped first."""
        for request in self._active:
            if request.future.abandoned:
                _fail(request.future, CancelledError())
        self._active = [r for r in self._active if not r.future.done()]
        if not self._active:
            return
        lanes = sorted(self._active, key=lambda r: r.served)  # stable: arrival order on ties
        # One model, and one of its towers (texts, or pictures), per pass.
        lanes = [r for r in lanes if (r.loaded, r.images) == (lanes[0].loaded, lanes[0].images)]
        fresh = fresh_lanes([r.taken > 0 for r in lanes], self._after_fresh)
        self._after_fresh = fresh is not None
        if fresh is not None:
            lanes = [lanes[k] for k in fresh]
        counts = pick_rows(
            [(r.lengths, r.taken) for r in lanes],
            self.config.token_budget,
            self.config.max_batch_size,
        )
        batch: list[tuple[int, Request, int]] = []
        for request, count in zip(lanes, counts, strict=True):
            for k in range(request.taken, request.taken + count):
                batch.append((request.lengths[k], request, request.order[k]))
            request.taken += count
        batch.sort(key=lambda item: item[0])
        self._forward(batch)
        self._active = [r for r in self._active if not r.future.done()]

    def _forward(self, batch: list[tuple[int, Request, int]]) -> None:
        owners = {id(r): r for _, r, _ in batch}
        loaded = batch[0][1].loaded
        self._set_busy(True)
        try:
            rows = [r.rows[i] for _, r, i in batch]
            if batch[0][1].images:
                vectors = self._engine.embed_images(loaded, np.stack(rows))
            else:
                vectors = self._engine.embed(loaded, rows)
        except Exception as exc:
            log.exception("forward pass failed")
            for request in owners.values():
                _fail(request.future, exc)
            return
        finally:
            self._set_busy(False)
        for (length, request, i), vector in zip(batch, vectors, strict=True):
            assert request.out is not None
            request.out[i] = vector
            request.remaining -= 1
            request.served += length
        for request in owners.values():
            if request.remaining == 0 and not request.future.done():
                assert request.spec is not None and request.out is not None
                if request.identity is not None and self._cache is not None:
                    computed = sorted(request.order)
                    self._cache.store(
                        request.identity,
                        [request.text(i) for i in computed],
                        request.out[computed],
                        [request.token_counts[i] for i in computed],
                    )
                request.future.set_result(_finish(request, request.spec))
        self.stats.batches += 1
        self.stats.padded_tokens += len(batch) * batch[-1][0]
        self.stats.recent_batches.append((len(batch), batch[-1][0]))
        metrics.BATCH_ROWS.observe(len(batch))
        metrics.BATCH_PADDED_TOKENS.observe(len(batch) * batch[-1][0])


def _finish(request: Request, spec: ModelSpec) -> EmbedResult | RerankResult:
    vectors = request.out
    assert vectors is not None
    if request.query is not None:
        return RerankResult(
            scores=np.ascontiguousarray(vectors[:, 0]),
            model=spec.name,
            token_counts=tuple(request.token_counts),
            logits=np.ascontiguousarray(vectors[:, 1]),
        )
    dimensions = request.options.dimensions
    if dimensions is not None and dimensions < spec.dimension:
        vectors = np.ascontiguousarray(vectors[:, :dimensions])
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors /= np.maximum(norms, 1e-12)
    return EmbedResult(vectors=vectors, model=spec.name, token_counts=tuple(request.token_counts))


def _wait_os_thread_exit(native_id: int | None, deadline: float | None = None) -> None:
    """Wait until the OS thread behind a joined Python thread is gone (Linux), at most until
    ``deadline`` (a ``time.monotonic()`` value; ``None``: no limit).

    ``Thread.join`` returns once the Python thread state is deleted, before the OS thread runs
    its C++ thread-local destructors. MLX's take the GIL (its per-thread random key sequence,
    the outputs of compiled functions). A thread that takes the GIL while the interpreter
    finalizes is ended by Python (3.11-3.13) with ``pthread_exit``, whose unwinding through a
    ``noexcept`` destructor calls ``std::terminate``: the process aborts (status 134). So the
    thread must be gone before the interpreter finalizes; it takes milliseconds (this thread
    sleeps, leaving the GIL to the destructors).
    """
    if native_id is None or not os.path.isdir("/proc/self/task"):
        return
    task = f"/proc/self/task/{native_id}"
    while os.path.exists(task) and (deadline is None or time.monotonic() < deadline):
        time.sleep(0.001)


#: Seconds the process waits at exit for its worker's thread to be gone. The interpreter must
#: not finalize while that thread lives (:func:`_wait_os_thread_exit`), and stopping can take a
#: while: the forward pass under way, then the preparing thread's and the vector cache's last
#: writes (several seconds while another process holds the cache's lock). A worker stuck
#: longer (a model read from a hung file system) is left behind, with a warning.
EXIT_TIMEOUT = 60.0


def _close_owner() -> None:
    """At exit (before the interpreter finalizes), stop the worker that owns MLX (at most one
    runs: see ``_owner``), dropping what is queued, and wait until its thread is gone."""
    worker = _owner() if _owner is not None else None
    if worker is None:
        return
    worker.close(timeout=EXIT_TIMEOUT, cancel_pending=True)
    if worker.alive:
        log.warning(
            "the embedding worker did not stop within %.0f s; exiting without it", EXIT_TIMEOUT
        )


def current_worker() -> Worker | None:
    """The live worker that owns MLX in this process, if any (whoever started it: the Python
    API, the server extension or the standalone server)."""
    worker = _owner() if _owner is not None else None
    return worker if worker is not None and worker.alive else None


# MLX is thread-affine: at most one live worker thread per process may use it.
_owner_lock = threading.Lock()
_owner: weakref.ref[Worker] | None = None
atexit.register(_close_owner)


def _open_cache(config: EngineConfig) -> EmbeddingCache | None:
    """The vector cache the settings ask for, or None (off, or unusable: a warning)."""
    if not config.cache:
        return None
    try:
        return EmbeddingCache(config.cache_folder(), config.cache_size_mb)
    except CacheUnavailableError as exc:
        log.warning("embedding cache off: %s", exc)
        return None


def _error_type(error: BaseException) -> str:
    """The OpenAI error type a failure is reported with (its metrics outcome)."""
    return error.type if isinstance(error, EmbedError) else "server_error"


def _without(options: EmbedOptions | None, names: tuple[str, ...], what: str) -> EmbedOptions:
    """``options`` (default ones for None), refused when one of ``names`` is set: options that
    do not apply to ``what``.

    Raises:
        InvalidRequestError: Naming the first such option.
    """
    options = options or EmbedOptions()
    for name in names:
        if getattr(options, name) is not None:
            raise InvalidRequestError(f"{name} does not apply to {what}", param=name)
    return options


def _no_reranker() -> InvalidRequestError:
    return InvalidRequestError(
        "This rerank request names no model and the server has no default reranker: name one "
        "(model), or set the server's default_reranker (jupyter-mlx-embed serve --reranker "
        "NAME; in Jupyter, --MLXEmbed.default_reranker=NAME)",
        param="model",
    )


def _lookup_timeout(name: str) -> ModelLoadError:
    return ModelLoadError(
        f"Looking up model '{name}' took more than {RESOLVE_TIMEOUT:.0f} s (is its folder on "
        "a slow or hung file system?)"
    )


def _settle(future: Future[T], fn: Callable[[Any], T], arg: Any) -> None:
    try:
        future.set_result(fn(arg))
    except BaseException as exc:  # noqa: BLE001 - delivered to the caller
        future.set_exception(exc)


def _fail(future: Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
