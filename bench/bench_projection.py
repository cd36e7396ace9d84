"""The explorer's maps and clusters: how much neighbourhood a 2-D map keeps, and what it costs.

Run with ``python bench/bench_projection.py [--sizes 20000,200000,1000000] [--skip-timing]``.

1. Quality, on real texts: ~5,000 docstring sentences of 32 standard-library packages
   (:func:`corpus.labelled_sentences`), embedded with the bundled model (the vector cache
   makes re-runs fast). For each map, k-nearest-neighbour label accuracy (k=10, leave one
   out, majority vote) on the map, next to the same measure in the full embedding space
   (cosine): the share of a point's neighbourhood that survives the projection. Rows: PCA,
   UMAP fitted on every point, and "sample and place" (UMAP fitted on a smaller sample, the
   other points placed beside their nearest sampled neighbours), whose quality cost this
   shows. Then the clusters found on the UMAP map.
2. Cost, on synthetic clustered unit vectors (384 dimensions): wall time of the PCA map, the
   UMAP map (numba's one-off compilation timed apart) and the clusters, at each size, with
   UMAP's time as a multiple of PCA's measured in the same run; then UMAP fitted on every
   point at a few sizes (the cost of a larger ``UMAP_SAMPLE``).

Stored maps are turned off (every map is computed).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import corpus
import numpy as np

from jupyter_mlx_embed import embed
from jupyter_mlx_embed.explorer import projection
from jupyter_mlx_embed.explorer.clusters import find_clusters
from jupyter_mlx_embed.explorer.projection import project

K = 10


def knn_accuracy(points: np.ndarray, labels: np.ndarray, metric: str) -> float:
    """Leave-one-out k-NN accuracy: how often the majority label of a point's K nearest
    other points is its own (ties go to the lower label code)."""
    from sklearn.neighbors import NearestNeighbors

    # kneighbors() without X leaves each point out of its own neighbours.
    index = NearestNeighbors(n_neighbors=K, metric=metric).fit(points)
    neighbours = index.kneighbors(return_distance=False)
    votes = np.zeros((len(points), labels.max() + 1), dtype=np.int32)
    np.add.at(votes, (np.arange(len(points))[:, None], labels[neighbours]), 1)
    return float((votes.argmax(axis=1) == labels).mean())


@contextmanager
def umap_sample(size: int) -> Iterator[None]:
    """Fit UMAP on at most ``size`` points (the rest placed) inside the block."""
    saved = projection.UMAP_SAMPLE
    projection.UMAP_SAMPLE = size
    try:
        yield
    finally:
        projection.UMAP_SAMPLE = saved


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def warm_up() -> None:
    """Compile UMAP's numba code and import the clustering libraries (timed: once per process)."""
    # 5,000 points: UMAP's nearest-neighbour descent (from 4,096 points) is compiled too.
    vectors = clustered_unit_vectors(5_000)[0]
    coords, seconds = timed(lambda: project(vectors, "umap", progress=False))
    print(f"numba compilation and first UMAP (5,000 points): {seconds:.1f} s, once per process")
    _, seconds = timed(lambda: find_clusters(coords, ["some words"] * len(coords)))
    print(f"first clusters (imports hdbscan and scikit-learn): {seconds:.1f} s\n")


