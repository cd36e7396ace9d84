"""The vector cache's SQLite file (pure: no MLX): its schema and upgrades, row keys and
checksums, who may read it, connections, transactions and lock errors.

:mod:`.cache` holds the policy over it (batched lookups, the background writer, eviction);
everything that fixes what is on disk, and so must agree between every process and release
sharing the file, is here.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import stat
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: 2: keys from :func:`.identity.model_identity` (whole model folder), a checksum per row.
SCHEMA_VERSION = 2
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


class CacheUnavailableError(Exception):
    """The cache file cannot be used (corrupt, unwritable, another schema, another owner)."""


# -- rows ------------------------------------------------------------------------------------


def row_keys(identity: str, texts: Sequence[str]) -> list[bytes]:
    """The ``vectors`` table's key of each text under a model's identity."""
    prefix = identity.encode() + b"\x00"
    return [hashlib.sha256(prefix + t.encode()).digest()[:16] for t in texts]


def checksum(key: bytes, vector: bytes, tokens: int) -> bytes:
    """The row's checksum. It catches corruption and stray writes; it cannot stop someone who
    can write the file from forging rows (they could recompute any checksum, keyed or not,
    whose key this process can read), which is why the file is the user's alone."""
    digest = hashlib.blake2b(key, digest_size=16)
    digest.update(tokens.to_bytes(8, "little", signed=True))
    digest.update(vector)
    return digest.digest()


def checked_vector(
    key: bytes, blob: Any, tokens: Any, row_checksum: Any, dimension: int
) -> np.ndarray | None:
    """The row's vector when the row is intact and fits the model, else None."""
    if (
        not isinstance(blob, bytes)
        or len(blob) != 4 * dimension
        or not isinstance(tokens, int)
        or row_checksum != checksum(key, blob, tokens)
    ):
        return None
    vector = np.frombuffer(blob, dtype="<f4")
    return vector if np.isfinite(vector).all() else None


# -- the file --------------------------------------------------------------------------------


def private_folder(folder: Path) -> None:
    """Create the folder for this user alone (0700). An existing folder is left as it is: it
    may be one the user chose to share; the files in it are made private anyway."""
    if not folder.is_dir():
        folder.mkdir(parents=True, mode=0o700, exist_ok=True)
        folder.chmod(0o700)  # mkdir's mode is filtered by the umask


def private_file(path: Path) -> None:
    """Create the database file (0600), or make an existing one of ours private (the first
    release left it world-readable). SQLite gives its -wal and -shm files the database's
    mode; older ones are made private too. A file of another user is refused: its rows would
    be vectors anyone could have written.

    Raises:
        CacheUnavailableError: The file belongs to another user.
    """
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


def connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """A connection to the existing file (``mode=rw`` never creates one, which would not be
    private), in WAL mode, in autocommit (transactions are :func:`transaction`'s)."""
    uri = f"file:{urllib.parse.quote(str(path))}?mode=rw"
    db = sqlite3.connect(uri, uri=True, timeout=busy_timeout, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def prepare(db: sqlite3.Connection, path: Path) -> None:
    """Create the tables, or bring a file of an older schema up to this one.

    An older file's vectors are dropped, not converted: it is only a cache, its keys come
    from the older, weaker identity (which let two models share vectors) and its rows
    have no checksum, so none of them can be trusted; the hashes of weight files stay.
    A newer schema belongs to a newer release that may be using the file right now:
    it is left alone and this process runs without a cache.

    Raises:
        CacheUnavailableError: The file has a newer schema (``path`` names it).
    """
    if _schema(db) == SCHEMA_VERSION:
        return
    with transaction(db):
        version = _schema(db)  # again, under the lock: another process may be first
        if version is not None and version > SCHEMA_VERSION:
            raise CacheUnavailableError(
                f"{path} has schema {version}, from a newer release (this one "
                f"uses {SCHEMA_VERSION})"
            )
        if version != SCHEMA_VERSION:
            db.execute("DROP TABLE IF EXISTS vectors")  # its index goes with it
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))


def _schema(db: sqlite3.Connection) -> int | None:
    """The file's schema version (None: a new file); an unreadable one counts as newer."""
    if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
        return None
    row = db.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
    if row is None:
        return None
    return int(row[0]) if str(row[0]).isdigit() else SCHEMA_VERSION + 1


def used_bytes(db: sqlite3.Connection) -> int:
    """Bytes of the file's pages in use (free pages left by deletes not counted)."""
    pages, free, size = (
        db.execute(f"PRAGMA {name}").fetchone()[0]
        for name in ("page_count", "freelist_count", "page_size")
    )
    return int((pages - free) * size)


# -- locks and transactions ------------------------------------------------------------------


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` only says that another connection holds the lock."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if isinstance(code, int):
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
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
