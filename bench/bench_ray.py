"""The Ray path against the single-process engine, on the same texts, in one run.

Run with ``python bench/bench_ray.py [--texts 3000] [--rounds 2] [--json OUT]`` (needs the
``ray`` extra). Configurations, each embedding the same texts (the vector cache off):

- ``engine``: one :class:`Worker` in this process (default settings: 4 CPU streams);
- ``engine, 2 streams``: the same with ``cpu_streams=2`` (what one 2-CPU actor uses);
- ``ray, 1 actor x 2 CPUs``: ``embed_dataset`` on a local Ray (``ray.init(num_cpus=2)``),
  one actor with 2 threads (2 CPU streams, one OpenBLAS thread each);
- ``ray, 2 actors x 1 CPU``: two actors with one thread each.

Ray's times are end to end for one ``embed_dataset`` run consumed with ``iter_batches``
(actor start, import, model load, then every batch), and also from the first batch back to
the last ("steady": the actors are loaded by then). The engine's times are one call of
embedding every text on a worker that has the model loaded (its start is measured apart).
Rounds alternate the configurations so machine drift hits all alike; medians are reported.
Peak RSS of each actor process (``VmHWM``) is read from ``/proc`` while it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import corpus
import numpy as np
import pyarrow as pa
import ray
import ray.data

from jupyter_mlx_embed import EngineConfig, Worker, __version__
from jupyter_mlx_embed.distributed import embed_dataset
from jupyter_mlx_embed.registry import bundled_model_path

BATCH = 256


def peak_rss_mib(pid: int) -> float | None:
    """A process's peak resident set (``VmHWM``), in MiB, while it is alive."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_engine(texts: list[str], streams: int | None) -> dict[str, Any]:
    settings: dict[str, Any] = {"cache": False}
    if streams is not None:
        settings["cpu_streams"] = streams
    started = time.perf_counter()
    with Worker(EngineConfig(**settings)) as worker:
        worker.preload().result()
        ready = time.perf_counter()
        futures = [worker.submit(texts[i : i + BATCH]) for i in range(0, len(texts), BATCH)]
        vectors = np.concatenate([f.result().vectors for f in futures])
        done = time.perf_counter()
    return {"seconds": done - ready, "start_s": ready - started, "vectors": vectors}


def run_ray(texts: list[str], actors: int, cpus: float) -> dict[str, Any]:
    table = pa.table({"text": texts})
    blocks = [table.slice(i, BATCH) for i in range(0, len(texts), BATCH)]
    ds = embed_dataset(
        ray.data.from_arrow(blocks),
        num_workers=actors,
        cpus_per_worker=cpus,
        batch_size=BATCH,
        settings={"cache": False},
        provenance_column="worker",
    )
    started = time.perf_counter()
    first = None
    parts, peaks = [], {}
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        if first is None:
            first = time.perf_counter()
            first_rows = batch.num_rows
        parts.append(batch)
        for worker in set(batch.column("worker").to_pylist()):
            pid = int(worker.split(":")[1])
            peak = peak_rss_mib(pid)
            if peak is not None:
                peaks[pid] = peak
    done = time.perf_counter()
    out = pa.concat_tables(parts)
    vectors = np.stack(out.column("embedding").to_numpy(zero_copy_only=False))
    assert first is not None
    return {
        "seconds": done - started,
        "steady_rows_per_s": (len(texts) - first_rows) / max(done - first, 1e-9),
        "first_batch_s": first - started,
        "actors_used": len(peaks),
        "actor_peak_rss_mib": sorted(peaks.values()),
        "vectors": vectors,
    }


CONFIGS = {
    "engine": lambda texts: run_engine(texts, None),
    "engine, 2 streams": lambda texts: run_engine(texts, 2),
    "ray, 1 actor x 2 CPUs": lambda texts: run_ray(texts, 1, 2.0),
    "ray, 2 actors x 1 CPU": lambda texts: run_ray(texts, 2, 1.0),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--texts", type=int, default=3000, help="texts to embed (3000)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of all configs (2)")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()

    tok = corpus.load_tokenizer(bundled_model_path())
    texts = corpus.sentence_pairs(tok, args.texts)
    tokens = sum(corpus.count_tokens(tok, texts))
    ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, logging_level="ERROR")
    ray.data.DataContext.get_current().enable_progress_bars = False
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGS}
    reference = None
    for round_ in range(args.rounds):
        for name, run in CONFIGS.items():
            result = run(texts)
            if reference is None:
                reference = result["vectors"]
            cosine = float(np.min(np.sum(result.pop("vectors") * reference, axis=1)))
            result["min_cosine_to_engine"] = cosine
            results[name].append(result)
            print(f"round {round_ + 1} {name}: {len(texts) / result['seconds']:.0f} rows/s")
    ray.shutdown()

    med = statistics.median
    print(
        f"\n{len(texts)} texts, {tokens} tokens; {os.cpu_count()} CPUs; "
        f"{args.rounds} rounds (median)\n"
    )
    print(
        "| configuration | rows/s | tokens/s | steady rows/s | first batch, s | "
        "actors used | actor peak RSS, MiB | min cosine |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    summary = {}
    for name, runs in results.items():
        seconds = med(r["seconds"] for r in runs)
        row = {
            "rows_per_s": len(texts) / seconds,
            "tokens_per_s": tokens / seconds,
            "steady_rows_per_s": med(
                r.get("steady_rows_per_s", len(texts) / r["seconds"]) for r in runs
            ),
            "first_batch_s": med(r.get("first_batch_s", r.get("start_s", 0.0)) for r in runs),
            "actors_used": max(r.get("actors_used", 0) for r in runs),
            "actor_peak_rss_mib": max(max(r.get("actor_peak_rss_mib") or [0]) for r in runs),
            "min_cosine": min(r["min_cosine_to_engine"] for r in runs),
        }
        summary[name] = row
        rss = f"{row['actor_peak_rss_mib']:.0f}" if row["actor_peak_rss_mib"] else "-"
        print(
            f"| {name} | {row['rows_per_s']:.0f} | {row['tokens_per_s']:.0f} | "
            f"{row['steady_rows_per_s']:.0f} | {row['first_batch_s']:.1f} | "
            f"{row['actors_used'] or '-'} | {rss} | {row['min_cosine']:.7f} |"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "texts": len(texts),
                    "tokens": tokens,
                    "rounds": args.rounds,
                    "cpus": os.cpu_count(),
                    "python": sys.version.split()[0],
                    "platform": platform.platform(),
                    "jupyter_mlx_embed": __version__,
                    "ray": ray.__version__,
                    "results": summary,
                    "runs": results,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
