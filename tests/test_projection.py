"""2-D maps (explorer.projection): PCA, UMAP, sample-and-place, the stored maps."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import jupyter_mlx_embed
from jupyter_mlx_embed.explorer import _umap_process, projection
from jupyter_mlx_embed.explorer.projection import UMAP_MIN_POINTS, cached_projection, project


def blobs(
    per_blob: int, count: int = 4, dims: int = 24, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors in ``count`` tight, well separated groups, and each one's group."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((count, dims))
    labels = np.repeat(np.arange(count), per_blob)
    vectors = centers[labels] + 0.15 * rng.standard_normal((len(labels), dims))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    order = rng.permutation(len(labels))
    return vectors[order].astype(np.float32), labels[order]


def nearest_label_agreement(coords: np.ndarray, labels: np.ndarray) -> float:
    """Share of points whose nearest other point on the map has their label."""
    distance = np.linalg.norm(coords[:, None] - coords[None], axis=2)
    np.fill_diagonal(distance, np.inf)
    return float((labels[distance.argmin(axis=1)] == labels).mean())


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return blobs(60)


@pytest.fixture(scope="module")
def umap_map(data: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The UMAP map of ``data`` (computed once: numba compiles UMAP on first use)."""
    return project(data[0], "umap", seed=0, progress=False)


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Turn the cache on (the test session turns it off) in a fresh folder."""
    monkeypatch.setenv("JUPYTER_MLX_EMBED_CACHE", "true")
    monkeypatch.setenv("JUPYTER_MLX_EMBED_CACHE_DIR", str(tmp_path))
    return tmp_path / "projections"


def test_package_exports_project() -> None:
    assert jupyter_mlx_embed.project is project


def test_pca_map_is_the_first_two_principal_components(data: tuple[np.ndarray, np.ndarray]) -> None:
    vectors = data[0]
    coords = project(vectors, "pca")
    assert coords.dtype == np.float32 and coords.shape == (len(vectors), 2)
    centered = vectors.astype(np.float64) - vectors.mean(axis=0)
    u, s, _ = np.linalg.svd(centered, full_matrices=False)
    expected = u[:, :2] * s[:2]
    for axis in range(2):  # equal up to the sign of each axis
        correlation = np.corrcoef(coords[:, axis], expected[:, axis])[0, 1]
        assert abs(correlation) > 0.9999


def test_pca_of_a_sample_stays_close_to_the_exact_axes(monkeypatch: pytest.MonkeyPatch) -> None:
    vectors, _ = blobs(500)
    exact = project(vectors, "pca")
    monkeypatch.setattr(projection, "PCA_SAMPLE", 500)
    sampled = project(vectors, "pca")
    for axis in range(2):
        assert abs(np.corrcoef(sampled[:, axis], exact[:, axis])[0, 1]) > 0.99


def test_umap_map_keeps_the_groups_apart(
    data: tuple[np.ndarray, np.ndarray], umap_map: np.ndarray
) -> None:
    assert umap_map.dtype == np.float32 and umap_map.shape == (len(data[0]), 2)
    assert nearest_label_agreement(umap_map, data[1]) == 1.0


def test_umap_map_is_the_same_for_the_same_seed(
    data: tuple[np.ndarray, np.ndarray], umap_map: np.ndarray
) -> None:
    np.testing.assert_array_equal(project(data[0], "umap", seed=0, progress=False), umap_map)
    other = project(data[0], "umap", seed=1, progress=False)
    assert not np.array_equal(other, umap_map)


def test_umap_runs_on_background_threads_one_at_a_time(
    data: tuple[np.ndarray, np.ndarray], umap_map: np.ndarray
) -> None:
    assert threading.current_thread() is threading.main_thread()
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(project, data[0], "umap", progress=False) for _ in range(2)]
        maps = [f.result(timeout=120) for f in futures]
    for coords in maps:
        np.testing.assert_array_equal(coords, umap_map)


def test_a_killed_umap_helper_is_started_again(
    data: tuple[np.ndarray, np.ndarray], umap_map: np.ndarray
) -> None:
    helper = _umap_process._helper
    assert helper is not None, "the UMAP fit ran in no helper process"
    helper[0].kill()
    helper[0].wait()
    np.testing.assert_array_equal(project(data[0], "umap", progress=False), umap_map)
    assert _umap_process._helper is not None and _umap_process._helper[0].pid != helper[0].pid


def test_an_error_in_the_umap_helper_is_raised_here(umap_map: np.ndarray) -> None:
    with pytest.raises(ValueError):
        _umap_process.fit(np.zeros((5, 4), dtype=np.float32), seed=0, neighbors=0)
    assert _umap_process._helper is not None and _umap_process._helper[0].poll() is None


def test_too_few_points_for_umap_get_the_pca_map() -> None:
    vectors, _ = blobs(5)
    assert len(vectors) < UMAP_MIN_POINTS
    np.testing.assert_array_equal(project(vectors, "umap"), project(vectors, "pca"))


def test_umap_on_too_few_points_is_noted_at_info_level(caplog: pytest.LogCaptureFixture) -> None:
    vectors, _ = blobs(5)
    with caplog.at_level(logging.INFO, logger=projection.__name__):
        project(vectors, "pca")
        assert not caplog.records
        project(vectors, "umap")
    [note] = caplog.records
    assert note.levelno == logging.INFO
    assert (
        note.getMessage()
        == f"20 points are too few for UMAP (it needs {UMAP_MIN_POINTS}): the map is PCA's"
    )


@pytest.mark.parametrize("method", ["pca", "umap"])
def test_one_vector_maps_to_the_origin(method: str) -> None:
    np.testing.assert_array_equal(project(np.ones((1, 8)), method), np.zeros((1, 2)))


def test_one_dimension_gives_a_line() -> None:
    coords = project(np.arange(6, dtype=np.float64).reshape(6, 1), "pca")
    assert np.ptp(coords[:, 0]) > 0 and not coords[:, 1].any()


def test_sample_and_place_puts_points_beside_their_neighbours(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vectors, labels = blobs(150)
    monkeypatch.setattr(projection, "UMAP_SAMPLE", 120)
    coords = project(vectors, "umap", progress=False)
    sample = projection.sample_rows(len(vectors), 120, 0)
    # The sample is mapped exactly as it would be alone...
    np.testing.assert_array_equal(coords[sample], project(vectors[sample], "umap", progress=False))
    # ... and each other point lands among the sampled points of its own group.
    placed = np.setdiff1d(np.arange(len(vectors)), sample)
    distance = np.linalg.norm(coords[placed][:, None] - coords[sample][None], axis=2)
    assert (labels[sample][distance.argmin(axis=1)] == labels[placed]).mean() == 1.0


def test_progress_bar_shows_on_request(
    data: tuple[np.ndarray, np.ndarray], umap_map: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    project(data[0], "umap", progress=True)
    assert "UMAP" in capsys.readouterr().err
    project(data[0], "umap", progress=False)
    assert capsys.readouterr().err == ""


def test_second_call_reads_the_stored_map(
    data: tuple[np.ndarray, np.ndarray], umap_map: np.ndarray, cache_dir: Path
) -> None:
    assert cached_projection(data[0], "umap") is None
    np.testing.assert_array_equal(project(data[0], "umap", progress=False), umap_map)
    [stored] = cache_dir.glob("umap-0-*.npy")
    np.testing.assert_array_equal(cached_projection(data[0], "umap"), umap_map)
    # A recognisably different map in the file is what the next call returns: it was read,
    # not computed again.
    np.save(stored, umap_map + 100)
    np.testing.assert_array_equal(project(data[0], "umap"), umap_map + 100)
    # Another method, seed or array is another map.
    assert cached_projection(data[0], "umap", seed=1) is None
    assert cached_projection(data[0], "pca") is None
    assert cached_projection(data[0][:, :-1], "umap") is None


@pytest.mark.parametrize("content", [b"", b"not a numpy file", b"\x93NUMPY\x01\x00garbage"])
def test_a_corrupt_stored_map_is_ignored_and_replaced(
    data: tuple[np.ndarray, np.ndarray], cache_dir: Path, content: bytes
) -> None:
    expected = project(data[0], "pca")
    [stored] = cache_dir.glob("pca-*.npy")
    stored.write_bytes(content)
    np.testing.assert_array_equal(project(data[0], "pca"), expected)
    np.testing.assert_array_equal(np.load(stored), expected)


def test_a_stored_map_of_the_wrong_shape_is_ignored(
    data: tuple[np.ndarray, np.ndarray], cache_dir: Path
) -> None:
    expected = project(data[0], "pca")
    [stored] = cache_dir.glob("pca-*.npy")
    np.save(stored, expected[:-1])
    np.testing.assert_array_equal(project(data[0], "pca"), expected)


def test_an_unusable_cache_folder_does_not_fail_the_call(
    data: tuple[np.ndarray, np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("the cache folder cannot be created under a file")
    monkeypatch.setenv("JUPYTER_MLX_EMBED_CACHE", "true")
    monkeypatch.setenv("JUPYTER_MLX_EMBED_CACHE_DIR", str(blocker))
    coords = project(data[0], "pca")
    assert coords.shape == (len(data[0]), 2)


def test_old_maps_are_evicted(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(projection, "KEEP_MAPS", 2)
    for seed in range(4):
        project(np.full((3, 2), seed, dtype=np.float32) + np.eye(3, 2), "pca")
    assert len(list(cache_dir.glob("*.npy"))) == 2


@pytest.mark.parametrize(
    ("vectors", "error", "message"),
    [
        (np.ones(4), ValueError, r"vectors must be 2-D \(n x d\), got shape \(4,\)"),
        (np.ones((2, 2, 2)), ValueError, "vectors must be 2-D"),
        (np.ones((0, 4)), ValueError, "at least one vector"),
        (np.ones((3, 0)), ValueError, "at least one vector"),
        ([["a", "b"]], TypeError, "vectors must be an array of numbers, got dtype <U1"),
        (np.array([[1, None]], dtype=object), TypeError, "vectors must be an array of numbers"),
        (np.ones((2, 2), dtype=bool), TypeError, "got dtype bool"),
    ],
)
def test_bad_vectors_are_named(vectors: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        project(vectors, "pca")  # type: ignore[arg-type]


def test_nan_rows_are_named_by_index() -> None:
    vectors = np.ones((20, 4), dtype=np.float32)
    vectors[3, 1] = np.nan
    vectors[17, 0] = np.inf
    with pytest.raises(ValueError, match=r"NaN or infinite values in 2 row\(s\): 3, 17"):
        project(vectors)


def test_large_finite_rows_are_not_mistaken_for_nan() -> None:
    vectors = np.full((3, 4), 3e38, dtype=np.float32)  # row sums overflow float32
    assert cached_projection(vectors, "pca") is None  # checked, and no stored map


def test_unknown_method_lists_the_choices() -> None:
    with pytest.raises(ValueError, match=r"method must be one of umap, pca, got 'tsne'"):
        project(np.ones((3, 3)), "tsne")


@pytest.mark.parametrize(
    ("seed", "error"), [(1.5, TypeError), ("0", TypeError), (-1, ValueError), (2**32, ValueError)]
)
def test_bad_seed_is_named(seed: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="seed must"):
        project(np.ones((3, 3)), seed=seed)  # type: ignore[arg-type]
