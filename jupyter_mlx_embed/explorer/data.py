"""The similarity explorer's data, computed in Python (notebook layer): point colours by a
column, compact similarity scores and the heatmap's row order (the static PNG of the map is
:mod:`.snapshot`'s).

Everything here is plain numpy (plus scipy for seriation), so that the widget module only
moves data between Python and its front end.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

_Values = TypeVar("_Values", list[Any], np.ndarray)

#: Most categories coloured on their own; the rest share the "other" colour.
TOP_CATEGORIES = 20
#: Name of the category that gathers all but the top ``TOP_CATEGORIES``.
OTHER = "other"
#: Colour of "other", of missing numeric values and of points without a colouring.
GREY = "#9aa0a6"
#: Default point colour (no colouring): the first categorical colour.
DEFAULT_COLOR = "#4e79a7"
#: Numeric values and similarity scores are sent as one byte per point: 0..254 spans the
#: range, 255 marks a missing value.
MISSING = 255
LEVELS = 255

# Tableau 20 (distinct on light and dark backgrounds), strong shades first.
_CATEGORICAL = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#499894", "#86bcb6", "#d37295", "#fabfd2", "#b6992d", "#f1ce63", "#a0cbe8",
    "#ffbe7d", "#8cd17d", "#d4a6c8", "#d7b5a6",
)  # fmt: skip

# Stops of matplotlib's viridis (perceptually uniform, colour-blind safe).
_VIRIDIS = (
    (68, 1, 84), (72, 40, 120), (62, 74, 137), (49, 104, 142), (38, 130, 142),
    (31, 158, 137), (53, 183, 121), (110, 206, 88), (181, 222, 43), (253, 231, 37),
)  # fmt: skip


@dataclass(frozen=True)
class Coloring:
    """How points are coloured: one byte per point and what the bytes mean.

    Attributes:
        kind: ``"none"``, ``"categorical"`` or ``"numeric"``.
        column: What the colours show (a column name), for the legend.
        codes: uint8 per point: a category's position in ``names`` (categorical) or the
            value scaled to 0..254 between ``lo`` and ``hi`` (numeric; 255 = missing).
        names: Categories, most frequent first (``"other"`` last when there are more than
            ``TOP_CATEGORIES``).
        counts: Points in each category.
        palette: One ``#rrggbb`` colour per code: per category, or per numeric level plus
            grey for missing values (code ``MISSING``), or the default colour alone.
        lo: Smallest numeric value.
        hi: Largest numeric value.
        values: The numeric values themselves (float64; NaN for missing), for range filters.
    """

    kind: str
    column: str = ""
    codes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint8))
    names: list[str] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    palette: list[str] = field(default_factory=lambda: [DEFAULT_COLOR])
    lo: float = 0.0
    hi: float = 0.0
    values: np.ndarray | None = None

    def point_colors(self) -> tuple[np.ndarray, np.ndarray]:
        """``(codes, rgb)``: each point's palette index and the palette as uint8 RGB rows."""
        return self.codes.astype(np.intp), _rgb(self.palette)


def categorical_palette(count: int, *, other: bool = False) -> list[str]:
    """``count`` distinct colours; the last one grey when it stands for "other"."""
    colours = [_CATEGORICAL[i % len(_CATEGORICAL)] for i in range(count)]
    if other and count:
        colours[-1] = GREY
    return colours


def numeric_palette(levels: int = LEVELS) -> list[str]:
    """Viridis sampled at ``levels`` evenly spaced points, as ``#rrggbb``."""
    stops = np.asarray(_VIRIDIS, dtype=np.float64)
    at = np.linspace(0, len(stops) - 1, levels)
    low = np.minimum(at.astype(int), len(stops) - 2)
    frac = (at - low)[:, None]
    rgb = np.rint(stops[low] * (1 - frac) + stops[low + 1] * frac).astype(int)
    return [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in rgb]


def color_by(values: Iterable[Any] | None, n: int, *, name: str, column: str = "") -> Coloring:
    """Colour ``n`` points by ``values``: numbers on a continuous scale, anything else (and
    integers with at most ``TOP_CATEGORIES`` distinct values) as categories.

    Args:
        values: One value per point (a list, array or pandas Series), or None.
        n: Number of points.
        name: What the caller calls ``values``, for messages.
        column: What the colours show, for the legend (``name`` by default).

    Raises:
        TypeError: ``values`` is a single string.
        ValueError: Not one value per point.
    """
    if values is None:
        return Coloring("none", codes=np.zeros(n, dtype=np.uint8))
    array = _one_per_text(values, n, name, _as_array)
    label = column or name
    if array.dtype.kind in "iuf" and array.ndim == 1:
        finite = array[np.isfinite(array)] if array.dtype.kind == "f" else array
        distinct = np.unique(finite[:100_000]) if len(finite) else finite
        if array.dtype.kind == "f" or len(distinct) > TOP_CATEGORIES:
            return _numeric(array.astype(np.float64), label)
    return _categorical(array, label)


def label_coloring(labels: Iterable[Any] | None, n: int) -> Coloring:
    """``labels=``: always categories, compared by their text (what the legend shows).

    Raises:
        TypeError: ``labels`` is a single string.
        ValueError: Not one label per text.
    """
    if labels is None:
        return Coloring("none", codes=np.zeros(n, dtype=np.uint8))
    values = _one_per_text(labels, n, "labels", list)
    return _categorical(np.asarray([str(v) for v in values], dtype=object), "labels")


