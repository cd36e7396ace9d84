"""The persistent vector cache: hits skip the model, misses run it, and a broken cache never
fails a request or changes a vector."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

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
