"""The persistent vector cache: hits skip the model, misses run it, and a broken cache never
fails a request or changes a vector."""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jupyter_mlx_embed import cache
from jupyter_mlx_embed.cache import EmbeddingCache
from jupyter_mlx_embed.modelspec import ModelSpec, read_model_spec

TEXTS = [f"cached sentence number {i} about rivers and trees" for i in range(40)]


def _flush(worker) -> None:
    worker._cache.flush()


def test_second_run_is_all_hits_with_the_same_vectors(make_worker, tmp_path: Path) -> None:
    worker = make_worker(cache=True, cache_dir=str(tmp_path))
    first = worker.submit(TEXTS).result()
    _flush(worker)
    batches = worker.stats.batches
    again = worker.submit(TEXTS).result()
    assert worker.stats.batches == batches, "a cached request ran the model"
    assert worker.stats.cache_hits == len(TEXTS)
    np.testing.assert_array_equal(again.vectors, first.vectors)
    assert again.token_counts == first.token_counts
    assert worker.info()["cache"] == {"enabled": True, "hits": 40, "misses": 40}


def test_a_request_of_hits_and_misses_keeps_its_order(make_worker, tmp_path: Path) -> None:
    worker = make_worker(cache=True, cache_dir=str(tmp_path))
    worker.submit(TEXTS[::2]).result()
    _flush(worker)
    mixed = worker.submit(TEXTS).result()
    assert worker.stats.cache_hits == 20
    worker.close()
    fresh = make_worker(cache=False)
    expected = fresh.submit(TEXTS).result()
    np.testing.assert_allclose(mixed.vectors, expected.vectors, atol=2e-5)
    assert mixed.token_counts == expected.token_counts


def test_dimensions_are_cut_from_the_cached_full_vector(make_worker, tmp_path: Path) -> None:
    worker = make_worker(cache=True, cache_dir=str(tmp_path))
    full = worker.submit(TEXTS[:3]).result().vectors
    _flush(worker)
    short = worker.submit(TEXTS[:3], dimensions=16).result().vectors
    assert worker.stats.cache_hits == 3
    expected = full[:, :16] / np.linalg.norm(full[:, :16], axis=1, keepdims=True)
    np.testing.assert_allclose(short, expected, atol=1e-6)


def test_models_do_not_share_entries(make_worker, tmp_path: Path) -> None:
    worker = make_worker(cache=True, cache_dir=str(tmp_path))
    worker.submit(TEXTS[:5]).result()
    _flush(worker)
    tiny = worker.submit(TEXTS[:5], model="tiny-bert-cls").result()
    assert tiny.vectors.shape == (5, 32) and worker.stats.cache_hits == 0


def test_a_corrupt_cache_file_is_a_warning_and_a_cacheless_run(
    make_worker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "vectors.sqlite").write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.WARNING, logger="jupyter_mlx_embed"):
        worker = make_worker(cache=True, cache_dir=str(tmp_path))
        vectors = worker.submit(TEXTS[:4]).result().vectors
    assert vectors.shape == (4, 384)
    assert worker.info()["cache"]["enabled"] is False
    assert any("embedding cache off" in r.message for r in caplog.records)


