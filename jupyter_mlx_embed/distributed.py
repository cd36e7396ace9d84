"""Whole corpora: Ray Data datasets and resumable file jobs, each process owning one Worker.

:func:`embed_dataset` adds a vector column to a ``ray.data.Dataset`` with a pool of actors;
each actor is one process that owns one :class:`~.worker.Worker` (one MLX thread), with its
BLAS threads sized to the CPUs Ray reserved for it. :func:`embed_file` embeds a Parquet,
JSONL or CSV file into Parquet, on this process's worker or on Ray, in numbered parts so that
an interrupted job resumes where it stopped. ``ray`` (the ``ray`` extra) and ``pyarrow`` are
imported when these functions run, never when the package is imported.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import logging
import os
import shutil
import socket
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .cache import CacheUnavailableError, EmbeddingCache, model_identity
from .config import EngineConfig
from .errors import EmbedError, InputTypeError, InvalidRequestError
from .modelspec import ModelSpec
from .registry import ModelRegistry
from .results import EmbedResult
from .validation import check_dimensions, check_prompt, text_problem
from .worker import Worker, current_worker

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data

log = logging.getLogger(__name__)

#: Rows each actor call embeds (a Ray Data batch), unless ``batch_size`` says otherwise.
DEFAULT_BATCH_SIZE = 512
#: Restarts of a dead actor, and retries of a batch whose actor died, before the job fails.
MAX_RESTARTS = 4
MAX_TASK_RETRIES = 4
#: Rows per part file of :func:`embed_file` (what an interrupted job loses at most).
DEFAULT_PART_ROWS = 10_000
#: Bad rows a validation message names before it says "and N more".
_SHOWN_PROBLEMS = 3
_MANIFEST = "manifest.json"
_FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
}


def error_column_name(output_column: str) -> str:
    """The column that says why a row has no vector (with ``skip_invalid``)."""
    return f"{output_column}_error"


# -- one table of rows, on one worker ---------------------------------------------------


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
    judges them).

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

    def where(i: int) -> str:
        if first_row is not None:
            return f"{column}[{first_row + i}]"
        quoted = "" if table is None else _describe_row(table, i, column)
        return f"{column}: the row at position {i} of a batch of {len(values)}{quoted}"

    shown = "; ".join(f"{where(i)} {reason}" for i, reason in problems[:_SHOWN_PROBLEMS])
    more = len(problems) - _SHOWN_PROBLEMS
    message = shown + (f"; and {more} more" if more > 0 else "")
    if len(problems) > 1:
        message = f"{len(problems)} rows of column {column!r} are not texts: {message}"
    message += (
        f". Remove them first, or skip them with {flag} (a null vector, and the reason in "
        f"column {error_column_name(output_column)!r})"
    )
    kind = InputTypeError if any(not isinstance(values[i], str) for i, _ in problems) else None
    return (kind or InvalidRequestError)(message, param="input")


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
    *,
    column: str,
    width: int,
    model: str | None = None,
    dimensions: int | None = None,
    prompt_name: str | None = None,
    output_column: str = "embedding",
    skip_invalid: bool = False,
    chunk_rows: int = DEFAULT_BATCH_SIZE,
    first_row: int | None = None,
    provenance: tuple[str, str] | None = None,
    on_rows: Callable[[int], None] | None = None,
) -> pa.Table:
    """``table`` with a vector column (and, with ``skip_invalid``, a reason column) added.

    Args:
        worker: The worker that embeds.
        table: The rows (a ``pyarrow.Table``).
        column: The column of texts.
        width: Values per vector (the model's dimension, or ``dimensions``).
        model, dimensions, prompt_name: As for :meth:`.Worker.submit`.
        output_column: Name of the vector column (``fixed_size_list<float32>[width]``).
        skip_invalid: Give rows that are not texts a null vector and their reason in
            ``<output_column>_error``, instead of failing.
        chunk_rows: Rows per request to the worker (two are kept in flight).
        first_row: Global number of the first row, for messages (``None``: unknown).
        provenance: (column name, value) to add to every row.
        on_rows: Called with the number of rows each finished request embedded.

    Raises:
        InvalidRequestError: ``column`` is missing, or rows are not texts (without
            ``skip_invalid``); other :class:`EmbedError` as the worker raises them.
    """
    import pyarrow as pa

    if column not in table.column_names:
        raise InvalidRequestError(
            f"there is no column {column!r}; the columns are: {', '.join(table.column_names)}",
            param="column",
        )
    values = table.column(column).to_pylist()
    problems = [(i, p) for i, p in enumerate(map(text_problem, values)) if p is not None]
    if problems and not skip_invalid:
        raise invalid_rows_error(
            problems,
            values,
            column=column,
            table=table,
            first_row=first_row,
            output_column=output_column,
        )
    valid = np.ones(len(values), dtype=bool)
    valid[[i for i, _ in problems]] = False
    keep = np.flatnonzero(valid)
    vectors = np.zeros((len(values), width), dtype=np.float32)
    options: dict[str, Any] = {
        "model": model,
        "dimensions": dimensions,
        "prompt_name": prompt_name,
    }
    step = max(1, min(chunk_rows, worker.config.max_inputs))
    pending: deque[tuple[int, Future[EmbedResult]]] = deque()
    try:
        for start in range(0, len(keep), step):
            rows = keep[start : start + step]
            first = None if first_row is None else first_row + int(rows[0])
            texts = [values[i] for i in rows]
            pending.append((start, worker.submit(texts, first_index=first or 0, **options)))
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
    if skip_invalid:
        reasons: list[str | None] = [None] * len(values)
        for i, reason in problems:
            reasons[i] = reason
        out = out.append_column(error_column_name(output_column), pa.array(reasons, pa.string()))
    if provenance is not None:
        out = out.append_column(provenance[0], pa.array([provenance[1]] * len(values)))
    return out


# -- Ray ----------------------------------------------------------------------------------


def _assigned_cpus() -> int:
    """CPU threads this actor may use: what Ray reserved for it (at least 1)."""
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    return max(1, min(round(cpus), os.cpu_count() or 1))


def _on_node(exc: EmbedError) -> EmbedError:
    """``exc`` with the node it happened on named (a copy: same class and fields)."""
    moved = copy.copy(exc)
    moved.message = f"{exc.message} (on {socket.gethostname()}, pid {os.getpid()})"
    moved.args = (moved.message,)
    return moved


class EmbedBatches:
    """A Ray Data actor: one process, one :class:`Worker`, batches in and vectors out.

    Ray creates it with the keyword arguments :func:`embed_dataset` gives. Threads: the
    worker splits each forward pass over as many CPU streams as Ray reserved CPUs for this
    actor, with one OpenBLAS thread per stream, so actors on one node do not oversubscribe
    its cores. The model is loaded when the actor starts; if that fails, the actor stays up
    and fails its first batch with the loader's error (a clean, unretried job failure rather
    than a loop of actor restarts).
    """

    def __init__(
        self,
        *,
        column: str,
        output_column: str,
        model: str | None,
        dimensions: int | None,
        prompt_name: str | None,
        skip_invalid: bool,
        settings: Mapping[str, Any],
        provenance_column: str | None,
    ) -> None:
        threads = _assigned_cpus()
        overrides = {"cpu_streams": threads, **settings}
        streams = int(overrides["cpu_streams"])
        # Threads = the CPUs Ray reserved: one OpenBLAS thread per CPU stream (more when
        # ``settings`` asks for fewer streams). OpenBLAS and the tokenizers' thread pool read
        # these when they start, in the worker below (numpy's own OpenBLAS, which Ray has
        # loaded already, does no work here).
        os.environ["OPENBLAS_NUM_THREADS"] = str(max(1, threads // streams))
        os.environ["RAYON_NUM_THREADS"] = str(threads)
        self.options: dict[str, Any] = {
            "column": column,
            "output_column": output_column,
            "model": model,
            "dimensions": dimensions,
            "prompt_name": prompt_name,
            "skip_invalid": skip_invalid,
        }
        self.error: EmbedError | None = None
        self.width = 0
        self.worker = current_worker() or Worker(EngineConfig.from_env(**overrides))
        self.provenance: tuple[str, str] | None = None
        try:
            spec = self.worker.preload(model).result()
            check_dimensions(dimensions, spec.dimension, model=spec.name)
            self.width = dimensions or spec.dimension
        except EmbedError as exc:
            self.error = _on_node(exc)
            log.error("embedding actor cannot start: %s", self.error.message)
        if provenance_column is not None:
            device = "gpu" if "gpu" in str(self.worker.info().get("device", "")) else "cpu"
            self.provenance = (provenance_column, f"{socket.gethostname()}:{os.getpid()}:{device}")

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.error is not None:
            raise self.error
        try:
            return embed_table(
                self.worker, batch, width=self.width, provenance=self.provenance, **self.options
            )
        except EmbedError as exc:
            raise _on_node(exc) from None


def _settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """Engine overrides for the actors, checked here (each node still applies them over its
    own ``JUPYTER_MLX_EMBED_*`` environment)."""
    overrides = dict(settings or {})
    names = {f.name for f in dataclasses.fields(EngineConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown engine settings {unknown}; known: {', '.join(sorted(names))}")
    EngineConfig(**overrides)  # values: bounds and choices
    return overrides


def embed_dataset(
    ds: ray.data.Dataset,
    column: str = "text",
    *,
    model: str | None = None,
    dimensions: int | None = None,
    output_column: str = "embedding",
    batch_size: int | None = None,
    num_workers: int | None = None,
    cpus_per_worker: float = 1.0,
    skip_invalid: bool = False,
    prompt_name: str | None = None,
    settings: Mapping[str, Any] | None = None,
    provenance_column: str | None = None,
    ray_remote_args: Mapping[str, Any] | None = None,
) -> ray.data.Dataset:
    """Add a vector column to a Ray dataset, computed by a pool of actors.

    Each actor is one Ray worker process owning one :class:`~.worker.Worker`; it reserves
    ``cpus_per_worker`` CPUs and uses that many threads (CPU streams, one OpenBLAS thread
    each). A dataset of fewer blocks than actors (a single Parquet file is one block) is cut
    into blocks of ``batch_size`` rows as it streams, so that every actor gets work. The
    result is lazy, like every Ray dataset: nothing runs until it is consumed.

    Rows keep their input order: this sets ``preserve_order`` (and
    ``raise_original_map_exception``, so that errors keep their class) on the dataset's
    ``DataContext``, which datasets derived from the same source share. An actor that dies
    is restarted and its batches are retried (``max_restarts`` / ``max_task_retries``,
    :data:`MAX_RESTARTS` each unless ``ray_remote_args`` says otherwise); the output still
    has every row exactly once. Ray is started locally (``ray.init()``) when it is not yet.

    Args:
        ds: The dataset.
        column: The column of texts.
        model: Model name, resolved on each node (its model roots, its Hugging Face cache);
            the default model when ``None``.
        dimensions: Keep the first ``dimensions`` values and renormalise.
        output_column: Name of the vector column added: ``fixed_size_list<float32>[d]``,
            L2-normalised rows.
        batch_size: Rows per actor call (default :data:`DEFAULT_BATCH_SIZE`).
        num_workers: Actors in the pool (a fixed pool). By default the pool grows from 1 to
            as many actors as the cluster's CPUs hold, and leaves CPUs to the dataset's
            other stages (a fixed pool that takes every CPU can starve, for instance, the
            read tasks of ``ray.data.read_parquet``).
        cpus_per_worker: CPUs each actor reserves and uses as threads (fractions reserve
            less and use one thread).
        skip_invalid: Rows whose text is missing, blank or not a string get a null vector
            and the reason in ``<output_column>_error`` (a string column, null elsewhere)
            instead of failing the job. Without it such a row fails the job with an
            :class:`~.errors.InvalidRequestError` naming it (its position in its batch and
            a few of its other values, since Ray batches have no global row number).
        prompt_name: One of the model's prompts, put before every text.
        settings: Engine settings (:class:`~.config.EngineConfig` fields) for the actors,
            over each node's ``JUPYTER_MLX_EMBED_*`` environment, e.g.
            ``{"model_roots": ["/models"], "cache_dir": "/fast/cache"}``.
        provenance_column: Also add a column saying which process computed each row
            (``host:pid:cpu`` or ``host:pid:gpu``), e.g. to audit a mixed cluster.
        ray_remote_args: More arguments for the actors (e.g. ``memory``, ``resources``,
            ``max_restarts``).

    Returns:
        The dataset with ``output_column`` (and the optional columns) appended.

    Raises:
        ValueError: A bad option (checked here, before anything runs).
        InvalidRequestError: ``dimensions`` or ``prompt_name`` of a wrong type.

    When the dataset runs, :class:`~.errors.EmbedError` subclasses (bad rows, an unknown
    model, a model that fails to load on a node) fail it with the loader's or the
    validator's message (Ray raises them wrapped in ``RayTaskError``, still instances of
    the original class).
    """
    import ray
    import ray.data

    check_dimensions(dimensions)
    check_prompt(prompt_name, None)
    overrides = _settings(settings)
    if output_column == column:
        raise ValueError(f"output_column must differ from column ({column!r})")
    if cpus_per_worker <= 0:
        raise ValueError(f"cpus_per_worker must be > 0, got {cpus_per_worker}")
    if num_workers is not None and num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not ray.is_initialized():
        ray.init()
    if num_workers is None:
        most = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_worker))
        compute = ray.data.ActorPoolStrategy(min_size=1, max_size=most)
    else:
        compute = ray.data.ActorPoolStrategy(size=num_workers)
    ds = _spread(ds, num_workers or most, batch_size or DEFAULT_BATCH_SIZE)
    context = ds.context
    context.execution_options.preserve_order = True
    if hasattr(context, "raise_original_map_exception"):
        context.raise_original_map_exception = True
    remote = _remote_args(ds.map_batches, ray_remote_args or {})
    with warnings.catch_warnings():
        # Ray 2.60-2.63 warn that the keywords in **ray_remote_args go away in 2.64.
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        return ds.map_batches(
            EmbedBatches,
            batch_size=batch_size or DEFAULT_BATCH_SIZE,
            batch_format="pyarrow",
            compute=compute,
            num_cpus=cpus_per_worker,
            fn_constructor_kwargs={
                "column": column,
                "output_column": output_column,
                "model": model,
                "dimensions": dimensions,
                "prompt_name": prompt_name,
                "skip_invalid": skip_invalid,
                "settings": overrides,
                "provenance_column": provenance_column,
            },
            **remote,
        )


def _spread(ds: ray.data.Dataset, workers: int, batch_size: int) -> ray.data.Dataset:
    """``ds`` in enough blocks to keep ``workers`` actors busy.

    An actor pool hands out whole blocks, so a dataset of fewer blocks than actors leaves
    some idle: a single Parquet file is one block, all of it for one actor. Such a dataset
    (or one whose block count is known only once it runs, as for files still to be read) is
    cut, as it streams, into blocks of at most ``batch_size`` rows, in order: no shuffle, no
    barrier, one more task per input block.
    """
    # Ray's public API counts blocks only of materialized datasets; the plan's estimate is
    # what its own operators use (None: unknown until read).
    plan = getattr(ds, "_logical_plan", None)
    blocks = plan.initial_num_blocks() if plan is not None else None
    if blocks is not None and blocks >= workers:
        return ds
    return ds.repartition(target_num_rows_per_block=batch_size)


_OWN_ARGS = {"batch_size", "batch_format", "compute", "num_cpus", "fn_constructor_kwargs"}


def _remote_args(map_batches: Callable[..., Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """The actor options for ``map_batches``: the restart limits, then ``extra``.

    ``map_batches`` names some options (``memory``, ``resources``, ...) and, up to Ray 2.63,
    takes any other actor option as a keyword. From Ray 2.64 it takes only the named ones;
    its actor pools then restart dead actors and retry their batches by themselves.

    Raises:
        ValueError: ``extra`` sets an option this function sets itself, or one this Ray's
            ``map_batches`` cannot take.
    """
    clash = sorted(_OWN_ARGS & set(extra))
    if clash:
        raise ValueError(f"ray_remote_args cannot set {clash}: use embed_dataset's own options")
    parameters = inspect.signature(map_batches).parameters.values()
    named = {p.name for p in parameters}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return {"max_restarts": MAX_RESTARTS, "max_task_retries": MAX_TASK_RETRIES, **extra}
    unknown = sorted(set(extra) - named)
    if unknown:
        raise ValueError(f"this Ray's map_batches takes none of {unknown}")
    return dict(extra)


def original_error(exc: BaseException) -> BaseException:
    """The exception raised inside a Ray task (``exc`` itself when it is not wrapped)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) and cause is not exc else exc


