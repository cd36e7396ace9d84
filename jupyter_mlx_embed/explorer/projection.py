"""2-D maps of embeddings: PCA at once, UMAP when there is time (notebook layer; no MLX).

:func:`project` turns n vectors into n map positions. ``"pca"`` is a linear map, fast enough
to show a million points at once; ``"umap"`` keeps neighbourhoods (what the eye looks for on
a map) but costs seconds to minutes, so a front end shows the PCA map first and swaps in the
UMAP one, computed on a plain background thread (the fit itself runs in a helper process:
:mod:`jupyter_mlx_embed.explorer._umap_process`).

Large collections are mapped by "project a sample and place the rest": UMAP is fitted on
:data:`UMAP_SAMPLE` points, and every other point goes beside its nearest sampled point,
slightly towards the others of its :data:`PLACE_NEIGHBORS` nearest (found in a
:data:`PLACE_DIMS`-dimensional PCA space): seconds for a million points, where UMAP's own
``transform`` takes minutes and places no better (``bench/bench_projection.py``).

Maps are stored in ``projections/`` beside the vector cache (the ``cache_dir`` setting), keyed
by a hash of the vectors' bytes, the method, the seed and :data:`VERSION`; like the vector
cache, it can make a call faster, never fail it.
"""

from __future__ import annotations

import logging
import operator
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import EngineConfig
from ..fileio import atomic_path

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

log = logging.getLogger(__name__)

METHODS = ("umap", "pca")
#: Part of every stored map's key: bump it when a change here changes the maps.
VERSION = 1
#: Neighbours per point in UMAP's graph (its default).
UMAP_NEIGHBORS = 15
#: Below this many points UMAP's neighbour graph is nearly complete and shows no structure:
#: ``"umap"`` gives the PCA map instead (:func:`choose_method`).
UMAP_MIN_POINTS = 3 * UMAP_NEIGHBORS
#: Most points UMAP is fitted on; the others are placed beside their nearest sampled points.
UMAP_SAMPLE = 20_000
#: Most points the principal axes are computed from (more would not move them visibly).
PCA_SAMPLE = 50_000
#: Neighbours among the sampled points are looked for in a PCA space of PLACE_DIMS
#: dimensions (nearly as good as the full one, bench/, and a sixth of the memory traffic):
#: PLACE_CANDIDATES by a k-d tree on its first PLACE_TREE_DIMS axes, then ranked on all.
PLACE_DIMS = 64
PLACE_TREE_DIMS = 16
PLACE_CANDIDATES = 30
#: Sampled neighbours whose map positions place each other point: it goes to the nearest
#: one, moved this share of the way towards their distance-weighted mean (0 would stack
#: points exactly; the mean alone pulls points into the gaps between groups: bench/).
PLACE_NEIGHBORS = 10
PLACE_SPREAD = 0.2
#: Default of ``progress``: a bar for UMAP from this many points (a few seconds and more).
PROGRESS_MIN_POINTS = 5_000
#: Stored maps kept (the least recently used beyond this are deleted).
KEEP_MAPS = 64

_SUBFOLDER = "projections"
#: Rows handled at once where a whole-array temporary would double the memory.
_CHUNK = 65_536
#: Rows placed at once (small enough for their gathered neighbours to stay in cache).
_PLACE_CHUNK = 8_192


def project(
    vectors: ArrayLike, method: str = "umap", *, seed: int = 0, progress: bool | None = None
) -> np.ndarray:
    """2-D map positions of ``vectors``.

    The same vectors, method and seed always give the same map; it is stored on disk (when
    the ``cache`` setting is on), so a second call, in any process, only reads it. ``"umap"``
    may run on any thread (it uses no event loop); two UMAP fits in one process take turns.

    Args:
        vectors: Array (n x d) of numbers, n >= 1, e.g. ``Embeddings.vectors``.
        method: ``"umap"`` (neighbourhoods kept: seconds to a minute, plus about 20 s the
            first time in a process while numba compiles; more than :data:`UMAP_SAMPLE`
            points are fitted on a sample and the rest placed) or ``"pca"`` (the first two
            principal components: about a second for a million vectors of 384 dimensions).
            Fewer than :data:`UMAP_MIN_POINTS` points get the PCA map even for
            ``"umap"``, with a note logged at info level: UMAP's neighbour graph would link
            nearly every point to every other and show no structure.
        seed: Seed of the random choices (UMAP's layout, the samples of large inputs).
        progress: Show a progress bar (tqdm); by default, only for UMAP from
            :data:`PROGRESS_MIN_POINTS` points.

    Returns:
        Float32 array (n x 2).

    Raises:
        TypeError: ``vectors`` is not numeric, or ``seed`` is not an integer.
        ValueError: ``vectors`` is not 2-D or empty, holds NaN or infinite values (the rows
            are named), or ``method`` is unknown.
    """
    data, method, seed = _arguments(vectors, method, seed)
    path = _map_file(data, method, seed)
    stored = _load(path, len(data))
    if stored is not None:
        return stored
    if method == "pca":
        coords = _pca(data, 2, seed)
    else:
        show = progress if progress is not None else len(data) >= PROGRESS_MIN_POINTS
        coords = _umap_map(data, seed, show)
    _store(path, coords)
    return coords


