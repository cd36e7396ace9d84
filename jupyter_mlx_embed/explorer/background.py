"""The explorer's background work (notebook layer): the map shown at once, the UMAP map and
the clusters computed on a thread, and the hand-off of results to the kernel's event loop.

Completions arrive on other threads (this one, the PNG timer, the transport's futures); in a
kernel they are handed to its event loop so that traits change (and comm messages go out) on
the kernel's own thread.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .clusters import Clusters

log = logging.getLogger(__name__)


def first_map(
    vectors: np.ndarray, projection: str, *, have_umap: bool, seed: int
) -> tuple[np.ndarray, str, bool]:
    """The map to show at once: a stored UMAP map, else the PCA map.

    Args:
        vectors: The embeddings' vectors (n x d).
        projection: ``"auto"``, ``"pca"`` or ``"umap"``.
        have_umap: Whether umap-learn is installed (``"auto"`` wants UMAP then).
        seed: Seed of the projection.

    Returns:
        ``(xy, shown, pending)``: the positions (n x 2 float32), the projection they are
        (``"pca"`` or ``"umap"``) and whether a UMAP map is still to compute (never for
        too few points: :func:`.projection.choose_method`).
    """
    from .projection import cached_projection, choose_method, project

    if not len(vectors):
        return np.zeros((0, 2), np.float32), "pca", False
    wanted = "umap" if projection == "umap" or (projection == "auto" and have_umap) else "pca"
    if choose_method(wanted, len(vectors)) == "umap":
        umap = cached_projection(vectors, "umap", seed=seed)
        if umap is not None:
            return umap, "umap", False
        return project(vectors, "pca", seed=seed, progress=False), "pca", True
    # The PCA map is final. Asked for by name, "umap" gets it from project, which says why.
    asked = "umap" if projection == "umap" else "pca"
    return project(vectors, asked, seed=seed, progress=False), "pca", False


def start_map_work(
    vectors: np.ndarray,
    texts: Sequence[str],
    xy: np.ndarray,
    version: int,
    *,
    umap: bool,
    seed: int,
    handoff: Handoff,
    show_map: Callable[[np.ndarray], None],
    show_clusters: Callable[[int, Clusters], None],
    failed: Callable[[BaseException], None],
    done: threading.Event,
) -> None:
    """Start the background thread: the UMAP map (when ``umap``), then clusters on the map.

    Its results go through ``handoff``: ``show_map(xy)`` with the UMAP map, then
    ``show_clusters(version, clusters)`` with the version of the map they were found on
    (``version`` is that of ``xy``, the map on show; the UMAP map is the next), or
    ``failed(exc)``; ``done`` is set when the thread ends, either way.
    """

    def compute() -> None:
        from .clusters import find_clusters
        from .projection import project

        # Only this thread changes the map, so the version its clusters belong to is known.
        shown, shown_version = xy, version
        try:
            if umap:
                # No progress bar: from this thread it would print into whichever cell
                # runs meanwhile; the map's status line says UMAP is being computed.
                shown = project(vectors, "umap", seed=seed, progress=False)
                shown_version += 1
                handoff.post(show_map, shown)
            found = find_clusters(shown, texts, seed=seed)
            handoff.post(show_clusters, shown_version, found)
        except Exception as exc:  # noqa: BLE001 - shown in the status line
            handoff.post(failed, exc)
        finally:
            done.set()

    threading.Thread(target=compute, name="jupyter-mlx-embed-explorer-map", daemon=True).start()


class Handoff:
    """Runs calls made on other threads on the kernel's event loop when there is one.

    Posted calls queue up in order; :meth:`run_posted` runs them on the loop's thread (a cell
    that blocks the loop, e.g. ``wait()``, runs them itself, else they would run only after
    it). Without a running loop (a script), calls run at once on the caller's thread.
    """

    def __init__(self) -> None:
        self.loop = running_loop()
        #: The thread the explorer was made on (the kernel's, in a notebook).
        self.thread = threading.get_ident()
        self._posted: collections.deque[tuple[Callable[..., None], tuple[Any, ...]]] = (
            collections.deque()
        )

    def follow_running_loop(self) -> None:
        """Post to the loop running now, if any (e.g. the kernel's, once it has started)."""
        self.loop = running_loop() or self.loop

    def on_loop_thread(self) -> bool:
        """Whether the caller runs on the explorer's own thread."""
        return threading.get_ident() == self.thread

    def post(self, function: Callable[..., None], *args: Any) -> None:
        """Run ``function(*args)`` on the kernel's event loop when there is one, else here."""
        loop = self.loop
        if loop is not None and loop.is_running():
            self._posted.append((function, args))
            try:
                loop.call_soon_threadsafe(self.run_posted)
                return
            except RuntimeError:  # the loop closed in the meantime
                pass
            self.run_posted()
            return
        function(*args)

    def run_posted(self) -> None:
        """Run the queued calls of :meth:`post` (on the loop's thread)."""
        while self._posted:
            try:
                function, args = self._posted.popleft()
            except IndexError:  # another drain took the last one
                return
            try:
                function(*args)
            except Exception:  # one failed update must not drop the others
                log.exception("similarity explorer: an update failed")


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running on this thread, or ``None``."""
    # Not tornado's IOLoop.current(): without a running loop it is deprecated (and warns).
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
