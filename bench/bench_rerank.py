"""Benchmark jupyter_mlx_embed's reranking against sentence-transformers and ONNX Runtime.

Random-weight cross-encoders at published shapes (``tests/reranker_models.py``), built once
into ``--root`` (``~/.cache/jupyter-mlx-embed-bench``). Run::

    python bench/bench_rerank.py [--models NAME ...] [--rounds N] [--quick]
                                 [--precision fp32|bf16|int8] [--json OUT]

Per model, three sides score the same (query, document) pairs, each in its own long-lived,
warmed-up process, taking turns within each round (the order rotates per round), as in
``bench_models.py``: MLX (a ``jupyter_mlx_embed.Worker``, cache off, one ``rerank`` request
per query; ``--precision``: its ``precision`` setting); sentence-transformers'
``CrossEncoder.predict`` (torch float32, batches of 32);
ONNX Runtime: the ``*ForSequenceClassification`` model exported by torch's TorchScript
exporter (eager attention), fused by ``onnxruntime.transformers.optimizer`` and cached under
``--root``/onnx, run as infinity, fastembed or TEI run it (pairs tokenized in one call,
longest-first truncation, sorted by token count, batches of 32 right-padded, sigmoid).

Workloads: queries of 8-40 tokens with 100 passages of 100-200 tokens each (retrieve, then
rerank) or with 100 sentences of 8-40 tokens; one query with 10 sentences (latency p50); the
time to the first score of a fresh process. Reported: pairs/s and tokens/s (pair tokens after
truncation), median (best) round, MLX's paired per-round ratios (median [min-max]; > 1: MLX
faster) and each side's max |score - torch| (fast and wrong would show there).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bench_embed
import bench_models
import corpus
import numpy as np
import onnx_side
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.reranker_models import RERANKERS, build_reranker  # noqa: E402

SIDES = ("mlx", "torch", "onnx")
NAMES = {**bench_models.NAMES, "torch": "CrossEncoder (torch)"}
DEFAULT_MODELS = ("ms-marco-MiniLM-L6-v2", "bge-reranker-base")
#: The truncation length built into each model's tokenizer (published: 8192 for ModernBERT).
MAX_LENGTH = {"gte-reranker-modernbert-base": 512}
BATCH_SIZE = bench_models.BATCH_SIZE
DOCUMENTS = 100  # per query: what a retrieve-then-rerank call scores
FIDELITY = 1e-4  # max |score - torch| of a float32 side
med = statistics.median
Request = tuple[str, list[str]]  # a query and its documents


def pair_tokenizer(folder: Path) -> Tokenizer:
    """The model's tokenizer truncating pairs longest-first at its maximum, as CrossEncoder."""
    config = json.loads((folder / "config.json").read_text())
    limit = json.loads((folder / "tokenizer_config.json").read_text())["model_max_length"]
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(min(limit, config["max_position_embeddings"]), strategy="longest_first")
    return tok


class OrtReranker:
    """(query, documents) -> float32 sigmoid scores through an ``onnxruntime.InferenceSession``."""

    def __init__(self, folder: Path, onnx_path: Path) -> None:
        import onnxruntime

        self.session = onnxruntime.InferenceSession(
            str(onnx_path), providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self.session.get_inputs()}
        self._tok = pair_tokenizer(folder)
        pad = json.loads((folder / "config.json").read_text()).get("pad_token_id")
        self._pad = pad if isinstance(pad, int) else 0

    def __call__(self, query: str, documents: list[str]) -> np.ndarray:
        encodings = self._tok.encode_batch([(query, d) for d in documents])
        order = sorted(range(len(documents)), key=lambda i: len(encodings[i].ids))
        logits = np.empty(len(documents), dtype=np.float32)
        for start in range(0, len(order), BATCH_SIZE):
            rows = order[start : start + BATCH_SIZE]
            width = max(len(encodings[i].ids) for i in rows)
            ids = np.full((len(rows), width), self._pad, dtype=np.int64)
            mask, types = np.zeros_like(ids), np.zeros_like(ids)
            for r, i in enumerate(rows):
                n = len(encodings[i].ids)
                ids[r, :n], types[r, :n] = encodings[i].ids, encodings[i].type_ids
                mask[r, :n] = 1
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            (out,) = self.session.run(None, {k: v for k, v in feed.items() if k in self._inputs})
            logits[rows] = out[:, 0]
        return 1 / (1 + np.exp(-logits))


