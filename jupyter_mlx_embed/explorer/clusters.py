"""Named regions of a 2-D map: density clusters labelled by their distinctive words
(notebook layer; no MLX).

As BERTopic does, :func:`find_clusters` runs HDBSCAN on the map positions (dense regions
become clusters, sparse points noise) and names each cluster by class-based TF-IDF: a word
scores high when it is frequent in the cluster's texts and rare in the others'. Large maps
are clustered on a sample of :data:`CLUSTER_SAMPLE` points; every other point joins the
cluster of its nearest sampled point.

Clusters come in two levels, for labels by zoom: the dense regions, and (when there are
more than :data:`REGIONS` of them) coarse regions that join neighbouring clusters (average
linkage of their centres), each named the same way from all its texts.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from .projection import sample_rows

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

#: Most points HDBSCAN clusters (it took 0.5 s for 20,000 points here, 9 s for 200,000).
CLUSTER_SAMPLE = 50_000
#: Default ``min_cluster_size``: this share of the points clustered, with a floor of
#: :data:`MIN_CLUSTER_FLOOR` (aims at about 5-40 clusters on maps of embeddings).
CLUSTER_SHARE = 0.01
MIN_CLUSTER_FLOOR = 10
#: HDBSCAN's ``min_samples``: how conservative the density estimate is. A fixed small value
#: keeps the core-distance search cheap, where the default (``min_cluster_size``) grows
#: with n.
MIN_SAMPLES = 10
#: Words in each cluster's label.
LABEL_WORDS = 3
#: Texts read per cluster for its label, and characters read per text.
LABEL_TEXTS = 1_000
LABEL_CHARS = 2_000
#: Points of a cluster its centre is chosen among (the medoid costs their square).
CENTER_SAMPLE = 1_000
#: Most coarse regions (the labels of the whole map); more clusters than this are joined
#: into this many.
REGIONS = 8
#: Member points of each cluster sent with it (a sample: which labels a filter hides).
MEMBER_SAMPLE = 64
#: Between the words of a label.
SEPARATOR = " · "
# Words of two or more characters with at least one letter (no bare numbers).
_TOKEN = r"(?u)\b(?=\w*[^\W\d_])\w\w+\b"


@dataclass(frozen=True)
class Cluster:
    """One cluster of the map.

    Attributes:
        label: Its most distinctive words joined by ``" · "`` (``"cluster N"`` when its
            texts have no words).
        words: Those words, most distinctive first.
        size: Points in it.
        center: A point of the cluster central to it (the medoid of a sample of its map
            positions): inside the cluster even when its shape is a crescent, where the mean
            may not be.
        level: 0 for a coarse region (labels of the whole map), 1 for a dense region
            (shown as the view zooms in); 0 as well when there are few clusters to join.
        members: A sample of its points (at most :data:`MEMBER_SAMPLE` indices).
    """

    label: str
    words: tuple[str, ...]
    size: int
    center: tuple[float, float]
    level: int = 0
    members: tuple[int, ...] = ()


@dataclass(frozen=True)
class Clusters:
    """The clusters of a map.

    Attributes:
        codes: Int32 array (n): each point's cluster, an index into ``clusters``; -1 for
            noise (points in no dense region).
        clusters: The clusters (dense regions), largest first.
        regions: The coarse regions joining them, largest first; empty when there are
            :data:`REGIONS` clusters or fewer (the clusters are the coarse labels then).
        region_of: Int32 array: each cluster's region, an index into ``regions`` (empty
            without regions).
    """

    codes: np.ndarray
    clusters: list[Cluster]
    regions: list[Cluster] = field(default_factory=list)
    region_of: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))

    def point_regions(self) -> np.ndarray:
        """Each point's coarse region (int32, -1 for none or without regions)."""
        if not self.regions:
            return np.full(len(self.codes), -1, dtype=np.int32)
        return np.where(self.codes >= 0, self.region_of[self.codes], -1).astype(np.int32)

    @property
    def labels(self) -> list[Cluster]:
        """Every label of the map, coarse regions first."""
        return [*self.regions, *self.clusters]


