"""LangChain: :class:`MLXEmbeddings` (``langchain_core.embeddings.Embeddings``) and
:class:`MLXReranker` (a ``BaseDocumentCompressor`` for ``ContextualCompressionRetriever``).

Unlike ``OpenAIEmbeddings`` pointed at our endpoint, nothing here needs an API key, downloads
tiktoken's files or splits texts by OpenAI's token counts, and any registry model name works.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.embeddings import Embeddings
from pydantic import ConfigDict, PrivateAttr

from .client import EmbedClient


class MLXEmbeddings(Embeddings):
    """Embeddings by this package's worker; queries and documents get the model's own
    prompts (e.g. ``query`` for Qwen3-Embedding, e5, bge). Arguments as
    :class:`~jupyter_mlx_embed.integrations.client.EmbedClient`.

    Example::

        from jupyter_mlx_embed.integrations.langchain import MLXEmbeddings
        from langchain_core.vectorstores import InMemoryVectorStore

        store = InMemoryVectorStore.from_texts(texts, MLXEmbeddings())
    """

    def __init__(self, model: str | None = None, **options: Any) -> None:
        self.client = EmbedClient(model, **options)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.client.embed(texts, "document").tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.client.embed([text], "query")[0].tolist()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return (await self.client.aembed(texts, "document")).tolist()

    async def aembed_query(self, text: str) -> list[float]:
        return (await self.client.aembed([text], "query"))[0].tolist()

    def __repr__(self) -> str:
        return f"MLXEmbeddings({self.client.settings()})"


class MLXReranker(BaseDocumentCompressor):
    """Keeps the ``top_n`` documents a reranker (cross-encoder) scores best for the query,
    best first, each with its score in ``metadata["relevance_score"]``.

    Example::

        from langchain_classic.retrievers import ContextualCompressionRetriever

        retriever = ContextualCompressionRetriever(
            base_compressor=MLXReranker(model="ms-marco-MiniLM-L6-v2", top_n=3),
            base_retriever=store.as_retriever(search_kwargs={"k": 20}),
        )
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: str | None = None
    top_n: int | None = 3
    url: str | None = None
    token: str | None = None
    _client: EmbedClient = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        self._client = EmbedClient(self.model, url=self.url, token=self.token)

    def _ranked(self, documents: Sequence[Document], scores: Any) -> Sequence[Document]:
        order = sorted(range(len(documents)), key=lambda i: -float(scores[i]))
        kept = order if self.top_n is None else order[: self.top_n]
        return [
            Document(
                page_content=documents[i].page_content,
                metadata={**documents[i].metadata, "relevance_score": float(scores[i])},
                id=documents[i].id,
            )
            for i in kept
        ]

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        scores = self._client.rerank(query, [d.page_content for d in documents])
        return self._ranked(documents, scores)

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        scores = await self._client.arerank(query, [d.page_content for d in documents])
        return self._ranked(documents, scores)
