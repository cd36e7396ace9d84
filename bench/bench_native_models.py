"""The native transformer (ModernBERT, Qwen3, Gemma 3, NomicBERT) against the MLX forward it
replaces and sentence-transformers (torch), at the published shapes with random weights.

Run it directly (needs torch and sentence-transformers, the ``bench`` extra)::

    python bench/bench_native_models.py [--models NAME ...] [--rounds N] [--json OUT]

The models are tests/real_models.py's folders (published config.json, tensor names, shapes and
dtype, a tokenizer of the published kind trained on local text, random weights), built once
under ``--root``: gte-modernbert-base (22 layers x 768, GeGLU 1152, 12 heads, a sliding window
of 128 on two layers of three), Qwen3-Embedding-0.6B (28 x 1024, SwiGLU 3072, 16 query and
8 key/value heads of 128, bf16 weights), embeddinggemma-300m (24 x 768, GeGLU 1152, 3 query
heads and 1 key/value head of 256, a sliding window of 512 on five layers of six, two Dense
layers after pooling) and nomic-embed-text-v1.5 (12 x 768, post-norm, SwiGLU 3072, rotary
embeddings). Three sides embed the same texts, each in its own long-lived, warmed-up process:
jupyter_mlx_embed with the native kernels ("native"), the same with the CPU fast path off (the
MLX forward: mlx-embeddings', or engine/architectures' for Gemma 3 and NomicBERT; "stock"), and
sentence-transformers on torch (float32, its default batch size of 32). The parent takes turns
between them within each round (the order rotates per round) and reports per workload each
side's median tokens/s and the median [min-max] of the per-round paired ratios (native / other
side; >1: native is faster), in wall time and per CPU-second (less disturbed when other work
shares the machine; spinning threads count as busy), the CPU cores each side kept busy (below
the machine's count: it was shared) and the minimum cosine between the sides' vectors.
bench_models.py compares the public path of every architecture with ONNX Runtime too; this one
isolates the native forward against the stock one it replaces.

Workloads (bench/corpus.py, tokens counted with the model's tokenizer): sentences of 8-40
tokens and passages of 128-256 tokens.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import bench_embed
import corpus
import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
import real_models

SIDES = ("native", "stock", "torch")
MODELS = (
    "gte-modernbert-base",
    "Qwen3-Embedding-0.6B",
    "embeddinggemma-300m",
    "nomic-embed-text-v1.5",
)
TARGET = 1.4  # issue #24: native tokens/s over torch's
PAUSE_S = 0.5  # let the idle side's OpenMP/helper threads stop spinning before the next runs
BATCH_SIZE = 32  # sentence-transformers' default
CHILD_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "true",
    "JUPYTER_MLX_EMBED_CACHE": "false",  # measure the model, not the vector cache
}
med = statistics.median


def _load_side(side: str, folder: Path) -> tuple[Any, dict[str, Any]]:
    """The side's embed function (texts -> normalised float32 vectors) and what it runs."""
    if side == "torch":
        import torch
        from sentence_transformers import SentenceTransformer

        # float32: Qwen3-Embedding's bf16 weights would otherwise load as bf16, many times
        # slower on CPUs without bf16 arithmetic (the engine converts them to float32 too).
        model = SentenceTransformer(
            str(folder), device="cpu", model_kwargs={"dtype": torch.float32}
        )

        def embed(texts: list[str]) -> np.ndarray:
            vectors = model.encode(
                texts, batch_size=BATCH_SIZE, normalize_embeddings=True, show_progress_bar=False
            )
            return np.asarray(vectors)

        return embed, {"torch": torch.__version__, "threads": torch.get_num_threads()}
    from jupyter_mlx_embed import EngineConfig, Worker

    config = EngineConfig(model_roots=(folder.parent,), cache=False, cpu_fast_path=side == "native")
    worker = Worker(config)

    def embed_mlx(texts: list[str]) -> np.ndarray:
        return worker.submit(texts, model=folder.name).result().vectors

    embed_mlx(["warm up"])
    info = worker.info()

    def forward(engine: Any) -> str:
        fast = engine.load(worker.registry.resolve(folder.name)).fast
        return type(fast).__name__ if fast is not None else "stock forward"

    return embed_mlx, {
        "forward": worker.call(forward).result(),
        "native_kernels": info.get("native_kernels", {}).get("detail"),
        "blas": info.get("blas", {}).get("name"),
    }


def _serve(side: str, folder: str, conn: Connection) -> None:
    """Child process: load the side, then embed each list of texts sent until ``None``."""
    try:
        embed, info = _load_side(side, Path(folder))
        conn.send(("ok", info))
        while (texts := conn.recv()) is not None:
            start, cpu = time.perf_counter(), time.process_time()
            vectors = np.asarray(embed(texts), dtype=np.float32)
            wall = time.perf_counter() - start
            conn.send(("ok", (wall, time.process_time() - cpu, vectors)))
    except BaseException:  # noqa: BLE001 - report any failure to the parent, then stop
        conn.send(("error", traceback.format_exc()))


