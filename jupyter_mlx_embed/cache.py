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
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import sqlite3
import stat
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .identity import folder_stamp, model_identity
from .modelspec import ModelSpec
from .registry import sha256_file

log = logging.getLogger(__name__)

#: 2: keys from :func:`model_identity` (whole model folder), a checksum per row.
SCHEMA_VERSION = 2
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
# SQLite result codes of "another connection holds the lock" (extended codes share them).
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6

# A rowid table: its leaves hold a 1.5 KB vector in place, where a WITHOUT ROWID table would
# spill each one to an overflow page (more than twice the space).
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS vectors (
        key BLOB PRIMARY KEY, vector BLOB NOT NULL, tokens INTEGER NOT NULL,
        used INTEGER NOT NULL, checksum BLOB NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS vectors_by_use ON vectors (used)",
    """CREATE TABLE IF NOT EXISTS weights (
        path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime INTEGER NOT NULL,
        sha256 TEXT NOT NULL
    )""",
)


# -- model identity --------------------------------------------------------------------------


# -- the cache -------------------------------------------------------------------------------


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


class CacheUnavailableError(Exception):
    """The cache file cannot be used (corrupt, unwritable, another schema, another owner)."""


def _checksum(key: bytes, vector: bytes, tokens: int) -> bytes:
    """The row's checksum. It catches corruption and stray writes; it cannot stop someone who
    can write the file from forging rows (they could recompute any checksum, keyed or not,
    whose key this process can read), which is why the file is the user's alone."""
    digest = hashlib.blake2b(key, digest_size=16)
    digest.update(tokens.to_bytes(8, "little", signed=True))
    digest.update(vector)
    return digest.digest()