# -- files ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EmbedFileReport:
    """What :func:`embed_file` did."""

    output: Path
    rows: int
    skipped: int
    parts: int
    parts_resumed: int
    rows_embedded: int
    seconds: float


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


def _blank_rows(table: pa.Table, column: str, rows: Mapping[int, Any]) -> pa.Table:
    """``table`` with ``column`` null at ``rows`` (so that they are skipped as not texts)."""
    import pyarrow as pa

    if not rows:
        return table
    values = table.column(column).to_pylist()
    for row in rows:
        values[row] = None
    index = table.schema.get_field_index(column)
    return table.set_column(index, column, pa.array(values, pa.string()))


def _restore_rows(
    part: pa.Table,
    start: int,
    table: pa.Table,
    retyped: Mapping[int, Any],
    *,
    column: str,
    output_column: str,
) -> pa.Table:
    """A part embedded from :func:`_blank_rows`' table (rows from ``start``), with the text
    column as read and, for the rows whose value is not a string, the reason it is not."""
    import pyarrow as pa

    rows = [row for row in retyped if start <= row < start + part.num_rows]
    if not rows:
        return part
    original = table.column(column).slice(start, part.num_rows)
    part = part.set_column(part.schema.get_field_index(column), column, original)
    error = error_column_name(output_column)
    reasons = part.column(error).to_pylist()
    for row in rows:
        reasons[row - start] = text_problem(retyped[row])
    return part.set_column(
        part.schema.get_field_index(error), error, pa.array(reasons, pa.string())
    )


