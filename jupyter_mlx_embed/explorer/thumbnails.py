"""Thumbnails of an explorer's pictures, made on demand and kept (notebook layer).

The front end asks for the thumbnails of the points it shows (a hovered point, the top-k table,
the neighbours, the points in view at the closest zooms), never all at once. Each is a small
JPEG made once: kept in memory for the explorer, and stored in ``thumbnails/`` beside the
vector cache under a hash of the picture file's content, so another explorer (or kernel) of
the same photos reads it back instead of decoding the photo again. Pictures with no file are
held as thumbnails already (``Embeddings.images``). The work runs on a small pool, off the
kernel's thread.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..config import EngineConfig
from ..errors import EmbedError
from ..fileio import atomic_path
from ..images import thumbnail

log = logging.getLogger(__name__)

#: Longest side of an explorer's thumbnails, pixels (drawn at up to half that on the map).
SIDE = 96
#: Thumbnails one request may ask for.
LIMIT = 200
#: Thumbnails an explorer keeps in memory (about 4 KB each).
KEPT = 4096
_SUBFOLDER = "thumbnails"
_VERSION = 1  # bump when the thumbnails' size or encoding changes


class Thumbnails:
    """The thumbnails of one explorer's pictures.

    Args:
        images: Each row's picture: a file path, or JPEG thumbnail bytes.
        folder: Where thumbnails are stored by content hash; by default ``thumbnails/``
            beside the vector cache, or nowhere when the cache is off.
    """

    def __init__(self, images: Sequence[str | bytes], folder: Path | None = None) -> None:
        self._images = list(images)
        self._folder = folder if folder is not None else _default_folder()
        self._kept: OrderedDict[int, bytes] = OrderedDict()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="jme-thumbnails")

    def request(
        self, indices: Sequence[int], answer: Callable[[list[int], list[bytes]], None]
    ) -> None:
        """Make the thumbnails of ``indices`` (the first :data:`LIMIT`) on the pool, then call
        ``answer(indices, jpegs)`` there (b"" for an index out of range or a picture that
        cannot be read)."""
        wanted = list(indices[:LIMIT])

        def work() -> None:
            try:
                answer(wanted, [self.get(i) for i in wanted])
            except Exception:  # a pool thread has nobody to raise to
                log.exception("thumbnails failed")

        self._pool.submit(work)

    def get(self, index: int) -> bytes:
        """Row ``index``'s thumbnail (b"" when there is no such row or its picture cannot be
        read)."""
        if not 0 <= index < len(self._images):
            return b""
        kept = self._kept.get(index)
        if kept is not None:
            self._kept.move_to_end(index)
            return kept
        jpeg = self._make(index)
        self._kept[index] = jpeg
        while len(self._kept) > KEPT:
            self._kept.popitem(last=False)
        return jpeg

    def all(self) -> list[bytes]:
        """Every row's thumbnail (b"" for a picture that cannot be read), made on the pool
        and not kept in memory (an exported page carries them all)."""
        return list(self._pool.map(self._make, range(len(self._images))))

    def _make(self, index: int) -> bytes:
        source = self._images[index]
        return source if isinstance(source, bytes) else self._of_file(source)

    def _of_file(self, path: str) -> bytes:
        try:
            content = Path(path).read_bytes()
        except OSError:
            return b""
        stored = None
        if self._folder is not None:
            digest = hashlib.blake2b(content, digest_size=20).hexdigest()
            stored = self._folder / digest[:2] / f"{digest}-{SIDE}-v{_VERSION}.jpg"
            try:
                return stored.read_bytes()
            except OSError:
                pass
        try:
            jpeg = thumbnail(content, SIDE)
        except (EmbedError, OSError, ValueError):
            return b""
        if stored is not None:
            try:
                stored.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(stored) as temporary:
                    temporary.write_bytes(jpeg)
            except OSError as exc:  # a full or read-only disk: thumbnails are still shown
                log.debug("thumbnail not stored: %s", exc)
        return jpeg

    def close(self) -> None:
        """Stop the pool (what it is making is dropped)."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def _default_folder() -> Path | None:
    try:
        config = EngineConfig.from_env()
    except ValueError:
        return None
    return config.cache_folder() / _SUBFOLDER if config.cache else None
