"""Density contours of a map (notebook layer; no MLX): where the points crowd, drawn as a
few closed lines, so that a map of a million points is readable at full view.

The points are binned on a :data:`GRID` x :data:`GRID` grid spanning the map, smoothed
with a Gaussian (scipy), and traced at the densities that hold :data:`SHARES` of the points
(the densest part first; contourpy). Per category, each of the :data:`CATEGORIES` largest
categories gets its own lines at the first of those shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: Bins on each side of the grid.
GRID = 200
#: Gaussian smoothing, in bins.
SIGMA = 2.0
#: The contours drawn: the densest areas that hold these shares of the points.
SHARES = (0.5, 0.8, 0.95)
#: Categories that get their own lines (the largest), and the share each line holds.
CATEGORIES = 10
CATEGORY_SHARE = 0.7
#: Fewest points a set needs for lines (fewer make noise, not areas).
MIN_POINTS = 20
#: Most vertices sent per line (longer lines are thinned evenly).
MAX_VERTICES = 400


def contours(
    coords: np.ndarray,
    codes: np.ndarray | None = None,
    palette: Sequence[str] = (),
    counts: Sequence[int] = (),
) -> list[dict[str, Any]]:
    """The density lines of a map, as the ``contours`` trait carries them: one dict per
    line set, ``{"share", "color", "paths"}`` with each path a flat ``[x0, y0, x1, ...]``
    list in map coordinates, closed.

    Args:
        coords: Map positions (n x 2).
        codes: Each point's category (categorical colouring) for lines per category, or
            None for the lines of all points together.
        palette: The categories' colours (``color`` of their lines); ``""`` otherwise.
        counts: Points per category (the largest :data:`CATEGORIES` get lines).
    """
    points = np.asarray(coords, dtype=np.float64)
    if len(points) < MIN_POINTS or not np.isfinite(points).all():
        return []
    lo, hi = points.min(axis=0), points.max(axis=0)
    span = np.maximum(hi - lo, 1e-9)
    lo, hi = lo - 0.05 * span, hi + 0.05 * span  # room for the lines around the edge
    if codes is None:
        return [
            {"share": share, "color": "", "paths": paths}
            for share, paths in zip(SHARES, _lines(points, lo, hi, SHARES), strict=True)
        ]
    found = []
    largest = np.argsort(-np.asarray(counts, dtype=np.int64), kind="stable")[:CATEGORIES]
    for code in largest.tolist():
        chosen = points[codes == code]
        if len(chosen) < MIN_POINTS:
            continue
        (paths,) = _lines(chosen, lo, hi, (CATEGORY_SHARE,))
        color = palette[code] if code < len(palette) else ""
        found.append({"share": CATEGORY_SHARE, "color": color, "paths": paths})
    return found


def _lines(
    points: np.ndarray, lo: np.ndarray, hi: np.ndarray, shares: Sequence[float]
) -> list[list[list[float]]]:
    """Per share, the closed lines around the densest cells holding that share of points."""
    from contourpy import contour_generator
    from scipy.ndimage import gaussian_filter

    counts, xs, ys = np.histogram2d(
        points[:, 0], points[:, 1], bins=GRID, range=[[lo[0], hi[0]], [lo[1], hi[1]]]
    )
    density = gaussian_filter(counts.T, SIGMA)  # rows: y, columns: x
    ranked = np.sort(density.ravel())[::-1]
    held = np.cumsum(ranked) / max(ranked.sum(), 1e-12)
    centers_x, centers_y = (xs[:-1] + xs[1:]) / 2, (ys[:-1] + ys[1:]) / 2
    generator = contour_generator(centers_x, centers_y, density, line_type="Separate")
    found = []
    for share in shares:
        level = ranked[min(int(np.searchsorted(held, share)), len(ranked) - 1)]
        lines = generator.lines(float(level)) if level > 0 else []
        found.append([_flat(np.asarray(line)) for line in lines if len(line) >= 4])
    return found


def _flat(line: np.ndarray) -> list[float]:
    """A line's vertices as ``[x0, y0, x1, y1, ...]``, thinned to :data:`MAX_VERTICES`."""
    if len(line) > MAX_VERTICES:
        keep = np.linspace(0, len(line) - 1, MAX_VERTICES).round().astype(int)
        line = line[keep]
    return [round(float(v), 5) for v in line.ravel()]
