"""Benchmark jupyter_mlx_embed against sentence-transformers and ONNX Runtime on the same model.

Run it with ``make bench`` (installs the ``bench`` extra: torch CPU, sentence-transformers,
onnx and onnxruntime), or directly::

    python bench/bench_embed.py [--rounds N] [--quick] [--json OUT]

The three sides embed the same texts with the bundled all-MiniLM-L6-v2: sentence-transformers
(torch), ONNX Runtime (the model exported and fused by ``onnx_side.py``, run as infinity,
fastembed or TEI users run it) and jupyter_mlx_embed (MLX). Each side lives in its own
long-lived, warmed-up process; the parent takes turns between them within each round (the
order rotates per round) so that machine drift hits all alike, and reports per workload the
median tokens/s of each side and the median [min-max] of the per-round paired ratios (MLX /
other side; >1: MLX is faster), plus the ratio of each side's best round (noise only ever slows
a run down). "CPU cores busy" (CPU time / wall time of a batch run) shows rounds in which a
side did not get both cores; tokens per CPU-second, which sharing the cores disturbs less, is
reported beside tokens/s (threads that spin while waiting count as busy, which costs the
OpenMP and ONNX Runtime thread pools a little).
In every round a fourth process also measures the matrix-multiply roofline (``roofline.py``):
the best sgemm rate of the BLAS the engine binds at one BERT layer's shapes, for a batch of 32
texts of the workload's mean length, over the model's FLOPs per token. Each side's tokens/s is
reported as a share of it, paired per round.
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
import compileall
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
import onnx_side
import roofline

SIDES = ("torch", "onnx", "mlx")
NAMES = {"torch": "sentence-transformers (torch)", "onnx": "ONNX Runtime", "mlx": "MLX"}
# Issue #16's targets: MLX tokens/s over each rival's, and MLX's share of the roofline.
TARGETS = {"onnx": 1.2, "torch": 1.4}
ROOFLINE_TARGET = 0.75
BATCH_SIZE = onnx_side.BATCH_SIZE  # torch's batch size too
med = statistics.median
PAUSE_S = 0.5  # let the idle side's BLAS/OpenMP threads stop spinning before the other runs
CHILD_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "true",
    # The vector cache would answer every round after the first from disk: measure the model.
    "JUPYTER_MLX_EMBED_CACHE": "false",
}
# Fresh-process probes for the time to first vector: print the wall clock at the first vector.
FIRST_VECTOR = {
    "torch": "from sentence_transformers import SentenceTransformer\n"
    "m = SentenceTransformer({path!r}, device='cpu')\n"
    "m.encode(['Hello, world.'], batch_size=32, normalize_embeddings=True)\n",
    "onnx": f"import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
    "from pathlib import Path\nimport onnx_side\n"
    "onnx_side.OnnxEmbedder(Path({path!r}), Path({onnx!r}))(['Hello, world.'])\n",
    "mlx": "import jupyter_mlx_embed\njupyter_mlx_embed.embed(['Hello, world.'])\n",
}


def _load_side(side: str, model_path: str, onnx_path: str) -> tuple[Callable[[Any], Any], dict]:
    """The side's embed function (texts -> normalised float32 vectors) and its versions.

    The ``roofline`` process's function instead maps a row count to sgemm GFLOP/s.
    """
    if side == "roofline":
        config = json.loads((Path(model_path) / "config.json").read_text())
        widths = int(config["hidden_size"]), int(config["intermediate_size"])
        meter, mlas = roofline.GemmMeter(*widths), roofline.MlasMeter(*widths)

        def measure(rows: int) -> dict[str, float]:
            return {**meter.gflops(rows), "ORT MLAS": mlas.gflops(rows)}

        return measure, {"blas": meter.blas.name, "blas_fast": meter.blas.fast}
    if side == "onnx":
        import onnxruntime

        embedder = onnx_side.OnnxEmbedder(Path(model_path), Path(onnx_path))
        embedder(["warm up"])
        options = embedder.session.get_session_options()
        threads = options.intra_op_num_threads  # 0: ORT's default, one per physical core
        return embedder, {
            "onnxruntime": onnxruntime.__version__,
            "intra_op_threads": threads or "default",
            "providers": embedder.session.get_providers(),
        }
    if side == "torch":
        import sentence_transformers
        import torch
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(model_path, device="cpu")

        def embed(texts: list[str]) -> np.ndarray:
            return model.encode(
                texts, batch_size=BATCH_SIZE, normalize_embeddings=True, show_progress_bar=False
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


def _serve(side: str, model_path: str, onnx_path: str, conn: Connection) -> None:
    """Child process: load the side, then answer ``(op, payload)`` messages until ``None``."""
    import resource

    try:
        embed, info = _load_side(side, model_path, onnx_path)
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
            elif op == "gemm":
                conn.send(("ok", embed(texts)))
            elif op == "rss":
                conn.send(("ok", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
    except BaseException:  # noqa: BLE001 - report any failure to the parent, then stop
        conn.send(("error", traceback.format_exc()))


def reply(conn: Connection, name: str, timeout_s: float) -> Any:
    """The next answer of a side's process: its value, or exit naming the side when it failed
    or did not answer within ``timeout_s`` seconds."""
    if not conn.poll(timeout_s):
        raise SystemExit(f"the {name} process did not answer within {timeout_s:g} s")
    status, value = conn.recv()
    if status != "ok":
        raise SystemExit(f"the {name} process failed:\n{value}")
    return value


class Side:
    """Parent's handle on one side's long-lived process."""

    def __init__(self, side: str, model_path: Path, onnx_path: Path) -> None:
        self.name = side
        self.conn, child = mp.get_context("spawn").Pipe()
        self.proc = mp.get_context("spawn").Process(
            target=_serve, args=(side, str(model_path), str(onnx_path), child), daemon=True
        )
        self.proc.start()
        self.info = self._reply()

    def _reply(self) -> Any:
        return reply(self.conn, self.name, 600)

    def ask(self, op: str, payload: Any = None) -> Any:
        time.sleep(PAUSE_S)
        self.conn.send((op, payload))
        return self._reply()

    def close(self) -> None:
        self.conn.send(None)
        self.proc.join(30)


def first_vector_s(side: str, model_path: Path, onnx_path: Path) -> float:
    """Seconds from launching a fresh Python process to its first vector."""
    code = FIRST_VECTOR[side].format(path=str(model_path), onnx=str(onnx_path))
    code += "import time; print(time.time())\n"
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


def _spread(values: list[float], fmt: str = ".2f", unit: str = "x") -> str:
    """``median [min-max]`` of paired per-round values."""
    return f"{med(values):{fmt}}{unit} [{min(values):{fmt}}-{max(values):{fmt}}]"


def _row(label: str, per_side: dict[str, list[float]], fmt: str, higher: bool = False) -> str:
    """A table row: median (best) per side, then MLX against each rival, paired and best."""
    best = max if higher else min
    cells = [f"{med(v):{fmt}} ({best(v):{fmt}})" for v in per_side.values()]
    mlx = per_side["mlx"]
    for rival in TARGETS:
        other = per_side[rival]
        ratios = [m / o if higher else o / m for o, m in zip(other, mlx, strict=True)]
        cells.append(_spread(ratios))
    tops = [
        best(mlx) / best(per_side[r]) if higher else best(per_side[r]) / best(mlx) for r in TARGETS
    ]
    cells.append(" / ".join(f"{t:.2f}x" for t in tops))
    return f"| {label} | " + " | ".join(cells) + " |"


def _shares(per_side: dict[str, list[float]], ceiling: list[float]) -> dict[str, str]:
    """Each side's tokens/s as a share of the roofline: paired median [min-max], (best/best)."""
    out = {}
    for side, values in per_side.items():
        paired = [100 * v / c for v, c in zip(values, ceiling, strict=True)]
        out[side] = f"{_spread(paired, '.0f', '%')} ({100 * max(values) / max(ceiling):.0f}%)"
    return out