def find_clusters(
    coords: ArrayLike,
    texts: Sequence[str],
    *,
    seed: int = 0,
    min_cluster_size: int | None = None,
) -> Clusters:
    """Clusters of map positions, each named by the distinctive words of its texts.

    Args:
        coords: Map positions (n x 2), e.g. from :func:`jupyter_mlx_embed.project`.
        texts: The n texts the points stand for.
        seed: Seed of the samples taken from large maps (clustering, labels, centres).
        min_cluster_size: Fewest points a cluster may have; by default 1% of the points
            clustered (at least 10). Larger values give fewer, broader clusters.

    Returns:
        The clusters, with a code per point.

    Raises:
        TypeError: ``coords`` is not numeric, or ``texts`` holds a non-string (its index
            is named).
        ValueError: ``coords`` is not n x 2 or holds NaN or infinite values, ``texts`` has
            another length, or ``min_cluster_size`` is below 2.
    """
    points = _checked_coords(coords)
    _check_texts(texts, len(points))
    seed = operator.index(seed)
    sample = sample_rows(len(points), CLUSTER_SAMPLE, seed)
    if min_cluster_size is None:
        min_cluster_size = max(MIN_CLUSTER_FLOOR, round(CLUSTER_SHARE * len(sample)))
    min_cluster_size = operator.index(min_cluster_size)
    if min_cluster_size < 2:
        raise ValueError(f"min_cluster_size must be at least 2, got {min_cluster_size}")

    codes = _cluster(points, sample, min_cluster_size)
    rng = np.random.default_rng(seed)
    clusters = _named(points, texts, codes, rng, level=0)
    if len(clusters) <= REGIONS:
        return Clusters(codes=codes, clusters=clusters)
    joined = _join(np.array([c.center for c in clusters]), [c.size for c in clusters])
    regions = _named(points, texts, np.where(codes >= 0, joined[codes], -1), rng, level=0)
    return Clusters(
        codes=codes,
        clusters=[replace(c, level=1) for c in clusters],
        regions=regions,
        region_of=joined,
    )


def _named(
    points: np.ndarray,
    texts: Sequence[str],
    codes: np.ndarray,
    rng: np.random.Generator,
    level: int,
) -> list[Cluster]:
    """The clusters that ``codes`` (numbered largest first) make, named by their texts."""
    count = int(codes.max()) + 1
    members = [np.flatnonzero(codes == c) for c in range(count)]
    words = _distinctive_words(texts, codes, count, rng)
    return [
        Cluster(
            label=SEPARATOR.join(words[c]) or f"cluster {c + 1}",
            words=words[c],
            size=len(members[c]),
            center=_center(points, members[c], rng),
            level=level,
            members=tuple(_sample(members[c], rng)),
        )
        for c in range(count)
    ]


def _join(centers: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """The coarse region of each cluster: at most :data:`REGIONS`, by average linkage of
    the clusters' centres, numbered largest first."""
    from scipy.cluster.hierarchy import fcluster, linkage

    found = fcluster(linkage(centers, method="average"), REGIONS, criterion="maxclust") - 1
    totals = np.bincount(found, weights=np.asarray(sizes, dtype=np.float64))
    order = np.argsort(-totals, kind="stable")
    renumber = np.empty_like(order)
    renumber[order] = np.arange(len(order))
    return renumber[found].astype(np.int32)


def _sample(members: np.ndarray, rng: np.random.Generator) -> list[int]:
    """At most :data:`MEMBER_SAMPLE` of a cluster's points, in index order."""
    if len(members) > MEMBER_SAMPLE:
        members = np.sort(rng.choice(members, MEMBER_SAMPLE, replace=False))
    return [int(i) for i in members]


def _checked_coords(coords: ArrayLike) -> np.ndarray:
    array = np.asarray(coords)
    if array.dtype == object or array.dtype.kind not in "iuf":
        raise TypeError(f"coords must be an array of numbers, got dtype {array.dtype}")
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"coords must be n x 2 map positions, got shape {array.shape}")
    points = np.asarray(array, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(points).all(axis=1))
    if len(bad):
        shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        raise ValueError(f"coords hold NaN or infinite values in {len(bad)} row(s): {shown}")
    return points


