"""Named clusters of a map (jupyter_mlx_embed.explorer.clusters)."""

from __future__ import annotations

import numpy as np
import pytest

from jupyter_mlx_embed.explorer import clusters as clusters_module
from jupyter_mlx_embed.explorer.clusters import Clusters, find_clusters
from jupyter_mlx_embed.explorer.projection import project
from jupyter_mlx_embed.worker import Worker

#: Words only each blob's texts use, and words every text uses.
TOPICS = {
    "fruit": ["apple", "banana", "cherry", "orchard"],
    "cars": ["engine", "wheel", "gearbox", "motorway"],
    "stars": ["galaxy", "nebula", "telescope", "comet"],
}
COMMON = "people often talk about this subject during the long evening"


def blob_map(per_blob: int = 80, seed: int = 0) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Three well separated round blobs on a map, texts naming each blob's topic, and each
    point's blob."""
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0]])
    truth = np.repeat(np.arange(3), per_blob)
    coords = centers[truth] + rng.normal(size=(len(truth), 2))
    words = list(TOPICS.values())
    texts = [
        f"{words[blob][i % 4]} and {words[blob][(i + 1) % 4]}: {COMMON}"
        for i, blob in enumerate(truth)
    ]
    return coords, texts, truth


def purity(found: Clusters, truth: np.ndarray) -> float:
    """Share of clustered points whose cluster is made of their blob only."""
    clustered = found.codes >= 0
    pure = [len(set(truth[found.codes == c])) == 1 for c in found.codes[clustered]]
    return float(np.mean(pure))


def test_separate_blobs_become_clusters_named_by_their_own_words() -> None:
    coords, texts, truth = blob_map()
    found = find_clusters(coords, texts)
    assert found.codes.dtype == np.int32 and found.codes.shape == (len(coords),)
    assert len(found.clusters) == 3
    assert purity(found, truth) == 1.0
    for code, cluster in enumerate(found.clusters):
        blob = int(np.bincount(truth[found.codes == code]).argmax())
        assert set(cluster.words) <= set(list(TOPICS.values())[blob])
        assert len(cluster.words) == 3
        assert cluster.label == " · ".join(cluster.words)
        assert cluster.size == int((found.codes == code).sum())


def test_clusters_come_largest_first() -> None:
    coords, texts, truth = blob_map()
    keep = (truth != 1) | (np.arange(len(truth)) % 2 == 0)  # halve the second blob
    found = find_clusters(coords[keep], [t for t, k in zip(texts, keep, strict=True) if k])
    sizes = [c.size for c in found.clusters]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < sizes[0]


def test_far_scattered_points_are_noise() -> None:
    coords, texts, _ = blob_map()
    outliers = np.array([[100.0, 100.0], [-90.0, 50.0], [60.0, -80.0]])
    found = find_clusters(np.vstack([coords, outliers]), [*texts, "lost", "alone", "stray"])
    assert list(found.codes[-3:]) == [-1, -1, -1]
    assert sum(c.size for c in found.clusters) == (found.codes >= 0).sum()


def test_center_is_a_point_of_a_crescent_not_its_hollow_mean() -> None:
    rng = np.random.default_rng(1)
    angle = rng.uniform(0, np.pi, 300)
    crescent = np.c_[np.cos(angle), np.sin(angle)] * 10 + rng.normal(scale=0.2, size=(300, 2))
    blob = rng.normal(loc=40, size=(200, 2))  # HDBSCAN wants two clusters at least
    texts = ["moon shaped arc"] * 300 + ["round ball"] * 200
    # Too large a minimum for the crescent to break into pieces.
    found = find_clusters(np.vstack([crescent, blob]), texts, min_cluster_size=160)
    assert [set(c.words) for c in found.clusters] == [{"moon", "shaped", "arc"}, {"round", "ball"}]
    center = np.array(found.clusters[0].center)
    assert np.min(np.linalg.norm(crescent - center, axis=1)) == 0  # one of its points
    assert np.linalg.norm(center) > 8  # on the arc, far from the mean near (0, 6)