def _is_busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` only says that another connection holds the lock."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if isinstance(code, int):
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


def _private_folder(folder: Path) -> None:
    """Create the folder for this user alone (0700). An existing folder is left as it is: it
    may be one the user chose to share; the files in it are made private anyway."""
    if not folder.is_dir():
        folder.mkdir(parents=True, mode=0o700, exist_ok=True)
        folder.chmod(0o700)  # mkdir's mode is filtered by the umask


def _private_file(path: Path) -> None:
    """Create the database file (0600), or make an existing one of ours private (the first
    release left it world-readable). SQLite gives its -wal and -shm files the database's
    mode; older ones are made private too. A file of another user is refused: its rows would
    be vectors anyone could have written."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            raise CacheUnavailableError(f"{path} belongs to another user")
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        try:
            st = side.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and st.st_mode & 0o077:
            side.chmod(0o600)


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
        self._identities: dict[tuple[ModelSpec, str | None], _Identity] = {}
        self._local = threading.local()
        self._writes: queue.SimpleQueue[_Write | _Drop | threading.Event | None] = (
            queue.SimpleQueue()
        )
        try:
            _private_folder(self.path.parent)
            _private_file(self.path)
            self._prepare(self._db())
        except (sqlite3.Error, OSError) as exc:
            raise CacheUnavailableError(f"cannot use {self.path}: {exc}") from exc
        self._writer = threading.Thread(
            target=self._write_loop, name="mlx-embed-cache", daemon=True
        )
        self._writer.start()

    def _db(self) -> sqlite3.Connection:
        """This thread's connection (to the existing file: ``mode=rw`` never creates one,
        which would not be private)."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            uri = f"file:{urllib.parse.quote(str(self.path))}?mode=rw"
            db = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def _prepare(self, db: sqlite3.Connection) -> None:
        """Create the tables, or bring a file of an older schema up to this one.

        An older file's vectors are dropped, not converted: it is only a cache, its keys come
        from the older, weaker identity (which let two models share vectors) and its rows
        have no checksum, so none of them can be trusted; the hashes of weight files stay.
        A newer schema belongs to a newer release that may be using the file right now:
        it is left alone and this process runs without a cache.
        """
        if self._schema(db) == SCHEMA_VERSION:
            return
        with _transaction(db):
            version = self._schema(db)  # again, under the lock: another process may be first
            if version is not None and version > SCHEMA_VERSION:
                raise CacheUnavailableError(
                    f"{self.path} has schema {version}, from a newer release (this one "
                    f"uses {SCHEMA_VERSION})"
                )
            if version != SCHEMA_VERSION:
                db.execute("DROP TABLE IF EXISTS vectors")  # its index goes with it
                for statement in _SCHEMA:
                    db.execute(statement)
                db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
                )

    @staticmethod
    def _schema(db: sqlite3.Connection) -> int | None:
        """The file's schema version (None: a new file); an unreadable one counts as newer."""
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
            return None
        row = db.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
        if row is None:
            return None
        return int(row[0]) if str(row[0]).isdigit() else SCHEMA_VERSION + 1

    def _disable(self, what: str, exc: BaseException) -> None:
        if self.enabled:
            self.enabled = False
            log.warning(
                "embedding cache off for this process: %s failed (%s) [%s]", what, exc, self.path
            )

    # -- model identity ------------------------------------------------------------------

    def identity(self, spec: ModelSpec, weights_sha256: str | None = None) -> str:
        """The cache identity of a model (:func:`model_identity`), with big files' hashes
        remembered in the database, and the result for as long as the folder's files keep
        their sizes and modification times.

        Args:
            spec: The model.
            weights_sha256: The weights' hash when already known (the bundled model's).
        """
        memo = self._identities.get((spec, weights_sha256))
        now = time.monotonic()
        if memo is not None and now - memo.checked < _RECHECK_SECONDS:
            return memo.value
        stamp = folder_stamp(spec.path)
        if memo is None or memo.stamp != stamp:
            value = model_identity(spec, weights_sha256=weights_sha256, file_hash=self._file_hash)
            memo = _Identity(value, stamp, now)
            self._identities[(spec, weights_sha256)] = memo
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
                if not _is_busy(exc):
                    self._disable("reading weight hashes", exc)
        sha = sha256_file(file)
        if self.enabled:
            try:
                self._db().execute(
                    "INSERT OR REPLACE INTO weights VALUES (?, ?, ?, ?)", (*key, sha)
                )
            except sqlite3.Error as exc:
                if not _is_busy(exc):  # locked: remembered another time
                    self._disable("storing a weight hash", exc)
        return sha

    # -- vectors --------------------------------------------------------------------------

    @staticmethod
    def _keys(identity: str, texts: Sequence[str]) -> list[bytes]:
        prefix = identity.encode() + b"\x00"
        return [hashlib.sha256(prefix + t.encode()).digest()[:16] for t in texts]

    def lookup(
        self, identity: str, texts: Sequence[str], dimension: int
    ) -> dict[int, tuple[np.ndarray, int]]:
        """The cached ``(vector, token count)`` of each text found, by position. A row that
        fails its checksum is a miss (and is deleted); so is everything while another process
        holds a lock that reading waits for."""
        if not self.enabled or not texts:
            return {}
        keys = self._keys(identity, texts)
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
                for key, blob, tokens, checksum in rows:
                    vector = _checked(key, blob, tokens, checksum, dimension)
                    if vector is None:
                        bad.append((key, blob, tokens, checksum))
                    else:
                        found[position[key]] = (vector, tokens)
        except sqlite3.Error as exc:
            if not _is_busy(exc):
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
                    if _is_busy(exc):
                        return False
                    self._disable("a write", exc)
            elif isinstance(item, threading.Event):
                item.set()  # a flush: everything before it is written
            pending.popleft()
        return True

    def _write(self, item: _Write | _Drop) -> None:
        db = self._db()
        if isinstance(item, _Drop):  # only the row as read: a good one written since stays
            with _transaction(db):
                db.executemany(
                    "DELETE FROM vectors WHERE key = ? AND vector IS ? AND tokens IS ? "
                    "AND checksum IS ?",
                    item.rows,
                )
            return
        now = time.time_ns()
        keys = self._keys(item.identity, item.texts)
        if item.vectors is None:  # hits: only mark them as used
            with _transaction(db):
                db.executemany(
                    "UPDATE vectors SET used = ? WHERE key = ?", [(now, k) for k in keys]
                )
            return
        rows = []
        for key, vector, tokens in zip(keys, item.vectors, item.tokens, strict=True):
            blob, n = vector.tobytes(), int(tokens)
            rows.append((key, blob, n, now, _checksum(key, blob, n)))
        with _transaction(db):
            db.executemany(
                "INSERT OR REPLACE INTO vectors (key, vector, tokens, used, checksum) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
        self._evict(db)

    def _used_bytes(self, db: sqlite3.Connection) -> int:
        pages, free, size = (
            db.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("page_count", "freelist_count", "page_size")
        )
        return int((pages - free) * size)

    def _evict(self, db: sqlite3.Connection) -> None:
        """Drop the least recently used rows until the file is back under its limit (with
        some room, so that eviction does not run on every write)."""
        used = self._used_bytes(db)
        if used <= self.limit_bytes:
            return
        count = db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
        target = self.limit_bytes * (1 - _EVICT_FRACTION)
        drop = min(count, max(1, int(count * (used - target) / used) + 1))
        with _transaction(db):
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


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``: the write lock is taken up front, so a locked
    database fails here, before anything is written; an error rolls back."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _checked(
    key: bytes, blob: Any, tokens: Any, checksum: Any, dimension: int
) -> np.ndarray | None:
    """The row's vector when the row is intact and fits the model, else None."""
    if (
        not isinstance(blob, bytes)
        or len(blob) != 4 * dimension
        or not isinstance(tokens, int)
        or checksum != _checksum(key, blob, tokens)
    ):
        return None
    vector = np.frombuffer(blob, dtype="<f4")
    return vector if np.isfinite(vector).all() else None
