"""The vector cache: re-embedding seen texts in a new process, and its cost when nothing hits.

Run with ``python bench/bench_cache.py [--texts 20000] [--rounds 5]``. Two measurements:

1. Re-run speed-up. A child process embeds N sentences with an empty cache (the first run),
   then a second, new child process embeds the same N sentences again (all hits). Prints
   both wall times (worker start and model load included in both) and their ratio.
2. All-miss overhead. In one process, rounds alternate between a worker with the cache on
   and one with it off, each embedding sentences never seen before (a fresh sample per
   round, so every lookup misses and every vector is written). Prints the paired median
   ratio of the throughputs, and the time the cache's own work takes (lookups on the worker
   thread) as a share of the round.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import corpus

from jupyter_mlx_embed import EngineConfig, Worker
from jupyter_mlx_embed.registry import bundled_model_path

CHILD = """
import json, sys, time
start = time.perf_counter()
from jupyter_mlx_embed import EngineConfig, Worker
texts = json.load(open(sys.argv[1]))
with Worker(EngineConfig(cache=True, cache_dir=sys.argv[2])) as worker:
    for i in range(0, len(texts), 256):
        worker.submit(texts[i : i + 256]).result()
    worker._cache.flush()
    hits, misses = worker.stats.cache_hits, worker.stats.cache_misses
print(json.dumps({"seconds": time.perf_counter() - start, "hits": hits, "misses": misses}))
"""


def rerun(texts: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "texts.json"
        path.write_text(json.dumps(texts))
        runs = []
        for _ in range(2):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(path), folder],
                capture_output=True,
                text=True,
                check=True,
            )
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    first, second = runs
    assert second["hits"] == len(texts) and second["misses"] == 0, second
    return {"first_s": first["seconds"], "second_s": second["seconds"]}


def overhead(tok, n: int, rounds: int) -> tuple[list[float], list[float]]:
    """Paired throughput ratios (cache on / off) and the lookup share of the on-rounds."""
    ratios, shares = [], []
    with tempfile.TemporaryDirectory() as folder:
        for r in range(rounds):
            rates = {}
            for cache in (True, False) if r % 2 == 0 else (False, True):
                texts = corpus.sentence_pairs(tok, n, seed=1000 + 2 * r + cache)
                with Worker(EngineConfig(cache=cache, cache_dir=folder)) as worker:
                    worker.submit(["warm-up"]).result()
                    lookup = _timed_lookups(worker) if cache else None
                    start = time.perf_counter()
                    for i in range(0, n, 256):
                        worker.submit(texts[i : i + 256]).result()
                    elapsed = time.perf_counter() - start
                    rates[cache] = n / elapsed
                    if lookup is not None:
                        shares.append(lookup[0] / elapsed)
            ratios.append(rates[True] / rates[False])
    return ratios, shares


def _timed_lookups(worker: Worker) -> list[float]:
    """Wrap the cache's lookup so the time it takes is added up (on the worker thread)."""
    cache = worker._cache
    assert cache is not None
    spent = [0.0]
    original = cache.lookup

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - start

    cache.lookup = timed  # type: ignore[method-assign]
    return spent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--texts", type=int, default=20_000)
    parser.add_argument("--overhead-texts", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    tok = corpus.load_tokenizer(bundled_model_path())
    texts = corpus.sentence_pairs(tok, args.texts, seed=3)
    ratios, shares = overhead(tok, args.overhead_texts, args.rounds)
    times = rerun(texts)
    speedup = times["first_s"] / times["second_s"]
    print(f"re-embedding {args.texts:,} texts (sentence pairs) in a new process:")
    first, second = times["first_s"], times["second_s"]
    print(f"  first run {first:.1f} s, second run {second:.2f} s: {speedup:.0f}x")
    ratios.sort()
    print(
        f"all-miss throughput, cache on / off ({args.overhead_texts:,} unseen texts, "
        f"{args.rounds} paired rounds): median {statistics.median(ratios):.3f} "
        f"[{ratios[0]:.3f}-{ratios[-1]:.3f}]; lookups take {statistics.median(shares):.2%} "
        "of the round"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