def test_large_maps_are_clustered_on_a_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    coords, texts, truth = blob_map(per_blob=300)
    monkeypatch.setattr(clusters_module, "CLUSTER_SAMPLE", 200)
    found = find_clusters(coords, texts)
    assert len(found.clusters) == 3
    assert purity(found, truth) == 1.0
    assert (found.codes >= 0).mean() > 0.9  # the points outside the sample joined clusters


def test_same_seed_same_clusters() -> None:
    coords, texts, _ = blob_map()
    first, second = find_clusters(coords, texts, seed=3), find_clusters(coords, texts, seed=3)
    np.testing.assert_array_equal(first.codes, second.codes)
    assert first.clusters == second.clusters


def test_min_cluster_size_above_every_blob_finds_none() -> None:
    coords, texts, _ = blob_map(per_blob=20)
    found = find_clusters(coords, texts, min_cluster_size=100)
    assert found.clusters == [] and (found.codes == -1).all()


def test_a_cluster_without_words_gets_a_numbered_label() -> None:
    coords, _, _ = blob_map(per_blob=30)
    found = find_clusters(coords, ["the and of"] * len(coords))  # stop words only
    assert [c.label for c in found.clusters] == ["cluster 1", "cluster 2", "cluster 3"]
    assert all(c.words == () for c in found.clusters)


def test_a_small_map_without_a_dense_region_is_all_noise() -> None:
    coords = np.random.default_rng(0).standard_normal((15, 2))
    found = find_clusters(coords, [f"note {i}" for i in range(15)])
    assert found.clusters == [] and (found.codes == -1).all()


def test_one_point_has_no_cluster() -> None:
    found = find_clusters(np.zeros((1, 2)), ["alone"])
    assert found.clusters == [] and list(found.codes) == [-1]


