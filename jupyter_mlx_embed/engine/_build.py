"""Compiling a helper library once into the engine's cache folder (engine-private, no MLX).

The CBLAS shim (:mod:`.blas`) and the native kernels (:mod:`.native`) are both built the same
way: a key hashed from everything the result depends on names the file, so a changed input
gives a new file and an unchanged one is reused; the build writes to a temporary path beside
that file, renamed into place only when it succeeded (``fileio.atomic_path``), so concurrent
builders and interrupted builds never expose a partial file; and a missing compiler or a
failing step is logged and answered with None, never raised. The files live in the ``builds``
sub-folder of the cache folder (``EngineConfig.cache_folder()``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from ..config import EngineConfig
from ..fileio import atomic_path

__all__ = [
    "BuildError",
    "build_folder",
    "build_once",
    "content_key",
    "find_compiler",
    "run_step",
]

logger = logging.getLogger(__name__)

#: The sub-folder of :meth:`EngineConfig.cache_folder` that compiled files are kept in.
BUILDS = "builds"

# One build at a time in a process: two threads asking for the same file build it once.
# Other processes may build it at the same time; each installs a whole file by rename.
_lock = threading.Lock()


class BuildError(Exception):
    """A build step failed; the message says which command and how."""


def build_folder(config: EngineConfig | None = None) -> Path:
    """Where the engine keeps what it compiles: the ``builds`` sub-folder of the cache folder.

    Args:
        config: The engine's settings; None reads them from the environment (an invalid
            variable there is the worker's to report: the defaults are used instead).
    """
    if config is None:
        try:
            config = EngineConfig.from_env()
        except ValueError as exc:
            logger.debug("engine settings from the environment unusable (%s); defaults", exc)
            config = EngineConfig()
    return config.cache_folder() / BUILDS


def content_key(*parts: bytes | str) -> str:
    """16 hex digits of SHA-256 over ``parts``: the name of a build of exactly these inputs
    (sources, library paths, versions), so that any change gives a new file name."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update((part.encode() if isinstance(part, str) else part) + b"\0")
    return digest.hexdigest()[:16]


def find_compiler(variable: str, names: Sequence[str]) -> list[str] | None:
    """The compiler command: ``$variable`` (which may carry flags), else the first of
    ``names`` on PATH; None when there is none."""
    configured = os.environ.get(variable, "").strip()
    if configured:
        try:
            return shlex.split(configured)
        except ValueError as exc:  # unbalanced quotes: nothing that could run
            logger.warning("$%s is not a command line (%s): %r", variable, exc, configured)
            return None
    found = next((path for name in names if (path := shutil.which(name))), None)
    return [found] if found else None


def run_step(command: Sequence[str], timeout: float) -> None:
    """Run one build command.

    Raises:
        BuildError: It could not start, ran past ``timeout`` seconds, or failed (the message
            holds the command line and the last 20 lines of its output).
    """
    line = shlex.join(command)
    try:
        proc = subprocess.run(
            list(command), capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise BuildError(f"{line}: {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise BuildError(f"{line}:\n{tail}")


def _private_folders(folder: Path) -> None:
    """Create ``folder`` and its missing parents for this user alone (0700): what is built
    there is loaded as code, and the cache folder above it holds the vector cache, which
    keeps a folder it finds as it is. Existing folders are left as they are."""
    missing: list[Path] = []
    while not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir(mode=0o700, exist_ok=True)


def build_once(
    target: Path, build: Callable[[Path], None], *, what: str, force: bool = False
) -> Path | None:
    """``target``, built first unless it is already there (or ``force``).

    Args:
        target: The file to produce, named by a :func:`content_key` of its inputs.
        build: Writes the file to the path it is given (a temporary one beside ``target``,
            renamed to ``target`` when ``build`` returns); raises :class:`BuildError` (or
            ``OSError``) when it cannot.
        what: What is built, for the log.
        force: Build even if ``target`` exists (e.g. it failed to load).

    Returns:
        ``target``, or None when it could not be built (the reason is logged as a warning).
    """
    with _lock:
        if target.is_file() and not force:
            return target
        try:
            _private_folders(target.parent)
        except OSError as exc:
            logger.warning("cannot build the %s into %s: %s", what, target.parent, exc)
            return None
        try:
            with atomic_path(target) as staged:
                build(staged)
        except (BuildError, OSError) as exc:
            logger.warning("building the %s failed: %s", what, exc)
            return None
        logger.info("built the %s: %s", what, target)
        return target
