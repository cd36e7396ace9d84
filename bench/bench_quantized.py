"""Benchmark MLX-quantized checkpoints against float32 through the worker, on the same texts.

Run it directly (no extra dependencies)::

    python bench/bench_quantized.py [--rounds N] [--quick] [--stock] [--dir DIR] [--json OUT]

The 8-bit and 4-bit checkpoints are built from the bundled all-MiniLM-L6-v2 as mlx-embeddings'
``convert --quantize`` writes them (float16, group size 64; ``tests/quantized_models.py``, in a
subprocess so that MLX stays on the worker thread here; ``--dir`` keeps them for the next run).
One worker serves all three models, with the vector cache off. Each round runs every workload
on every model, in an order rotated per round. Reported per workload: the median (best)
tokens/s of each model, and its tokens per CPU second (process CPU time, which a busy machine
disturbs less than wall time: the three models do the same work), each with the median
[min-max] of the per-round paired ratios to float32 (>1: faster than float32) and best round
against best round. Workloads (see corpus.py): 256 sentences of 8-40 tokens and 64 passages
of 128-256 tokens, tokens counted with the model's tokenizer (special tokens included,
truncated to 256). Also reported: each model's load time
(dequantization included), its min cosine to float32 over both workloads, and the CPU cores
busy (process CPU time / wall time) in the timed runs, which shows runs that did not get the
cores. ``--stock`` adds one run of the stock forward (``cpu_fast_path=False``: MLX's
quantized kernels) on 32 sentences, for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import corpus
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"fp32": None, "8-bit": ("minilm-8bit", 8), "4-bit": ("minilm-4bit", 4)}
GROUP_SIZE = 64
med = statistics.median


def build_checkpoints(source: Path, out: Path) -> None:
    """Write the quantized copies of ``source`` under ``out`` (skipping those already there)."""
    args = []
    for entry in MODELS.values():
        if entry is not None and not (out / entry[0] / "config.json").is_file():
            args += [str(source), str(out / entry[0]), str(entry[1]), str(GROUP_SIZE)]
    if args:
        builder = ROOT / "tests" / "quantized_models.py"
        subprocess.run([sys.executable, str(builder), *args], check=True)


def model_name(label: str) -> str | None:
    entry = MODELS[label]
    return None if entry is None else entry[0]


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.min(np.sum(a * b, axis=1)))


def measure(
    root: Path, workloads: dict[str, list[str]], tokens: dict[str, int], rounds: int
) -> dict[str, Any]:
    """Load times, tokens/s per round and min cosines to float32, from one fast-path worker."""
    from jupyter_mlx_embed import EngineConfig, Worker

    labels = list(MODELS)
    # No vector cache: every round must run the forward passes.
    config = EngineConfig(model_roots=(root,), max_loaded_models=len(labels), cache=False)
    with Worker(config) as worker:
        load_s, vectors = {}, {}
        for label in labels:
            start = time.perf_counter()
            worker.preload(model_name(label)).result()
            load_s[label] = time.perf_counter() - start
        for label in labels:  # warm-up: traces every padded shape, gives the vectors
            vectors[label] = {
                w: worker.submit(texts, model=model_name(label)).result().vectors
                for w, texts in workloads.items()
            }
        # Per workload and model, per round: tokens per wall second and per CPU second.
        tps: dict[str, dict[str, list[float]]] = {w: {m: [] for m in labels} for w in workloads}
        cpu_tps: dict[str, dict[str, list[float]]] = {w: {m: [] for m in labels} for w in tps}
        for r in range(rounds):
            order = labels[r % len(labels) :] + labels[: r % len(labels)]
            line = f"round {r + 1}/{rounds}"
            for w, texts in workloads.items():
                for label in order:
                    start, cpu = time.perf_counter(), time.process_time()
                    worker.submit(texts, model=model_name(label)).result()
                    wall = time.perf_counter() - start
                    tps[w][label].append(tokens[w] / wall)
                    cpu_tps[w][label].append(tokens[w] / (time.process_time() - cpu))
                ratios = [tps[w][m][-1] / tps[w]["fp32"][-1] for m in labels[1:]]
                line += f"  {w}: " + "/".join(f"{x:.2f}x" for x in ratios)
            print(line, flush=True)
        info = worker.info()
    cosine = {
        label: min(min_cosine(vectors[label][w], vectors["fp32"][w]) for w in workloads)
        for label in labels
    }
    return {
        "load_s": load_s,
        "tokens_per_s": tps,
        "tokens_per_cpu_s": cpu_tps,
        "min_cosine": cosine,
        "info": info,
    }


def measure_stock(root: Path, texts: list[str], count: int) -> dict[str, list[float]]:
    """Tokens per wall and per CPU second of the stock forward (MLX's quantized kernels) for
    each model, one run."""
    from jupyter_mlx_embed import EngineConfig, Worker

    out = {}
    config = EngineConfig(
        model_roots=(root,), max_loaded_models=len(MODELS), cpu_fast_path=False, cache=False
    )
    with Worker(config) as worker:
        for label in MODELS:
            worker.submit(texts[:4], model=model_name(label)).result()  # load and warm up
            start, cpu = time.perf_counter(), time.process_time()
            worker.submit(texts, model=model_name(label)).result()
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            out[label] = [count / wall, count / cpu]
    return out


def report(result: dict[str, Any], tokens: dict[str, int]) -> str:
    labels = list(MODELS)
    rows = [
        "| Workload, measure | "
        + " | ".join(labels)
        + " | "
        + " | ".join(f"{m} / fp32, paired | best" for m in labels[1:])
        + " |",
        "|---|" + "---:|" * (len(labels) + 2 * (len(labels) - 1)),
    ]
    measures = {"tokens/s": "tokens_per_s", "tokens per CPU-s": "tokens_per_cpu_s"}
    for w in result["tokens_per_s"]:
        for measure_name, key in measures.items():
            by_model = result[key][w]
            cells = [f"{med(v):,.0f} ({max(v):,.0f})" for v in by_model.values()]
            for m in labels[1:]:
                ratios = [q / f for q, f in zip(by_model[m], by_model["fp32"], strict=True)]
                cells.append(f"{med(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}]")
                cells.append(f"{max(by_model[m]) / max(by_model['fp32']):.2f}x")
            rows.append(f"| {w} ({tokens[w]} tok), {measure_name} | " + " | ".join(cells) + " |")
    busy = [
        wall / cpu
        for w, by_model in result["tokens_per_s"].items()
        for m, runs in by_model.items()
        for wall, cpu in zip(runs, result["tokens_per_cpu_s"][w][m], strict=True)
    ]
    loads = ", ".join(f"{m} {s:.2f} s" for m, s in result["load_s"].items())
    cos = ", ".join(f"{m} {c:.5f}" for m, c in result["min_cosine"].items() if m != "fp32")
    text = "\n".join(rows) + (
        f"\n\nLoad time: {loads}.\nMin cosine to fp32: {cos}.\n"
        f"CPU cores busy in the timed runs: {med(busy):.2f} [{min(busy):.2f}-{max(busy):.2f}]."
    )
    if "stock_tokens_per_s" in result:
        stock = result["stock_tokens_per_s"]
        text += (
            "\nStock forward (cpu_fast_path=False), 32 sentences, tokens/s (per CPU-s): "
            + ", ".join(
                f"{m} {wall:,.0f} ({cpu:,.0f}, {cpu / stock['fp32'][1]:.2f}x)"
                for m, (wall, cpu) in stock.items()
            )
        )
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 5)")
    parser.add_argument("--quick", action="store_true", help="small smoke run (2 rounds)")
    parser.add_argument("--stock", action="store_true", help="also time the stock forward")
    parser.add_argument("--dir", type=Path, help="keep (and reuse) the checkpoints here")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args(argv)
    from jupyter_mlx_embed.registry import bundled_model_path

    source = bundled_model_path()
    if source is None:
        raise SystemExit("the bundled model is not installed: run `make install` first")
    rounds = args.rounds or (2 if args.quick else 5)
    tok = corpus.load_tokenizer(source)
    n_short, n_para = (64, 16) if args.quick else (256, 64)
    workloads = {
        f"{n_short} sentences": corpus.sentences(tok, n_short),
        f"{n_para} passages": corpus.paragraphs(tok, n_para),
    }
    tokens = {w: sum(corpus.count_tokens(tok, texts)) for w, texts in workloads.items()}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.dir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        build_checkpoints(source, root)
        # The float32 model is the bundled one; the root holds only the quantized copies.
        result = measure(root, workloads, tokens, rounds)
        if args.stock:
            texts = workloads[f"{n_short} sentences"][:32]
            stock = measure_stock(root, texts, sum(corpus.count_tokens(tok, texts)))
            result["stock_tokens_per_s"] = stock
    info = result.pop("info")
    print(
        f"\nmlx {info.get('mlx_version')} ({info.get('device')}, BLAS: "
        f"{info.get('blas', {}).get('name')}), {os.cpu_count()} CPUs, {platform.platform()}, "
        f"{rounds} rounds\n"
    )
    print(report(result, tokens))
    if args.json:
        result.update(rounds=rounds, tokens=tokens, machine=platform.platform())
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