@pytest.mark.parametrize(
    ("coords", "texts", "error", "message"),
    [
        (np.zeros((3, 3)), ["a"] * 3, ValueError, r"coords must be n x 2 .* shape \(3, 3\)"),
        (np.zeros(4), ["a"] * 4, ValueError, "coords must be n x 2"),
        ([["x", "y"]], ["a"], TypeError, "coords must be an array of numbers"),
        (np.zeros((3, 2)), ["a"] * 2, ValueError, "coords has 3 points but texts has 2"),
        (np.zeros((3, 2)), ["a", "b", 7], TypeError, r"texts\[2\] must be a string, got int"),
        (np.zeros((3, 2)), "abc", TypeError, "not a single string"),
        (np.array([[0, 0], [np.nan, 1]]), ["a", "b"], ValueError, r"1 row\(s\): 1"),
    ],
)
def test_bad_arguments_are_named(
    coords: object, texts: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        find_clusters(coords, texts)  # type: ignore[arg-type]


def test_min_cluster_size_below_two_is_refused() -> None:
    coords, texts, _ = blob_map(per_blob=10)
    with pytest.raises(ValueError, match="min_cluster_size must be at least 2, got 1"):
        find_clusters(coords, texts, min_cluster_size=1)


def test_real_sentences_cluster_by_subject(worker: Worker) -> None:
    """End to end: the bundled model's vectors, their UMAP map, then named clusters."""
    subjects = {
        "cooking": [
            "Simmer the tomato sauce with garlic for twenty minutes.",
            "Knead the bread dough until it is smooth and elastic.",
            "Roast the vegetables in a hot oven with olive oil.",
            "Whisk the eggs and sugar before folding in the flour.",
            "Season the soup with salt, pepper and fresh herbs.",
        ],
        "astronomy": [
            "The telescope revealed a faint spiral galaxy.",
            "A comet's tail always points away from the sun.",
            "Astronomers measured the distance to the nearest star.",
            "The planet's orbit around its star takes three years.",
            "A nebula is a cloud of gas where new stars form.",
        ],
        "football": [
            "The striker scored a goal in the final minute.",
            "The referee showed the defender a red card.",
            "The goalkeeper saved a penalty in the match.",
            "Fans sang in the stadium as the team won the cup.",
            "The coach changed the team's formation at half time.",
        ],
    }
    texts, truth = [], []
    for label, sentences in enumerate(subjects.values()):
        for prefix in ("", "Today: ", "Note that ", "In short, "):
            texts += [prefix + s for s in sentences]
            truth += [label] * len(sentences)
    vectors = worker.submit(texts).result(timeout=120).vectors
    coords = project(vectors, "umap", progress=False)
    found = find_clusters(coords, texts, min_cluster_size=10)
    assert len(found.clusters) == 3
    assert purity(found, np.array(truth)) == 1.0
    words = {w for c in found.clusters for w in c.words}
    assert words & {"sauce", "dough", "oven", "eggs", "soup", "garlic", "flour"}
    assert words & {"telescope", "galaxy", "comet", "star", "stars", "planet", "nebula"}
    assert words & {"goal", "referee", "goalkeeper", "team", "match", "striker", "cup"}


def test_many_clusters_are_joined_into_named_regions() -> None:
    # 4 far apart groups of 4 nearby blobs each: 16 clusters in 4 regions (REGIONS is 8, so
    # average linkage stops at 8 at most; the 4 groups must never be mixed).
    rng = np.random.default_rng(2)
    groups = np.array([[0.0, 0.0], [200.0, 0.0], [0.0, 200.0], [200.0, 200.0]])
    offsets = np.array([[0.0, 0.0], [15.0, 0.0], [0.0, 15.0], [15.0, 15.0]])
    blob = np.repeat(np.arange(16), 60)
    coords = groups[blob // 4] + offsets[blob % 4] + rng.normal(size=(len(blob), 2))
    names = ["alpha", "bravo", "charlie", "delta"]
    texts = [f"{names[b // 4]} part{b % 4} note" for b in blob]
    found = find_clusters(coords, texts)
    assert len(found.clusters) == 16 and all(c.level == 1 for c in found.clusters)
    assert 4 <= len(found.regions) <= clusters_module.REGIONS
    assert all(r.level == 0 for r in found.regions)
    assert found.labels == [*found.regions, *found.clusters]
    for region in found.regions:
        members = np.array(region.members)
        assert len(members) == clusters_module.MEMBER_SAMPLE
        group = set((blob[members] // 4).tolist())
        assert len(group) == 1  # a region never spans two far groups
        assert names[group.pop()] in region.words
    assert sum(r.size for r in found.regions) == sum(c.size for c in found.clusters)


def test_few_clusters_need_no_regions() -> None:
    coords, texts, _ = blob_map()
    found = find_clusters(coords, texts)
    assert found.regions == [] and found.labels == found.clusters
    sample = clusters_module.MEMBER_SAMPLE
    assert all(c.level == 0 and len(c.members) == sample for c in found.clusters)


def test_each_point_has_its_clusters_region() -> None:
    rng = np.random.default_rng(3)
    centers = rng.uniform(-300, 300, size=(14, 2))
    blob = np.repeat(np.arange(14), 50)
    coords = centers[blob] + rng.normal(size=(len(blob), 2))
    found = find_clusters(coords, [f"blob{b} word" for b in blob])
    assert found.regions, "14 clusters are joined into regions"
    regions = found.point_regions()
    clustered = found.codes >= 0
    np.testing.assert_array_equal(regions[clustered], found.region_of[found.codes[clustered]])
    assert (regions[~clustered] == -1).all()
    sizes = np.bincount(regions[clustered], minlength=len(found.regions))
    assert sizes.tolist() == [r.size for r in found.regions]
