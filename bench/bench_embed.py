"""Benchmark jupyter_mlx_embed against sentence-transformers (torch, CPU) on the same model.

Run it with ``make bench`` (installs the ``bench`` extra: torch CPU and sentence-transformers),
or directly::

    python bench/bench_embed.py [--rounds N] [--quick] [--json OUT]

Both sides embed the same texts with the bundled all-MiniLM-L6-v2. Each side lives in its own
long-lived, warmed-up process; the parent alternates rounds (torch, mlx, torch, mlx, ...) so
that machine drift hits both alike, and reports per workload the median tokens/s of each side
and the median [min-max] of the per-round paired ratios (MLX / torch; >1: MLX is faster), plus
the ratio of each side's best round (noise only ever slows a run down). "CPU cores busy" (CPU
time / wall time of a batch run) shows rounds in which a side did not get both cores.
Workloads: 256 sentences of 8-40 tokens, 256 sentences drawn anew each round from the rest of
the corpus (no repeated inputs, so fewer repeated batch shapes), and 64 passages of 128-256
tokens (see corpus.py), tokens counted with the model's tokenizer (special tokens included,
truncated to 256).
Also measured: single-text latency p50 (one text per call), time to first vector of a fresh
process (interpreter start, import, worker start, model load, first embed), peak RSS of each
side's process (``ru_maxrss``) and the min cosine similarity between the two sides' vectors.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import corpus
import numpy as np

SIDES = ("torch", "mlx")
med = statistics.median
PAUSE_S = 0.5  # let the idle side's BLAS/OpenMP threads stop spinning before the other runs
CHILD_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "true",
}
# Fresh-process probes for the time to first vector: print the wall clock at the first vector.
FIRST_VECTOR = {
    "torch": "from sentence_transformers import SentenceTransformer\n"
    "m = SentenceTransformer({path!r}, device='cpu')\n"
    "m.encode(['Hello, world.'], batch_size=32, normalize_embeddings=True)\n",
    "mlx": "import jupyter_mlx_embed\njupyter_mlx_embed.embed(['Hello, world.'])\n",
}


def _load_side(side: str, model_path: str) -> tuple[Callable[[list[str]], np.ndarray], dict]:
    """The side's embed function (texts -> normalised float32 vectors) and its versions."""
    if side == "torch":
        import sentence_transformers
        import torch
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(model_path, device="cpu")

        def embed(texts: list[str]) -> np.ndarray:
            return model.encode(
                texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False
            )

        info = {
            "torch": torch.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(),
        }
        return embed, info
    import jupyter_mlx_embed

    jupyter_mlx_embed.embed(["warm up"])
    data = jupyter_mlx_embed.info()
    info = {
        "jupyter_mlx_embed": data["version"],
        "mlx": data.get("mlx_version"),
        "mlx_device": data.get("device"),
        "blas": data.get("blas", {}).get("name"),
        "blas_fast": data.get("blas", {}).get("fast"),
        "token_budget": data.get("token_budget"),
    }
    return jupyter_mlx_embed.embed, info