class _Parts:
    """The numbered part files of one job, next to its output, and their manifest."""

    def __init__(self, output: Path, manifest: dict[str, Any], rows: int, part_rows: int):
        self.folder = output.with_name(output.name + ".parts")
        self.manifest = manifest
        self.part_rows = part_rows
        self.bounds = [(s, min(s + part_rows, rows)) for s in range(0, rows, part_rows)]

    def path(self, index: int) -> Path:
        return self.folder / f"part-{index:06d}.parquet"

    def size(self, index: int) -> int:
        start, stop = self.bounds[index]
        return stop - start

    def index_of(self, row: int) -> int:
        return row // self.part_rows

    def open(self) -> list[int]:
        """Indices of the finished parts (after clearing those of another job).

        Raises:
            InvalidRequestError: The parts were made by the same arguments with another model.
        """
        saved = self.folder / _MANIFEST
        if self.folder.is_dir():
            try:
                old = json.loads(saved.read_text())
            except (OSError, ValueError):
                old = None
            if _job_of(old) != _job_of(self.manifest):
                log.warning("%s holds parts of another job; starting over", self.folder)
                shutil.rmtree(self.folder)
            elif old["model_identity"] != self.manifest["model_identity"]:
                self._refuse_another_model(old)
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob("*.tmp"):
            stale.unlink()
        _write_atomic(saved, lambda tmp: tmp.write_text(json.dumps(self.manifest, indent=1)))
        return [i for i in range(len(self.bounds)) if self.path(i).exists()]

    def _refuse_another_model(self, old: dict[str, Any]) -> None:
        """Stop a rerun whose arguments are the same but whose model is not. Changed arguments
        start over: the user asked for another job. The same arguments resolving another
        model mean that the environment changed (the default model or model roots) or the
        model's files did: resuming would mix two models' vectors in one output, and
        starting over would silently throw the finished parts away. So nothing is done and
        the message says how to do either. A folder without finished parts just starts over.
        """
        finished = len(list(self.folder.glob("part-*.parquet")))
        if not finished:
            shutil.rmtree(self.folder)
            return
        then, now = old["resolved_model"], self.manifest["resolved_model"]
        then = then if isinstance(then, dict) else {}
        raise InvalidRequestError(
            f"{self.folder} holds {finished} finished parts made with another model: "
            f"{then.get('name')!r} ({then.get('path')}) then, {now['name']!r} "
            f"({now['path']}) now, from the same arguments (the default model or the model "
            "roots in the environment changed, or the model's files did). Resuming would mix "
            "two models' vectors. To resume, run with the settings of the first run; to "
            f"start over with this model, delete {self.folder}",
            param="model",
            code="parts_of_another_model",
        )

    def write(self, index: int, table: pa.Table) -> None:
        import pyarrow.parquet

        _write_atomic(self.path(index), lambda tmp: pyarrow.parquet.write_table(table, tmp))

    def combine(self, output: Path) -> None:
        """Concatenate the parts into ``output`` (atomically), then remove them."""
        import pyarrow.parquet

        def write(tmp: Path) -> None:
            writer = None
            try:
                for i in range(len(self.bounds)):
                    part = pyarrow.parquet.read_table(self.path(i))
                    if writer is None:
                        writer = pyarrow.parquet.ParquetWriter(tmp, part.schema)
                    writer.write_table(part)
            finally:
                if writer is not None:
                    writer.close()

        _write_atomic(output, write)
        shutil.rmtree(self.folder)