def cached_projection(
    vectors: ArrayLike, method: str = "umap", *, seed: int = 0
) -> np.ndarray | None:
    """The map :func:`project` would return if it is stored already, else ``None``.

    Computes nothing: a front end can show a stored UMAP map at once and skip the PCA one.
    Arguments and errors as for :func:`project`.
    """
    data, method, seed = _arguments(vectors, method, seed)
    return _load(_map_file(data, method, seed), len(data))


def choose_method(method: str, n: int) -> str:
    """The method :func:`project` uses for ``n`` points when asked for ``method``: ``"pca"``
    for ``"umap"`` below :data:`UMAP_MIN_POINTS` points, else ``method``."""
    return "pca" if method == "umap" and n < UMAP_MIN_POINTS else method


# Arguments -------------------------------------------------------------------------------


def _arguments(vectors: ArrayLike, method: str, seed: int) -> tuple[np.ndarray, str, int]:
    """Checked arguments: float32 C-ordered vectors (no copy when they are already), the
    method actually used, the seed as an int."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    try:
        seed = operator.index(seed)
    except TypeError:
        raise TypeError(f"seed must be an integer, got {type(seed).__name__}") from None
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be between 0 and 2**32 - 1, got {seed}")
    array = np.asarray(vectors)
    if array.dtype == object or array.dtype.kind not in "iuf":
        raise TypeError(f"vectors must be an array of numbers, got dtype {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"vectors must be 2-D (n x d), got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"vectors must hold at least one vector of one value, got {array.shape}")
    data = np.ascontiguousarray(array, dtype=np.float32)
    _check_finite(data)
    used = choose_method(method, len(data))
    if used != method:
        log.info(
            "%d points are too few for UMAP (it needs %d): the map is PCA's",
            len(data),
            UMAP_MIN_POINTS,
        )
    return data, used, seed


def _check_finite(data: np.ndarray) -> None:
    # Row sums are a cheap screen (no n x d temporary): any NaN or infinity makes its row's
    # sum non-finite; so does an overflowing sum of finite values, hence the exact check.
    with np.errstate(over="ignore", invalid="ignore"):
        suspects = np.flatnonzero(~np.isfinite(data.sum(axis=1)))
    bad = [int(i) for i in suspects if not np.isfinite(data[i]).all()]
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        raise ValueError(f"vectors hold NaN or infinite values in {len(bad)} row(s): {shown}")


# The maths -------------------------------------------------------------------------------


def sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted indices of ``size`` of ``n`` rows chosen at random (all rows when fewer)."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def _pca(data: np.ndarray, dims: int, seed: int) -> np.ndarray:
    """``data`` on its first ``dims`` principal axes (float32), fitted on a sample."""
    return _pca_fit(data, dims, seed)(data)


def _pca_fit(data: np.ndarray, dims: int, seed: int) -> Any:
    """A function mapping rows of ``data``'s kind onto the first ``dims`` principal axes of
    (a sample of) ``data``, in float32 and by chunks: the whole array is never copied."""
    # NumPy rather than scikit-learn's PCA: importing scikit-learn takes 1-3 s, longer than
    # the whole PCA map of a million points, which is meant to show at once.
    fitted = data[sample_rows(len(data), PCA_SAMPLE, seed)].astype(np.float64)
    # n points span at most n - 1 axes (a single point: none, it maps to the origin).
    keep = min(dims, fitted.shape[1], len(fitted) - 1)
    mean = fitted.mean(axis=0)
    fitted -= mean
    _, eigenvectors = np.linalg.eigh(fitted.T @ fitted)  # ascending eigenvalues
    components = eigenvectors[:, ::-1][:, :keep]
    # Each axis points where its largest loading is positive, so equal inputs give equal maps
    # whatever sign the solver returns.
    largest = np.abs(components).argmax(axis=0)
    components *= np.where(components[largest, np.arange(keep)] < 0, -1.0, 1.0)
    axes = components.astype(np.float32)
    # x @ W - mean @ W equals (x - mean) @ W without a centred copy of x.
    offset = (mean @ components).astype(np.float32)

    def transform(rows: np.ndarray) -> np.ndarray:
        out = np.zeros((len(rows), dims), dtype=np.float32)  # missing axes stay 0
        for start in range(0, len(rows), _CHUNK):
            part = rows[start : start + _CHUNK]
            out[start : start + len(part), :keep] = part @ axes - offset
        return out

    return transform


def _umap_map(data: np.ndarray, seed: int, progress: bool) -> np.ndarray:
    from ..progress import progress_bar

    n = len(data)
    sample = sample_rows(n, UMAP_SAMPLE, seed)
    coords = np.empty((n, 2), dtype=np.float32)
    with progress_bar(n, desc="UMAP", unit="pt", disable=not progress) as bar:
        bar.set_postfix_str(f"fitting {len(sample):,} points")
        coords[sample] = _umap_fit(data[sample] if len(sample) < n else data, seed)
        bar.update(len(sample))
        if len(sample) < n:
            bar.set_postfix_str(f"placing {n - len(sample):,} points")
            _place(data, sample, coords, seed, bar.update)
    return coords


def _umap_fit(data: np.ndarray, seed: int) -> np.ndarray:
    # In a helper process: on a thread, numba's loops would hold this process's GIL.
    from . import _umap_process

    return _umap_process.fit(data, seed, UMAP_NEIGHBORS)


def _place(
    data: np.ndarray, sample: np.ndarray, coords: np.ndarray, seed: int, advance: Any
) -> None:
    """Fill ``coords`` of the rows not in ``sample`` from the sampled rows' positions."""
    from scipy.spatial import cKDTree

    reduce = _pca_fit(data[sample], PLACE_DIMS, seed)
    sampled = reduce(data[sample])
    # A k-d tree is fast in few dimensions only: it finds candidates on the leading axes.
    tree = cKDTree(sampled[:, :PLACE_TREE_DIMS])
    known = coords[sample]
    rest = np.ones(len(data), dtype=bool)
    rest[sample] = False
    others = np.flatnonzero(rest)
    candidates = min(PLACE_CANDIDATES, len(sample))
    k = min(PLACE_NEIGHBORS, candidates)
    squares = (sampled**2).sum(axis=1)
    for start in range(0, len(others), _PLACE_CHUNK):
        rows = others[start : start + _PLACE_CHUNK]
        reduced = reduce(data[rows])
        found = tree.query(reduced[:, :PLACE_TREE_DIMS], k=candidates, workers=-1)[1]
        found = found.reshape(len(rows), candidates)
        # |s - x|^2 = |s|^2 - 2 s.x + |x|^2: no (rows x candidates x dims) difference array.
        dot = np.matmul(sampled[found], reduced[:, :, None])[:, :, 0]
        square = squares[found] - 2 * dot + (reduced**2).sum(axis=1, keepdims=True)
        order = np.argsort(square, axis=1, kind="stable")[:, :k]
        nearest = np.take_along_axis(found, order, axis=1)
        distance = np.sqrt(np.maximum(np.take_along_axis(square, order, axis=1), 0))
        # Inverse-distance weights (an exact duplicate of a sampled point lands on it).
        weight = 1.0 / np.maximum(distance, 1e-6)
        weight /= weight.sum(axis=1, keepdims=True)
        middle = np.einsum("rk,rkc->rc", weight, known[nearest])
        first = known[nearest[:, 0]]
        coords[rows] = first + PLACE_SPREAD * (middle - first)
        advance(len(rows))