def test_an_unwritable_cache_folder_is_a_warning(make_worker, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where the folder should be")
    worker = make_worker(cache=True, cache_dir=str(blocker / "cache"))
    assert worker.submit(TEXTS[:2]).result().vectors.shape == (2, 384)
    assert worker.info()["cache"]["enabled"] is False


def test_a_cache_damaged_while_running_is_turned_off(make_worker, tmp_path: Path) -> None:
    worker = make_worker(cache=True, cache_dir=str(tmp_path))
    worker.submit(TEXTS[:3]).result()
    _flush(worker)
    with sqlite3.connect(tmp_path / "vectors.sqlite") as db:
        db.execute("DROP TABLE vectors")
    again = worker.submit(TEXTS[:3]).result()  # the lookup fails: computed, not an error
    assert again.vectors.shape == (3, 384)
    assert worker.info()["cache"]["enabled"] is False


def test_size_stays_bounded(make_worker, tmp_path: Path) -> None:
    worker = make_worker(cache=True, cache_dir=str(tmp_path), cache_size_mb=1)
    texts = [f"filler text {i}" for i in range(1500)]  # ~2.5 MB of vectors
    for start in range(0, len(texts), 250):
        worker.submit(texts[start : start + 250]).result()
    _flush(worker)
    with sqlite3.connect(tmp_path / "vectors.sqlite") as db:
        pages, free, size = (
            db.execute(f"PRAGMA {p}").fetchone()[0]
            for p in ("page_count", "freelist_count", "page_size")
        )
        rows = db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
    assert (pages - free) * size <= 1.2 * 2**20
    assert 0 < rows < 1500
    recent = worker.submit(texts[-10:]).result()  # the newest entries survived eviction
    assert recent.vectors.shape == (10, 384) and worker.stats.cache_hits == 10


def test_another_process_reads_what_this_one_wrote(make_worker, tmp_path: Path) -> None:
    worker = make_worker(cache=True, cache_dir=str(tmp_path))
    vectors = worker.submit(TEXTS[:8]).result().vectors
    _flush(worker)
    np.save(tmp_path / "expected.npy", vectors)
    code = f"""
import numpy as np
from jupyter_mlx_embed import EngineConfig, Worker
with Worker(EngineConfig(cache=True, cache_dir={str(tmp_path)!r})) as w:
    got = w.submit({TEXTS[:8]!r}).result().vectors
    assert w.stats.cache_hits == 8 and w.stats.batches == 0, w.stats
    np.testing.assert_array_equal(got, np.load({str(tmp_path / "expected.npy")!r}))
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


# -- identity: everything that changes a vector -------------------------------------------

TWIN_TEXTS = ["the cat sat on the mat", "a dog and a cat", "cat", "the quick brown fox"]


def _swap_cat_and_dog(folder: Path) -> None:
    """Another tokenizer.json: same words, two of their ids exchanged."""
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["cat"], vocab["dog"] = vocab["dog"], vocab["cat"]
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))


def _edit_json(path: Path, **changes: object) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _write_file(path: Path) -> None:
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"\x00" * 64)


def _drop_normalize(folder: Path) -> None:
    modules = json.loads((folder / "modules.json").read_text())
    (folder / "modules.json").write_text(
        json.dumps([m for m in modules if not m["type"].endswith("Normalize")])
    )


# Each edit leaves the weights alone and changes what the model computes (or may compute).
FOLDER_EDITS = {
    "tokenizer.json": _swap_cat_and_dog,
    "tokenizer_config.json": lambda f: (f / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": False})
    ),
    "special_tokens_map.json": lambda f: (f / "special_tokens_map.json").write_text(
        json.dumps({"cls_token": "[CLS]"})
    ),
    "vocab.txt": lambda f: (f / "vocab.txt").write_text("[PAD]\n[UNK]\ncat\n"),
    "spiece.model": lambda f: (f / "spiece.model").write_bytes(b"\x0a\x03cat"),
    "config.json": lambda f: _edit_json(f / "config.json", layer_norm_eps=1e-6),
    "pooling config": lambda f: _edit_json(f / "1_Pooling" / "config.json", include_prompt=False),
    "prompts": lambda f: (f / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: "}, "default_prompt_name": None})
    ),
    "normalize module": _drop_normalize,
    "a module folder's file": lambda f: _write_file(f / "2_Normalize" / "pytorch_model.bin"),
    "a module folder's weights": lambda f: _write_file(f / "2_Normalize" / "model.safetensors"),
    "do_lower_case": lambda f: _edit_json(f / "sentence_bert_config.json", do_lower_case=True),
    "max length": lambda f: _edit_json(f / "sentence_bert_config.json", max_seq_length=16),
}


def _twins(model_root: Path, root: Path, edit=None) -> tuple[ModelSpec, ModelSpec]:
    """Two copies of a tiny model (identical weights), the second edited."""
    for name in ("twin-a", "twin-b"):
        shutil.copytree(model_root / "tiny-bert-cls", root / name)
    if edit is not None:
        edit(root / "twin-b")
    return tuple(  # type: ignore[return-value]
        read_model_spec(root / name, name=name, source="root") for name in ("twin-a", "twin-b")
    )


@pytest.mark.parametrize("edit", FOLDER_EDITS.values(), ids=FOLDER_EDITS.keys())
def test_a_model_folder_that_differs_only_beside_the_weights_has_another_identity(
    model_root: Path, tmp_path: Path, edit
) -> None:
    a, b = _twins(model_root, tmp_path / "models", edit)
    store = EmbeddingCache(tmp_path / "cache", 16)
    try:
        assert store.identity(a) != store.identity(b)
    finally:
        store.close()


def test_identical_folders_share_an_identity(model_root: Path, tmp_path: Path) -> None:
    a, b = _twins(model_root, tmp_path / "models")
    store = EmbeddingCache(tmp_path / "cache", 16)
    try:
        assert store.identity(a) == store.identity(b)
    finally:
        store.close()


def test_the_identity_needs_no_open_cache_and_agrees_with_it(
    model_root: Path, tmp_path: Path
) -> None:
    from jupyter_mlx_embed.identity import model_identity

    a, b = _twins(model_root, tmp_path / "models", _swap_cat_and_dog)
    store = EmbeddingCache(tmp_path / "cache", 16)
    try:
        assert model_identity(a) == store.identity(a)
        assert model_identity(b) == store.identity(b) != model_identity(a)
    finally:
        store.close()


def test_a_model_with_another_tokenizer_does_not_get_the_first_ones_vectors(
    make_worker, model_root: Path, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    _twins(model_root, root, _swap_cat_and_dog)
    worker = make_worker(cache=True, cache_dir=str(tmp_path / "cache"), model_roots=(root,))
    first = worker.submit(TWIN_TEXTS, model="twin-a").result().vectors
    _flush(worker)
    second = worker.submit(TWIN_TEXTS, model="twin-b").result().vectors
    assert worker.stats.cache_hits == 0, "twin-b was answered with twin-a's vectors"
    assert not np.allclose(first[0], second[0])  # "cat" means another row of the weights


# -- integrity: checksums, permissions, locks, old files ----------------------------------


@pytest.mark.parametrize("column", ["vector", "tokens"])
def test_a_row_altered_in_the_file_is_recomputed_not_served(
    make_worker, tmp_path: Path, column: str
) -> None:
    worker = make_worker(cache=True, cache_dir=str(tmp_path))
    first = worker.submit(TEXTS[:3]).result()
    _flush(worker)
    with sqlite3.connect(tmp_path / "vectors.sqlite") as db:
        rowid, blob, tokens = db.execute(
            "SELECT rowid, vector, tokens FROM vectors ORDER BY rowid LIMIT 1"
        ).fetchone()
        if column == "vector":  # another unit vector of the same length: plausible, wrong
            altered: object = np.frombuffer(blob, "<f4")[::-1].tobytes()
        else:
            altered = tokens + 7
        db.execute(f"UPDATE vectors SET {column} = ? WHERE rowid = ?", (altered, rowid))
    again = worker.submit(TEXTS[:3]).result()
    assert worker.stats.cache_hits == 2
    np.testing.assert_allclose(again.vectors, first.vectors, atol=1e-6)
    assert again.token_counts == first.token_counts
    _flush(worker)
    with sqlite3.connect(tmp_path / "vectors.sqlite") as db:
        stored = db.execute("SELECT vector, tokens FROM vectors").fetchall()
    assert (altered, tokens) not in stored and (blob, altered) not in stored
    assert len(stored) == 3  # the altered row was replaced by the recomputed one


def test_the_cache_folder_and_its_files_are_private(make_worker, tmp_path: Path) -> None:
    folder = tmp_path / "new" / "cache"
    worker = make_worker(cache=True, cache_dir=str(folder))
    worker.submit(TEXTS[:2]).result()
    _flush(worker)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = sorted(p.name for p in folder.glob("vectors.sqlite*"))
    assert files == ["vectors.sqlite", "vectors.sqlite-shm", "vectors.sqlite-wal"]
    for name in files:
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name


OLD_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE vectors (
    key BLOB PRIMARY KEY, vector BLOB NOT NULL, tokens INTEGER NOT NULL, used INTEGER NOT NULL
);
CREATE INDEX vectors_by_use ON vectors (used);
CREATE TABLE weights (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime INTEGER NOT NULL, sha256 TEXT NOT NULL
);
INSERT INTO meta VALUES ('schema', '1');
INSERT INTO vectors VALUES (x'00112233445566778899aabbccddeeff', x'0000803f', 1, 0);
"""


def test_a_file_of_the_first_schema_is_emptied_made_private_and_used(
    make_worker, tmp_path: Path
) -> None:
    path = tmp_path / "vectors.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
    path.chmod(0o644)  # as the first release left it
    worker = make_worker(cache=True, cache_dir=str(tmp_path))
    worker.submit(TEXTS[:2]).result()
    _flush(worker)
    assert worker.info()["cache"]["enabled"] is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with sqlite3.connect(path) as db:
        keys = [row[0] for row in db.execute("SELECT key FROM vectors")]
    assert len(keys) == 2 and bytes.fromhex("00112233445566778899aabbccddeeff") not in keys
    worker.submit(TEXTS[:2]).result()
    assert worker.stats.cache_hits == 2


def test_a_file_of_a_newer_schema_is_left_alone(make_worker, tmp_path: Path) -> None:
    path = tmp_path / "vectors.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA.replace("'schema', '1'", "'schema', '99'"))
    worker = make_worker(cache=True, cache_dir=str(tmp_path))
    assert worker.submit(TEXTS[:2]).result().vectors.shape == (2, 384)
    assert worker.info()["cache"]["enabled"] is False
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0] == 1


