"""jupyter-ai 2.x: an embeddings provider (``jupyter_ai.embeddings_model_providers`` entry
point) that calls the Jupyter server's own worker in-process, without HTTP.

jupyter-ai runs inside the Jupyter server. Pointed at that server's ``/v1`` through its
OpenAI provider, ``/ask`` hangs the server: it embeds the question synchronously on the
server's event loop, over HTTP, and that loop is the one that would answer. This provider
hands the texts to the worker thread instead; ``/ask``'s one question holds the loop only
for its own forward pass, and ``/learn`` (on Dask's threads) embeds its chunks while the
server keeps answering. Choose "jupyter-mlx-embed" in jupyter-ai's settings, or start the
server with ``--AiExtension.default_embeddings_model=jupyter-mlx-embed:all-MiniLM-L6-v2``.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

from jupyter_ai_magics.embedding_providers import BaseEmbeddingsProvider
from langchain_core.embeddings import Embeddings

from .client import EmbedClient

PROVIDER_ID = "jupyter-mlx-embed"


@functools.cache
def _client(model: str) -> EmbedClient:
    """One client a model (jupyter-ai builds a provider for each /learn chunk; the client
    keeps the model's prompts, read once)."""
    return EmbedClient(model)


class MLXEmbeddingsProvider(BaseEmbeddingsProvider, Embeddings):
    """The models of this server's registry (any name it resolves: ``registry``), embedded
    by its worker; queries get the model's query prompt, documents its document prompt."""

    id: ClassVar[str] = PROVIDER_ID
    name: ClassVar[str] = "jupyter-mlx-embed (this Jupyter server's worker)"
    models: ClassVar[list[str]] = ["all-MiniLM-L6-v2"]
    model_id_key: ClassVar[str] = "model_id"
    pypi_package_deps: ClassVar[list[str]] = []
    auth_strategy: ClassVar[Any] = None
    registry: ClassVar[bool] = True
    help: ClassVar[str] = (
        "Embeds with the jupyter-mlx-embed worker of this Jupyter server, in-process: no API "
        "key, no HTTP. Any model name its registry knows works."
    )

    def _client(self) -> EmbedClient:
        return _client(self.model_id)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._client().embed(texts, "document").tolist()

    def embed_query(self, text: str) -> list[float]:
        return self._client().embed([text], "query")[0].tolist()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        vectors = await self._client().aembed(texts, "document")
        return vectors.tolist()

    async def aembed_query(self, text: str) -> list[float]:
        return (await self._client().aembed([text], "query"))[0].tolist()
