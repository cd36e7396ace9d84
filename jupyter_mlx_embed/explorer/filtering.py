"""Which points the explorer's filter keeps (notebook layer): a pandas query or a boolean
mask set from Python, a keyword typed in the widget, a range of a numeric column; points
that do not match are greyed out on the map, not hidden.

Each part gives a boolean mask over the points (or ``None``: no condition); the filter keeps
the points every part keeps.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._format import count

#: A keyword written ``/like this/`` is a regular expression; otherwise a plain substring.
#: Either way case is ignored.
_REGEX = re.compile(r"^/(.+)/$", re.DOTALL)


def expression_mask(expression: str, table: Mapping[str, Any], texts: Sequence[str]) -> np.ndarray:
    """The rows for which a pandas query (``DataFrame.query`` syntax) holds, over the
    table's columns and ``text`` (unless the table has its own ``text`` column).

    Raises:
        ValueError: The expression is not valid, names no column, or is not a condition.
    """
    import pandas as pd

    frame = pd.DataFrame({"text": list(texts), **dict(table)}, copy=False)
    try:
        result = frame.eval(expression)
    except Exception as exc:  # pandas raises many kinds; all mean "not a valid filter"
        raise ValueError(f"filter {expression!r} is not a valid query: {exc}") from exc
    values = np.asarray(result)
    if values.shape != (len(frame),) or values.dtype != np.bool_:
        raise ValueError(
            f'filter {expression!r} is not a condition on the rows (e.g. "year > 2000")'
        )
    return values


def given_mask(mask: Any, n: int) -> np.ndarray:
    """A boolean mask given from Python (array, list or pandas Series of booleans).

    Raises:
        TypeError: It does not hold booleans.
        ValueError: It is not one value per point.
    """
    values = np.asarray(mask)
    if values.dtype != np.bool_:
        raise TypeError(
            f"filter must be a pandas query (str) or a boolean mask, got dtype {values.dtype}"
        )
    if values.shape != (n,):
        raise ValueError(f"filter mask must hold one value per point ({n}), got {values.shape}")
    return values.copy()


def keyword_mask(keyword: str, texts: Sequence[str]) -> np.ndarray | None:
    """The texts holding ``keyword`` (ignoring case; ``/.../`` is a regular expression),
    or ``None`` for a blank keyword.

    Raises:
        ValueError: ``/.../`` holds an invalid regular expression.
    """
    if not keyword.strip():
        return None
    found = _REGEX.match(keyword.strip())
    if found is None:
        needle = keyword.casefold()
        return np.fromiter((needle in text.casefold() for text in texts), bool, len(texts))
    try:
        pattern = re.compile(found.group(1), re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"{keyword} is not a valid regular expression: {exc}") from exc
    return np.fromiter((pattern.search(text) is not None for text in texts), bool, len(texts))


def range_mask(values: np.ndarray, bounds: Sequence[float]) -> np.ndarray | None:
    """The points whose value lies within ``bounds`` (lo, hi; inclusive), or ``None`` for no
    bounds. Missing values (NaN) lie outside any range."""
    if len(bounds) != 2:
        return None
    lo, hi = float(bounds[0]), float(bounds[1])
    with np.errstate(invalid="ignore"):
        return (values >= lo) & (values <= hi)


def combined(masks: Sequence[np.ndarray | None]) -> np.ndarray | None:
    """The points every mask keeps (``None`` when no mask is given)."""
    given = [m for m in masks if m is not None]
    if not given:
        return None
    return np.logical_and.reduce(given) if len(given) > 1 else given[0]


def describe_mask(mask: np.ndarray) -> str:
    """How a mask given from Python is shown: ``"mask of 1,234 rows"``."""
    return f"mask of {count(int(mask.sum()), 'row')}"