def _serve(side: str, model_path: str, conn: Connection) -> None:
    """Child process: load the side, then answer ``(op, texts)`` messages until ``None``."""
    import resource

    try:
        embed, info = _load_side(side, model_path)
        conn.send(("ok", info))
        while (msg := conn.recv()) is not None:
            op, texts = msg
            if op == "batch":
                start, cpu = time.perf_counter(), time.process_time()
                vectors = np.asarray(embed(texts))
                wall = time.perf_counter() - start
                conn.send(("ok", (wall, (time.process_time() - cpu) / wall, vectors)))
            elif op == "each":
                times = []
                for text in texts:
                    start = time.perf_counter()
                    embed([text])
                    times.append(time.perf_counter() - start)
                conn.send(("ok", times))
            elif op == "rss":
                conn.send(("ok", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
    except BaseException:  # noqa: BLE001 - report any failure to the parent, then stop
        conn.send(("error", traceback.format_exc()))


class Side:
    """Parent's handle on one side's long-lived process."""

    def __init__(self, side: str, model_path: Path) -> None:
        self.name = side
        self.conn, child = mp.get_context("spawn").Pipe()
        self.proc = mp.get_context("spawn").Process(
            target=_serve, args=(side, str(model_path), child), daemon=True
        )
        self.proc.start()
        self.info = self._reply()

    def _reply(self) -> Any:
        if not self.conn.poll(600):
            raise SystemExit(f"the {self.name} process did not answer within 600 s")
        status, value = self.conn.recv()
        if status != "ok":
            raise SystemExit(f"the {self.name} process failed:\n{value}")
        return value

    def ask(self, op: str, texts: list[str] | None = None) -> Any:
        time.sleep(PAUSE_S)
        self.conn.send((op, texts))
        return self._reply()

    def close(self) -> None:
        self.conn.send(None)
        self.proc.join(30)


def first_vector_s(side: str, model_path: Path) -> float:
    """Seconds from launching a fresh Python process to its first vector."""
    code = FIRST_VECTOR[side].format(path=str(model_path)) + "import time; print(time.time())\n"
    env = {**os.environ, **CHILD_ENV}
    start = time.time()
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"the {side} first-vector probe failed:\n{out.stderr}")
    return float(out.stdout.split()[-1]) - start


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.min(np.sum(a * b, axis=1)))


def _row(label: str, t: list[float], m: list[float], fmt: str, higher: bool = False) -> str:
    """A table row: median (best) per side, paired ratios median [min-max], best vs best."""
    best = max if higher else min
    ratios = [b / a if higher else a / b for a, b in zip(t, m, strict=True)]
    top = best(m) / best(t) if higher else best(t) / best(m)
    return (
        f"| {label} | {med(t):{fmt}} ({best(t):{fmt}}) | {med(m):{fmt}} ({best(m):{fmt}}) "
        f"| {med(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}] | {top:.2f}x |"
    )