def _export(folder: Path, out: Path) -> dict[str, int]:
    """Export ``folder``'s classifier (ids -> logits) to ``out`` and fuse it; returns the
    fusion counts. Runs in its own process (``--export``, run by ``bench_models.ensure_onnx``).
    """
    import torch
    from onnxruntime.transformers.optimizer import optimize_model
    from transformers import AutoModelForSequenceClassification

    config = json.loads((folder / "config.json").read_text())
    # Eager attention: ORT's Attention fusion matches the eager pattern (see onnx_side.py).
    model = AutoModelForSequenceClassification.from_pretrained(
        str(folder), attn_implementation="eager", dtype=torch.float32
    ).eval()
    bert = config["model_type"] == "bert"  # XLM-R has one token type; ModernBERT none
    names = ["input_ids", "attention_mask", *(["token_type_ids"] if bert else [])]
    ids = torch.ones((2, 16), dtype=torch.long)
    args = (ids, torch.ones_like(ids), torch.zeros_like(ids))[: len(names)]
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    raw = out.with_name("raw.onnx")
    with torch.no_grad():
        torch.onnx.export(
            model,
            args,
            str(raw),
            input_names=names,
            output_names=["logits"],
            dynamic_axes={**axes, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    heads, width = config["num_attention_heads"], config["hidden_size"]
    optimized = optimize_model(str(raw), model_type="bert", num_heads=heads, hidden_size=width)
    stats = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
    optimized.save_model_to_file(str(out))
    raw.unlink()
    return stats


# ---------------------------------------------------------------------------------------
# The sides' processes.


def _load_scorer(side: str, folder: Path, onnx_path: str) -> tuple[Callable[..., Any], dict]:
    """The side's score function ((query, documents) -> float32 scores) and its versions."""
    if side == "onnx":
        import onnxruntime

        reranker = OrtReranker(folder, Path(onnx_path))
        return reranker, {"onnxruntime": onnxruntime.__version__}
    if side == "torch":
        import sentence_transformers
        import torch
        from sentence_transformers import CrossEncoder

        model = CrossEncoder(str(folder), device="cpu")

        def predict(query: str, documents: list[str]) -> np.ndarray:
            pairs = [(query, d) for d in documents]
            return model.predict(pairs, batch_size=BATCH_SIZE, show_progress_bar=False)

        versions = {"sentence_transformers": sentence_transformers.__version__}
        return predict, {**versions, "torch": torch.__version__, "torch_dtype": str(model.dtype)}
    import jupyter_mlx_embed
    from jupyter_mlx_embed import EngineConfig, Worker
    from jupyter_mlx_embed.options import EmbedOptions

    # The environment's settings (the parent's --precision), the cache off.
    worker = Worker(EngineConfig.from_env(cache=False, model_roots=(folder.parent,)))
    options = EmbedOptions(model=folder.name)

    def rerank(query: str, documents: list[str]) -> np.ndarray:
        return worker.rerank(query, documents, options).result().scores

    rerank("warm up", ["warm up"])  # loads the model: info() then names its kernels
    data = worker.info()
    kernels = data.get("native_kernels") or {}
    return rerank, {
        "jupyter_mlx_embed": jupyter_mlx_embed.__version__,
        "mlx": data.get("mlx_version"),
        "blas": (data.get("blas") or {}).get("name"),
        "native_kernels": kernels.get("isa") if kernels.get("loaded") else kernels.get("detail"),
    }


def _load_side(side: str, folder: Path, onnx_path: str) -> tuple[Callable[..., Any], dict]:
    """``bench_models._load_side``'s shape for its ``_serve`` loop: a function of a list of
    requests -> their scores, concatenated (warmed up), and the side's versions."""
    score, info = _load_scorer(side, folder, onnx_path)

    def score_all(requests: list[Request]) -> np.ndarray:
        return np.concatenate([np.asarray(score(q, docs), np.float32) for q, docs in requests])

    score_all([("warm up", ["warm up"] * 3)])
    return score_all, info


_FIRST_SCORE = {
    "torch": "from sentence_transformers import CrossEncoder\n"
    "CrossEncoder({folder!r}, device='cpu').predict([('Hello?', 'Hello, world.')])\n",
    "onnx": "import sys\nsys.path.insert(0, {bench!r})\nfrom pathlib import Path\n"
    "from bench_rerank import OrtReranker\n"
    "OrtReranker(Path({folder!r}), Path({onnx!r}))('Hello?', ['Hello, world.'])\n",
    "mlx": "import jupyter_mlx_embed\n"
    "jupyter_mlx_embed.rerank('Hello?', ['Hello, world.'], model={name!r})\n",
}


# ---------------------------------------------------------------------------------------
# One model's run and its table.


def workloads(folder: Path, queries: int) -> tuple[dict[str, list[Request]], Request]:
    """The two throughput workloads (``queries`` requests of :data:`DOCUMENTS` each) and the
    small request; documents drawn with a fixed seed from the corpus."""
    tok = corpus.load_tokenizer(folder)
    sentences = corpus.all_sentences(tok)
    passages = corpus.paragraphs(tok, 200, lo=100, hi=200)
    asked, pool, rng = sentences[: queries + 1], sentences[queries + 1 :], random.Random(0)
    return {
        f"rerank {DOCUMENTS} passages": [(q, rng.sample(passages, DOCUMENTS)) for q in asked[:-1]],
        "short pairs": [(q, rng.sample(pool, DOCUMENTS)) for q in asked[:-1]],
    }, (asked[-1], rng.sample(pool, 10))


def run_model(name: str, args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """Build (or find) the model, measure every side on it, and return figures and table."""
    folder = build_reranker(name, args.root, max_length=MAX_LENGTH.get(name))
    work, small = workloads(folder, 2 if args.quick else 8)
    tok = pair_tokenizer(folder)
    pairs = {w: [(q, d) for q, docs in reqs for d in docs] for w, reqs in work.items()}
    tokens = {w: sum(len(e.ids) for e in tok.encode_batch(p)) for w, p in pairs.items()}
    sides = list(SIDES)
    print(f"[{name}] exporting to ONNX (cached after the first run) ...", flush=True)
    onnx_path, onnx_note = bench_models.ensure_onnx(folder, args.root, exporter=__file__)
    if onnx_path is None:
        sides.remove("onnx")
    elif missing := set(onnx_side.REQUIRED_FUSIONS) - set(re.findall(r"(\w+) \d+", onnx_note)):
        onnx_note += f"; WARNING: no {', '.join(sorted(missing))} fusion (those ops run unfused)"
    print(f"[{name}] {onnx_note}", flush=True)

    print(f"[{name}] time to first score: one fresh process per side ...", flush=True)
    ttfs = {s: [bench_models.first_vector_s(s, folder, onnx_path, _FIRST_SCORE)] for s in sides}
    print(f"[{name}] starting the long-lived processes and warming up ...", flush=True)
    procs = {s: bench_models.Side(s, folder, onnx_path, _load_side) for s in sides}
    diff: dict[str, float] = {}
    for reqs in work.values():  # warm-up pass, also gives the fidelity check
        scores = {s: procs[s].ask("batch", reqs)[2] for s in sides}
        for s in sides:
            worst = float(np.max(np.abs(scores[s] - scores["torch"])))
            diff[s] = max(diff.get(s, 0.0), worst)
    pps: dict[str, dict[str, list[float]]] = {w: {s: [] for s in sides} for w in work}
    busy: dict[str, list[float]] = {s: [] for s in sides}  # CPU time / wall time per run
    p50: dict[str, list[float]] = {s: [] for s in sides}
    for r in range(args.rounds):
        order = sides[r % len(sides) :] + sides[: r % len(sides)]
        line = f"[{name}] round {r + 1}/{args.rounds} ({', '.join(order)})"
        for w, reqs in work.items():
            for s in order:
                wall, cores, _ = procs[s].ask("batch", reqs)
                pps[w][s].append(len(pairs[w]) / wall)
                busy[s].append(cores)
            line += f"  {w}: " + ", ".join(f"{s} {pps[w][s][-1]:,.0f}" for s in sides) + " pairs/s"
        for s in order:
            p50[s].append(med(procs[s].ask("each", [small] * (5 if args.quick else 20))) * 1e3)
        print(line, flush=True)
    rss = {s: procs[s].ask("rss") for s in sides}
    info = {s: procs[s].info for s in sides}
    for proc in procs.values():
        proc.close()

    ratios = bench_models._ratios(sides)
    layers = json.loads((folder / "config.json").read_text())["num_hidden_layers"]
    rows = [
        f"### {name} ({RERANKERS[name].repo} shapes, {layers} layers, random float32 weights)",
        "",
        "| Measure | "
        + " | ".join(NAMES[s] for s in sides)
        + "".join(f" | {NAMES[a]} / {NAMES[b]}, paired" for a, b in ratios)
        + " |",
        "|---|" + "---:|" * (len(sides) + len(ratios)),
    ]
    dashes = " | -" * len(ratios)
    for w in work:
        tps = {s: [v * tokens[w] / len(pairs[w]) for v in pps[w][s]] for s in sides}
        label = f"{w}: {len(work[w])} x {DOCUMENTS} pairs ({tokens[w]:,} tokens)"
        rows.append(bench_models._row(f"{label}, pairs/s", pps[w], sides, ",.1f", higher=True))
        rows.append(bench_models._row(f"{label}, tokens/s", tps, sides, ",.0f", higher=True))
    latency = f"one query + {len(small[1])} sentences, latency p50, ms"
    rows.append(bench_models._row(latency, p50, sides, ".1f", higher=False))
    rows.append(bench_models._row("time to first score, s", ttfs, sides, ".2f", higher=False))
    cores = " | ".join(bench_embed._spread(busy[s], unit="") for s in sides)
    rows.append(f"| CPU cores busy in batch runs | {cores}{dashes} |")
    rows.append(f"| peak RSS, MiB | {' | '.join(f'{rss[s]:,.0f}' for s in sides)}{dashes} |")
    cells = " | ".join("(reference)" if s == "torch" else f"{diff[s]:.1e}" for s in sides)
    rows.append(f"| max abs score difference to torch | {cells}{dashes} |")
    low = [s for s, d in diff.items() if d > FIDELITY]
    report = (
        "\n".join(rows)
        + f"\n\nSides: median (best) over {args.rounds} round(s); ratios > 1: MLX faster; "
        "cores busy: CPU time / wall time, median [min-max]. ONNX: "
        + onnx_note
        + (f"\nFIDELITY: {', '.join(low)} over {FIDELITY:g} from torch's scores." if low else "")
    )
    result = dict(model=name, folder=str(folder), layers=layers, onnx=onnx_note, versions=info)
    result.update(pairs={w: len(p) for w, p in pairs.items()}, tokens=tokens, pairs_per_s=pps)
    result.update(latency_p50_ms=p50, first_score_s=ttfs, peak_rss_mib=rss, cores_busy=busy)
    result["max_abs_diff_to_torch"] = diff
    return result, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        nargs="+",
        default=list(DEFAULT_MODELS),
        choices=list(RERANKERS),
        help=f"rerankers to run (default: {' '.join(DEFAULT_MODELS)})",
    )
    parser.add_argument("--rounds", type=int, default=3, help="paired rounds (default 3)")
    parser.add_argument("--quick", action="store_true", help="2 rounds, a quarter of the work")
    parser.add_argument(
        "--root", type=Path, default=bench_models.DEFAULT_ROOT, help="built models' cache"
    )
    bench_models.precision_argument(parser)
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--export", nargs=2, metavar=("FOLDER", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    NAMES["mlx"] = bench_models.use_precision(args.precision)
    if args.export:  # the exporter's own process (ensure_onnx)
        print(json.dumps(_export(Path(args.export[0]), Path(args.export[1]))))
        return 0
    if args.quick:
        args.rounds = 2
    os.environ.update(bench_models.CHILD_ENV)
    print(f"CPU: {bench_models.cpu_description()}", flush=True)
    results, reports = [], []
    for name in args.models:
        result, report = run_model(name, args)
        results.append(result)
        reports.append(report)
        print("\n" + report + "\n", flush=True)
    versions = {k: v for r in results for info in r["versions"].values() for k, v in info.items()}
    print(f"CPU: {bench_models.cpu_description()}\nversions: {json.dumps(versions)}\n")
    if len(reports) > 1:  # all tables together at the end of a long run
        print("\n\n".join(reports))
    if args.json:
        machine = {"cpu": bench_models.cpu_description(), "platform": platform.platform()}
        args.json.write_text(json.dumps({"machine": machine, "models": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
