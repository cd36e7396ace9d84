"""UMAP fits in a helper process (notebook layer; no MLX).

numba's loops in umap-learn hold the GIL for up to 0.7 s at a time, which on a thread would
freeze the process asking for the map (in a kernel: queries, widgets, the next cell) for the
minute a map takes. The helper, ``python -m jupyter_mlx_embed.explorer._umap_process``,
starts on first use and serves fits one at a time over two pipes until its parent closes
them; it keeps numba's compiled loops, so only the first map pays for compiling them.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import subprocess
import sys
import threading
from multiprocessing.connection import Connection

import numpy as np

log = logging.getLogger(__name__)

_lock = threading.Lock()  # one fit at a time, and one helper
_helper: tuple[subprocess.Popen[bytes], Connection, Connection] | None = None


def fit(data: np.ndarray, seed: int, neighbors: int) -> np.ndarray:
    """UMAP positions (float32, n x 2) of ``data``, fitted in the helper process.

    A helper that died (killed, out of memory) is started again once.

    Raises:
        Exception: What the fit raised in the helper (e.g. ImportError without umap-learn).
        RuntimeError: The helper died twice.
    """
    with _lock:
        try:
            return _ask(data, seed, neighbors, restart=False)
        except (EOFError, OSError) as exc:
            log.warning("the UMAP helper process died (%r); starting it again", exc)
        try:
            return _ask(data, seed, neighbors, restart=True)
        except (EOFError, OSError) as exc:
            raise RuntimeError(f"the UMAP helper process died: {exc!r}") from exc


def _ask(data: np.ndarray, seed: int, neighbors: int, restart: bool) -> np.ndarray:
    _, requests, answers = _running(restart)
    requests.send((data, seed, neighbors))
    failed, value = answers.recv()
    if failed:
        raise value
    return np.asarray(value, dtype=np.float32)


def _running(restart: bool) -> tuple[subprocess.Popen[bytes], Connection, Connection]:
    global _helper
    if _helper is not None and (restart or _helper[0].poll() is not None):
        _stop()
    if _helper is None:
        _helper = _start()
    return _helper


def _start() -> tuple[subprocess.Popen[bytes], Connection, Connection]:
    their_requests, our_requests = os.pipe()
    our_answers, their_answers = os.pipe()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", __name__, str(their_requests), str(their_answers)],
            pass_fds=(their_requests, their_answers),
            stdin=subprocess.DEVNULL,
        )
    except BaseException:
        for fd in (our_requests, our_answers):
            os.close(fd)
        raise
    finally:
        os.close(their_requests)
        os.close(their_answers)
    return (
        process,
        Connection(our_requests, readable=False),
        Connection(our_answers, writable=False),
    )


def _stop() -> None:
    """Close the pipes (the helper exits at their end) and reap the helper."""
    global _helper
    if _helper is None:
        return
    process, requests, answers = _helper
    _helper = None
    requests.close()
    answers.close()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


atexit.register(_stop)


def _serve(requests: Connection, answers: Connection) -> None:
    """The helper's loop: fit what arrives until the parent closes the pipe."""
    while True:
        try:
            data, seed, neighbors = requests.recv()
        except EOFError:
            return
        try:
            answers.send((False, _fit(data, seed, neighbors)))
        except Exception as exc:  # noqa: BLE001 - sent to the caller, who raises it
            answers.send((True, exc))


def _fit(data: np.ndarray, seed: int, neighbors: int) -> np.ndarray:
    import umap  # numba compiles on first use: seconds

    # A fixed random_state makes the layout reproducible and runs it on one thread; saying
    # n_jobs=1 keeps umap from warning that it overrides the default. The PCA start is
    # deterministic and, unlike the spectral one, needs no connected graph.
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=neighbors,
        metric="cosine",
        init="pca",
        random_state=seed,
        n_jobs=1,
    )
    return np.asarray(reducer.fit_transform(data), dtype=np.float32)


if __name__ == "__main__":
    # Ctrl-C in the terminal of the Jupyter server reaches this helper too (same process
    # group): the parent decides when it stops (it closes the pipe), so SIGINT is ignored.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _serve(
        Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False)
    )
