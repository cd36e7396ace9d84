"""Notebook runs (``pytest --nbval``): a reranker for ``04-explorer``'s "Retrieve, then rerank".

No reranker weights can be fetched here, so before any kernel starts, a random-weight copy of
cross-encoder/ms-marco-MiniLM-L6-v2 at its published shape is built (``tests/reranker_models``)
and named to the kernels through the environment they inherit: ``JME_RERANKER`` (the name the
notebook uses) and a model root holding it. Its scores mean nothing; the notebook says so.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    if not config.getoption("nbval", default=False) or "JME_RERANKER" in os.environ:
        return
    sys.path.insert(0, str(ROOT))
    from tests.reranker_models import build_reranker

    where = os.environ.get("JME_REAL_MODELS_DIR") or tempfile.mkdtemp(prefix="jme-rerankers-")
    folder = build_reranker("ms-marco-MiniLM-L6-v2", Path(where))
    roots = os.environ.get("JUPYTER_MLX_EMBED_MODEL_ROOTS")
    os.environ["JUPYTER_MLX_EMBED_MODEL_ROOTS"] = os.pathsep.join(
        [str(folder.parent), *([roots] if roots else [])]
    )
    os.environ["JME_RERANKER"] = folder.name