# The stored maps -------------------------------------------------------------------------


def _map_file(data: np.ndarray, method: str, seed: int) -> Path | None:
    """Where the map of these arguments is stored, or None when the cache is off."""
    try:
        config = EngineConfig.from_env()
    except ValueError as exc:  # a bad setting is reported where it matters, by the worker
        log.debug("projection cache off: %s", exc)
        return None
    if not config.cache:
        return None
    import xxhash

    # The shape is part of the key: an n x d and a d x n array have the same bytes.
    digest = xxhash.xxh3_128(f"{data.shape}".encode())
    digest.update(data.data)
    name = f"{method}-{seed}-v{VERSION}-{digest.hexdigest()}.npy"
    return config.cache_folder() / _SUBFOLDER / name


def _load(path: Path | None, n: int) -> np.ndarray | None:
    if path is None or not path.is_file():
        return None
    try:
        coords = np.load(path, allow_pickle=False)
        os.utime(path)  # recently used: kept longest
    except (OSError, ValueError, EOFError) as exc:  # unreadable, truncated, not a .npy
        log.warning("ignoring the stored map %s: %s", path, exc)
        return None
    if coords.shape != (n, 2) or coords.dtype != np.float32 or not np.isfinite(coords).all():
        log.warning("ignoring the stored map %s: not %d finite float32 positions", path, n)
        return None
    return np.ascontiguousarray(coords)


def _store(path: Path | None, coords: np.ndarray) -> None:
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed: a reader never sees half a file.
        with atomic_path(path) as temporary, open(temporary, "wb") as f:
            np.save(f, coords, allow_pickle=False)
        _evict(path.parent)
    except OSError as exc:
        log.warning("cannot store the map in %s: %s", path.parent, exc)


def _evict(folder: Path) -> None:
    """Delete the least recently used maps beyond :data:`KEEP_MAPS`."""
    maps = []
    for file in folder.glob("*.npy"):
        if file.name.startswith("."):  # another process's map being written (atomic_path)
            continue
        try:
            maps.append((file.stat().st_mtime_ns, file))
        except OSError:  # deleted meanwhile by another process
            continue
    for _, file in sorted(maps, reverse=True)[KEEP_MAPS:]:
        file.unlink(missing_ok=True)
