"""Table input for the explorer (notebook layer): a DataFrame's (or a mapping's) columns
checked against the texts, tooltip columns and their cells, colourings by column, and a text
column embedded with the rules of ``%embed -i``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .. import api
from ..embeddings import Embeddings
from ..options import EmbedOptions
from ..results import EmbedResult
from ..validation import labels_of, to_texts
from ._format import TEXT_LIMIT, clip
from .data import Coloring, color_by, label_coloring

#: The choice of ``color_by`` that colours by ``labels=``.
LABELS = "labels"


def columns_of(data: Any, n: int | None) -> dict[str, Any]:
    """``data``'s columns by name (a DataFrame, or a mapping of name to values), each
    checked to hold ``n`` values.

    Raises:
        TypeError: ``data`` is not a table, or a column is a single value.
        ValueError: A column does not hold ``n`` values.
    """
    if data is None:
        return {}
    names = getattr(data, "columns", None)
    if names is not None:  # a DataFrame: its Series, which keep their dtypes
        columns = {str(name): data[name] for name in names}
    elif isinstance(data, Mapping):
        columns = {str(name): values for name, values in data.items()}
    else:
        raise TypeError(
            f"data must be a pandas DataFrame or a mapping of column name to values, "
            f"got {type(data).__name__}"
        )
    for name, values in columns.items():
        if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
            raise TypeError(f"data[{name!r}] must be a column of values, not {values!r}")
        if n is not None and len(values) != n:
            raise ValueError(f"data has {len(values)} rows but there are {n} texts")
    return columns


def tooltip_columns(tooltip: Sequence[str], columns: Mapping[str, Any]) -> list[str]:
    """The tooltip's column names, each checked to be a column of the table."""
    if isinstance(tooltip, str):
        tooltip = [tooltip]
    missing = [name for name in tooltip if name not in columns]
    if missing:
        raise ValueError(
            f"tooltip column {missing[0]!r} is not a column of data; {choices(columns)}"
        )
    return list(tooltip)


def choices(names: Iterable[str]) -> str:
    """The end of a message naming a missing column: the columns there are."""
    listed = ", ".join(repr(name) for name in names)
    return f"choose one of {listed}" if listed else "data has no columns"


def row(
    texts: Sequence[str], columns: Mapping[str, Any], names: Sequence[str], index: int
) -> dict[str, Any]:
    """Item ``index`` as the front end's tooltips and tables show it: its clipped text and
    its values of the columns ``names``, as strings."""
    fields = {name: _cell(columns[name], index) for name in names}
    return {"index": index, "text": clip(texts[index], TEXT_LIMIT), "fields": fields}


class Colorings:
    """The colourings of one explorer by name: those given (``labels=``, ``color=`` values)
    and one per column of the table, computed on first use."""

    def __init__(self, columns: Mapping[str, Any], n: int) -> None:
        self._columns = columns
        self._n = n
        self._known: dict[str, Coloring] = {}

    def add(self, name: str, coloring: Coloring) -> None:
        """Offer ``coloring`` under ``name``."""
        self._known[name] = coloring

    def get(self, name: str) -> Coloring:
        """The colouring called ``name`` (a column's, computed now if need be); ``""``: none."""
        if not name:
            return Coloring("none", codes=np.zeros(self._n, dtype=np.uint8))
        if name not in self._known:
            self._known[name] = color_by(
                self._columns[name], self._n, name=f"data[{name!r}]", column=name
            )
        return self._known[name]


def choose_colorings(
    labels: Iterable[Any] | None,
    color: str | Iterable[Any] | None,
    columns: Mapping[str, Any],
    n: int,
) -> tuple[Colorings, list[str], str]:
    """The colourings offered, the colour menu's choices and the one chosen at first
    (``""``: none), from ``labels=`` or ``color=`` (a column's name or one value per text).

    Raises:
        ValueError: ``color`` names no column, or labels or colours of the wrong length.
        TypeError: ``labels`` or ``color`` values are a single string.
    """
    colorings = Colorings(columns, n)
    options = list(columns)
    chosen = ""
    if labels is not None:
        colorings.add(LABELS, label_coloring(labels, n))
        options.insert(0, LABELS)
        chosen = LABELS
    elif isinstance(color, str):
        if color not in columns:
            raise ValueError(f"color={color!r} is not a column of data; {choices(columns)}")
        chosen = color
    elif color is not None:
        colorings.add("color", color_by(color, n, name="color"))
        options.insert(0, "color")
        chosen = "color"
    return colorings, options, chosen


def embed_column(
    data: Any,
    text: str,
    *,
    color: str | Iterable[Any] | None,
    model: str | None,
    dimensions: int | None,
    skip_invalid: bool,
) -> tuple[Embeddings, dict[str, Any], str | Iterable[Any] | None]:
    """Embed the column ``text`` of ``data`` with the rules of ``%embed -i``.

    Returns:
        The embeddings (indexed by the table's index), the table's columns and ``color``
        (when it is one value per row), both without the rows left out by ``skip_invalid``.

    Raises:
        ValueError: ``text`` is not a column of ``data``, or no row has a text.
        EmbedError: Rows that are not texts (naming them), or the embedding failed.
    """
    columns = columns_of(data, None)
    if text not in columns:
        raise ValueError(f"text={text!r} is not a column of data; {choices(columns)}")
    values = columns[text]
    texts, skipped = to_texts(values, name=f"data[{text!r}]", skip_invalid=skip_invalid)
    if not texts:
        raise ValueError(f"data[{text!r}] has no texts to embed")
    labels = labels_of(values)
    kept = np.setdiff1d(np.arange(len(texts) + len(skipped)), skipped)
    parts = list(api.embed_chunks(texts, EmbedOptions(model, dimensions)))
    result = EmbedResult.concatenate(parts)
    embeddings = Embeddings(
        texts,
        result.vectors,
        result.model,
        index=None if labels is None else [labels[i] for i in kept],
        skipped=[i if labels is None else labels[i] for i in skipped],
    )
    table = (
        {name: take_rows(column, kept) for name, column in columns.items()} if skipped else columns
    )
    if color is not None and not isinstance(color, str):
        color = take_rows(color, kept) if skipped else color
    return embeddings, table, color


def take_rows(values: Any, positions: Sequence[int] | np.ndarray) -> Any:
    """The values of a column (a Series, or a list) at ``positions``."""
    iloc = getattr(values, "iloc", None)
    if iloc is not None:
        return iloc[positions]
    return [values[int(i)] for i in positions]


def numeric_columns(columns: Mapping[str, Any]) -> list[str]:
    """The columns holding numbers (what point sizes can follow)."""
    numeric = []
    for name, values in columns.items():
        # pandas and numpy columns say their kind without a copy (pandas' own dtypes too).
        dtype = getattr(values, "dtype", None)
        kind = np.asarray(values).dtype.kind if dtype is None else getattr(dtype, "kind", "O")
        if kind in "iuf":
            numeric.append(name)
    return numeric


def column_strings(values: Any, n: int) -> list[str]:
    """A column's ``n`` values as tooltips show them (strings, clipped)."""
    return [_cell(values, i) for i in range(n)]


def _cell(values: Any, index: int) -> str:
    iloc = getattr(values, "iloc", None)
    value = iloc[index] if iloc is not None else values[index]
    return clip(str(value), 200)