def _check_texts(texts: Sequence[str], n: int) -> None:
    if isinstance(texts, (str, bytes)):
        raise TypeError("texts must be one text per point, not a single string")
    if len(texts) != n:
        raise ValueError(f"coords has {n} points but texts has {len(texts)} texts")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] must be a string, got {type(text).__name__}")


def _cluster(points: np.ndarray, sample: np.ndarray, min_cluster_size: int) -> np.ndarray:
    """Cluster codes (int32, -1 noise), numbered by size, largest first."""
    codes = np.full(len(points), -1, dtype=np.int32)
    if len(sample) <= min_cluster_size:
        return codes  # too few points for even one cluster besides noise
    import hdbscan  # imports scikit-learn: about a second, so only when used

    # core_dist_n_jobs=1: its default starts a pool of worker processes on first use (about
    # 6 s here), far longer than the clustering of 50,000 points on one core.
    # Leaf clusters: the default ("eom") keeps the most persistent branches of the cluster
    # tree, and on a UMAP map of real text, where groups touch, that can be one region
    # holding nearly every point (2 clusters on notebook 04's 5,340 docstrings, against 33
    # leaves); leaves are the map's dense regions, which is what a label should name.
    found = hdbscan.HDBSCAN(
        min_cluster_size=min_cluster_size,
        min_samples=min(MIN_SAMPLES, min_cluster_size),
        cluster_selection_method="leaf",
        core_dist_n_jobs=1,
    ).fit_predict(points[sample])
    codes[sample] = found
    if len(sample) < len(points):
        from scipy.spatial import cKDTree

        rest = np.ones(len(points), dtype=bool)
        rest[sample] = False
        _, nearest = cKDTree(points[sample]).query(points[rest], k=1, workers=-1)
        codes[rest] = found[nearest]
    if codes.max() < 0:
        return codes  # noise only (a small map with no dense region): nothing to renumber
    # Renumber by size: code 0 is the largest cluster.
    sizes = np.bincount(codes[codes >= 0], minlength=int(codes.max()) + 1)
    order = np.argsort(-sizes, kind="stable")
    renumber = np.empty_like(order)
    renumber[order] = np.arange(len(order))
    return np.where(codes >= 0, renumber[codes], -1).astype(np.int32)


def _distinctive_words(
    texts: Sequence[str], codes: np.ndarray, count: int, rng: np.random.Generator
) -> list[tuple[str, ...]]:
    """The top words of each cluster by class-based TF-IDF (noise is a class too: its
    words count as common ones)."""
    if count == 0:
        return []
    from sklearn.feature_extraction.text import CountVectorizer

    documents = []
    for code in [*range(count), -1]:
        rows = np.flatnonzero(codes == code)
        if len(rows) > LABEL_TEXTS:
            rows = np.sort(rng.choice(rows, LABEL_TEXTS, replace=False))
        documents.append(" ".join(texts[i][:LABEL_CHARS] for i in rows.tolist()))
    vectorizer = CountVectorizer(stop_words="english", token_pattern=_TOKEN)
    try:
        counts = vectorizer.fit_transform(documents).toarray().astype(np.float64)
    except ValueError:  # no words at all (empty texts, or only stop words)
        return [() for _ in range(count)]
    vocabulary = vectorizer.get_feature_names_out()
    present = counts.sum(axis=0) > 0
    # c-TF-IDF (Grootendorst 2022): term frequency within the class, times
    # log(1 + average words per class / the term's frequency over all classes).
    frequency = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    weight = np.log1p(counts.sum() / len(counts) / np.where(present, counts.sum(axis=0), 1))
    scores = frequency * weight
    top = []
    for code in range(count):
        best = np.argsort(-scores[code], kind="stable")[:LABEL_WORDS]
        top.append(tuple(str(vocabulary[j]) for j in best if scores[code, j] > 0))
    return top


def _center(
    points: np.ndarray, members: np.ndarray, rng: np.random.Generator
) -> tuple[float, float]:
    """The medoid of (a sample of) the cluster's points."""
    if len(members) > CENTER_SAMPLE:
        members = rng.choice(members, CENTER_SAMPLE, replace=False)
    chosen = points[members]
    distances = np.linalg.norm(chosen[:, None, :] - chosen[None, :, :], axis=2).sum(axis=1)
    x, y = chosen[int(np.argmin(distances))]
    return float(x), float(y)