#: Manifest fields that say which model the job resolved (compared apart from the others).
_MODEL_FIELDS = ("model_identity", "resolved_model")


def _job_of(manifest: Any) -> Any:
    """A manifest without its resolved model: the job's arguments and input."""
    if not isinstance(manifest, dict) or not all(k in manifest for k in _MODEL_FIELDS):
        return manifest
    return {k: v for k, v in manifest.items() if k not in _MODEL_FIELDS}


def _job_model(
    model: str | None, overrides: dict[str, Any], on_ray: bool | str
) -> tuple[ModelSpec, str]:
    """The model the job will run, resolved here, and its identity (the vector cache's, so
    the same for every model folder that gives the same vectors).

    The settings are those of the worker the job will use: this process's when it has one
    (a local job), else the environment with ``overrides`` (on Ray, each node reads its
    own: this is the driver's view of them).
    """
    worker = current_worker() if on_ray is False else None
    config = (
        worker.config.replace(**overrides)
        if worker is not None
        else EngineConfig.from_env(**overrides)
    )
    spec = ModelRegistry(config).resolve(model)
    if config.cache:  # the cache remembers big files' hashes: weights are read once
        try:
            cache = EmbeddingCache(config.cache_folder(), config.cache_size_mb)
        except CacheUnavailableError:
            pass
        else:
            try:
                return spec, cache.identity(spec)
            finally:
                cache.close()
    return spec, model_identity(spec)


