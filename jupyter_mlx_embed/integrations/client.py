"""What every integration class holds: a model, its options, and where its requests go.

By default an integration uses this process's transport, as :func:`jupyter_mlx_embed.embed`
does: the Jupyter server's worker from a kernel that server started (no API key, no HTTP
setup), this process's own worker elsewhere. Given a ``url`` (a ``jupyter-mlx-embed serve``
or a Jupyter server with the extension, with or without its ``/v1``) and a ``token``, it calls
that server instead. No tokenizer runs on the client side: the server counts tokens.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from .. import api, envvars
from ..errors import EmbedError
from ..options import EmbedOptions
from ..transport import ServerEndpoint, ServerTransport, Transport
from ..validation import to_strings, to_texts

#: ``auto`` prompts: the model's first published prompt of these names, as
#: sentence-transformers' ``encode_query`` / ``encode_document`` choose them.
AUTO = "auto"
PROMPT_NAMES: dict[str, tuple[str, ...]] = {
    "query": ("query",),
    "document": ("document", "passage", "corpus"),
}

Role = Literal["query", "document"]


def server_root(url: str) -> str:
    """A server's root URL from what users paste: its OpenAI base URL (``.../v1``) or its
    root."""
    root = url.rstrip("/")
    return (root[: -len("/v1")] if root.endswith("/v1") else root) + "/"


class EmbedClient:
    """A model and where to reach it, shared by the integration classes.

    Args:
        model: A model name the registry knows (any, not an OpenAI enum); the configured
            default when ``None``.
        dimensions: Keep the first ``dimensions`` values of each vector (Matryoshka) and
            renormalise.
        query_prompt_name: The prompt put before queries: ``"auto"`` (the model's ``query``
            prompt when it publishes one), ``None`` (the model's default prompt) or a name.
        document_prompt_name: The same for documents (``"auto"``: ``document``, ``passage``
            or ``corpus``).
        url: A server to call instead of this process's transport.
        token: That server's token; by default ``JUPYTER_MLX_EMBED_TOKEN``.
        timeout: Seconds to wait for a server's answer (this process's setting by default).
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        dimensions: int | None = None,
        query_prompt_name: str | None = AUTO,
        document_prompt_name: str | None = AUTO,
        url: str | None = None,
        token: str | None = None,
        timeout: float | None = None,
    ) -> None:
        EmbedOptions(model=model, dimensions=dimensions)  # checked now, not at first use
        self.model = model
        self.dimensions = dimensions
        self.prompt_names: dict[str, str | None] = {
            "query": query_prompt_name,
            "document": document_prompt_name,
        }
        self.url = url
        self.token = token
        self.timeout = timeout
        self._transport: Transport | None = None
        self._prompts: dict[str, str | None] = {}
        self._lock = threading.RLock()

    def transport(self) -> Transport:
        """This client's server transport, or the process's (chosen when first used, so a
        client made before a kernel's settings change still follows them)."""
        if self.url is None:
            return api.get_transport()
        with self._lock:
            if self._transport is None:
                token = self.token or os.environ.get(envvars.TOKEN)
                if not token:
                    raise EmbedError(
                        f"A token is needed for the server at {self.url}: pass token=... or "
                        f"set {envvars.TOKEN}"
                    )
                timeout = self.timeout or api.serving_config().request_timeout
                endpoint = ServerEndpoint(url=server_root(self.url), token=token)
                self._transport = ServerTransport(endpoint, timeout=timeout)
            return self._transport

    def prompt_name(self, role: Role) -> str | None:
        """The prompt name used for ``role`` (``auto`` looked up in the model's card once)."""
        chosen = self.prompt_names[role]
        if chosen != AUTO:
            return chosen
        with self._lock:
            if role not in self._prompts:
                published = self.transport().model_info(self.model).get("prompts") or {}
                self._prompts[role] = next(
                    (name for name in PROMPT_NAMES[role] if name in published), None
                )
            return self._prompts[role]

    def options(self, role: Role) -> EmbedOptions:
        return EmbedOptions(self.model, self.dimensions, self.prompt_name(role))

    def embed(self, texts: Sequence[str], role: Role = "document") -> np.ndarray:
        """``(n, d)`` float32 unit vectors of ``texts``.

        Raises:
            EmbedError: Invalid input (naming its index), unknown model, server errors.
        """
        checked = to_texts(texts, name="texts")[0]
        return api.embed_with(self.transport(), checked, self.options(role))

    async def aembed(self, texts: Sequence[str], role: Role = "document") -> np.ndarray:
        """Awaitable :meth:`embed`: the event loop runs while the worker computes (only the
        first call of an ``auto`` prompt reads the model's card, in a thread)."""
        import asyncio

        checked = to_texts(texts, name="texts")[0]
        options = await asyncio.to_thread(self.options, role)
        if not checked:
            return await asyncio.to_thread(api.embed_with, self.transport(), [], options)
        return await api.aembed_with(self.transport(), checked, options)

    def rerank(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """Relevance scores of ``documents`` to ``query`` (their order), by a reranker."""
        texts = to_strings(documents, name="documents")
        if not texts:
            return np.zeros(0, dtype=np.float32)
        options = EmbedOptions(model=self.model)
        return api.rerank_with(self.transport(), query, texts, options).scores

    async def arerank(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """Awaitable :meth:`rerank`."""
        texts = to_strings(documents, name="documents")
        if not texts:
            return np.zeros(0, dtype=np.float32)
        options = EmbedOptions(model=self.model)
        return (await api.arerank_with(self.transport(), query, texts, options)).scores

    def settings(self) -> dict[str, Any]:
        """What rebuilds this client elsewhere (never the token: a server's token is read
        from ``JUPYTER_MLX_EMBED_TOKEN`` where it is rebuilt)."""
        return {
            "model": self.model,
            "dimensions": self.dimensions,
            "query_prompt_name": self.prompt_names["query"],
            "document_prompt_name": self.prompt_names["document"],
            "url": self.url,
        }
