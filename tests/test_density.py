"""Density contours of a map (jupyter_mlx_embed.explorer.density)."""

from __future__ import annotations

import itertools

import numpy as np

from jupyter_mlx_embed.explorer.density import CATEGORIES, SHARES, contours


def blobs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    codes = np.repeat(np.arange(3), [3000, 2000, 1000])
    return centres[codes] + rng.normal(size=(len(codes), 2)), codes


def inside(paths: list[list[float]], points: np.ndarray) -> np.ndarray:
    """Points inside any of the closed paths (even-odd rule, by ray casting)."""
    held = np.zeros(len(points), dtype=bool)
    x, y = points[:, 0], points[:, 1]
    for path in paths:
        vertices = np.reshape(path, (-1, 2))
        crossings = np.zeros(len(points), dtype=bool)
        for (x0, y0), (x1, y1) in itertools.pairwise(vertices):
            spans = (y0 > y) != (y1 > y)
            with np.errstate(divide="ignore", invalid="ignore"):
                at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
            crossings ^= spans & (x < at)
        held |= crossings
    return held


def test_lines_hold_the_shares_of_the_points() -> None:
    points, _ = blobs()
    found = contours(points)
    assert [c["share"] for c in found] == list(SHARES) and all(c["color"] == "" for c in found)
    for line_set in found:
        held = inside(line_set["paths"], points).mean()
        assert abs(held - line_set["share"]) < 0.06, (line_set["share"], held)
        for path in line_set["paths"]:
            assert len(path) % 2 == 0 and path[:2] == path[-2:]  # closed x, y pairs
    # The densest half lies in the blobs: one line around each at least.
    assert len(found[0]["paths"]) >= 3


def test_each_category_gets_its_own_lines_in_its_colour() -> None:
    points, codes = blobs()
    found = contours(points, codes, ["#111111", "#222222", "#333333"], [3000, 2000, 1000])
    assert [c["color"] for c in found] == ["#111111", "#222222", "#333333"]
    for code, line_set in enumerate(found):
        own = inside(line_set["paths"], points[codes == code]).mean()
        others = inside(line_set["paths"], points[codes != code]).mean()
        assert own > 0.6 and others < 0.05


def test_only_the_largest_categories_and_no_lines_for_too_few_points() -> None:
    rng = np.random.default_rng(1)
    points = rng.normal(size=(4000, 2)) * 5
    codes = rng.integers(0, 15, 4000)
    counts = np.bincount(codes).tolist()
    assert len(contours(points, codes, ["#000000"] * 15, counts)) == CATEGORIES
    assert contours(points[:10]) == []
