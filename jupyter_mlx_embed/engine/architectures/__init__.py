"""Text encoders of our own, for architectures that ``mlx_embeddings`` lacks or runs differently
from transformers (engine layer). This file imports no MLX; its modules import ``mlx`` and are
loaded by ``mlx_engine`` on the worker thread, after the BLAS preload.

Each module has the shape of an ``mlx_embeddings.models`` module: ``ModelArgs.from_dict`` reads
``config.json``, ``Model(args)`` holds parameters named as the checkpoint names them, and
``Model.sanitize`` maps the checkpoint's tensors onto them. ``gemma3_text``: EmbeddingGemma
(mlx-embeddings' version needs mlx-lm and attends to the whole text in sliding-window layers);
``nomic_bert``: nomic-embed-text (absent from mlx-embeddings); ``siglip``: SigLIP's text and
image towers, in the steps the native path shares; ``dense``: sentence-transformers'
Dense modules on the pooled vector.
"""

from __future__ import annotations

#: Model types whose architecture lives here rather than in ``mlx_embeddings.models``.
OWN_MODEL_TYPES = ("gemma3_text", "nomic_bert", "siglip")