class Side:
    """Parent's handle on one side's long-lived process."""

    def __init__(self, side: str, folder: Path) -> None:
        self.name = side
        context = mp.get_context("spawn")
        self.conn, child = context.Pipe()
        self.proc = context.Process(target=_serve, args=(side, str(folder), child), daemon=True)
        self.proc.start()
        self.info = self._reply()

    def _reply(self) -> Any:
        return bench_embed.reply(self.conn, self.name, 1800)

    def embed(self, texts: list[str]) -> tuple[float, float, np.ndarray]:
        """Wall seconds, process CPU seconds and vectors of one pass over ``texts``."""
        time.sleep(PAUSE_S)
        self.conn.send(texts)
        wall, cpu, vectors = self._reply()
        return wall, cpu, vectors

    def close(self) -> None:
        self.conn.send(None)
        self.proc.join(30)


def _spread(values: list[float]) -> str:
    return f"{med(values):.2f}x [{min(values):.2f}-{max(values):.2f}]"


def _paired(times: dict[str, list[float]], others: list[str]) -> dict[str, list[float]]:
    """Per other side, its time over native's, round by round (>1: native is faster)."""
    return {o: [t / n for t, n in zip(times[o], times["native"], strict=True)] for o in others}


def bench_model(
    name: str,
    root: Path,
    layers: int | None,
    rounds: int,
    sizes: dict[str, int],
    sides: list[str],
) -> dict[str, Any]:
    """Every workload of ``sizes`` through every side of ``sides`` for one model."""
    folder = real_models.build_model(name, root, layers=layers)
    tok = corpus.load_tokenizer(folder)
    workloads = {
        "sentences": corpus.sentences(tok, sizes["sentences"]),
        "passages": corpus.paragraphs(tok, sizes["passages"]),
    }
    tokens = {w: sum(corpus.count_tokens(tok, texts)) for w, texts in workloads.items()}
    config = json.loads((folder / "config.json").read_text())
    shape = f"{real_models.layer_count(config)} x {real_models.width(config)}"
    print(f"\n{name}: {shape} ({folder})")
    running = {side: Side(side, folder) for side in sides}
    report: dict[str, Any] = {"folder": str(folder), "sides": {}, "workloads": {}}
    others = [side for side in running if side != "native"] if "native" in running else []
    try:
        for side, handle in running.items():
            print(f"  {side}: {handle.info}", flush=True)
            report["sides"][side] = handle.info
            for texts in workloads.values():
                handle.embed(texts[:4])  # warm up
        for workload, texts in workloads.items():
            walls: dict[str, list[float]] = {side: [] for side in running}
            cpus: dict[str, list[float]] = {side: [] for side in running}
            vectors: dict[str, np.ndarray] = {}
            for r in range(rounds):
                order = list(running)[r % len(running) :] + list(running)[: r % len(running)]
                for side in order:
                    wall, cpu, vectors[side] = running[side].embed(texts)
                    walls[side].append(wall)
                    cpus[side].append(cpu)
            rates = {side: tokens[workload] / med(w) for side, w in walls.items()}
            busy = {
                side: med(c / w for c, w in zip(cpus[side], walls[side], strict=True))
                for side in running
            }
            ratios, cpu_ratios = _paired(walls, others), _paired(cpus, others)
            cosines = {
                f"native-{o}": float(np.min(np.sum(vectors["native"] * vectors[o], axis=1)))
                for o in others
            }
            report["workloads"][workload] = {
                "texts": len(texts),
                "tokens": tokens[workload],
                "tokens_per_s": rates,
                "native_speedup": {o: med(v) for o, v in ratios.items()},
                "native_speedup_range": {o: [min(v), max(v)] for o, v in ratios.items()},
                "native_speedup_cpu": {o: med(v) for o, v in cpu_ratios.items()},
                "native_speedup_cpu_range": {o: [min(v), max(v)] for o, v in cpu_ratios.items()},
                "cores_busy": busy,
                "min_cosine": cosines,
            }
            print(
                f"  {workload} ({len(texts)} texts, {tokens[workload]} tokens): tokens/s "
                + ", ".join(f"{side} {rate:,.0f}" for side, rate in rates.items())
                + "\n    native "
                + ", ".join(f"{_spread(v)} vs {o}" for o, v in ratios.items())
                + "; per CPU-second "
                + ", ".join(f"{_spread(v)} vs {o}" for o, v in cpu_ratios.items())
                + "\n    cores busy "
                + ", ".join(f"{side} {value:.2f}" for side, value in busy.items())
                + "; min cos "
                + ", ".join(f"{k} {v:.6f}" for k, v in cosines.items()),
                flush=True,
            )
    finally:
        for handle in running.values():
            handle.close()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--sides", nargs="+", default=list(SIDES), choices=SIDES)
    parser.add_argument(
        "--root",
        type=Path,
        default=Path.home() / ".cache" / "jupyter-mlx-embed-bench",
        help="where tests/real_models.py builds the model folders (once)",
    )
    parser.add_argument("--layers", type=int, default=None, help="fewer layers than published")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=64)
    parser.add_argument("--passages", type=int, default=16)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    os.environ.update(CHILD_ENV)
    sizes = {"sentences": args.sentences, "passages": args.passages}
    print(f"target: native >= {TARGET}x torch; {os.cpu_count()} CPUs", flush=True)
    report = {
        name: bench_model(name, args.root, args.layers, args.rounds, sizes, args.sides)
        for name in args.models
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
