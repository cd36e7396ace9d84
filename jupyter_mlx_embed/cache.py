"""A persistent, content-addressed cache of vectors, shared by every process (pure: no MLX).

Key: the model's identity (a hash of its weights, pooling, maximum length and type) and the
exact text; value: the full float32 vector and the text's token count. It is one SQLite file in
WAL mode, so several processes (a Jupyter server and its kernels, Ray actors) read and write it
at once. SQLite is used directly rather than through diskcache because lookups are batched: one
query answers a whole request, where a key-value API would take a round trip per text.

Size is bounded (least recently used rows are evicted). Every failure (a corrupt or unwritable
file, a locked database) logs one warning and turns the cache off for this process: the cache
can make a request faster, never fail it or change its vectors.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .modelspec import ModelSpec

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
#: Rows looked up or written per SQL statement (SQLite's default limit is 32,766 variables).
_STATEMENT_ROWS = 500
#: Room made below the size limit when it is exceeded (least recently used rows first).
_EVICT_FRACTION = 0.1

# A rowid table: its leaves hold a 1.5 KB vector in place, where a WITHOUT ROWID table would
# spill each one to an overflow page (more than twice the space).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS vectors (
    key BLOB PRIMARY KEY, vector BLOB NOT NULL, tokens INTEGER NOT NULL, used INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS vectors_by_use ON vectors (used);
CREATE TABLE IF NOT EXISTS weights (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime INTEGER NOT NULL, sha256 TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class _Write:
    """Vectors to store, or (``vectors`` None) hits whose use time to refresh."""

    identity: str
    texts: list[str]
    vectors: np.ndarray | None
    tokens: Sequence[int]


class CacheUnavailableError(Exception):
    """The cache file cannot be used (corrupt, unwritable, another schema)."""


class EmbeddingCache:
    """Vectors by (model identity, text), in ``directory/vectors.sqlite``.

    Lookups run on the calling thread (the worker's: one indexed query per request); writes
    go to a background thread, so no forward pass waits for the disk.

    Args:
        directory: Where the database lives (created when missing).
        size_mb: Upper bound on the file's used size in MiB.

    Raises:
        CacheUnavailableError: The database cannot be opened or created.
    """

    def __init__(self, directory: Path, size_mb: int) -> None:
        self.path = Path(directory).expanduser() / "vectors.sqlite"
        self.limit_bytes = size_mb * 2**20
        self.enabled = True
        self._identities: dict[Path, str] = {}
        self._local = threading.local()
        self._writes: queue.SimpleQueue[_Write | threading.Event | None] = queue.SimpleQueue()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = self._db()
            with db:
                db.executescript(_SCHEMA)
                row = db.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
                if row is None:
                    db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                elif row[0] != str(SCHEMA_VERSION):
                    raise CacheUnavailableError(f"{self.path} has schema {row[0]}")
        except (sqlite3.Error, OSError) as exc:
            raise CacheUnavailableError(f"cannot use {self.path}: {exc}") from exc
        self._writer = threading.Thread(
            target=self._write_loop, name="mlx-embed-cache", daemon=True
        )
        self._writer.start()

    def _db(self) -> sqlite3.Connection:
        """This thread's connection."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def _disable(self, what: str, exc: BaseException) -> None:
        if self.enabled:
            self.enabled = False
            log.warning(
                "embedding cache off for this process: %s failed (%s) [%s]", what, exc, self.path
            )

    # -- model identity ------------------------------------------------------------------

    def identity(self, spec: ModelSpec, weights_sha256: str | None = None) -> str:
        """The cache identity of a model: its weights' hash and how it pools and truncates.

        Args:
            spec: The model.
            weights_sha256: The weights' hash when already known (the bundled model's).
        """
        known = self._identities.get(spec.path)
        if known is not None:
            return known
        sha = weights_sha256 or self._weights_hash(spec.path)
        identity = f"{sha}|{spec.model_type}|{spec.pooling}|{spec.max_seq_length}"
        self._identities[spec.path] = identity
        return identity

    def _weights_hash(self, folder: Path) -> str:
        """SHA-256 over the weight files, remembered in the database by path, size and
        modification time (so each file is read once, not once per process)."""
        digest = hashlib.sha256()
        for file in sorted(folder.glob("model*.safetensors")) + sorted(
            folder.glob("*/model*.safetensors")
        ):
            digest.update(self._file_hash(file).encode())
        return digest.hexdigest()

    def _file_hash(self, file: Path) -> str:
        stat = file.stat()
        key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
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
                self._disable("reading weight hashes", exc)
        digest = hashlib.sha256()
        with file.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        sha = digest.hexdigest()
        if self.enabled:
            try:
                self._db().execute(
                    "INSERT OR REPLACE INTO weights VALUES (?, ?, ?, ?)", (*key, sha)
                )
            except sqlite3.Error as exc:
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
        """The cached ``(vector, token count)`` of each text found, by position."""
        if not self.enabled or not texts:
            return {}
        keys = self._keys(identity, texts)
        position = {key: i for i, key in enumerate(keys)}
        found: dict[int, tuple[np.ndarray, int]] = {}
        try:
            db = self._db()
            for start in range(0, len(keys), _STATEMENT_ROWS):
                part = keys[start : start + _STATEMENT_ROWS]
                marks = ",".join("?" * len(part))
                rows = db.execute(
                    f"SELECT key, vector, tokens FROM vectors WHERE key IN ({marks})", part
                ).fetchall()
                for key, blob, tokens in rows:
                    vector = np.frombuffer(blob, dtype="<f4")
                    if vector.shape == (dimension,) and np.isfinite(vector).all():
                        found[position[key]] = (vector, int(tokens))
        except sqlite3.Error as exc:
            self._disable("a lookup", exc)
            return {}
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
        """Wait until the writes queued so far are on disk."""
        done = threading.Event()
        self._writes.put(done)
        done.wait(timeout)

    def close(self) -> None:
        """Write what is queued and stop the writer thread."""
        self._writes.put(None)
        self._writer.join(30)

    def _write_loop(self) -> None:
        while True:
            item = self._writes.get()
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()  # a flush: everything before it is written
                continue
            if self.enabled:
                try:
                    self._write(item)
                except sqlite3.Error as exc:
                    self._disable("a write", exc)

    def _write(self, item: _Write) -> None:
        db = self._db()
        now = time.time_ns()
        keys = self._keys(item.identity, item.texts)
        with db:
            if item.vectors is None:  # hits: only mark them as used
                db.executemany(
                    "UPDATE vectors SET used = ? WHERE key = ?", [(now, k) for k in keys]
                )
                return
            rows = zip(keys, item.vectors, item.tokens, strict=True)
            db.executemany(
                "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?)",
                [(k, v.tobytes(), n, now) for k, v, n in rows],
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
        with db:
            db.execute(
                "DELETE FROM vectors WHERE key IN (SELECT key FROM vectors ORDER BY used LIMIT ?)",
                (drop,),
            )
