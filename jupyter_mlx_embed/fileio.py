"""Writing files so that no reader ever sees half of one (pure: no MLX).

Saved embeddings, stored maps, batch-job parts and manifests, and the compiled BLAS shim and
native kernels are all written through :func:`atomic_path`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A fresh temporary path beside ``target`` to write to: when the block ends without an
    error, the file is flushed to disk and renamed over ``target`` (and the rename made
    durable); otherwise it is removed.

    The temporary name is unique (concurrent writers never share one) and keeps ``target``'s
    suffix, so writers that add a suffix to a bare name (``numpy.save``) leave it as it is.
    """
    target = Path(target)
    temporary = target.with_name(f".{target.stem}.{secrets.token_hex(8)}.tmp{target.suffix}")
    try:
        yield temporary
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; Windows cannot open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
