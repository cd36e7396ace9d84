"""Ray Data (core layer): :func:`embed_dataset` adds a vector column to a ``ray.data.Dataset``
with a pool of :class:`EmbedBatches` actors, each one process owning one Worker.

``ray`` is imported when :func:`embed_dataset` runs, never when the package is imported. Ray
pickles :class:`EmbedBatches` by reference, so its workers import it from this module.
"""

from __future__ import annotations

import copy
import inspect
import logging
import os
import socket
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..config import EngineConfig
from ..errors import EmbedError
from ..validation import check_dimensions, check_prompt
from ..worker import Worker, current_worker
from .tables import DEFAULT_BATCH_SIZE, ColumnOptions, check_settings, embed_table

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data

log = logging.getLogger(__name__)

#: Restarts of a dead actor, and retries of a batch whose actor died, before the job fails.
MAX_RESTARTS = 4
MAX_TASK_RETRIES = 4


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

    Ray creates it with the arguments :func:`embed_dataset` gives (what to embed, engine
    settings over the node's environment, the provenance column if any). Threads: the
    worker splits each forward pass over as many CPU streams as Ray reserved CPUs for this
    actor, with one OpenBLAS thread per stream, so actors on one node do not oversubscribe
    its cores. The model is loaded when the actor starts; if that fails, the actor stays up
    and fails its first batch with the loader's error (a clean, unretried job failure rather
    than a loop of actor restarts).
    """

    def __init__(
        self,
        options: ColumnOptions,
        *,
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
        self.options = options
        self.error: EmbedError | None = None
        self.width = 0
        self.worker = current_worker() or Worker(EngineConfig.from_env(**overrides))
        self.provenance: tuple[str, str] | None = None
        try:
            spec = self.worker.preload(options.model).result()
            check_dimensions(options.dimensions, spec.dimension, model=spec.name)
            self.width = options.dimensions or spec.dimension
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
                self.worker, batch, self.options, width=self.width, provenance=self.provenance
            )
        except EmbedError as exc:
            raise _on_node(exc) from None


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
    overrides = check_settings(settings)
    if output_column == column:
        raise ValueError(f"output_column must differ from column ({column!r})")
    if cpus_per_worker <= 0:
        raise ValueError(f"cpus_per_worker must be > 0, got {cpus_per_worker}")
    if num_workers is not None and num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    options = ColumnOptions(column, model, dimensions, prompt_name, output_column, skip_invalid)
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
                "options": options,
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
