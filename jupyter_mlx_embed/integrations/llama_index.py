"""LlamaIndex: :class:`MLXEmbedding` (a ``BaseEmbedding``) and :class:`MLXReranker` (a node
postprocessor).

``OpenAIEmbedding`` accepts only OpenAI's model names (``OpenAILikeEmbedding`` needs an API
key and a base URL); these take any registry model name and use this process's transport.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle
from pydantic import Field, PrivateAttr

from .client import AUTO, EmbedClient

#: Texts per call from LlamaIndex's batching (ours splits them again by the token budget).
BATCH = 256


class MLXEmbedding(BaseEmbedding):
    """Embeddings by this package's worker (arguments as
    :class:`~jupyter_mlx_embed.integrations.client.EmbedClient`; ``model_name`` is the
    model).

    Example::

        from llama_index.core import Settings, VectorStoreIndex
        from jupyter_mlx_embed.integrations.llama_index import MLXEmbedding

        Settings.embed_model = MLXEmbedding()
        index = VectorStoreIndex.from_documents(documents)
    """

    model_name: str = Field(default="", description="A registry model name; '' the default.")
    embed_batch_size: int = Field(default=BATCH, gt=0)
    dimensions: int | None = None
    query_prompt_name: str | None = AUTO
    document_prompt_name: str | None = AUTO
    url: str | None = None
    token: str | None = Field(default=None, exclude=True, repr=False)
    _client: EmbedClient = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._client = EmbedClient(
            self.model_name or None,
            dimensions=self.dimensions,
            query_prompt_name=self.query_prompt_name,
            document_prompt_name=self.document_prompt_name,
            url=self.url,
            token=self.token,
        )

    @classmethod
    def class_name(cls) -> str:
        return "MLXEmbedding"

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._client.embed([query], "query")[0].tolist()

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return (await self._client.aembed([query], "query"))[0].tolist()

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await self._aget_text_embeddings([text]))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._client.embed(texts, "document").tolist()

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return (await self._client.aembed(texts, "document")).tolist()


class MLXReranker(BaseNodePostprocessor):
    """Keeps the ``top_n`` nodes a reranker (cross-encoder) scores best for the query, best
    first, their ``score`` the reranker's.

    Example::

        engine = index.as_query_engine(
            similarity_top_k=20, node_postprocessors=[MLXReranker(model="bge-reranker-base")]
        )
    """

    model: str | None = None
    top_n: int | None = 3
    url: str | None = None
    token: str | None = Field(default=None, exclude=True, repr=False)
    _client: EmbedClient = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._client = EmbedClient(self.model, url=self.url, token=self.token)

    @classmethod
    def class_name(cls) -> str:
        return "MLXReranker"

    def _ranked(self, nodes: list[NodeWithScore], scores: Any) -> list[NodeWithScore]:
        order = sorted(range(len(nodes)), key=lambda i: -float(scores[i]))
        kept = order if self.top_n is None else order[: self.top_n]
        return [NodeWithScore(node=nodes[i].node, score=float(scores[i])) for i in kept]

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("MLXReranker needs the query (a QueryBundle)")
        texts = [n.node.get_content() for n in nodes]
        return self._ranked(nodes, self._client.rerank(query_bundle.query_str, texts))

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("MLXReranker needs the query (a QueryBundle)")
        texts = [n.node.get_content() for n in nodes]
        return self._ranked(nodes, await self._client.arerank(query_bundle.query_str, texts))