def _one_per_text(
    values: Iterable[Any], n: int, name: str, convert: Callable[[Iterable[Any]], _Values]
) -> _Values:
    """``convert(values)``, checked to hold one value per text."""
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be one value per text, not a single string")
    converted = convert(values)
    if len(converted) != n:
        raise ValueError(f"{name} has {len(converted)} values but there are {n} texts")
    return converted


def _as_array(values: Iterable[Any]) -> np.ndarray:
    to_numpy = getattr(values, "to_numpy", None)
    if callable(to_numpy):  # a pandas Series (keeps its dtype; nullable ints become floats)
        array = np.asarray(to_numpy())
    else:
        array = np.asarray(values if isinstance(values, Sequence | np.ndarray) else list(values))
    if array.dtype.kind == "b":
        return array.astype(str).astype(object)
    return array


def scaled_codes(values: Any, n: int, name: str) -> np.ndarray:
    """Numbers as one byte per point: 0..254 from the smallest to the largest, ``MISSING``
    for NaN (point sizes by a column).

    Raises:
        TypeError: The values are not numbers.
        ValueError: Not one value per point.
    """
    array = _one_per_text(values, n, name, _as_array)
    if array.dtype.kind not in "iuf" or array.ndim != 1:
        raise TypeError(f"{name} must hold numbers, got dtype {array.dtype}")
    return _numeric(array.astype(np.float64), name).codes


def _numeric(values: np.ndarray, column: str) -> Coloring:
    finite = np.isfinite(values)
    lo = float(values[finite].min()) if finite.any() else 0.0
    hi = float(values[finite].max()) if finite.any() else 0.0
    span = hi - lo if hi > lo else 1.0
    scaled = np.zeros(len(values), dtype=np.float64)
    scaled[finite] = (values[finite] - lo) / span
    codes = np.where(finite, np.rint(scaled * (LEVELS - 1)), MISSING).astype(np.uint8)
    palette = [*numeric_palette(), GREY]  # code MISSING (255) is the last colour
    return Coloring("numeric", column, codes, palette=palette, lo=lo, hi=hi, values=values)


def _categorical(values: np.ndarray, column: str) -> Coloring:
    # Dictionary coding in one pass (faster than sorting a million strings with np.unique).
    seen: dict[str, int] = {}
    raw = np.fromiter(
        (seen.setdefault(_category(v), len(seen)) for v in values),
        dtype=np.int64,
        count=len(values),
    )
    names = list(seen)
    counts = np.bincount(raw, minlength=len(names))
    # Most frequent first; ties keep the order of first appearance (a stable sort).
    order = np.argsort(-counts, kind="stable")
    rank = np.empty(len(names), dtype=np.int64)
    rank[order] = np.arange(len(names))
    codes = rank[raw]
    shown = [names[i] for i in order[:TOP_CATEGORIES]]
    shown_counts = [int(counts[i]) for i in order[:TOP_CATEGORIES]]
    if len(names) > TOP_CATEGORIES:
        codes = np.minimum(codes, TOP_CATEGORIES)
        shown.append(OTHER)
        shown_counts.append(int(counts[order[TOP_CATEGORIES:]].sum()))
    palette = categorical_palette(len(shown), other=len(names) > TOP_CATEGORIES)
    return Coloring("categorical", column, codes.astype(np.uint8), shown, shown_counts, palette)


def _category(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "missing"
    return str(value)


def quantize_scores(scores: np.ndarray) -> tuple[bytes, float, float]:
    """Similarity scores as one byte per point, 0..254 from the lowest to the highest.

    Returns:
        The bytes and the range ``(lo, hi)`` they span.
    """
    if not len(scores):
        return b"", 0.0, 0.0
    lo, hi = float(scores.min()), float(scores.max())
    span = hi - lo if hi > lo else 1.0
    codes = np.rint((scores - lo) / span * (LEVELS - 1)).astype(np.uint8)
    return codes.tobytes(), lo, hi


def seriate(similarity: np.ndarray) -> np.ndarray:
    """An order of the rows of a similarity matrix that puts similar rows next to each
    other: average-linkage clustering of ``1 - similarity`` with the optimal leaf ordering
    (Bar-Joseph et al., 2001), which minimises the distance between neighbouring leaves.

    Returns:
        Row positions (int), a permutation of ``range(len(similarity))``.
    """
    m = len(similarity)
    if m < 3:
        return np.arange(m)
    from scipy.cluster.hierarchy import leaves_list, linkage, optimal_leaf_ordering
    from scipy.spatial.distance import squareform

    distance = np.clip(1.0 - np.asarray(similarity, dtype=np.float64), 0.0, 2.0)
    distance = (distance + distance.T) / 2
    np.fill_diagonal(distance, 0.0)
    condensed = squareform(distance, checks=False)
    tree = optimal_leaf_ordering(linkage(condensed, method="average"), condensed)
    return np.asarray(leaves_list(tree), dtype=np.intp)


def _rgb(colours: Sequence[str]) -> np.ndarray:
    return np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in colours], dtype=np.uint8)
