"""jupyter-mlx-embed: local text and image embeddings and reranking with MLX for Jupyter."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .api import (
    aembed,
    aembed_images,
    arerank,
    async_openai_client,
    configure,
    embed,
    embed_images,
    get_transport,
    get_worker,
    info,
    openai_client,
    openai_endpoint,
    rerank,
    set_transport,
)
from .config import EngineConfig, ServingConfig
from .embeddings import Embeddings, register_explorer
from .errors import (
    EmbedError,
    InputTypeError,
    InvalidRequestError,
    ModelLoadError,
    ModelNotFoundError,
    ModelTypeError,
    OverloadedError,
    PayloadTooLargeError,
    WorkerClosedError,
)
from .explorer.projection import project
from .ranking import Hit, Ranking, SearchResults
from .results import EmbedResult, RerankResult
from .worker import Worker

if TYPE_CHECKING:
    from .explorer.widget import SimilarityExplorer, explore, explore_images


def __getattr__(name: str) -> Any:
    """``SimilarityExplorer``, ``explore`` and ``explore_images`` are imported on first use:
    they need anywidget and ipywidgets."""
    if name in ("SimilarityExplorer", "explore", "explore_images"):
        from .explorer import widget

        return getattr(widget, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _open_explorer(
    embeddings: Embeddings, labels: Any = None, **options: Any
) -> SimilarityExplorer:
    """``Embeddings.explore()``: the widget, imported on first use (anywidget, ipywidgets)."""
    from .explorer.widget import SimilarityExplorer

    return SimilarityExplorer(embeddings, labels, **options)


# Embeddings (below the explorer in the layers) opens the explorer through this hook.
register_explorer(_open_explorer)


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext jupyter_mlx_embed``: register the magics (imported lazily)."""
    from .magics import load

    load(ipython)


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where the prebuilt JupyterLab extension lives inside the package."""
    return [{"src": "labextension", "dest": "jupyter-mlx-embed"}]


def _jupyter_server_extension_points() -> list[dict[str, object]]:
    """Register the server extension (imported lazily: the engine API does not need it)."""
    from .serverext import MLXEmbedApp

    return [{"module": "jupyter_mlx_embed", "app": MLXEmbedApp}]


__all__ = [
    "EmbedError",
    "EmbedResult",
    "Embeddings",
    "EngineConfig",
    "Hit",
    "InputTypeError",
    "InvalidRequestError",
    "ModelLoadError",
    "ModelNotFoundError",
    "ModelTypeError",
    "OverloadedError",
    "PayloadTooLargeError",
    "Ranking",
    "RerankResult",
    "SearchResults",
    "ServingConfig",
    "SimilarityExplorer",
    "Worker",
    "WorkerClosedError",
    "__version__",
    "aembed",
    "aembed_images",
    "arerank",
    "async_openai_client",
    "configure",
    "embed",
    "embed_images",
    "explore",
    "explore_images",
    "get_transport",
    "get_worker",
    "info",
    "openai_client",
    "openai_endpoint",
    "project",
    "rerank",
    "set_transport",
]