def _write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Write through a temporary file, fsync it and rename it into place."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def embed_file(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    column: str = "text",
    *,
    model: str | None = None,
    dimensions: int | None = None,
    prompt_name: str | None = None,
    output_column: str = "embedding",
    skip_invalid: bool = False,
    file_format: str | None = None,
    part_rows: int = DEFAULT_PART_ROWS,
    batch_size: int | None = None,
    on_ray: bool | str = False,
    num_workers: int | None = None,
    cpus_per_worker: float = 1.0,
    settings: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> EmbedFileReport:
    """Embed a column of a Parquet, JSONL or CSV file into a Parquet file (the input's
    columns, then the vector column), resumably.

    Rows are embedded in parts of ``part_rows`` rows, each written as it finishes to
    ``OUTPUT.parts/part-NNNNNN.parquet`` (atomically), next to a manifest of the job's
    arguments; at the end the parts are combined into ``output`` and removed. Run again
    with the same arguments, an interrupted job keeps its finished parts and embeds only
    the others, locally or on Ray alike (a changed argument or input file starts over; the
    same arguments resolving another model, through the environment, are refused).
    The whole column is checked before anything is embedded, so a bad row fails the job at
    once, named by its row number.

    Args:
        input: The file (``.parquet``, ``.jsonl``/``.ndjson``, ``.csv``, also compressed
            as ``.jsonl.gz``). It is read whole into memory (Parquet memory-mapped). Rows
            follow the rules of every input: a value that is not a string (a JSONL number,
            object or null, a typed Parquet column) is not a text, so it fails the job or,
            with ``skip_invalid``, gets a null vector and its reason (CSV has no types: its
            column is read as strings).
        output: The Parquet file to write.
        column: The column of texts.
        model, dimensions, prompt_name, output_column, skip_invalid: As for
            :func:`embed_dataset`.
        file_format: ``parquet``, ``jsonl`` or ``csv``; from the suffix by default.
        part_rows: Rows per part file.
        batch_size: Rows per request (local) or per actor call (Ray).
        on_ray: ``False``: this process's worker (started here when there is none), with a
            progress bar. ``True``: Ray (``ray.init()``: the cluster at ``RAY_ADDRESS``,
            else a new local one), with Ray's progress; a string: the address of a cluster
            (``auto``, ``HOST:PORT``, ``ray://HOST:10001``). Ray is left as it was found.
        num_workers, cpus_per_worker: Ray actors (default: a fixed pool of one actor per
            ``cpus_per_worker`` CPUs of the cluster; this job has no other Ray stages).
        settings: Engine settings over the environment (this process's worker, or each
            node's actors).
        progress: Show a progress bar (local).

    Returns:
        What was done.

    Raises:
        InvalidRequestError: Unreadable input, a missing column, rows that are not texts;
            finished parts of this job made with another model (the manifest records the
            model's identity).
        EmbedError: As the engine raises them (unknown model, a model that fails to load).
        ValueError: A bad option.
    """
    started = time.monotonic()
    source, target = Path(input), Path(output)
    check_dimensions(dimensions)
    check_prompt(prompt_name, None)
    overrides = _settings(settings)
    if part_rows < 1:
        raise ValueError(f"part_rows must be >= 1, got {part_rows}")
    if output_column == column:
        raise ValueError(f"output_column must differ from column ({column!r})")
    fmt = file_format or detect_format(source)
    table, retyped = read_table(source, fmt, column)
    values = table.column(column).to_pylist()
    for row, value in retyped.items():  # judged as they are in the file
        values[row] = value
    problems = [(i, p) for i, p in enumerate(map(text_problem, values)) if p is not None]
    if problems and not skip_invalid:
        raise invalid_rows_error(
            problems,
            values,
            column=column,
            first_row=0,
            output_column=output_column,
            flag="--skip-invalid",
        )
    del values
    stat = source.stat()
    options: dict[str, Any] = {
        "column": column,
        "model": model,
        "dimensions": dimensions,
        "prompt_name": prompt_name,
        "output_column": output_column,
        "skip_invalid": skip_invalid,
    }
    # The model as resolved, not as named: the same arguments may resolve another model
    # when the environment changes, and a resumed job must not mix two models' vectors.
    spec, identity = _job_model(model, overrides, on_ray)
    manifest = {
        "version": 2,
        "input": str(source.resolve()),
        "input_size": stat.st_size,
        "input_mtime_ns": stat.st_mtime_ns,
        "rows": table.num_rows,
        "part_rows": part_rows,
        **options,
        "settings": {k: str(v) for k, v in sorted(overrides.items())},
        "model_identity": identity,
        "resolved_model": {"name": spec.name, "path": str(spec.path)},
    }
    parts = _Parts(target, manifest, table.num_rows, part_rows)
    done = parts.open()
    pending = [i for i in range(len(parts.bounds)) if i not in set(done)]
    if done:
        log.info("resuming: %d of %d parts already done", len(done), len(parts.bounds))
    if not parts.bounds:  # no rows: an empty output with the columns it would have
        width = (
            dimensions or ModelRegistry(EngineConfig.from_env(**overrides)).resolve(model).dimension
        )
        parts.bounds = [(0, 0)]
        parts.write(0, _with_empty_vectors(table, width, output_column, skip_invalid))
    elif pending:
        embed_parts = _embed_parts_on_ray if on_ray is not False else _embed_parts_locally
        embed_parts(
            _blank_rows(table, column, retyped),
            parts,
            pending,
            options,
            finish=lambda start, part: _restore_rows(
                part, start, table, retyped, column=column, output_column=output_column
            ),
            overrides=overrides,
            batch_size=batch_size or DEFAULT_BATCH_SIZE,
            on_ray=on_ray,
            num_workers=num_workers,
            cpus_per_worker=cpus_per_worker,
            progress=progress,
        )
    parts.combine(target)
    now = set(pending)
    skipped_now = sum(1 for row, _ in problems if parts.index_of(row) in now)
    return EmbedFileReport(
        output=target,
        rows=table.num_rows,
        skipped=len(problems),
        parts=len(parts.bounds),
        parts_resumed=len(done),
        rows_embedded=sum(parts.size(i) for i in pending) - skipped_now,
        seconds=time.monotonic() - started,
    )


