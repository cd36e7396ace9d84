"""Ray: ``embed_dataset`` and ``embed --ray`` on a real three-node cluster on this machine.

The cluster (a head and two worker nodes on loopback, one CPU each, small object stores) is
started once for the module; every test here runs real actors, each a process owning one
Worker. The single-process engine (the ``worker`` fixture) gives the reference vectors.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import ray.data
from ray.cluster_utils import Cluster

from jupyter_mlx_embed import InvalidRequestError, ModelLoadError, Worker
from jupyter_mlx_embed.batch.raydata import _remote_args
from jupyter_mlx_embed.distributed import (
    MAX_RESTARTS,
    MAX_TASK_RETRIES,
    embed_dataset,
    original_error,
)

from .test_cli_embed import (
    NOT_STRINGS,
    engine_vectors,
    make_texts,
    mark_part,
    mixed_jsonl,
    run_until_parts,
    vectors_of,
)

pytestmark = [
    pytest.mark.slow,
    # Ray Data 2.60 warns about its own deprecated fields whenever it creates a DataContext.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.*"),
]

OBJECT_STORE = 100 * 2**20
ACTOR = "MapWorker(MapBatches(EmbedBatches))"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A head and two worker nodes, one CPU each; this process is the driver."""
    nodes = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "object_store_memory": OBJECT_STORE,
            "include_dashboard": False,
        },
    )
    for _ in range(2):
        nodes.add_node(num_cpus=1, object_store_memory=OBJECT_STORE)
    nodes.wait_for_nodes()
    ray.init(address=nodes.address, logging_level="WARNING")
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield nodes
    ray.shutdown()
    nodes.shutdown()


def dataset(texts: list[str], block_rows: int) -> ray.data.Dataset:
    """``texts`` with ids, in blocks of ``block_rows`` rows."""
    table = pa.table({"id": list(range(len(texts))), "text": texts})
    blocks = [table.slice(i, block_rows) for i in range(0, len(texts), block_rows)]
    return ray.data.from_arrow(blocks)


def collect(ds: ray.data.Dataset) -> pa.Table:
    return pa.concat_tables(list(ds.iter_batches(batch_size=None, batch_format="pyarrow")))


def pids(table: pa.Table) -> set[int]:
    return {int(p.split(":")[1]) for p in table.column("worker").to_pylist()}


def test_every_row_in_order_with_the_engines_vectors_from_several_actors(
    cluster: Cluster, worker: Worker
) -> None:
    texts = make_texts(400)
    out = embed_dataset(
        dataset(texts, 40), num_workers=3, batch_size=40, provenance_column="worker"
    )
    table = collect(out)
    assert table.column_names == ["id", "text", "embedding", "worker"]
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 384)
    assert table.column("id").to_pylist() == list(range(400))
    cosines = np.sum(vectors_of(table) * engine_vectors(worker, texts), axis=1)
    assert cosines.min() >= 0.9999
    assert len(pids(table)) > 1, "one actor did all the work"
    assert os.getpid() not in pids(table)


def test_a_single_parquet_file_is_spread_over_every_actor(
    cluster: Cluster, worker: Worker, tmp_path: Path
) -> None:
    texts = make_texts(400)
    source = tmp_path / "one.parquet"  # one file, one row group: Ray reads it as one block
    pq.write_table(pa.table({"id": list(range(400)), "text": texts}), source)
    out = embed_dataset(
        ray.data.read_parquet(str(source)),
        num_workers=2,
        batch_size=50,
        provenance_column="worker",
    )
    table = collect(out)
    assert table.column("id").to_pylist() == list(range(400))
    rows_by_actor = Counter(table.column("worker").to_pylist())
    assert len(rows_by_actor) == 2, f"the actors' rows: {dict(rows_by_actor)}"
    cosines = np.sum(vectors_of(table) * engine_vectors(worker, texts), axis=1)
    assert cosines.min() >= 0.9999


