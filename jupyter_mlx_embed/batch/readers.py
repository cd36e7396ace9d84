"""Input files of batch jobs (core layer): Parquet, JSON Lines and CSV read into Arrow tables.

``pyarrow`` is imported when a file is read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidRequestError

if TYPE_CHECKING:
    import pyarrow as pa

_FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
}


def detect_format(path: Path) -> str:
    """``parquet``, ``jsonl`` or ``csv``, from the file's suffix (``.gz`` and the like are
    looked through).

    Raises:
        ValueError: Another suffix.
    """
    suffixes = [s.lower() for s in path.suffixes]
    while suffixes and suffixes[-1] in (".gz", ".bz2", ".zst", ".lz4"):
        suffixes.pop()
    kind = _FORMATS.get(suffixes[-1]) if suffixes else None
    if kind is None:
        raise ValueError(
            f"cannot tell the format of {path.name}: name it .parquet, .jsonl (.ndjson) or "
            ".csv, or give the format"
        )
    return kind


def read_table(path: Path, fmt: str, column: str) -> tuple[pa.Table, dict[int, Any]]:
    """The whole input as a ``pyarrow.Table`` (CSV's text column read as strings), and the
    values of ``column`` that the table holds as text but that are not strings in the file.

    Only JSON Lines has those: a text column that mixes strings with numbers, booleans,
    objects or arrays (which Arrow's reader refuses) is read as strings, each other value as
    its JSON text, and its rows are returned with the value itself, so that the row rules
    (:func:`.validation.text_problem`) judge the value, not its text.

    Returns:
        The table, and ``{row: value}`` of the values that are not strings in the file.

    Raises:
        InvalidRequestError: The file cannot be read, or has no such column.
    """
    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.json
    import pyarrow.parquet

    retyped: dict[int, Any] = {}
    try:
        if fmt == "parquet":
            table = pyarrow.parquet.read_table(path, memory_map=True)
        elif fmt == "jsonl":
            try:
                table = pyarrow.json.read_json(path)
            except pa.ArrowInvalid as exc:
                if f"Column(/{column})" not in str(exc):
                    raise
                table, retyped = _read_mixed_jsonl(path, column)
        else:
            options = pyarrow.csv.ConvertOptions(column_types={column: pa.string()})
            table = pyarrow.csv.read_csv(path, convert_options=options)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise InvalidRequestError(f"cannot read {path} as {fmt}: {exc}", param="input") from exc
    if column not in table.column_names:
        raise InvalidRequestError(
            f"{path.name} has no column {column!r}; its columns: {', '.join(table.column_names)}",
            param="column",
        )
    return table, retyped


def _read_mixed_jsonl(path: Path, column: str) -> tuple[pa.Table, dict[int, Any]]:
    """JSON Lines whose ``column`` holds strings and other values: parsed line by line (a
    slower path, taken only for such files), then read by Arrow with ``column`` as strings.

    Raises:
        ValueError: A line is not a JSON object.
        pyarrow.ArrowException: Arrow cannot read the rewritten lines (another column mixes
            types).
    """
    import io

    import pyarrow as pa
    import pyarrow.json

    lines: list[str] = []
    names: dict[str, None] = {}  # the columns in order of first appearance, as Arrow reads
    retyped: dict[int, Any] = {}
    with pa.input_stream(str(path)) as stream:  # decompresses .gz and the like
        for number, line in enumerate(io.TextIOWrapper(stream, encoding="utf-8"), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError(f"line {number} is not a JSON object")
            value = row.get(column)
            if value is not None and not isinstance(value, str):
                retyped[len(lines)] = value
                row[column] = json.dumps(value, ensure_ascii=False)
            names.update(dict.fromkeys(row))
            lines.append(json.dumps(row, ensure_ascii=False))
    schema = pa.schema([pa.field(column, pa.string())])
    table = pyarrow.json.read_json(
        io.BytesIO("\n".join(lines).encode()),
        parse_options=pyarrow.json.ParseOptions(explicit_schema=schema),
    )
    return table.select(list(names)), retyped
