"""Requests on their way to the MLX thread: prompt, cache lookup and tokenizing, or decoding
and resizing pictures (no MLX).

Tokenizing is a request's cost that grows with what a client sends, so it never runs on the
MLX thread: one preparing thread takes the requests in turns, a piece of each at a time (so a
huge request cannot hold up a small one), and stops a request as soon as its tokens pass the
per-request limit (so refusing one costs at most that many tokens). Each text's tokenizing is
bounded by the model's context (:meth:`TextTokenizer.head`), and a prompt is tokenized once
and refused when it leaves no room for the input. Pictures are decoded and resized by a pool
of threads (Pillow works without the GIL), a few per turn; each is keyed for the cache by a
hash of its content.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .cache import EmbeddingCache
from .errors import EmbedError, InvalidRequestError
from .modelspec import ModelSpec
from .options import EmbedOptions

log = logging.getLogger(__name__)

#: Inputs prepared per turn: small enough that a request waiting behind a large one waits a
#: few milliseconds per turn, large enough for the tokenizer's batch call to pay off.
PIECE = 128
#: Characters (prompt included, per input) up to which a request is prepared at once on the
#: worker's thread (about a millisecond), so that it joins the very next forward pass and a
#: single text pays no hand-over between threads. Pictures never are.
INLINE_CHARS = 8192
#: Pictures prepared per turn (each some milliseconds to decode and resize).
IMAGE_PIECE = 16
#: Bounds on one picture, checked before it is decoded: its encoded bytes and its pixels.
MAX_IMAGE_BYTES = 32 << 20
MAX_IMAGE_PIXELS = 64_000_000


class RequestFuture(Future[Any]):
    """The future of one request. ``cancel()`` of a request that is already being served
    returns False, as for any future, but drops the request at its next batch boundary: the
    rest of its work is not done and it fails with ``CancelledError``. It resolves to an
    ``EmbedResult``, or a ``RerankResult`` for a rerank request."""

    abandoned = False

    def cancel(self) -> bool:
        if super().cancel():
            return True
        self.abandoned = True
        return False


@dataclass
class Request:
    """One request from submission to answer. Its fields past ``first_index`` are filled by the
    worker (model, prefix, identity), then by the preparing thread (rows, counts, order), then
    read by the worker again: each stage owns it in turn."""

    inputs: Sequence[Any]  # texts, token-id rows (``tokens``) or pictures (``images``)
    tokens: bool
    options: EmbedOptions
    truncate: bool  # the options', else the worker's setting
    future: RequestFuture
    first_index: int = 0
    #: The caller's index of each input, where they are not ``first_index`` onwards (the
    #: texts or pictures of a request that mixes both), for messages.
    positions: Sequence[int] | None = None
    #: A rerank request's query (its inputs are the documents, each pair a row).
    query: str | None = None
    #: Pictures for the image tower (each row its resized pixels, keyed by content).
    images: bool = False
    spec: ModelSpec | None = None
    loaded: Any = None
    #: The text put before every input, and the model's cache identity (None: no cache).
    prefix: str = ""
    identity: str | None = None
    #: Token ids (or a picture's pixels) per input ([] for cache hits), vectors (hits
    #: filled in), token counts, and the pictures' content keys.
    rows: list[Any] = field(default_factory=list)
    out: np.ndarray | None = None
    token_counts: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    #: Inputs to compute (cache misses), shortest first; their lengths in that order; how
    #: many were handed to forward passes, how many are not done, tokens computed so far.
    order: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    taken: int = 0
    remaining: int = 0
    served: int = 0
    hits: int = 0
    submitted: float = field(default_factory=time.monotonic)

    @property
    def stopped(self) -> bool:
        """Answered, failed, cancelled, or abandoned by its caller."""
        return self.future.done() or self.future.abandoned

    def index(self, i: int) -> int:
        """The caller's index of input ``i``, for messages."""
        return self.positions[i] if self.positions is not None else self.first_index + i

    def text(self, i: int) -> str:
        """Input ``i`` as the cache keys it: the text as the model sees it (after the
        prompt), or a picture's content key."""
        if self.images:
            return self.keys[i]
        return self.prefix + self.inputs[i]


def image_identity(identity: str) -> str:
    """The cache identity of a model's image vectors: its own, plus the Pillow version that
    decodes and resizes the pictures (a picture's key is its content, not its pixels)."""
    import PIL

    return f"{identity}:image:pillow-{PIL.__version__}"


