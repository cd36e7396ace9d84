"""``jupyter-mlx-embed embed`` on this process's worker: formats, validation, resuming."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import pytest

from jupyter_mlx_embed import EngineConfig, Worker, cli
from jupyter_mlx_embed.cache import EmbeddingCache
from jupyter_mlx_embed.distributed import detect_format
from jupyter_mlx_embed.identity import model_identity
from jupyter_mlx_embed.registry import ModelRegistry


def make_texts(n: int) -> list[str]:
    """``n`` distinct sentences of varied length (deterministic)."""
    words = ["cat", "dog", "river", "stone", "market", "bread", "planet", "music"]
    words += ["garden", "engine", "paper", "storm"]
    return [
        f"Note {i}: " + " ".join(words[(i * k + k) % len(words)] for k in range(3 + i % 9))
        for i in range(n)
    ]


def vectors_of(table: pa.Table, column: str = "embedding") -> np.ndarray:
    return np.stack(table.column(column).to_numpy(zero_copy_only=False)).astype(np.float32)


def engine_vectors(worker: Worker, texts: list[str]) -> np.ndarray:
    """The single-process engine's vectors (in requests it accepts)."""
    futures = [worker.submit(texts[i : i + 1000]) for i in range(0, len(texts), 1000)]
    return np.concatenate([f.result().vectors for f in futures])


@pytest.fixture
def parquet_input(tmp_path: Path) -> Path:
    path = tmp_path / "docs.parquet"
    texts = make_texts(300)
    pq.write_table(pa.table({"id": list(range(300)), "text": texts}), path)
    return path


def test_parquet_gets_the_engines_vectors_after_its_columns(
    parquet_input: Path, tmp_path: Path, worker: Worker, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.parquet"
    assert cli.main(["embed", str(parquet_input), "-o", str(out), "--part-rows", "128"]) == 0
    table = pq.read_table(out)
    assert table.column_names == ["id", "text", "embedding"]
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 384)
    assert table.column("id").to_pylist() == list(range(300))
    expected = engine_vectors(worker, table.column("text").to_pylist())
    assert np.min(np.sum(vectors_of(table) * expected, axis=1)) >= 0.9999
    assert not (tmp_path / "out.parquet.parts").exists()
    assert "300 rows, 300 embedded now" in capsys.readouterr().out


def test_jsonl_and_csv_inputs(tmp_path: Path, worker: Worker) -> None:
    texts = make_texts(40)
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"k": i, "body": t}) + "\n" for i, t in enumerate(texts)))
    csv = tmp_path / "docs.csv"
    pyarrow.csv.write_csv(pa.table({"k": list(range(40)), "body": texts}), csv)
    expected = engine_vectors(worker, texts)
    for source in (jsonl, csv):
        out = tmp_path / f"{source.suffix[1:]}.parquet"
        argv = ["embed", str(source), "--column", "body", "-o", str(out), "--dimensions", "64"]
        assert cli.main([*argv, "-q"]) == 0
        table = pq.read_table(out)
        assert table.column("body").to_pylist() == texts
        got = vectors_of(table)
        assert got.shape == (40, 64)
        short = expected[:, :64] / np.linalg.norm(expected[:, :64], axis=1, keepdims=True)
        assert np.min(np.sum(got * short, axis=1)) >= 0.9999


def test_csv_digits_are_texts(tmp_path: Path) -> None:
    source = tmp_path / "codes.csv"
    source.write_text("text\n12345\n007\n")
    out = tmp_path / "codes.parquet"
    assert cli.main(["embed", str(source), "-o", str(out), "-q"]) == 0
    assert pq.read_table(out).column("text").to_pylist() == ["12345", "007"]


def dirty_input(tmp_path: Path) -> Path:
    path = tmp_path / "dirty.jsonl"
    rows = [{"id": i, "text": t} for i, t in enumerate(make_texts(12))]
    rows[3]["text"], rows[7]["text"], rows[8]["text"] = None, "   ", ""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_rows_that_are_not_texts_fail_the_job_naming_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.parquet"
    assert cli.main(["embed", str(dirty_input(tmp_path)), "-o", str(out), "-q"]) == 1
    message = capsys.readouterr().err
    assert "3 rows of column 'text' are not texts" in message
    assert "text[3] is None" in message and "text[7] is only whitespace" in message
    assert "text[8] is an empty string" in message and "--skip-invalid" in message
    assert not out.exists() and not (tmp_path / "out.parquet.parts").exists()