def _with_empty_vectors(
    table: pa.Table, width: int, output_column: str, skip_invalid: bool
) -> pa.Table:
    import pyarrow as pa

    out = table.append_column(output_column, pa.array([], pa.list_(pa.float32(), width)))
    if skip_invalid:
        out = out.append_column(error_column_name(output_column), pa.array([], pa.string()))
    return out


def _embed_parts_locally(
    table: pa.Table,
    parts: _Parts,
    pending: list[int],
    options: dict[str, Any],
    *,
    finish: Callable[[int, pa.Table], pa.Table],
    overrides: dict[str, Any],
    batch_size: int,
    progress: bool,
    **_: Any,
) -> None:
    """Each pending part on this process's worker (started here if there is none), passed
    through ``finish(first row, part)`` before it is written."""
    from tqdm import tqdm

    worker = current_worker()
    owned = worker is None
    if worker is None:
        worker = Worker(EngineConfig.from_env(**overrides))
    elif worker.config != worker.config.replace(**overrides):
        raise ValueError(
            f"this process's worker has other settings than {overrides}; close it first "
            "(or leave the settings out to use it)"
        )
    try:
        spec = worker.preload(options["model"]).result()
        check_dimensions(options["dimensions"], spec.dimension, model=spec.name)
        width = options["dimensions"] or spec.dimension
        done_rows = table.num_rows - sum(parts.size(i) for i in pending)
        with tqdm(
            total=table.num_rows,
            initial=done_rows,
            unit="rows",
            desc="embedding",
            disable=not progress,
        ) as bar:
            for index in pending:
                start, stop = parts.bounds[index]
                out = embed_table(
                    worker,
                    table.slice(start, stop - start),
                    width=width,
                    chunk_rows=batch_size,
                    first_row=start,
                    on_rows=bar.update,
                    **options,
                )
                parts.write(index, finish(start, out))
                bar.update(out.column(options["output_column"]).null_count)  # skipped rows
    finally:
        if owned:  # after an error or Ctrl-C, drop what is still queued
            worker.close(cancel_pending=True)


