"""The ONNX Runtime side of bench_embed.py: the model as infinity, fastembed or TEI users run it.

The bundled sentence-transformers folder is exported to ONNX with torch's TorchScript exporter,
fused for BERT by ``onnxruntime.transformers.optimizer`` (float32) and cached on disk, keyed by
a hash of the model's files and the onnxruntime version, so later runs skip both steps.
:class:`OnnxEmbedder` then runs it in a stock ``onnxruntime.InferenceSession`` (default CPU
threads): texts tokenised by the model's fast tokenizer (truncated to 256), sorted by length,
in batches of 32 padded to their longest text, mean-pooled over the attention mask and
L2-normalised, as sentence-transformers does.

Run it directly to export (or find) the cached model; it prints a JSON line with the path and
the fused-operator counts::

    python bench/onnx_side.py [MODEL_FOLDER]
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import corpus
import numpy as np

BATCH_SIZE = 32
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# The fusions a fully optimised BERT graph must show; without them ORT runs op by op and the
# comparison would flatter MLX.
REQUIRED_FUSIONS = ("Attention", "SkipLayerNormalization")
GELU_FUSIONS = ("BiasGelu", "FastGelu", "Gelu", "GemmFastGelu")
_MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def cache_dir(model_path: Path) -> Path:
    """The cache folder of ``model_path``'s ONNX files (model files and onnxruntime version)."""
    import onnxruntime
    import platformdirs

    digest = hashlib.sha256(onnxruntime.__version__.encode())
    for name in _MODEL_FILES:
        digest.update(hashlib.sha256((model_path / name).read_bytes()).digest())
    root = Path(platformdirs.user_cache_dir("jupyter-mlx-embed")) / "bench-onnx"
    return root / digest.hexdigest()[:16]


def _export(model_path: Path, out: Path) -> None:
    """Export the transformer (token ids -> last hidden state) with dynamic batch and length."""
    import torch
    from transformers import AutoModel

    # Eager attention: ORT's Attention fusion matches the eager pattern, not the graph that
    # scaled_dot_product_attention exports to (and the dynamo exporter's graph, tried with
    # torch 2.13, gets no Attention fusion either), so the TorchScript exporter is used.
    model = AutoModel.from_pretrained(str(model_path), attn_implementation="eager").eval()

    class _Hidden(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor,
        ) -> torch.Tensor:
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    ids = torch.ones((2, 16), dtype=torch.long)
    axes = {0: "batch", 1: "sequence"}
    with torch.no_grad():
        torch.onnx.export(
            _Hidden(model),
            (ids, torch.ones_like(ids), torch.zeros_like(ids)),
            str(out),
            input_names=list(INPUTS),
            output_names=["last_hidden_state"],
            dynamic_axes={name: axes for name in (*INPUTS, "last_hidden_state")},
            opset_version=17,
            dynamo=False,
        )


def _optimize(raw: Path, out: Path, config: dict) -> dict[str, int]:
    """Apply ORT's BERT fusions in float32; return the fused-operator counts."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        str(raw),
        model_type="bert",
        num_heads=int(config["num_attention_heads"]),
        hidden_size=int(config["hidden_size"]),
    )
    stats = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
    missing = [op for op in REQUIRED_FUSIONS if not stats.get(op)]
    if missing or not any(stats.get(op) for op in GELU_FUSIONS):
        raise SystemExit(f"ORT's optimizer did not fuse {missing or 'the GELU'}: {stats}")
    optimized.save_model_to_file(str(out))
    return stats


def ensure_model(model_path: Path) -> tuple[Path, dict[str, int]]:
    """The optimised ONNX file for ``model_path`` and its fusion counts, exported if not cached."""
    folder = cache_dir(model_path)
    onnx_path, stats_path = folder / "model_optimized.onnx", folder / "fusions.json"
    if onnx_path.is_file() and stats_path.is_file():
        return onnx_path, json.loads(stats_path.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / "model.onnx"
    _export(model_path, raw)
    config = json.loads((model_path / "config.json").read_text())
    stats = _optimize(raw, onnx_path, config)
    raw.unlink()
    stats_path.write_text(json.dumps(stats) + "\n")  # written last: marks the cache complete
    return onnx_path, stats


class OnnxEmbedder:
    """Texts -> normalised float32 vectors through an ``onnxruntime.InferenceSession``."""

    def __init__(self, model_path: Path, onnx_path: Path) -> None:
        import onnxruntime

        self.session = onnxruntime.InferenceSession(
            str(onnx_path), providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self.session.get_inputs()}
        self._tok = corpus.load_tokenizer(model_path)

    def __call__(self, texts: list[str]) -> np.ndarray:
        encodings = self._tok.encode_batch(texts, add_special_tokens=True)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        parts: list[np.ndarray] = []
        for start in range(0, len(order), BATCH_SIZE):
            rows = order[start : start + BATCH_SIZE]
            width = max(len(encodings[i].ids) for i in rows)
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros_like(ids)
            for r, i in enumerate(rows):
                ids[r, : len(encodings[i].ids)] = encodings[i].ids
                mask[r, : len(encodings[i].ids)] = 1
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            (hidden,) = self.session.run(None, {k: v for k, v in feed.items() if k in self._inputs})
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
            pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
            parts.append(pooled)
        vectors = np.concatenate(parts)
        vectors[order] = vectors.copy()  # back to the callers' order
        return vectors


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args:
        model_path = Path(args[0])
    else:
        from jupyter_mlx_embed.registry import bundled_model_path

        found = bundled_model_path()
        if found is None:
            raise SystemExit("the bundled model is not installed: run `make install` first")
        model_path = found
    onnx_path, stats = ensure_model(model_path)
    print(json.dumps({"path": str(onnx_path), "fusions": stats}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
