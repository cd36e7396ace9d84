"""A persistent, content-addressed cache of vectors, shared by every process (pure: no MLX).

Key: the model's identity (:func:`model_identity`: a hash of everything in its folder that
changes a vector) and the exact text; value: the full float32 vector and the text's token
count, with a checksum. It is one SQLite file in WAL mode, so several processes (a Jupyter
server and its kernels, Ray actors) read and write it at once. SQLite is used directly rather
than through diskcache because lookups are batched: one query answers a whole request, where a
key-value API would take a round trip per text.

Size is bounded (least recently used rows are evicted). The folder (when created here) and the
files are the user's alone. A row whose checksum does not match is dropped and recomputed. A
lock held by another process delays writes (they stay queued, within a bound) and turns a lookup
into a miss; only a broken file (corrupt, unwritable, of a newer schema) logs one warning and
turns the cache off for this process: the cache can make a request faster, never fail it or
change its vectors.

The file itself (schema and upgrades, row keys and checksums, permissions, transactions) is
:mod:`._cachefile`'s; this module is the policy over it: batched lookups, the background
writer and its bound while another process holds the lock, eviction, remembered identities.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._cachefile import (
    SCHEMA_VERSION,
    CacheUnavailableError,
    checked_vector,
    checksum,
    connect,
    is_busy,
    prepare,
    private_file,
    private_folder,
    row_keys,
    transaction,
    used_bytes,
)
from .identity import folder_stamp, model_identity
from .modelspec import ModelSpec
from .registry import sha256_file

__all__ = ["BUSY_TIMEOUT", "SCHEMA_VERSION", "CacheUnavailableError", "EmbeddingCache"]

log = logging.getLogger(__name__)

#: Seconds a statement waits for another process's lock before it gives up for this time (a
#: lookup then misses, a write is tried again later): short, so that neither a request nor
#: closing at exit ever waits long for another process.
BUSY_TIMEOUT = 0.25
#: Rows looked up or written per SQL statement (SQLite's default limit is 32,766 variables).
_STATEMENT_ROWS = 500
#: Room made below the size limit when it is exceeded (least recently used rows first).
_EVICT_FRACTION = 0.1
#: Bytes of writes kept queued while another process holds the lock (the oldest go first).
_MAX_QUEUED_BYTES = 64 * 2**20
#: Seconds between tries of a write that found the database locked.
_RETRY_SECONDS = 0.5
#: Seconds a model's identity is trusted before its files' sizes and times are looked at again.
_RECHECK_SECONDS = 1.0


@dataclass(frozen=True)
class _Write:
    """Vectors to store, or (``vectors`` None) hits whose use time to refresh."""

    identity: str
    texts: list[str]
    vectors: np.ndarray | None
    tokens: Sequence[int]

    @property
    def size(self) -> int:
        return (0 if self.vectors is None else self.vectors.nbytes) + 16 * len(self.texts)


@dataclass(frozen=True)
class _Drop:
    """Rows that failed their check, to delete (only as they were read)."""

    rows: list[tuple[bytes, Any, Any, Any]]

    @property
    def size(self) -> int:
        return sum(len(r[1]) if isinstance(r[1], bytes) else 16 for r in self.rows)


@dataclass
class _Identity:
    value: str
    stamp: tuple[tuple[str, int, int], ...]
    checked: float


class EmbeddingCache:
    """Vectors by (model identity, text), in ``directory/vectors.sqlite``.

    Lookups run on the calling thread (the worker's: one indexed query per request); writes
    go to a background thread, so no forward pass waits for the disk.

    Args:
        directory: Where the database lives (created, for this user alone, when missing).
        size_mb: Upper bound on the file's used size in MiB.
        busy_timeout: Seconds a statement waits for another process's lock (default
            :data:`BUSY_TIMEOUT`).

    Raises:
        CacheUnavailableError: The database cannot be opened or created.
    """

    def __init__(self, directory: Path, size_mb: int, *, busy_timeout: float | None = None):
        self.path = Path(directory).expanduser() / "vectors.sqlite"
        self.limit_bytes = size_mb * 2**20
        self.busy_timeout = BUSY_TIMEOUT if busy_timeout is None else busy_timeout
        self.enabled = True
        self._identities: dict[tuple[ModelSpec, str | None, str], _Identity] = {}
        self._local = threading.local()
        self._writes: queue.SimpleQueue[_Write | _Drop | threading.Event | None] = (
            queue.SimpleQueue()
        )
        try:
            private_folder(self.path.parent)
            private_file(self.path)
            prepare(self._db(), self.path)
        except (sqlite3.Error, OSError) as exc:
            raise CacheUnavailableError(f"cannot use {self.path}: {exc}") from exc
        self._writer = threading.Thread(
            target=self._write_loop, name="mlx-embed-cache", daemon=True
        )
        self._writer.start()

    def _db(self) -> sqlite3.Connection:
        """This thread's connection (:func:`._cachefile.connect`)."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = connect(self.path, self.busy_timeout)
        return db

    def _disable(self, what: str, exc: BaseException) -> None:
        if self.enabled:
            self.enabled = False
            log.warning(
                "embedding cache off for this process: %s failed (%s) [%s]", what, exc, self.path
            )

    # -- model identity ------------------------------------------------------------------

    def identity(
        self, spec: ModelSpec, weights_sha256: str | None = None, precision: str = "fp32"
    ) -> str:
        """The cache identity of a model (:func:`model_identity`), with big files' hashes
        remembered in the database, and the result for as long as the folder's files keep
        their sizes and modification times.

        Args:
            spec: The model.
            weights_sha256: The weights' hash when already known (the bundled model's).
            precision: The engine's ``precision`` setting.
        """
        memo = self._identities.get((spec, weights_sha256, precision))
        now = time.monotonic()
        if memo is not None and now - memo.checked < _RECHECK_SECONDS:
            return memo.value
        stamp = folder_stamp(spec.path)
        if memo is None or memo.stamp != stamp:
            value = model_identity(
                spec,
                weights_sha256=weights_sha256,
                file_hash=self._file_hash,
                precision=precision,
            )
            memo = _Identity(value, stamp, now)
            self._identities[(spec, weights_sha256, precision)] = memo
        memo.checked = now
        return memo.value

    def _file_hash(self, file: Path) -> str:
        """SHA-256 of a file, remembered in the database by path, size and modification time
        (so each file is read once, not once per process)."""
        st = file.stat()
        key = (str(file.resolve()), st.st_size, st.st_mtime_ns)
        if self.enabled:
            try:
                row = (
                    self._db()
                    .execute(
                        "SELECT sha256 FROM weights WHERE path = ? AND size = ? AND mtime = ?", key
                    )
                    .fetchone()
                )
                if row is not None:
                    return str(row[0])
            except sqlite3.Error as exc:
                if not is_busy(exc):
                    self._disable("reading weight hashes", exc)
        sha = sha256_file(file)
        if self.enabled:
            try:
                self._db().execute(
                    "INSERT OR REPLACE INTO weights VALUES (?, ?, ?, ?)", (*key, sha)
                )
            except sqlite3.Error as exc:
                if not is_busy(exc):  # locked: remembered another time
                    self._disable("storing a weight hash", exc)
        return sha

    # -- vectors --------------------------------------------------------------------------

    def lookup(
        self, identity: str, texts: Sequence[str], dimension: int
    ) -> dict[int, tuple[np.ndarray, int]]:
        """The cached ``(vector, token count)`` of each text found, by position. A row that
        fails its checksum is a miss (and is deleted); so is everything while another process
        holds a lock that reading waits for."""
        if not self.enabled or not texts:
            return {}
        keys = row_keys(identity, texts)
        position = {key: i for i, key in enumerate(keys)}
        found: dict[int, tuple[np.ndarray, int]] = {}
        bad: list[tuple[bytes, Any, Any, Any]] = []
        try:
            db = self._db()
            for start in range(0, len(keys), _STATEMENT_ROWS):
                part = keys[start : start + _STATEMENT_ROWS]
                marks = ",".join("?" * len(part))
                rows = db.execute(
                    f"SELECT key, vector, tokens, checksum FROM vectors WHERE key IN ({marks})",
                    part,
                ).fetchall()
                for key, blob, tokens, stored in rows:
                    vector = checked_vector(key, blob, tokens, stored, dimension)
                    if vector is None:
                        bad.append((key, blob, tokens, stored))
                    else:
                        found[position[key]] = (vector, tokens)
        except sqlite3.Error as exc:
            if not is_busy(exc):
                self._disable("a lookup", exc)
            return {}
        if bad:
            log.warning(
                "embedding cache: %d rows failed their checksum; dropped and recomputed [%s]",
                len(bad),
                self.path,
            )
            self._writes.put(_Drop(bad))
        if found:  # mark them as used, for the eviction order
            self._writes.put(_Write(identity, [texts[i] for i in found], None, []))
        return found

    def store(
        self, identity: str, texts: Sequence[str], vectors: np.ndarray, tokens: Sequence[int]
    ) -> None:
        """Queue vectors for writing (in the background)."""
        if self.enabled and len(texts):
            self._writes.put(_Write(identity, list(texts), np.asarray(vectors, "<f4"), tokens))

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until the writes queued so far are on disk (or dropped: the cache turned off,
        or too many waited for another process's lock), at most ``timeout`` seconds."""
        done = threading.Event()
        self._writes.put(done)
        done.wait(timeout)

    def close(self) -> None:
        """Write what is queued (one try for what waits for a lock) and stop the writer."""
        self._writes.put(None)
        self._writer.join(30)

    def _write_loop(self) -> None:
        """Write items in order; while another process holds the lock, keep them (at most
        :data:`_MAX_QUEUED_BYTES`, the oldest dropped first) and try again."""
        pending: deque[_Write | _Drop | threading.Event] = deque()
        waiting = False  # the last try found the database locked
        while True:
            try:
                item = self._writes.get(timeout=_RETRY_SECONDS if waiting else None)
            except queue.Empty:
                item = _RETRY
            closing = item is None
            for more in _chain(item, self._writes):
                if more is None:
                    closing = True
                elif more is not _RETRY:
                    pending.append(more)
            _bound(pending)
            waiting = not self._drain(pending)
            if closing:
                for left in pending:
                    if isinstance(left, threading.Event):
                        left.set()
                return

    def _drain(self, pending: deque[_Write | _Drop | threading.Event]) -> bool:
        """Write the pending items in order; False when one found the database locked."""
        while pending:
            item = pending[0]
            if isinstance(item, _Write | _Drop) and self.enabled:
                try:
                    self._write(item)
                except sqlite3.Error as exc:
                    if is_busy(exc):
                        return False
                    self._disable("a write", exc)
            elif isinstance(item, threading.Event):
                item.set()  # a flush: everything before it is written
            pending.popleft()
        return True

    def _write(self, item: _Write | _Drop) -> None:
        db = self._db()
        if isinstance(item, _Drop):  # only the row as read: a good one written since stays
            with transaction(db):
                db.executemany(
                    "DELETE FROM vectors WHERE key = ? AND vector IS ? AND tokens IS ? "
                    "AND checksum IS ?",
                    item.rows,
                )
            return
        now = time.time_ns()
        keys = row_keys(item.identity, item.texts)
        if item.vectors is None:  # hits: only mark them as used
            with transaction(db):
                db.executemany(
                    "UPDATE vectors SET used = ? WHERE key = ?", [(now, k) for k in keys]
                )
            return
        rows = []
        for key, vector, tokens in zip(keys, item.vectors, item.tokens, strict=True):
            blob, n = vector.tobytes(), int(tokens)
            rows.append((key, blob, n, now, checksum(key, blob, n)))
        with transaction(db):
            db.executemany(
                "INSERT OR REPLACE INTO vectors (key, vector, tokens, used, checksum) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
        self._evict(db)

    def _evict(self, db: sqlite3.Connection) -> None:
        """Drop the least recently used rows until the file is back under its limit (with
        some room, so that eviction does not run on every write)."""
        used = used_bytes(db)
        if used <= self.limit_bytes:
            return
        count = db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
        target = self.limit_bytes * (1 - _EVICT_FRACTION)
        drop = min(count, max(1, int(count * (used - target) / used) + 1))
        with transaction(db):
            db.execute(
                "DELETE FROM vectors WHERE key IN (SELECT key FROM vectors ORDER BY used LIMIT ?)",
                (drop,),
            )


_RETRY: Any = object()  # the writer woke up to try again, with nothing new


def _chain(first: Any, rest: queue.SimpleQueue[Any]) -> Iterator[Any]:
    """``first``, then whatever else is queued now (without waiting)."""
    yield first
    while True:
        try:
            yield rest.get_nowait()
        except queue.Empty:
            return


def _bound(pending: deque[_Write | _Drop | threading.Event]) -> None:
    """Drop the oldest writes beyond :data:`_MAX_QUEUED_BYTES` (flushes stay, in order)."""
    size = sum(item.size for item in pending if not isinstance(item, threading.Event))
    if size <= _MAX_QUEUED_BYTES:
        return
    kept: list[_Write | _Drop | threading.Event] = []
    dropped = 0
    for item in pending:
        if size > _MAX_QUEUED_BYTES and not isinstance(item, threading.Event):
            size -= item.size
            dropped += 1
        else:
            kept.append(item)
    pending.clear()
    pending.extend(kept)
    log.debug("embedding cache: the database stays locked; %d queued writes dropped", dropped)