@dataclass
class _Job:
    request: Request
    done: int = 0  # inputs prepared so far
    total: int = 0  # their tokens
    misses: list[int] = field(default_factory=list)  # inputs to compute


class Preparer:
    """The preparing thread.

    Args:
        cache: The vector cache, or None.
        max_request_tokens: Tokens a request may have (after truncation).
        deliver: Called with each request taken in, once, when it is prepared or has
            failed (on the preparing thread, or in :meth:`add` for a small request).
    """

    def __init__(
        self,
        cache: EmbeddingCache | None,
        max_request_tokens: int,
        deliver: Callable[[Request], None],
    ) -> None:
        self._cache = cache
        self._max_tokens = max_request_tokens
        self._deliver = deliver
        self._inbox: queue.SimpleQueue[Request | None] = queue.SimpleQueue()
        self._cancelled: BaseException | None = None
        self._pictures: ThreadPoolExecutor | None = None  # decodes pictures, made on first use
        self._thread = threading.Thread(target=self._run, name="mlx-embed-prepare", daemon=True)
        self._thread.start()

    def add(self, request: Request) -> None:
        """Prepare ``request`` (its spec, loaded model, prefix and identity set): at once on
        this thread when it is small (:data:`INLINE_CHARS`), else on the preparing thread."""
        if _size(request) > INLINE_CHARS:
            self._inbox.put(request)
            return
        job = _Job(request)
        while not self._step(job):
            pass
        self._deliver(request)

    def cancel(self, error: BaseException) -> None:
        """Fail every request taken in, and those that come, with ``error``."""
        self._cancelled = error

    def close(self) -> None:
        """Finish the requests taken in, then stop the thread."""
        self._inbox.put(None)
        self._thread.join()
        if self._pictures is not None:
            self._pictures.shutdown(wait=True)

    def _run(self) -> None:
        jobs: deque[_Job] = deque()
        closing = False
        while jobs or not closing:
            try:
                while True:  # take in what arrived; block only when there is nothing to do
                    item = self._inbox.get(block=not jobs)
                    if item is None:
                        closing = True
                        if not jobs:
                            return
                    else:
                        jobs.append(_Job(item))
                    if self._inbox.empty():
                        break
            except queue.Empty:
                pass
            job = jobs.popleft()
            if self._step(job):
                self._deliver(job.request)
            else:
                jobs.append(job)

    def _step(self, job: _Job) -> bool:
        """Prepare one piece of a request; True when it is prepared or has failed."""
        request = job.request
        if self._cancelled is not None:
            _fail(request.future, self._cancelled)
        if request.stopped:
            if request.future.abandoned:
                _fail(request.future, CancelledError())
            return True
        try:
            if job.done == 0:
                _start(request)
                self._check_prefix(request)
            self._prepare_piece(job)
        except Exception as exc:
            if not isinstance(exc, EmbedError):
                log.exception("unexpected failure preparing a request")
            _fail(request.future, exc)
            return True
        if job.done < len(request.inputs):
            return False
        request.order = sorted(job.misses, key=lambda i: request.token_counts[i])
        request.lengths = [request.token_counts[i] for i in request.order]
        request.remaining = len(request.order)
        return True

    def _check_prefix(self, request: Request) -> None:
        """Refuse a prompt that leaves the model's context no room for the input."""
        if not request.prefix:
            return
        tokenizer = request.loaded.tokenizer
        room = tokenizer.max_length - tokenizer.specials
        count = tokenizer.count_tokens(request.prefix)
        if count >= room:
            field_name = "prompt" if request.options.prompt is not None else "prompt_name"
            raise InvalidRequestError(
                f"The prompt has {count} tokens, which leaves no room for the input in the "
                f"{tokenizer.max_length}-token context of model '{request.spec.name}'",  # type: ignore[union-attr]
                param=field_name,
                code="prompt_too_long",
            )

    def _prepare_pictures(self, job: _Job, start: int, stop: int) -> None:
        """Decode and resize pictures ``start:stop`` of a request on the pool (cache hits
        skipped)."""
        from . import images

        request = job.request
        spec = request.spec
        assert spec is not None and spec.image is not None and request.out is not None
        if self._pictures is None:
            self._pictures = ThreadPoolExecutor(
                max_workers=os.cpu_count() or 2, thread_name_prefix="mlx-embed-pictures"
            )
        positions = range(start, stop)

        def read(i: int) -> Any:
            return images.read_picture(
                request.inputs[i], request.index(i), max_bytes=MAX_IMAGE_BYTES
            )

        # Each file is read once (size checked first): its key and its pixels come from it.
        contents = dict(zip(positions, self._pictures.map(read, positions), strict=True))
        request.keys[start:stop] = list(self._pictures.map(images.content_key, contents.values()))
        misses = list(positions)
        if request.identity is not None and self._cache is not None:
            found = self._cache.lookup(request.identity, request.keys[start:stop], spec.dimension)
            for k, (vector, _) in found.items():
                request.out[start + k] = vector
                request.token_counts[start + k] = spec.image.tokens
            misses = [i for i in positions if i - start not in found]
            request.hits += len(found)

        def load(i: int) -> Any:
            return images.load_pixels(
                contents[i],
                spec.image,  # type: ignore[arg-type]
                index=request.index(i),
                max_pixels=MAX_IMAGE_PIXELS,
                max_bytes=MAX_IMAGE_BYTES,
            )

        for i, pixels in zip(misses, self._pictures.map(load, misses), strict=True):
            request.rows[i] = pixels
            request.token_counts[i] = spec.image.tokens
        job.misses.extend(misses)

    def _prepare_piece(self, job: _Job) -> None:
        """Prepare the next piece of a request, then count its tokens against the limit."""
        request = job.request
        piece = IMAGE_PIECE if request.images else PIECE
        start, stop = job.done, min(job.done + piece, len(request.inputs))
        if request.images:
            self._prepare_pictures(job, start, stop)
        else:
            self._prepare_texts(job, start, stop)
        job.done = stop
        job.total += sum(request.token_counts[start:stop])
        if job.total > self._max_tokens:
            more = " at least" if stop < len(request.inputs) else ""
            raise InvalidRequestError(
                f"This request has{more} {job.total} tokens, more than the maximum of "
                f"{self._max_tokens} tokens per request",
                param="input",
                code="max_tokens_per_request",
            )

    def _prepare_texts(self, job: _Job, start: int, stop: int) -> None:
        """Tokenize inputs ``start:stop`` of a request (cache hits skipped)."""
        request = job.request
        tokenizer = request.loaded.tokenizer
        positions = range(start, stop)
        misses = list(positions)
        if request.tokens:
            rows = tokenizer.wrap_token_ids(
                request.inputs[start:stop],
                truncate=request.truncate,
                positions=[request.index(i) for i in positions],
            )
        elif request.query is not None:
            rows = tokenizer.encode_pairs(
                request.query,
                request.inputs[start:stop],
                truncate=request.truncate,
                positions=list(positions),
            )
        else:
            texts = [request.text(i) for i in positions]
            if request.identity is not None and self._cache is not None:
                found = self._cache.lookup(request.identity, texts, request.out.shape[1])  # type: ignore[union-attr]
                # A hit of the context's full length may have been truncated: without
                # truncation, the length rule decides before the cache.
                hits = {
                    start + k: hit
                    for k, hit in found.items()
                    if request.truncate or hit[1] < tokenizer.max_length
                }
                for i, (vector, tokens) in hits.items():
                    request.out[i], request.token_counts[i] = vector, tokens  # type: ignore[index]
                misses = [i for i in positions if i not in hits]
                request.hits += len(hits)
            rows = tokenizer.encode_texts(
                [texts[i - start] for i in misses],
                truncate=request.truncate,
                positions=[request.index(i) for i in misses],
            )
        for i, row in zip(misses, rows, strict=True):
            request.rows[i] = row
            request.token_counts[i] = len(row)
        job.misses.extend(misses)


def _size(request: Request) -> int:
    """Characters a request's inputs have as the model sees them (ids for token rows; a
    picture request is never small)."""
    if request.images:
        return INLINE_CHARS + 1
    extra = len(request.prefix) + len(request.query or "")
    return sum(len(item) for item in request.inputs) + extra * len(request.inputs)


def _start(request: Request) -> None:
    assert request.spec is not None
    n = len(request.inputs)
    request.rows = [[] for _ in range(n)]
    request.token_counts = [0] * n
    request.keys = [""] * n
    # A rerank request's rows: each pair's score and logit.
    width = 2 if request.query is not None else request.spec.dimension
    request.out = np.empty((n, width), dtype=np.float32)


def _fail(future: Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
