"""Haystack: :class:`MLXTextEmbedder` and :class:`MLXDocumentEmbedder` components.

A failed call raises (Haystack's OpenAI document embedder logs it and returns the documents
with ``embedding=None`` unless ``raise_on_failure``); both serialise with their pipeline
(the token as an environment-variable secret, never its value), and load again in any
process that imports this module.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from haystack import Document, component, default_from_dict, default_to_dict
from haystack.core.serialization import allow_deserialization_module
from haystack.utils import Secret, deserialize_secrets_inplace

from .. import envvars
from .client import AUTO, EmbedClient, Role

# Saved pipelines load these components once this module is imported (Haystack refuses
# classes from modules off its allowlist): they only embed text, with no code of the YAML's.
allow_deserialization_module(__name__)


_ONE_TEXT = "MLXTextEmbedder takes one string; use MLXDocumentEmbedder for Documents"
_DOCUMENTS = "MLXDocumentEmbedder takes a list of Documents; use MLXTextEmbedder for a string"


class _Embedder:
    """What both components share: the model and where it runs, and their serialisation
    (every ``__init__`` argument is an attribute of the same name)."""

    role: Role
    _saved: tuple[str, ...] = ("model", "dimensions", "prompt_name", "url", "token")

    def __init__(
        self,
        model: str | None,
        dimensions: int | None,
        prompt_name: str | None,
        url: str | None,
        token: Secret | None,
    ) -> None:
        self.model, self.dimensions, self.prompt_name, self.url = (
            model,
            dimensions,
            prompt_name,
            url,
        )
        self.token = token or Secret.from_env_var(envvars.TOKEN, strict=False)
        self._client = EmbedClient(
            model,
            dimensions=dimensions,
            url=url,
            token=self.token.resolve_value() if url else None,
            **{f"{self.role}_prompt_name": prompt_name},  # type: ignore[arg-type]
        )

    def to_dict(self) -> dict[str, Any]:
        saved = {name: getattr(self, name) for name in self._saved}
        return default_to_dict(self, **{**saved, "token": self.token.to_dict()})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        deserialize_secrets_inplace(data["init_parameters"], keys=["token"])
        return default_from_dict(cls, data)

    def _meta(self) -> dict[str, Any]:
        return {"model": self.model}


@component
class MLXTextEmbedder(_Embedder):
    """Embeds one text (a query, by default with the model's ``query`` prompt) into
    ``embedding``.

    Args:
        model: A registry model name; the configured default when ``None``.
        dimensions: Keep the first ``dimensions`` values (Matryoshka) and renormalise.
        prompt_name: ``"auto"``: the model's query prompt; ``None``: its default; or a name.
        url: A server to call instead of this process's transport (its token from ``token``,
            by default the ``JUPYTER_MLX_EMBED_TOKEN`` environment variable).
    """

    role: Role = "query"

    def __init__(
        self,
        model: str | None = None,
        dimensions: int | None = None,
        prompt_name: str | None = AUTO,
        url: str | None = None,
        token: Secret | None = None,
    ) -> None:
        # @component copies the class: super() would name the copy's original.
        _Embedder.__init__(self, model, dimensions, prompt_name, url, token)

    @component.output_types(embedding=list[float], meta=dict[str, Any])
    def run(self, text: str) -> dict[str, Any]:
        if not isinstance(text, str):
            raise TypeError(_ONE_TEXT)
        vector = self._client.embed([text], "query")[0]
        return {"embedding": vector.tolist(), "meta": self._meta()}

    @component.output_types(embedding=list[float], meta=dict[str, Any])
    async def run_async(self, text: str) -> dict[str, Any]:
        if not isinstance(text, str):
            raise TypeError(_ONE_TEXT)
        vector = (await self._client.aembed([text], "query"))[0]
        return {"embedding": vector.tolist(), "meta": self._meta()}


@component
class MLXDocumentEmbedder(_Embedder):
    """Embeds Documents (their content, after the ``meta_fields_to_embed`` values joined by
    ``embedding_separator``), returning copies with ``embedding`` set.

    Args:
        model, dimensions, url, token: As :class:`MLXTextEmbedder`.
        prompt_name: ``"auto"``: the model's document prompt; ``None``: its default; or a name.
        meta_fields_to_embed: Metadata fields whose values go before the content.
        embedding_separator: What joins them.
    """

    role: Role = "document"
    _saved = (*_Embedder._saved, "meta_fields_to_embed", "embedding_separator")

    def __init__(
        self,
        model: str | None = None,
        dimensions: int | None = None,
        prompt_name: str | None = AUTO,
        url: str | None = None,
        token: Secret | None = None,
        meta_fields_to_embed: list[str] | None = None,
        embedding_separator: str = "\n",
    ) -> None:
        # @component copies the class: super() would name the copy's original.
        _Embedder.__init__(self, model, dimensions, prompt_name, url, token)
        self.meta_fields_to_embed = list(meta_fields_to_embed or [])
        self.embedding_separator = embedding_separator

    def _texts(self, documents: list[Document]) -> list[str]:
        if not isinstance(documents, list) or not all(isinstance(d, Document) for d in documents):
            raise TypeError(_DOCUMENTS)
        texts = []
        for doc in documents:
            meta = [
                str(doc.meta[key])
                for key in self.meta_fields_to_embed
                if doc.meta.get(key) is not None
            ]
            texts.append(self.embedding_separator.join([*meta, doc.content or ""]))
        return texts

    def _embedded(self, documents: list[Document], vectors: Any) -> dict[str, Any]:
        embedded = [
            replace(doc, embedding=v.tolist()) for doc, v in zip(documents, vectors, strict=True)
        ]
        return {"documents": embedded, "meta": self._meta()}

    @component.output_types(documents=list[Document], meta=dict[str, Any])
    def run(self, documents: list[Document]) -> dict[str, Any]:
        texts = self._texts(documents)
        vectors: Any = self._client.embed(texts, "document") if texts else []
        return self._embedded(documents, vectors)

    @component.output_types(documents=list[Document], meta=dict[str, Any])
    async def run_async(self, documents: list[Document]) -> dict[str, Any]:
        texts = self._texts(documents)
        vectors: Any = await self._client.aembed(texts, "document") if texts else []
        return self._embedded(documents, vectors)