def run(rounds: int, quick: bool) -> tuple[dict, str]:
    from jupyter_mlx_embed.registry import bundled_model_path

    model_path = bundled_model_path()
    if model_path is None:
        raise SystemExit("the bundled model is not installed: run `make install` first")
    tok = corpus.load_tokenizer(model_path)
    n_short, n_para, n_each, n_probe = (64, 16, 20, 1) if quick else (256, 64, 100, 3)
    short = corpus.sentences(tok, n_short)
    # Unseen sentences: a new sample every round from the sentences not in `short`, so batch
    # shapes repeat less and MLX pays for tracing new shapes as it would on new data.
    unseen_pool = corpus.all_sentences(tok)[n_short:]
    workloads: dict[str, Callable[[int], list[str]]] = {
        f"{n_short} sentences": lambda _: short,
        f"{n_short} unseen sentences": lambda r: random.Random(r).sample(unseen_pool, n_short),
        f"{n_para} passages": lambda _, p=corpus.paragraphs(tok, n_para): p,
    }
    os.environ.update(CHILD_ENV)

    print(f"time to first vector: {n_probe} fresh process(es) per side ...", flush=True)
    ttfv: dict[str, list[float]] = {s: [] for s in SIDES}
    for _ in range(n_probe):
        for side in SIDES:
            ttfv[side].append(first_vector_s(side, model_path))

    print("starting the two long-lived processes and warming up ...", flush=True)
    sides = {s: Side(s, model_path) for s in SIDES}
    cosine = {}
    for name, sample in workloads.items():  # warm-up pass, also gives the fidelity check
        vecs = {s: sides[s].ask("batch", sample(-1))[2] for s in SIDES}
        cosine[name] = min_cosine(vecs["torch"], vecs["mlx"])
    tokens: dict[str, list[int]] = {n: [] for n in workloads}
    tps: dict[str, dict[str, list[float]]] = {n: {s: [] for s in SIDES} for n in workloads}
    p50: dict[str, list[float]] = {s: [] for s in SIDES}
    cores: dict[str, list[float]] = {s: [] for s in SIDES}  # CPU time / wall time per batch run
    for r in range(rounds):
        line = f"round {r + 1}/{rounds}"
        for name, sample in workloads.items():
            texts = sample(r)
            tokens[name].append(sum(corpus.count_tokens(tok, texts)))
            for side in SIDES:
                wall, busy, _ = sides[side].ask("batch", texts)
                tps[name][side].append(tokens[name][-1] / wall)
                cores[side].append(busy)
            ratio = tps[name]["mlx"][-1] / tps[name]["torch"][-1]
            line += f"  {name}: {ratio:.2f}x (cores {cores['torch'][-1]:.1f}/{busy:.1f})"
        for side in SIDES:
            p50[side].append(statistics.median(sides[side].ask("each", short[:n_each])) * 1e3)
        print(line, flush=True)
    rss = {s: sides[s].ask("rss") for s in SIDES}
    info = {s: sides[s].info for s in SIDES}
    for s in sides.values():
        s.close()

    rows = [
        "| Measure | sentence-transformers (torch) | jupyter_mlx_embed (MLX) "
        "| MLX / torch, paired | MLX / torch, best |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in workloads:
        counts = sorted(set(tokens[name]))
        count = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        label = f"{name} ({count} tok), tokens/s"
        rows.append(_row(label, tps[name]["torch"], tps[name]["mlx"], ",.0f", higher=True))
    rows.append(_row("single-text latency p50, ms", p50["torch"], p50["mlx"], ".1f"))
    rows.append(_row("time to first vector, s", ttfv["torch"], ttfv["mlx"], ".2f"))
    busy = {s: f"{med(v):.2f} [{min(v):.2f}-{max(v):.2f}]" for s, v in cores.items()}
    rows.append(f"| CPU cores busy in batch runs | {busy['torch']} | {busy['mlx']} | - | - |")
    rows.append(f"| peak RSS, MiB | {rss['torch']:,.0f} | {rss['mlx']:,.0f} | - | - |")
    table = "\n".join(rows)
    fidelity = ", ".join(f"{n}: {c:.7f}" for n, c in cosine.items())
    report = (
        f"{table}\n\nSides: median (best) over {rounds} rounds. Ratios: MLX speed / torch speed "
        "(>1: MLX faster), as median [min-max] of the per-round pairs, and best round vs best "
        "round; time rows are inverted so that >1 still means MLX is faster.\n"
        f"Fidelity, min cosine MLX vs torch: {fidelity}"
        + ("" if min(cosine.values()) >= 0.9999 else "  <-- BELOW 0.9999")
    )
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "versions": info,
        "rounds": rounds,
        "tokens": tokens,
        "tokens_per_s": tps,
        "latency_p50_ms": p50,
        "cores_busy": cores,
        "first_vector_s": ttfv,
        "peak_rss_mib": rss,
        "min_cosine": cosine,
    }
    return result, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None, help="paired rounds (default 5)")
    parser.add_argument("--quick", action="store_true", help="small smoke run (2 rounds)")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args(argv)
    missing = [m for m in ("torch", "sentence_transformers") if not importlib.util.find_spec(m)]
    if missing:
        print(
            f"error: {' and '.join(missing)} not importable; run `make bench`, which installs "
            "the bench extra (pip install -e '.[bench]')",
            file=sys.stderr,
        )
        return 2
    rounds = args.rounds or (2 if args.quick else 5)
    result, report = run(rounds, args.quick)
    v = result["versions"]
    print(
        f"\nmlx {v['mlx']['mlx']} (BLAS: {v['mlx']['blas']}), torch {v['torch']['torch']} "
        f"({v['torch']['torch_threads']} threads), sentence-transformers "
        f"{v['torch']['sentence_transformers']}, {result['machine']['cpus']} CPUs\n"
    )
    print(report)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