def test_a_lock_held_past_the_timeout_delays_writes_without_turning_the_cache_off(
    make_worker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache, "BUSY_TIMEOUT", 0.2, raising=False)
    worker = make_worker(cache=True, cache_dir=str(tmp_path))
    worker.submit(TEXTS[:3]).result()
    _flush(worker)
    other = sqlite3.connect(tmp_path / "vectors.sqlite", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # no other connection can write until it ends
    try:
        held = worker.submit(TEXTS[:6]).result()  # 3 hits, 3 misses to write
        time.sleep(1.0)  # several timeouts: the writes are tried and wait
        assert worker.info()["cache"]["enabled"] is True
        with sqlite3.connect(tmp_path / "vectors.sqlite") as db:
            assert db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0] == 3
    finally:
        other.execute("COMMIT")
        other.close()
    _flush(worker)
    again = worker.submit(TEXTS[:6]).result()
    assert worker.stats.cache_hits == 3 + 6
    np.testing.assert_array_equal(again.vectors, held.vectors)
    assert worker.info()["cache"]["enabled"] is True


def test_writes_waiting_for_a_lock_are_bounded_the_newest_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = 8 * 4 + 16  # an 8-float vector and its key
    monkeypatch.setattr(cache, "_MAX_QUEUED_BYTES", 3 * row)
    store = EmbeddingCache(tmp_path, 16, busy_timeout=0.05)
    texts = [f"text {i}" for i in range(6)]
    other = sqlite3.connect(tmp_path / "vectors.sqlite", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        for i, text in enumerate(texts):
            store.store("model", [text], np.full((1, 8), i + 1, "<f4"), [3])
        time.sleep(0.5)
    finally:
        other.execute("COMMIT")
        other.close()
    store.flush()
    try:
        found = store.lookup("model", texts, 8)
        assert sorted(found) == [3, 4, 5]
        assert all(found[i][0][0] == i + 1 and found[i][1] == 3 for i in found)
    finally:
        store.close()