def test_a_killed_actor_has_its_batches_retried(cluster: Cluster, worker: Worker) -> None:
    texts = make_texts(1600)
    out = embed_dataset(
        dataset(texts, 40), num_workers=2, batch_size=40, provenance_column="worker"
    )
    batches = iter(out.iter_batches(batch_size=None, batch_format="pyarrow"))
    first = next(batches)
    victim = next(iter(pids(first)))
    os.kill(victim, signal.SIGKILL)  # the actor process dies mid-job, its batches in flight
    table = pa.concat_tables([first, *batches])

    assert table.column("id").to_pylist() == list(range(1600))  # every row, once, in order
    cosines = np.sum(vectors_of(table) * engine_vectors(worker, texts), axis=1)
    assert cosines.min() >= 0.9999
    actors = ray._private.state.actors().values()
    restarted = [a for a in actors if a["ActorClassName"] == ACTOR and a["NumRestarts"] > 0]
    assert restarted, "no actor was restarted"


def test_a_model_that_fails_to_load_fails_the_job_with_the_loaders_error(
    cluster: Cluster, model_root: Path
) -> None:
    out = embed_dataset(
        dataset(make_texts(40), 10),
        model="broken-weights",
        num_workers=2,
        settings={"model_roots": (str(model_root),)},
    )
    with pytest.raises(ModelLoadError) as caught:  # Ray's wrapper is still a ModelLoadError
        collect(out)
    original = original_error(caught.value)
    assert type(original) is ModelLoadError
    assert "broken-weights" in original.message and "(on " in original.message


def test_rows_that_are_not_texts_fail_the_job_naming_the_row(cluster: Cluster) -> None:
    texts: list[str | None] = list(make_texts(30))
    texts[13] = None
    table = pa.table({"id": [f"doc-{i}" for i in range(30)], "text": texts})
    ds = ray.data.from_arrow([table.slice(0, 10), table.slice(10, 10), table.slice(20, 10)])
    with pytest.raises(InvalidRequestError) as caught:
        collect(embed_dataset(ds, num_workers=1, batch_size=10))
    message = original_error(caught.value).message  # type: ignore[attr-defined]
    assert "the row at position 3 of a batch of 10 (id='doc-13') is None" in message
    assert "skip_invalid=True" in message


def test_skip_invalid_gives_a_null_vector_and_the_reason(cluster: Cluster, worker: Worker) -> None:
    texts: list[str | None] = list(make_texts(20))
    texts[4], texts[15] = "  ", None
    ds = ray.data.from_arrow(pa.table({"text": texts}))
    out = embed_dataset(ds, num_workers=1, skip_invalid=True, output_column="vec", dimensions=32)
    table = collect(out)
    assert table.column_names == ["text", "vec", "vec_error"]
    vectors = table.column("vec").to_pylist()
    assert [i for i, v in enumerate(vectors) if v is None] == [4, 15]
    reasons = table.column("vec_error").to_pylist()
    assert reasons[4] == "is only whitespace" and reasons[15].startswith("is None")
    kept = [t for t in texts if t is not None and t.strip()]
    expected = worker.submit(kept, dimensions=32).result().vectors
    got = np.array([v for v in vectors if v is not None], dtype=np.float32)
    assert got.shape == (18, 32) and np.min(np.sum(got * expected, axis=1)) >= 0.9999


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jupyter_mlx_embed", "embed", *argv],
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_the_command_line_on_the_cluster(cluster: Cluster, worker: Worker, tmp_path: Path) -> None:
    texts = make_texts(300)
    source = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"id": list(range(300)), "text": texts}), source)
    out = tmp_path / "out.parquet"
    done = run_cli(str(source), "-o", str(out), "--batch-size", "50", "--ray", cluster.address)
    assert done.returncode == 0, done.stderr[-3000:]
    result = pq.read_table(out)
    assert result.column_names == ["id", "text", "embedding"]
    assert result.column("id").to_pylist() == list(range(300))
    cosines = np.sum(vectors_of(result) * engine_vectors(worker, texts), axis=1)
    assert cosines.min() >= 0.9999
    assert "300 rows, 300 embedded now" in done.stdout