def _embed_parts_on_ray(
    table: pa.Table,
    parts: _Parts,
    pending: list[int],
    options: dict[str, Any],
    *,
    finish: Callable[[int, pa.Table], pa.Table],
    overrides: dict[str, Any],
    batch_size: int,
    on_ray: bool | str,
    num_workers: int | None,
    cpus_per_worker: float,
    **_: Any,
) -> None:
    """The pending parts' rows as one Ray dataset (blocks of ``batch_size`` rows, sent from
    here), each part written as soon as its rows are back (in order), passed through
    ``finish(first row, part)``."""
    import ray
    import ray.data

    started = not ray.is_initialized()
    if started:
        ray.init(address=None if on_ray is True else str(on_ray))
    try:
        blocks = [
            table.slice(s, min(batch_size, parts.bounds[i][1] - s))
            for i in pending
            for s in range(parts.bounds[i][0], parts.bounds[i][1], batch_size)
        ]
        if num_workers is None:
            cpus = ray.cluster_resources().get("CPU", 1)
            num_workers = max(1, min(len(blocks), int(cpus // cpus_per_worker)))
        ds = embed_dataset(
            ray.data.from_arrow(blocks),
            batch_size=batch_size,
            num_workers=num_workers,
            cpus_per_worker=cpus_per_worker,
            settings=overrides,
            **options,
        )
        try:
            for index, part in _cut_parts(ds, parts, pending):
                parts.write(index, finish(parts.bounds[index][0], part))
        except Exception as exc:
            error = original_error(exc)
            if isinstance(error, EmbedError):
                raise copy.copy(error) from None
            raise
    finally:
        if started:
            ray.shutdown()


def _cut_parts(
    ds: ray.data.Dataset, parts: _Parts, pending: list[int]
) -> Iterator[tuple[int, pa.Table]]:
    """The rows of ``ds`` (in order) regrouped into the pending parts."""
    import pyarrow as pa

    buffer: list[pa.Table] = []
    buffered = 0
    queue = deque(pending)
    batch: Any
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        buffer.append(batch)
        buffered += batch.num_rows
        while queue and buffered >= parts.size(queue[0]):
            size = parts.size(queue[0])
            rows = pa.concat_tables(buffer)
            yield queue.popleft(), rows.slice(0, size)
            rest = rows.slice(size)
            buffer, buffered = ([rest] if rest.num_rows else []), rest.num_rows
    if queue:
        raise RuntimeError(f"Ray returned too few rows: {len(queue)} parts are incomplete")