def quality() -> None:
    texts, names = corpus.labelled_sentences()
    codes = np.unique(names, return_inverse=True)[1]
    print(f"corpus: {len(texts)} sentences, {codes.max() + 1} labels (standard-library packages)")
    vectors, seconds = timed(lambda: embed(texts))
    print(f"embedded in {seconds:.1f} s (vector cache on: fast when run before)")
    os.environ["JUPYTER_MLX_EMBED_CACHE"] = "false"  # maps only: the worker has started
    warm_up()

    full = knn_accuracy(vectors, codes, "cosine")
    print(f"{'space':<34} {'kNN acc':>8} {'/ full':>7} {'time s':>7}")
    print(f"{'full (384-d, cosine)':<34} {full:8.3f} {1:7.2f} {'':>7}")
    umap_map = None
    rows: list[tuple[str, str, int | None]] = [
        ("PCA", "pca", None),
        ("UMAP, fitted on all", "umap", None),
        ("UMAP, fitted on 2,500, placed", "umap", 2_500),
        ("UMAP, fitted on 1,000, placed", "umap", 1_000),
    ]
    for name, method, sample in rows:
        with umap_sample(sample or projection.UMAP_SAMPLE):
            coords, seconds = timed(lambda m=method: project(vectors, m, progress=False))
        accuracy = knn_accuracy(coords, codes, "euclidean")
        print(f"{name:<34} {accuracy:8.3f} {accuracy / full:7.2f} {seconds:7.1f}")
        if name == "UMAP, fitted on all":
            umap_map = coords
    assert umap_map is not None

    found, seconds = timed(lambda: find_clusters(umap_map, texts))
    clustered = found.codes >= 0
    majority = sum(np.bincount(codes[found.codes == c]).max() for c in range(len(found.clusters)))
    print(
        f"\nclusters on the UMAP map: {len(found.clusters)} in {seconds:.1f} s, "
        f"{clustered.mean():.0%} of points clustered, "
        f"{majority / max(clustered.sum(), 1):.0%} of them in their cluster's majority label"
    )
    label_names = np.unique(names)
    for code, cluster in enumerate(found.clusters[:12]):
        mostly = label_names[np.bincount(codes[found.codes == code]).argmax()]
        print(f"  {cluster.size:5d}  {cluster.label:<45} (mostly {mostly})")


def clustered_unit_vectors(
    n: int, dims: int = 384, groups: int = 30, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit vectors around ``groups`` random directions, like a corpus's topics."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((groups, dims)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    labels = rng.integers(0, groups, n)
    vectors = np.empty((n, dims), dtype=np.float32)
    for start in range(0, n, 100_000):
        part = labels[start : start + 100_000]
        noise = rng.standard_normal((len(part), dims), dtype=np.float32) * (0.6 / dims**0.5)
        block = centers[part] + noise
        vectors[start : start + len(part)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return vectors, labels


def cost(sizes: list[int]) -> None:
    print(f"\n{'n':>9} {'PCA s':>7} {'UMAP s':>7} {'UMAP/PCA':>9} {'clusters s':>11} {'found':>6}")
    for n in sizes:
        vectors, groups = clustered_unit_vectors(n)
        texts = [f"subject{g} detail{i % 97} common words" for i, g in enumerate(groups)]
        _, pca_s = timed(lambda v=vectors: project(v, "pca"))
        coords, umap_s = timed(lambda v=vectors: project(v, "umap", progress=False))
        found, cluster_s = timed(lambda c=coords, t=texts: find_clusters(c, t))
        print(
            f"{n:9,d} {pca_s:7.2f} {umap_s:7.1f} {umap_s / pca_s:9.0f} "
            f"{cluster_s:11.2f} {len(found.clusters):6d}"
        )


def fit_cost(sizes: list[int]) -> None:
    """UMAP fitted on every point (no placing): what a larger UMAP_SAMPLE would cost."""
    print(f"\n{'UMAP fit on n':>13} {'s':>6} {'ms/point':>9}")
    for n in sizes:
        vectors, _ = clustered_unit_vectors(n)
        with umap_sample(n):
            _, seconds = timed(lambda v=vectors: project(v, "umap", progress=False))
        print(f"{n:13,d} {seconds:6.1f} {1000 * seconds / n:9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20000,200000,1000000")
    parser.add_argument("--fit-sizes", default="10000,20000,40000")
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()
    if not args.skip_quality:
        quality()
    if not args.skip_timing:
        if args.skip_quality:
            os.environ["JUPYTER_MLX_EMBED_CACHE"] = "false"
            warm_up()
        cost([int(s) for s in args.sizes.split(",")])
        fit_cost([int(s) for s in args.fit_sizes.split(",")])


if __name__ == "__main__":
    main()
