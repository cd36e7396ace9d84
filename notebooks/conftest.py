"""Notebook runs (``pytest --nbval``): a reranker for ``04-explorer``'s "Retrieve, then rerank"
and an image-text model for ``06-pictures``.

No weights can be fetched here, so before any kernel starts, random-weight copies are built at
the published shapes and layouts: cross-encoder/ms-marco-MiniLM-L6-v2
(``tests/reranker_models``) and google/siglip-base-patch16-224 with 2 layers per tower
(``tests/siglip_models``). They are named to the kernels through the environment they
inherit: ``JME_RERANKER`` and ``JME_IMAGE_MODEL`` (the names the notebooks use) and a model
root holding them. Their scores mean nothing; the notebooks say so.
"""

from __future__ import annotations

import os
import shutil
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
    from tests.siglip_models import build_siglip

    given = os.environ.get("JME_REAL_MODELS_DIR")
    where = Path(given or tempfile.mkdtemp(prefix="jme-models-"))
    if not given:  # ours to remove: 320 MB of models per run
        config.add_cleanup(lambda: shutil.rmtree(where, ignore_errors=True))
    reranker = build_reranker("ms-marco-MiniLM-L6-v2", where)
    pictures = build_siglip("siglip-base-patch16-224", where, layers=2)
    roots = os.environ.get("JUPYTER_MLX_EMBED_MODEL_ROOTS")
    os.environ["JUPYTER_MLX_EMBED_MODEL_ROOTS"] = os.pathsep.join(
        [str(where), *([roots] if roots else [])]
    )
    os.environ["JME_RERANKER"] = reranker.name
    os.environ["JME_IMAGE_MODEL"] = pictures.name
