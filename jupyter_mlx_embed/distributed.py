"""Whole corpora (core layer): the public import path of the batch jobs in :mod:`.batch`.

:func:`embed_dataset` adds a vector column to a ``ray.data.Dataset`` with a pool of actors
(:mod:`.batch.raydata`); :func:`embed_file` embeds a Parquet, JSONL or CSV file into Parquet,
resumably (:mod:`.batch.filejob`). The README and the notebooks import them from here, so this
module re-exports the public names and holds no code; Ray pickles the actor class by its own
module path (``jupyter_mlx_embed.batch.raydata``). ``ray`` (the ``ray`` extra) and ``pyarrow``
are imported when these functions run, never when this module is imported.
"""

from __future__ import annotations

from .batch.filejob import DEFAULT_PART_ROWS, EmbedFileReport, embed_file
from .batch.raydata import (
    MAX_RESTARTS,
    MAX_TASK_RETRIES,
    EmbedBatches,
    embed_dataset,
    original_error,
)
from .batch.readers import detect_format, read_table
from .batch.tables import DEFAULT_BATCH_SIZE, embed_table, error_column_name, invalid_rows_error

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_PART_ROWS",
    "MAX_RESTARTS",
    "MAX_TASK_RETRIES",
    "EmbedBatches",
    "EmbedFileReport",
    "detect_format",
    "embed_dataset",
    "embed_file",
    "embed_table",
    "error_column_name",
    "invalid_rows_error",
    "original_error",
    "read_table",
]
