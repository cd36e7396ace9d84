"""Resumable file jobs (core layer): :func:`embed_file` embeds a column of a Parquet, JSONL or
CSV file into Parquet, on this process's worker or on Ray, in numbered parts beside the output
with a manifest of the job, so that an interrupted job resumes where it stopped.

This module reads the input, checks it and drives the parts still to embed (locally or on
Ray); the part files and the manifest that decides what may be resumed are
:mod:`.parts`'s.

``ray``, ``pyarrow`` and ``tqdm`` are imported when a job runs.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cache import CacheUnavailableError, EmbeddingCache
from ..config import EngineConfig
from ..errors import EmbedError
from ..identity import model_identity
from ..modelspec import ModelSpec
from ..registry import ModelRegistry
from ..validation import check_dimensions, check_prompt, text_problem
from ..worker import Worker, current_worker
from .parts import PartFiles
from .raydata import embed_dataset, original_error
from .readers import detect_format, read_table
from .tables import (
    DEFAULT_BATCH_SIZE,
    ColumnOptions,
    check_settings,
    embed_table,
    error_column_name,
    find_invalid_rows,
)

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data

log = logging.getLogger(__name__)

#: Rows per part file of :func:`embed_file` (what an interrupted job loses at most).
DEFAULT_PART_ROWS = 10_000


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
                return spec, cache.identity(spec, precision=config.precision)
            finally:
                cache.close()
    return spec, model_identity(spec, precision=config.precision)


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
    overrides = check_settings(settings)
    if part_rows < 1:
        raise ValueError(f"part_rows must be >= 1, got {part_rows}")
    if output_column == column:
        raise ValueError(f"output_column must differ from column ({column!r})")
    options = ColumnOptions(column, model, dimensions, prompt_name, output_column, skip_invalid)
    fmt = file_format or detect_format(source)
    table, retyped = read_table(source, fmt, column)
    values = table.column(column).to_pylist()
    for row, value in retyped.items():  # judged as they are in the file
        values[row] = value
    problems = find_invalid_rows(values, options, first_row=0, flag="--skip-invalid")
    del values
    stat = source.stat()
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
        **dataclasses.asdict(options),
        "settings": {k: str(v) for k, v in sorted(overrides.items())},
        "model_identity": identity,
        "resolved_model": {"name": spec.name, "path": str(spec.path)},
    }
    parts = PartFiles(target, manifest, table.num_rows, part_rows)
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
        job = _PendingParts(
            _blank_rows(table, column, retyped),
            parts,
            pending,
            options,
            overrides=overrides,
            batch_size=batch_size or DEFAULT_BATCH_SIZE,
            finish=lambda start, part: _restore_rows(
                part, start, table, retyped, column=column, output_column=output_column
            ),
        )
        if on_ray is False:
            _embed_parts_locally(job, progress=progress)
        else:
            _embed_parts_on_ray(
                job, on_ray=on_ray, num_workers=num_workers, cpus_per_worker=cpus_per_worker
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


@dataclasses.dataclass(frozen=True)
class _PendingParts:
    """The parts of a job still to embed, and how, for either driver.

    Attributes:
        table: The job's rows (those that are not texts blanked).
        parts: The job's part files.
        pending: Indices of the parts to embed.
        options: What to embed.
        overrides: Engine settings over the environment.
        batch_size: Rows per request (local) or per actor call (Ray).
        finish: Applied as ``finish(first row, part)`` to each part before it is written.
    """

    table: pa.Table
    parts: PartFiles
    pending: list[int]
    options: ColumnOptions
    overrides: dict[str, Any]
    batch_size: int
    finish: Callable[[int, pa.Table], pa.Table]


def _embed_parts_locally(job: _PendingParts, *, progress: bool) -> None:
    """Each pending part on this process's worker (started here if there is none)."""
    from tqdm import tqdm

    table, parts, options, overrides = job.table, job.parts, job.options, job.overrides
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
        spec = worker.preload(options.model).result()
        check_dimensions(options.dimensions, spec.dimension, model=spec.name)
        width = options.dimensions or spec.dimension
        done_rows = table.num_rows - sum(parts.size(i) for i in job.pending)
        with tqdm(
            total=table.num_rows,
            initial=done_rows,
            unit="rows",
            desc="embedding",
            disable=not progress,
        ) as bar:
            for index in job.pending:
                start, stop = parts.bounds[index]
                out = embed_table(
                    worker,
                    table.slice(start, stop - start),
                    options,
                    width=width,
                    chunk_rows=job.batch_size,
                    first_row=start,
                    on_rows=bar.update,
                )
                parts.write(index, job.finish(start, out))
                bar.update(out.column(options.output_column).null_count)  # skipped rows
    finally:
        if owned:  # after an error or Ctrl-C, drop what is still queued
            worker.close(cancel_pending=True)


def _embed_parts_on_ray(
    job: _PendingParts, *, on_ray: bool | str, num_workers: int | None, cpus_per_worker: float
) -> None:
    """The pending parts' rows as one Ray dataset (blocks of ``batch_size`` rows, sent from
    here), each part written as soon as its rows are back (in order)."""
    import ray
    import ray.data

    parts, pending, batch_size = job.parts, job.pending, job.batch_size
    started = not ray.is_initialized()
    if started:
        ray.init(address=None if on_ray is True else str(on_ray))
    try:
        blocks = [
            job.table.slice(s, min(batch_size, parts.bounds[i][1] - s))
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
            settings=job.overrides,
            **dataclasses.asdict(job.options),
        )
        try:
            for index, part in _cut_parts(ds, parts, pending):
                parts.write(index, job.finish(parts.bounds[index][0], part))
        except Exception as exc:
            error = original_error(exc)
            if isinstance(error, EmbedError):
                raise copy.copy(error) from None
            raise
    finally:
        if started:
            ray.shutdown()


def _cut_parts(
    ds: ray.data.Dataset, parts: PartFiles, pending: list[int]
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