def export_onnx(model_path: Path) -> tuple[Path, dict[str, int]]:
    """Export and fuse the model for ONNX Runtime (or find it cached) in a separate process,
    so that neither this process nor the ONNX Runtime side imports torch."""
    out = subprocess.run(
        [sys.executable, str(Path(onnx_side.__file__)), str(model_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"exporting the model to ONNX failed:\n{out.stderr}")
    found = json.loads(out.stdout.splitlines()[-1])
    return Path(found["path"]), found["fusions"]


def run(rounds: int, quick: bool) -> tuple[dict, str]:
    from jupyter_mlx_embed.registry import bundled_model_path

    model_path = bundled_model_path()
    if model_path is None:
        raise SystemExit("the bundled model is not installed: run `make install` first")
    config = json.loads((model_path / "config.json").read_text())
    tok = corpus.load_tokenizer(model_path)
    n_short, n_para, n_each, n_probe = (64, 16, 20, 1) if quick else (256, 64, 100, 3)
    short = corpus.sentences(tok, n_short)
    # Unseen sentences: a new sample every round from the sentences not in `short`, so batch
    # shapes repeat less and MLX pays for tracing new shapes as it would on new data.
    unseen_pool = corpus.all_sentences(tok)[n_short:]
    passages = corpus.paragraphs(tok, n_para)
    workloads: dict[str, Callable[[int], list[str]]] = {
        f"{n_short} sentences": lambda _: short,
        f"{n_short} unseen sentences": lambda r: random.Random(r).sample(unseen_pool, n_short),
        f"{n_para} passages": lambda _: passages,
    }
    os.environ.update(CHILD_ENV)

    print("exporting the model to ONNX (cached after the first run) ...", flush=True)
    onnx_path, fusions = export_onnx(model_path)
    print(f"ONNX model: {onnx_path}\nfused operators: {fusions}", flush=True)

    # As installed from a wheel (pip compiles every module): the other sides' packages have
    # their bytecode, and an editable checkout under PYTHONDONTWRITEBYTECODE would not.
    import jupyter_mlx_embed

    compileall.compile_dir(Path(jupyter_mlx_embed.__file__).parent, quiet=1)
    print(f"time to first vector: {n_probe} fresh process(es) per side ...", flush=True)
    ttfv: dict[str, list[float]] = {s: [] for s in SIDES}
    for _ in range(n_probe):
        for side in SIDES:
            ttfv[side].append(first_vector_s(side, model_path, onnx_path))

    print("starting the long-lived processes and warming up ...", flush=True)
    sides = {s: Side(s, model_path, onnx_path) for s in (*SIDES, "roofline")}
    cosine: dict[str, dict[str, float]] = {}
    for name, sample in workloads.items():  # warm-up pass, also gives the fidelity check
        vecs = {s: sides[s].ask("batch", sample(-1))[2] for s in SIDES}
        cosine[name] = {s: min_cosine(vecs["torch"], vecs[s]) for s in SIDES if s != "torch"}
    tokens: dict[str, list[int]] = {n: [] for n in workloads}
    tps: dict[str, dict[str, list[float]]] = {n: {s: [] for s in SIDES} for n in workloads}
    # Per workload and round: the roofline's rows, FLOP per token, sgemm GFLOP/s (the engine's
    # BLAS; ORT's MLAS) and the tokens/s they allow.
    keys = ("rows", "flop_per_token", "gflops", "mlas_gflops", "tokens_per_s", "mlas_tokens_per_s")
    roof: dict[str, dict[str, list[float]]] = {n: {k: [] for k in keys} for n in workloads}
    layouts: dict[str, list[dict[str, float]]] = {n: [] for n in workloads}
    p50: dict[str, list[float]] = {s: [] for s in SIDES}
    cores: dict[str, list[float]] = {s: [] for s in SIDES}  # CPU time / wall time per batch run
    per_cpu_s: dict[str, dict[str, list[float]]] = {n: {s: [] for s in SIDES} for n in workloads}
    for r in range(rounds):
        order = SIDES[r % len(SIDES) :] + SIDES[: r % len(SIDES)]
        line = f"round {r + 1}/{rounds} ({', '.join(order)})"
        for name, sample in workloads.items():
            texts = sample(r)
            lengths = corpus.count_tokens(tok, texts)
            tokens[name].append(sum(lengths))
            for side in order:
                wall, busy, _ = sides[side].ask("batch", texts)
                tps[name][side].append(tokens[name][-1] / wall)
                cores[side].append(busy)
                per_cpu_s[name][side].append(tokens[name][-1] / (wall * busy))
            rows = BATCH_SIZE * round(sum(lengths) / len(lengths))
            rates = sides["roofline"].ask("gemm", rows)
            flop = roofline.flop_per_token(config, lengths)
            for key, value in (
                ("rows", rows),
                ("flop_per_token", flop),
                ("gflops", rates["best"]),
                ("mlas_gflops", rates["ORT MLAS"]),
                ("tokens_per_s", rates["best"] * 1e9 / flop),
                ("mlas_tokens_per_s", rates["ORT MLAS"] * 1e9 / flop),
            ):
                roof[name][key].append(value)
            layouts[name].append(rates)
            pair = "/".join(f"{tps[name]['mlx'][-1] / tps[name][s][-1]:.2f}" for s in TARGETS)
            of_roof = tps[name]["mlx"][-1] / roof[name]["tokens_per_s"][-1]
            line += f"  {name}: {pair}x, {of_roof:.0%} roof"
        for side in order:
            p50[side].append(statistics.median(sides[side].ask("each", short[:n_each])) * 1e3)
        print(line, flush=True)
    rss = {s: sides[s].ask("rss") for s in SIDES}
    info = {s: sides[s].info for s in (*SIDES, "roofline")}
    for s in sides.values():
        s.close()

    rivals = " | ".join(f"MLX / {'ORT' if r == 'onnx' else r}, paired" for r in TARGETS)
    rows_ = [
        f"| Measure | {' | '.join(NAMES[s] for s in SIDES)} | {rivals} "
        "| MLX / ORT, MLX / torch, best |",
        "|---|" + "---:|" * (len(SIDES) + len(TARGETS) + 1),
    ]
    for name in workloads:
        counts = sorted(set(tokens[name]))
        count = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        rows_.append(_row(f"{name} ({count} tok), tokens/s", tps[name], ",.0f", higher=True))
    for name in workloads:
        rows_.append(_row(f"{name}, tokens per CPU-s", per_cpu_s[name], ",.0f", higher=True))
    rows_.append(_row("single-text latency p50, ms", p50, ".1f"))
    rows_.append(_row("time to first vector, s", ttfv, ".2f"))
    busy = " | ".join(_spread(cores[s], unit="") for s in SIDES)
    rows_.append(f"| CPU cores busy in batch runs | {busy} | - | - | - |")
    peaks = " | ".join(f"{rss[s]:,.0f}" for s in SIDES)
    rows_.append(f"| peak RSS, MiB | {peaks} | - | - | - |")

    share = {n: _shares(tps[n], roof[n]["tokens_per_s"]) for n in workloads}
    mlas_share = {n: _shares(tps[n], roof[n]["mlas_tokens_per_s"]) for n in workloads}
    roof_rows = [
        "| Workload | FLOP/token | sgemm rows | sgemm GFLOP/s, engine BLAS | roofline tokens/s | "
        + " | ".join(f"{NAMES[s]}, % of roofline" for s in SIDES)
        + " |",
        "|---|" + "---:|" * (4 + len(SIDES)),
    ]
    mlas_rows = [
        "| Workload | sgemm GFLOP/s, ORT MLAS | MLAS roofline tokens/s | "
        + " | ".join(f"{NAMES[s]}, % of MLAS roofline" for s in SIDES)
        + " |",
        "|---|" + "---:|" * (2 + len(SIDES)),
    ]
    for name in workloads:
        ro = roof[name]
        roof_rows.append(
            f"| {name} | {med(ro['flop_per_token']) / 1e6:.1f} M | {med(ro['rows']):.0f} "
            f"| {_spread(ro['gflops'], '.0f', '')} | {_spread(ro['tokens_per_s'], ',.0f', '')} | "
            + " | ".join(share[name][s] for s in SIDES)
            + " |"
        )
        mlas_rows.append(
            f"| {name} | {_spread(ro['mlas_gflops'], '.0f', '')} "
            f"| {_spread(ro['mlas_tokens_per_s'], ',.0f', '')} | "
            + " | ".join(mlas_share[name][s] for s in SIDES)
            + " |"
        )

    verdicts = []
    for name in workloads:
        parts = []
        for rival, target in TARGETS.items():
            ratios = [m / o for o, m in zip(tps[name][rival], tps[name]["mlx"], strict=True)]
            mark = "met" if med(ratios) >= target else "MISSED"
            parts.append(f"MLX / {rival} {_spread(ratios)} (>= {target}x: {mark})")
        roof_tps = roof[name]["tokens_per_s"]
        mlx_share = [m / c for m, c in zip(tps[name]["mlx"], roof_tps, strict=True)]
        mark = "met" if med(mlx_share) >= ROOFLINE_TARGET else "MISSED"
        parts.append(
            f"MLX at {share[name]['mlx']} of the roofline (>= {ROOFLINE_TARGET:.0%}: {mark})"
        )
        verdicts.append(f"- {name}: " + "; ".join(parts))
    fidelity = "; ".join(
        f"{n}: " + ", ".join(f"{s} {c:.7f}" for s, c in per.items()) for n, per in cosine.items()
    )
    low = min(c for per in cosine.values() for c in per.values()) < 0.9999
    best_layouts = {n: max(ls, key=lambda d: d["best"]) for n, ls in layouts.items()}
    report = (
        "\n".join(rows_)
        + f"\n\nSides: median (best) over {rounds} rounds. Ratios: MLX speed / other side's speed "
        "(>1: MLX faster), as median [min-max] of the per-round pairs, and best round vs best "
        "round; time rows are inverted so that >1 still means MLX is faster.\n\n"
        + "\n".join(roof_rows)
        + "\n\n"
        + "\n".join(mlas_rows)
        + "\n\nRoofline: sgemm rate of one BERT layer's six products on `sgemm rows` rows (32 "
        "texts of the workload's mean length) through the BLAS the engine binds, best layout, "
        "over FLOP/token (linear layers plus attention at the workload's lengths, padding not "
        "counted); median [min-max] over rounds; shares paired per round (best round over "
        "the best roofline round). The second table puts the ceiling at ONNX Runtime's own "
        "sgemm (MLAS) timed on the same products.\n"
        f"sgemm layouts, best round: {json.dumps(best_layouts)}\n\n"
        "Issue #16 targets (paired medians [min-max]):\n" + "\n".join(verdicts) + "\n\n"
        f"Fidelity, min cosine to torch: {fidelity}"
        + ("  <-- BELOW 0.9999" if low else "")
        + f"\nORT fused operators: {fusions}"
    )
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "versions": info,
        "rounds": rounds,
        "tokens": tokens,
        "tokens_per_s": tps,
        "tokens_per_cpu_s": per_cpu_s,
        "roofline": roof,
        "roofline_layouts": layouts,
        "latency_p50_ms": p50,
        "cores_busy": cores,
        "first_vector_s": ttfv,
        "peak_rss_mib": rss,
        "min_cosine_to_torch": cosine,
        "onnx_fusions": fusions,
    }
    return result, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None, help="paired rounds (default 5)")
    parser.add_argument("--quick", action="store_true", help="small smoke run (2 rounds)")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args(argv)
    needed = ("torch", "sentence_transformers", "onnx", "onnxruntime")
    missing = [m for m in needed if not importlib.util.find_spec(m)]
    if missing:
        print(
            f"error: {', '.join(missing)} not importable; run `make bench`, which installs "
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
        f"{v['torch']['sentence_transformers']}, onnxruntime {v['onnx']['onnxruntime']} "
        f"({v['onnx']['intra_op_threads']} intra-op threads), roofline BLAS "
        f"{v['roofline']['blas']}, {result['machine']['cpus']} CPUs\n"
    )
    print(report)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
