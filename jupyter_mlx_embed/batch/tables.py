"""One Arrow table of rows embedded on one worker (core layer): the step that Ray actors and
file jobs share. ``pyarrow`` is imported when a table is embedded.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import EngineConfig
from ..errors import InvalidRequestError
from ..options import EmbedOptions
from ..results import EmbedResult
from ..validation import not_texts_error, text_problems
from ..worker import Worker

if TYPE_CHECKING:
    import pyarrow as pa

#: Rows each actor call embeds (a Ray Data batch), unless ``batch_size`` says otherwise.
DEFAULT_BATCH_SIZE = 512


@dataclasses.dataclass(frozen=True)
class ColumnOptions:
    """What to embed in a table and how, as every batch job passes it on (the fields in the
    order of :func:`.filejob.embed_file`'s keywords and of its manifest).

    Args:
        column: The column of texts.
        model, dimensions, prompt_name: As for :meth:`.Worker.submit`.
        output_column: Name of the vector column (``fixed_size_list<float32>[width]``).
        skip_invalid: Give rows that are not texts a null vector and their reason in
            ``<output_column>_error``, instead of failing.
    """

    column: str
    model: str | None = None
    dimensions: int | None = None
    prompt_name: str | None = None
    output_column: str = "embedding"
    skip_invalid: bool = False


def error_column_name(output_column: str) -> str:
    """The column that says why a row has no vector (with ``skip_invalid``)."""
    return f"{output_column}_error"


def _describe_row(table: pa.Table, row: int, column: str) -> str:
    """A few of a row's other values, so a bad row can be found without a global index."""
    shown: list[str] = []
    for name in table.column_names:
        if name == column or len(shown) == 3:
            continue
        value = repr(table.column(name)[row].as_py())
        shown.append(f"{name}={value if len(value) <= 40 else value[:37] + '...'}")
    return f" ({', '.join(shown)})" if shown else ""


def invalid_rows_error(
    problems: Sequence[tuple[int, str]],
    values: Sequence[Any],
    *,
    column: str,
    table: pa.Table | None = None,
    first_row: int | None = None,
    output_column: str = "embedding",
    flag: str = "skip_invalid=True",
) -> InvalidRequestError:
    """The error for rows of ``column`` that are not texts (as :func:`.validation.to_texts`
    judges them), worded by :func:`.validation.not_texts_error`.

    Args:
        problems: (position, reason) of each bad row, positions within ``values``.
        values: The column's values.
        column: The column's name.
        table: The rows, to quote other values of a bad row (when rows have no global
            number, as in a Ray batch).
        first_row: The global number of ``values[0]``; ``None`` when unknown (positions are
            then given within the batch).
        output_column: The vector column (named in the hint).
        flag: The option that skips such rows, for the hint.
    """
    return not_texts_error(
        problems,
        values,
        column=column,
        error_column=error_column_name(output_column),
        flag=flag,
        first_row=first_row,
        quote=None if table is None else lambda i: _describe_row(table, i, column),
    )


def find_invalid_rows(
    values: Sequence[Any],
    options: ColumnOptions,
    *,
    first_row: int | None,
    table: pa.Table | None = None,
    flag: str = "skip_invalid=True",
) -> list[tuple[int, str]]:
    """(position, reason) of each of ``values`` (the rows of ``options.column``) that is not
    a text, when ``options.skip_invalid`` allows them (else they fail the job).

    Args:
        values: The column's values.
        options: The job's options.
        first_row, table, flag: As for :func:`invalid_rows_error`.

    Raises:
        InvalidRequestError: Rows are not texts and ``options.skip_invalid`` is off.
    """
    problems = text_problems(values)
    if problems and not options.skip_invalid:
        raise invalid_rows_error(
            problems,
            values,
            column=options.column,
            table=table,
            first_row=first_row,
            output_column=options.output_column,
            flag=flag,
        )
    return problems


def _vector_column(vectors: np.ndarray, valid: np.ndarray | None) -> pa.Array:
    """A fixed-size float32 list column (null where ``valid`` is False)."""
    import pyarrow as pa

    n, width = vectors.shape
    values = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    kind = pa.list_(pa.float32(), width)
    if valid is None or valid.all():
        return pa.FixedSizeListArray.from_arrays(values, width)
    bitmap = pa.array(valid, type=pa.bool_()).buffers()[1]
    return pa.Array.from_buffers(kind, n, [bitmap], children=[values])


def embed_table(
    worker: Worker,
    table: pa.Table,
    options: ColumnOptions | None = None,
    *,
    width: int,
    chunk_rows: int = DEFAULT_BATCH_SIZE,
    first_row: int | None = None,
    provenance: tuple[str, str] | None = None,
    on_rows: Callable[[int], None] | None = None,
    **fields: Any,
) -> pa.Table:
    """``table`` with a vector column (and, with ``skip_invalid``, a reason column) added.

    Args:
        worker: The worker that embeds.
        table: The rows (a ``pyarrow.Table``).
        options: The column, the request options, the vector column and ``skip_invalid``.
        width: Values per vector (the model's dimension, or ``dimensions``).
        chunk_rows: Rows per request to the worker (two are kept in flight).
        first_row: Global number of the first row, for messages (``None``: unknown).
        provenance: (column name, value) to add to every row.
        on_rows: Called with the number of rows each finished request embedded.
        **fields: Instead of ``options``, its fields (``ColumnOptions(**fields)``).

    Raises:
        InvalidRequestError: ``column`` is missing, or rows are not texts (without
            ``skip_invalid``); other :class:`EmbedError` as the worker raises them.
    """
    import pyarrow as pa

    if options is None:
        options = ColumnOptions(**fields)
    elif fields:
        raise TypeError("give options or its fields, not both")
    column, output_column = options.column, options.output_column
    if column not in table.column_names:
        raise InvalidRequestError(
            f"there is no column {column!r}; the columns are: {', '.join(table.column_names)}",
            param="column",
        )
    values = table.column(column).to_pylist()
    problems = find_invalid_rows(values, options, first_row=first_row, table=table)
    valid = np.ones(len(values), dtype=bool)
    valid[[i for i, _ in problems]] = False
    keep = np.flatnonzero(valid)
    vectors = np.zeros((len(values), width), dtype=np.float32)
    request = EmbedOptions(options.model, options.dimensions, options.prompt_name)
    step = max(1, min(chunk_rows, worker.config.max_inputs))
    pending: deque[tuple[int, Future[EmbedResult]]] = deque()
    try:
        for start in range(0, len(keep), step):
            rows = keep[start : start + step]
            first = None if first_row is None else first_row + int(rows[0])
            texts = [values[i] for i in rows]
            pending.append((start, worker.submit(texts, request, first_index=first or 0)))
            while len(pending) > 1 or (pending and start + step >= len(keep)):
                done_start, future = pending.popleft()
                result = future.result()
                vectors[keep[done_start : done_start + len(result.vectors)]] = result.vectors
                if on_rows is not None:
                    on_rows(len(result.vectors))
    finally:
        for _, future in pending:
            future.cancel()
    out = table.append_column(output_column, _vector_column(vectors, valid))
    if options.skip_invalid:
        reasons: list[str | None] = [None] * len(values)
        for i, reason in problems:
            reasons[i] = reason
        out = out.append_column(error_column_name(output_column), pa.array(reasons, pa.string()))
    if provenance is not None:
        out = out.append_column(provenance[0], pa.array([provenance[1]] * len(values)))
    return out


def check_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """Engine overrides of a job (for this process's worker or each Ray actor), checked before
    anything runs (each node still applies them over its own ``JUPYTER_MLX_EMBED_*``
    environment).

    Raises:
        ValueError: An unknown setting, or a value out of its bounds or choices.
    """
    overrides = dict(settings or {})
    names = {f.name for f in dataclasses.fields(EngineConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown engine settings {unknown}; known: {', '.join(sorted(names))}")
    EngineConfig(**overrides)  # values: bounds and choices
    return overrides
