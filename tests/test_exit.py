"""A script that embeds ends with its own status however it ends, never with an abort (#22).

Each case runs a real script as a child process, several copies at once: some with the vector
cache's write lock held by another connection (as when other processes write the shared
cache), which keeps the worker's last cache writes waiting past the moment the script ends.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import NamedTuple

import pytest

from jupyter_mlx_embed.cache import EmbeddingCache
from jupyter_mlx_embed.engine._build import BUILDS, build_folder

SCRIPT = """
import signal, sys
# Default handlers even where the test runs with signals ignored (a background job).
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
import jupyter_mlx_embed as jme

end = sys.argv[1]
jme.embed("warm up")
print("embedding", flush=True)
calls = 10**9 if end in ("sigint", "sigterm") else 12
for i in range(calls):  # requests of varied sizes and lengths, each one cache writes
    jme.embed([f"text {i} {k} " + "word " * (3 * k % 40) for k in range(1 + 7 * (i % 5))])
if end == "exit 3":
    raise SystemExit(3)
if end == "exception":
    raise RuntimeError("boom")
"""

#: How each script ends, the status it must give, and what its stderr must hold.
ENDS = {
    "normal": (0, ""),
    "exit 3": (3, ""),
    "exception": (1, "RuntimeError: boom"),
    "sigint": (-signal.SIGINT, "KeyboardInterrupt"),
    "sigterm": (-signal.SIGTERM, ""),
}
LOCKED, FREE = 2, 1  # copies per case with the cache locked, and with a cache of their own
STAGGER = 2.5  # seconds between the starts of two cases' copies


class Outcome(NamedTuple):
    stderr: str
    status: int


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, list[Outcome]]]:
    """Every case's scripts, run at once: their exit statuses and stderr, by case."""
    folder = tmp_path_factory.mktemp("exit")
    script = folder / "embed_loop.py"
    script.write_text(SCRIPT)
    locked = folder / "locked-cache"
    EmbeddingCache(locked, 64).close()  # the database, made while nobody holds its lock
    holder = sqlite3.connect(locked / "vectors.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # as another process writing the shared cache would
    caches = [locked] * LOCKED + [folder / f"cache-{i}" for i in range(FREE)]
    # The compiled BLAS shim and native kernels live beside the vector cache: give every
    # cache folder the ones `make install` built, or each child would compile its own.
    for cache in set(caches):
        cache.mkdir(exist_ok=True)
        (cache / BUILDS).symlink_to(build_folder(), target_is_directory=True)
    env = {**os.environ, "JUPYTER_MLX_EMBED_CACHE": "true"}  # the default (conftest: off)
    children: dict[str, list[subprocess.Popen[str]]] = {}
    for end in ENDS:  # staggered, so that few load the model at the same moment
        children[end] = [
            subprocess.Popen(
                [sys.executable, str(script), end],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**env, "JUPYTER_MLX_EMBED_CACHE_DIR": str(cache)},
            )
            for cache in caches
        ]
        time.sleep(STAGGER)
    try:
        for sig, end in ((signal.SIGINT, "sigint"), (signal.SIGTERM, "sigterm")):
            for child in children[end]:  # mid-loop: after the first answer, while embedding
                assert child.stdout is not None and child.stdout.readline() == "embedding\n"
            time.sleep(0.5)
            for child in children[end]:
                child.send_signal(sig)
        yield {
            end: [Outcome(c.communicate(timeout=180)[1], c.returncode) for c in started]
            for end, started in children.items()
        }
    finally:
        for child in (c for started in children.values() for c in started):
            if child.poll() is None:
                child.kill()
            child.communicate()  # closes the pipes
        holder.execute("ROLLBACK")
        holder.close()


@pytest.mark.parametrize("end", list(ENDS))
def test_the_script_ends_with_its_own_status(end: str, outcomes: dict[str, list[Outcome]]) -> None:
    status, message = ENDS[end]
    for outcome in outcomes[end]:
        detail = f"exit status {outcome.status}, not {status}:\n{outcome.stderr[-3000:]}"
        assert outcome.status == status, detail
        assert message in outcome.stderr and "Fatal Python error" not in outcome.stderr