def test_the_command_line_on_the_cluster_skips_jsonl_values_that_are_not_strings(
    cluster: Cluster, tmp_path: Path
) -> None:
    source, _ = mixed_jsonl(tmp_path)
    out = tmp_path / "out.parquet"
    argv = [str(source), "-o", str(out), "--skip-invalid", "--batch-size", "3"]
    done = run_cli(*argv, "--part-rows", "4", "--ray", cluster.address)
    assert done.returncode == 0, done.stderr[-3000:]
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == list(range(10))
    reasons = table.column("embedding_error").to_pylist()
    assert [i for i, r in enumerate(reasons) if r is not None] == sorted(NOT_STRINGS)
    for row, (value, reason) in NOT_STRINGS.items():
        assert reasons[row].startswith(reason)
        assert table.column("text")[row].as_py() == (None if value is None else json.dumps(value))


def test_the_command_line_on_the_cluster_resumes_an_interrupted_job(
    cluster: Cluster, worker: Worker, tmp_path: Path
) -> None:
    texts = make_texts(1500)
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    out = tmp_path / "out.parquet"
    argv = ["embed", str(source), "-o", str(out), "--part-rows", "100", "-q"]
    run_until_parts(argv, tmp_path / "out.parquet.parts", 2)  # interrupted, locally
    finished = sorted((tmp_path / "out.parquet.parts").glob("part-*.parquet"))
    mark_part(finished[0], 0.5)

    done = run_cli(*argv[1:], "--batch-size", "100", "--ray", cluster.address)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{len(finished)} of 15 parts resumed" in done.stdout
    result = pq.read_table(out)
    assert result.column("id").to_pylist() == list(range(1500))
    got = vectors_of(result)
    assert np.all(got[:100] == 0.5)  # kept, not recomputed
    cosines = np.sum(got[100:] * engine_vectors(worker, texts[100:]), axis=1)
    assert cosines.min() >= 0.9999


def test_the_command_line_reports_a_load_failure_on_the_cluster(
    cluster: Cluster, tmp_path: Path
) -> None:
    source = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"text": make_texts(20)}), source)
    out = tmp_path / "out.parquet"
    done = run_cli(
        str(source), "-o", str(out), "--model", "no-such-model", "--ray", cluster.address
    )
    assert done.returncode == 1
    assert "error: " in done.stderr and "no-such-model" in done.stderr.splitlines()[-1]


def test_options_are_checked_before_anything_runs() -> None:
    with pytest.raises(ValueError, match="output_column must differ"):
        embed_dataset(None, "text", output_column="text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown engine settings"):
        embed_dataset(None, settings={"nope": 1})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cpu_streams must be >= 1"):
        embed_dataset(None, settings={"cpu_streams": 0})  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="dimensions"):
        embed_dataset(None, dimensions=0)  # type: ignore[arg-type]


def test_actor_options_suit_the_ray_version() -> None:
    def up_to_2_63(fn: object, *, memory: float | None = None, **ray_remote_args: object) -> None:
        """map_batches up to Ray 2.63: any actor option as a keyword."""

    def from_2_64(fn: object, *, memory: float | None = None) -> None:
        """map_batches from Ray 2.64: only named options."""

    assert _remote_args(up_to_2_63, {"memory": 2**30}) == {
        "max_restarts": MAX_RESTARTS,
        "max_task_retries": MAX_TASK_RETRIES,
        "memory": 2**30,
    }
    assert _remote_args(up_to_2_63, {"max_restarts": 0})["max_restarts"] == 0
    assert _remote_args(from_2_64, {"memory": 2**30}) == {"memory": 2**30}
    with pytest.raises(ValueError, match="takes none of"):
        _remote_args(from_2_64, {"max_restarts": 1})
    with pytest.raises(ValueError, match="cannot set"):
        _remote_args(up_to_2_63, {"num_cpus": 4})


def test_importing_the_package_does_not_import_ray() -> None:
    code = (
        "import sys, jupyter_mlx_embed, jupyter_mlx_embed.distributed\n"
        "print(sorted({'ray', 'pyarrow', 'IPython', 'tornado'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