def test_skip_invalid_gives_null_vectors_and_reasons(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    argv = ["embed", str(dirty_input(tmp_path)), "-o", str(out), "--skip-invalid", "-q"]
    assert cli.main(argv) == 0
    table = pq.read_table(out)
    assert table.num_rows == 12
    vectors = table.column("embedding").to_pylist()
    assert [i for i, v in enumerate(vectors) if v is None] == [3, 7, 8]
    reasons = table.column("embedding_error").to_pylist()
    assert reasons[3].startswith("is None") and reasons[7] == "is only whitespace"
    assert reasons[8] == "is an empty string" and reasons[0] is None


#: JSON values of a text column that are not strings, and the reason each row gets.
NOT_STRINGS = {
    1: (42, "is int, not a string"),
    3: ({"a": 1}, "is dict, not a string"),
    4: ([1, 2], "is list, not a string"),
    5: (True, "is bool, not a string"),
    6: (None, "is None, a missing value, not a string"),
    8: (2.5, "is float, not a string"),
}


def mixed_jsonl(tmp_path: Path) -> tuple[Path, list[str]]:
    """A JSONL file whose text column mixes strings with other JSON values (and has a blank
    line, which is no row), and its texts."""
    texts = make_texts(10)
    lines = [
        json.dumps({"id": i, "text": NOT_STRINGS.get(i, (t,))[0]}) for i, t in enumerate(texts)
    ]
    lines.insert(5, "")
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, texts


def test_jsonl_values_that_are_not_strings_fail_the_job_naming_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, _ = mixed_jsonl(tmp_path)
    assert cli.main(["embed", str(source), "-o", str(tmp_path / "out.parquet"), "-q"]) == 1
    message = capsys.readouterr().err
    assert "6 rows of column 'text' are not texts: text[1] is int, not a string" in message
    assert "text[3] is dict, not a string" in message and "--skip-invalid" in message


def test_jsonl_values_that_are_not_strings_are_skipped_like_other_invalid_rows(
    tmp_path: Path, worker: Worker, capsys: pytest.CaptureFixture[str]
) -> None:
    source, texts = mixed_jsonl(tmp_path)
    out = tmp_path / "out.parquet"
    assert cli.main(["embed", str(source), "-o", str(out), "--skip-invalid", "-q"]) == 0
    assert "10 rows, 4 embedded now, 6 skipped (not texts)" in capsys.readouterr().out
    table = pq.read_table(out)
    assert table.column_names == ["id", "text", "embedding", "embedding_error"]
    assert table.column("id").to_pylist() == list(range(10))
    reasons = table.column("embedding_error").to_pylist()
    for row, (value, reason) in NOT_STRINGS.items():
        assert reasons[row].startswith(reason)
        # The value as the file has it (JSON text), not embedded.
        assert table.column("text")[row].as_py() == (None if value is None else json.dumps(value))
    kept = [i for i in range(10) if i not in NOT_STRINGS]
    vectors = table.column("embedding").to_pylist()
    assert [i for i, v in enumerate(vectors) if v is not None] == kept
    got = np.array([vectors[i] for i in kept], dtype=np.float32)
    expected = engine_vectors(worker, [texts[i] for i in kept])
    assert np.min(np.sum(got * expected, axis=1)) >= 0.9999


def test_parquet_and_csv_apply_the_same_row_rules(tmp_path: Path) -> None:
    numbers = tmp_path / "numbers.parquet"  # a typed column: every row is not a text
    pq.write_table(pa.table({"text": [7, None]}), numbers)
    objects = tmp_path / "objects.parquet"
    pq.write_table(pa.table({"text": pa.array([{"a": 1}, None])}), objects)
    blanks = tmp_path / "blanks.csv"  # no types: digits are texts, an empty field is not
    blanks.write_text('id,text\n0,42\n1,\n2,"   "\n')
    expected = {
        numbers: ["is int, not a string", "is None"],
        objects: ["is dict, not a string", "is None"],
        blanks: [None, "is an empty string", "is only whitespace"],
    }
    for source, reasons in expected.items():
        out = tmp_path / f"{source.stem}.out.parquet"
        assert cli.main(["embed", str(source), "-o", str(out), "--skip-invalid", "-q"]) == 0
        got = pq.read_table(out).column("embedding_error").to_pylist()
        assert len(got) == len(reasons)
        for reason, want in zip(got, reasons, strict=True):
            assert reason == want if want is None else reason.startswith(want)


def test_missing_column_and_unknown_format_are_errors(
    parquet_input: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "out.parquet")
    assert cli.main(["embed", str(parquet_input), "--column", "body", "-o", out]) == 1
    assert "has no column 'body'; its columns: id, text" in capsys.readouterr().err
    with pytest.raises(ValueError, match="cannot tell the format"):
        detect_format(Path("notes.txt"))
    assert detect_format(Path("a.jsonl.gz")) == "jsonl"


def test_unknown_model_is_an_error(
    parquet_input: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "out.parquet")
    assert cli.main(["embed", str(parquet_input), "-o", out, "--model", "nope", "-q"]) == 1
    assert "nope" in capsys.readouterr().err


def run_until_parts(argv: list[str], parts: Path, count: int) -> None:
    """Run the command in a child process and SIGKILL it once ``count`` parts exist."""
    child = subprocess.Popen(
        [sys.executable, "-m", "jupyter_mlx_embed", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    try:
        while len(list(parts.glob("part-*.parquet"))) < count:
            assert child.poll() is None, "the job finished before it could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()


def mark_part(path: Path, value: float) -> None:
    """Overwrite a finished part's vectors with ``value`` (to see whether it is redone)."""
    part = pq.read_table(path)
    width = part.schema.field("embedding").type.list_size
    marked = pa.FixedSizeListArray.from_arrays(
        pa.array(np.full(part.num_rows * width, value, dtype=np.float32)), width
    )
    pq.write_table(
        part.set_column(part.schema.get_field_index("embedding"), "embedding", marked), path
    )


@pytest.mark.slow
def test_an_interrupted_job_resumes_without_redoing_finished_parts(
    tmp_path: Path, worker: Worker, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "docs.parquet"
    texts = make_texts(2000)
    pq.write_table(pa.table({"id": list(range(2000)), "text": texts}), source)
    out = tmp_path / "out.parquet"
    argv = ["embed", str(source), "-o", str(out), "--part-rows", "50", "-q"]
    parts = tmp_path / "out.parquet.parts"
    run_until_parts(argv, parts, 2)
    finished = sorted(parts.glob("part-*.parquet"))
    assert 2 <= len(finished) < 40 and not out.exists()
    mark_part(finished[0], 0.25)

    assert cli.main(argv) == 0
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == list(range(2000))
    got = vectors_of(table)
    assert np.all(got[:50] == 0.25)  # part 0 was kept, not recomputed
    expected = engine_vectors(worker, texts[50:])
    assert np.min(np.sum(got[50:] * expected, axis=1)) >= 0.9999
    report = capsys.readouterr().out
    assert f"{len(finished)} of 40 parts resumed" in report
    assert f"{2000 - 50 * len(finished)} embedded now" in report


#: The command as its console script runs it, with Python's own Ctrl-C handler even when
#: this test runs with SIGINT ignored (a background job), which children would inherit.
COMMAND = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from jupyter_mlx_embed.cli import main; sys.exit(main())"
)


def interrupt_after_parts(
    argv: list[str], parts: Path, count: int, env: dict[str, str]
) -> tuple[int, float, str]:
    """Run the command in a child process, press Ctrl-C (SIGINT) once ``count`` parts exist,
    and return its exit status, the seconds it took to stop, and its stderr."""
    child = subprocess.Popen(
        [sys.executable, "-c", COMMAND, *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 120
    try:
        while len(list(parts.glob("part-*.parquet"))) < count:
            assert child.poll() is None, "the job finished before it could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        child.send_signal(signal.SIGINT)
        pressed = time.monotonic()
        _, stderr = child.communicate(timeout=60)
        return child.returncode, time.monotonic() - pressed, stderr
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()


@pytest.fixture
def cache_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a child with the vector cache on (the default) in ``tmp_path``."""
    folder = tmp_path / "cache"
    return {
        **os.environ,
        "JUPYTER_MLX_EMBED_CACHE": "true",
        "JUPYTER_MLX_EMBED_CACHE_DIR": str(folder),
    }


def long_job(tmp_path: Path) -> tuple[list[str], Path]:
    """A job of 20 parts, long enough to interrupt: its arguments and its parts folder."""
    texts = [t + " and more words" * 8 for t in make_texts(1000)]
    source = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"id": list(range(1000)), "text": texts}), source)
    out = tmp_path / "out.parquet"
    argv = ["embed", str(source), "-o", str(out), "--part-rows", "50", "-q"]
    return argv, tmp_path / "out.parquet.parts"


@pytest.mark.slow
def test_ctrl_c_stops_the_command_at_once_and_the_job_resumes(
    tmp_path: Path, cache_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv, parts = long_job(tmp_path)
    status, seconds, stderr = interrupt_after_parts(argv, parts, 2, cache_env)
    assert status == 130, stderr[-3000:]
    assert seconds < 3.0, f"the command took {seconds:.1f} s to stop"
    assert "run the same command again to resume" in stderr
    assert "Traceback" not in stderr and "Fatal Python error" not in stderr
    finished = sorted(parts.glob("part-*.parquet"))
    assert 2 <= len(finished) < 20 and not [p for p in parts.iterdir() if ".tmp" in p.name]

    assert cli.main(argv) == 0
    assert f"{len(finished)} of 20 parts resumed" in capsys.readouterr().out
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column("id").to_pylist() == list(range(1000))


@pytest.mark.slow
def test_ctrl_c_stops_the_command_at_once_while_another_process_writes_the_cache(
    tmp_path: Path, cache_env: dict[str, str]
) -> None:
    argv, parts = long_job(tmp_path)
    folder = Path(cache_env["JUPYTER_MLX_EMBED_CACHE_DIR"])
    EmbeddingCache(folder, 64).close()
    holder = sqlite3.connect(folder / "vectors.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # as another process writing the shared cache would
    try:
        status, seconds, stderr = interrupt_after_parts(argv, parts, 2, cache_env)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert status == 130, stderr[-3000:]
    assert seconds < 3.0, f"the command took {seconds:.1f} s to stop"


def test_a_changed_argument_starts_over(tmp_path: Path, parquet_input: Path) -> None:
    out = tmp_path / "out.parquet"
    parts = tmp_path / "out.parquet.parts"
    parts.mkdir()
    (parts / "manifest.json").write_text(json.dumps({"version": 1, "dimensions": 32}))
    stale = parts / "part-000000.parquet"
    pq.write_table(pa.table({"x": [1]}), stale)
    assert cli.main(["embed", str(parquet_input), "-o", str(out), "-q"]) == 0
    assert pq.read_table(out).num_rows == 300
    assert not parts.exists()


def test_an_empty_input_gives_an_empty_output_with_the_vector_column(tmp_path: Path) -> None:
    source = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), source)
    out = tmp_path / "out.parquet"
    assert cli.main(["embed", str(source), "-o", str(out), "-q"]) == 0
    table = pq.read_table(out)
    assert table.num_rows == 0
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 384)


def test_embed_is_in_the_help() -> None:
    assert "embed" in cli.build_parser().format_help()


@pytest.fixture
def other_root(model_root: Path, tmp_path: Path) -> Path:
    """A model root where the name tiny-bert-cls is another model (tiny-bert-max's folder)."""
    root = tmp_path / "other-models"
    shutil.copytree(model_root / "tiny-bert-cls", root / "tiny-bert-cls")
    shutil.copy(model_root / "tiny-bert-max" / "model.safetensors", root / "tiny-bert-cls")
    return root


def run_command(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """The command in a child process, with this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "jupyter_mlx_embed", *argv],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
@pytest.mark.parametrize("changed", ["default model", "model roots"])
def test_a_resumed_job_refuses_parts_made_with_another_model(
    tmp_path: Path,
    model_root: Path,
    other_root: Path,
    worker: Worker,
    monkeypatch: pytest.MonkeyPatch,
    changed: str,
) -> None:
    # Children see only the environment: the same command line resolves another model.
    monkeypatch.setenv("JUPYTER_MLX_EMBED_MODEL_ROOTS", str(model_root))
    monkeypatch.setenv("JUPYTER_MLX_EMBED_DEFAULT_MODEL", "tiny-bert-cls")
    source = tmp_path / "docs.parquet"
    texts = make_texts(4000)
    pq.write_table(pa.table({"text": texts}), source)
    out = tmp_path / "out.parquet"
    argv = ["embed", str(source), "-o", str(out), "--part-rows", "20", "-q"]
    parts = tmp_path / "out.parquet.parts"
    run_until_parts(argv, parts, 2)
    finished = {p.name: p.read_bytes() for p in parts.glob("part-*.parquet")}
    manifest = (parts / "manifest.json").read_text()
    spec = ModelRegistry(EngineConfig(model_roots=(model_root,))).resolve("tiny-bert-cls")
    assert model_identity(spec) in manifest  # the cache's identity, not the name asked for

    if changed == "default model":
        monkeypatch.setenv("JUPYTER_MLX_EMBED_DEFAULT_MODEL", "tiny-bert-max")
    else:  # the same name, found in another root: the same config, other weights
        monkeypatch.setenv("JUPYTER_MLX_EMBED_MODEL_ROOTS", str(other_root))
    refused = run_command(argv)
    assert refused.returncode == 1, refused.stderr[-2000:]
    assert "made with another model" in refused.stderr and str(parts) in refused.stderr
    assert not out.exists()
    assert {p.name: p.read_bytes() for p in parts.glob("part-*.parquet")} == finished

    monkeypatch.setenv("JUPYTER_MLX_EMBED_DEFAULT_MODEL", "tiny-bert-cls")
    monkeypatch.setenv("JUPYTER_MLX_EMBED_MODEL_ROOTS", str(model_root))
    resumed = run_command(argv)  # the first model again: the job resumes
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{len(finished)} of 200 parts resumed" in resumed.stdout
    got = vectors_of(pq.read_table(out))
    expected = np.concatenate(
        [
            worker.submit(texts[i : i + 1000], model="tiny-bert-cls").result().vectors
            for i in range(0, len(texts), 1000)
        ]
    )
    assert np.min(np.sum(got * expected, axis=1)) >= 0.9999
