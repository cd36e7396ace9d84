"""How this process reaches an embedding worker: its own, or its Jupyter server's over HTTP.

A kernel started by a Jupyter server that runs our extension uses that server's worker (one
model in memory for every kernel, and the kernel never imports MLX). Everywhere else the
process starts its own worker. Both transports return ``concurrent.futures.Future`` objects
of :class:`~jupyter_mlx_embed.worker.EmbedResult`, so callers block on them with a timeout or
await them with ``asyncio.wrap_future``; neither runs an event loop.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .errors import EmbedError, error_from_response
from .worker import EmbedResult, Worker

log = logging.getLogger(__name__)

#: Set by the server extension in the server's environment, hence in its kernels'.
SERVER_PID_ENV = "JUPYTER_MLX_EMBED_SERVER_PID"
TRANSPORT_ENV = "JUPYTER_MLX_EMBED_TRANSPORT"
TRANSPORT_MODES = ("auto", "local", "server")
#: Items per HTTP request (the endpoint's limit).
HTTP_CHUNK = 2048


class Transport(Protocol):
    """Where embedding requests go."""

    kind: str
    timeout: float

    def submit(
        self, inputs: Sequence[str], *, model: str | None, dimensions: int | None
    ) -> Future[EmbedResult]: ...

    def info(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class LocalTransport:
    """This process's own worker (started on first use)."""

    kind = "local"

    def __init__(self, get_worker: Callable[[], Worker], *, timeout: float = 600.0) -> None:
        self._get_worker = get_worker
        self.timeout = timeout

    def submit(
        self, inputs: Sequence[str], *, model: str | None, dimensions: int | None
    ) -> Future[EmbedResult]:
        return self._get_worker().submit(inputs, model=model, dimensions=dimensions)

    def info(self) -> dict[str, Any]:
        return {"transport": self.kind, **self._get_worker().info()}

    def close(self) -> None:
        """Nothing to release: the worker belongs to the process."""


@dataclass(frozen=True)
class ServerEndpoint:
    """A Jupyter server that runs the extension: its URL (with base URL) and token."""

    url: str
    token: str


class ServerTransport:
    """The embedding endpoint of a Jupyter server, over HTTP (stdlib only, in threads)."""

    kind = "server"

    def __init__(self, endpoint: ServerEndpoint, *, timeout: float = 600.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="mlx-embed-http")

    def _call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            self.endpoint.url.rstrip("/") + "/" + path,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {self.endpoint.token}",
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read())
            except ValueError:
                detail = None
            raise error_from_response(exc.code, detail, exc.headers.get("Retry-After")) from None
        except OSError as exc:
            raise EmbedError(
                f"Cannot reach the Jupyter server's embedding endpoint at "
                f"{self.endpoint.url}: {exc}"
            ) from exc

    def _embed(
        self, inputs: Sequence[str], model: str | None, dimensions: int | None
    ) -> EmbedResult:
        parts, tokens, name = [], 0, model or ""
        for start in range(0, len(inputs), HTTP_CHUNK):
            body: dict[str, Any] = {
                "input": list(inputs[start : start + HTTP_CHUNK]),
                "encoding_format": "base64",
            }
            if model is not None:
                body["model"] = model
            if dimensions is not None:
                body["dimensions"] = dimensions
            reply = self._call("v1/embeddings", body)
            parts.extend(
                np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
                for item in sorted(reply["data"], key=lambda item: item["index"])
            )
            tokens += int(reply["usage"]["prompt_tokens"])
            name = reply["model"]
        return EmbedResult(
            vectors=np.stack(parts).astype(np.float32), model=name, prompt_tokens=tokens
        )

    def submit(
        self, inputs: Sequence[str], *, model: str | None, dimensions: int | None
    ) -> Future[EmbedResult]:
        return self._pool.submit(self._embed, list(inputs), model, dimensions)

    def info(self) -> dict[str, Any]:
        status = self._call("mlx-embed/status")
        return {"transport": self.kind, "server_url": self.endpoint.url, **status}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def find_parent_server() -> ServerEndpoint | None:
    """The Jupyter server that started this kernel, if it runs our extension.

    Kernels launched by a Jupyter server have ``JPY_PARENT_PID`` set to the server's pid; the
    extension puts its pid in :data:`SERVER_PID_ENV`, which kernels inherit. The URL and token
    come from the server's runtime file, written once it listens (so the port is current).
    """
    parent = os.environ.get("JPY_PARENT_PID")
    if not parent or os.environ.get(SERVER_PID_ENV) != parent:
        return None
    for info in _running_servers():
        if str(info.get("pid")) == parent and info.get("url"):
            token = str(info.get("token") or "")
            if not token:
                log.warning("the parent Jupyter server has no token; using a local worker")
                return None
            return ServerEndpoint(url=str(info["url"]), token=token)
    return None


def _running_servers() -> list[dict[str, Any]]:
    """The servers' runtime files (what ``list_running_servers`` reads), without importing
    jupyter_server, which a kernel's environment may not have."""
    from jupyter_core.paths import jupyter_runtime_dir

    found = []
    for path in Path(jupyter_runtime_dir()).glob("jpserver-*.json"):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return found


def choose_transport(mode: str, get_worker: Callable[[], Worker], timeout: float) -> Transport:
    """The transport for ``mode`` (``auto``, ``local`` or ``server``).

    Raises:
        ValueError: Unknown mode.
        EmbedError: ``server`` was asked for but no parent server runs the extension.
    """
    if mode not in TRANSPORT_MODES:
        raise ValueError(f"transport must be one of {', '.join(TRANSPORT_MODES)}, got {mode!r}")
    if mode != "local":
        endpoint = find_parent_server()
        if endpoint is not None:
            return ServerTransport(endpoint, timeout=timeout)
        if mode == "server":
            raise EmbedError(
                "transport 'server' needs a kernel started by a Jupyter server that runs the "
                "jupyter_mlx_embed extension"
            )
    return LocalTransport(get_worker, timeout=timeout)
