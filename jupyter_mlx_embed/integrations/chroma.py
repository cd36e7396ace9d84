"""Chroma: :class:`MLXEmbeddingFunction`, registered with Chroma so that it persists with the
collection and comes back when the collection is opened again (in a process that has
imported this module).

Its config holds the model, dimensions, prompts and URL, and the *name* of the environment
variable with the token (``JUPYTER_MLX_EMBED_TOKEN`` by default), never the token: Chroma's
OpenAI function built with ``api_key=`` does not come back from its config.
"""

from __future__ import annotations

from typing import Any

from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
from chromadb.utils.embedding_functions import register_embedding_function

from .. import envvars
from .client import AUTO, EmbedClient

NAME = "jupyter_mlx_embed"


@register_embedding_function
class MLXEmbeddingFunction(EmbeddingFunction[Documents]):
    """Embeds a collection's documents (and, through ``embed_query``, its queries with the
    model's query prompt) with this package's worker.

    Args:
        model: A registry model name; the configured default when ``None``.
        dimensions: Keep the first ``dimensions`` values (Matryoshka) and renormalise.
        query_prompt_name, document_prompt_name: As
            :class:`~jupyter_mlx_embed.integrations.client.EmbedClient`.
        url: A server to call instead of this process's transport.
        token_env_var: The environment variable holding that server's token.
    """

    def __init__(
        self,
        model: str | None = None,
        dimensions: int | None = None,
        query_prompt_name: str | None = AUTO,
        document_prompt_name: str | None = AUTO,
        url: str | None = None,
        token_env_var: str = envvars.TOKEN,
    ) -> None:
        self.token_env_var = token_env_var
        self.client = EmbedClient(
            model,
            dimensions=dimensions,
            query_prompt_name=query_prompt_name,
            document_prompt_name=document_prompt_name,
            url=url,
            token=None,  # read from token_env_var when first used (see transport)
        )

    def __call__(self, input: Documents) -> Embeddings:
        return list(self._embed(input, "document"))

    def embed_query(self, input: Documents) -> Embeddings:
        return list(self._embed(input, "query"))

    def _embed(self, texts: Documents, role: str) -> Any:
        import os

        if self.client.url is not None and self.client.token is None:
            self.client.token = os.environ.get(self.token_env_var)
        return self.client.embed(list(texts), role)  # type: ignore[arg-type]

    @staticmethod
    def name() -> str:
        return NAME

    def default_space(self) -> Space:
        return "cosine"  # unit vectors: cosine and inner product rank alike

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "ip", "l2"]

    def get_config(self) -> dict[str, Any]:
        return {**self.client.settings(), "token_env_var": self.token_env_var}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> MLXEmbeddingFunction:
        return MLXEmbeddingFunction(**config)

    def validate_config_update(
        self, old_config: dict[str, Any], new_config: dict[str, Any]
    ) -> None:
        for key in ("model", "dimensions"):
            if key in new_config and new_config[key] != old_config.get(key):
                raise ValueError(
                    f"A collection's {key} cannot change: its stored vectors were made with "
                    f"{old_config.get(key)!r}"
                )
