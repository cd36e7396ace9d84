"""Build MLX-quantized copies of model folders for tests and benches (run as a script).

A copy is what mlx-embeddings' ``convert --quantize`` (and so an mlx-community 4-bit or 8-bit
conversion) writes: ``config.json`` with a ``quantization`` block (``group_size``, ``bits``,
``mode``), ``model.safetensors`` with ``.weight`` (packed uint32), ``.scales`` and ``.biases``
for every Linear and Embedding layer whose input width the group size divides, all else in
float16 (convert's default ``--dtype``), and the source's tokenizer and sentence-transformers
files. Run
``python tests/quantized_models.py SOURCE OUT BITS GROUP_SIZE``; MLX is used only in this
separate process's main thread; several copies can be built in one run by repeating the
four arguments.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path


def quantize_folder(source: Path, out: Path, bits: int, group_size: int = 64) -> Path:
    """Write an MLX-quantized copy of the model folder ``source`` to ``out``."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    from jupyter_mlx_embed.engine.mlx_engine import _build_model
    from jupyter_mlx_embed.modelspec import read_model_spec

    spec = read_model_spec(source, name=source.name, source="root")
    model = _build_model(mx, spec)  # the engine's own loader: same names, same sanitize
    model.set_dtype(mx.float16)  # as convert does before quantizing: float16 scales, norms

    def quantizable(path: str, module: nn.Module) -> bool:
        # As mlx-embeddings' convert: skip layers whose rows the group size does not divide.
        weight = getattr(module, "weight", None)
        return (
            hasattr(module, "to_quantized")
            and weight is not None
            and weight.shape[-1] % group_size == 0
        )

    nn.quantize(model, group_size=group_size, bits=bits, class_predicate=quantizable)
    shutil.copytree(source, out, ignore=shutil.ignore_patterns("model*.safetensors"))
    mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(model.parameters())))
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    config["quantization"] = {"group_size": group_size, "bits": bits, "mode": "affine"}
    (out / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or len(args) % 4:
        sys.exit(
            f"usage: {sys.argv[0]} SOURCE OUT BITS GROUP_SIZE [SOURCE OUT BITS GROUP_SIZE ...]"
        )
    for i in range(0, len(args), 4):
        quantize_folder(Path(args[i]), Path(args[i + 1]), int(args[i + 2]), int(args[i + 3]))
