"""How this process reaches an embedding worker: its own, or its Jupyter server's over HTTP.

A kernel started by a Jupyter server that runs our extension uses that server's worker (one
model in memory for every kernel, and the kernel never imports MLX). Everywhere else the
process starts its own worker. Both transports return ``concurrent.futures.Future`` objects
of :class:`~jupyter_mlx_embed.results.EmbedResult`, so callers block on them with a timeout or
await them with ``asyncio.wrap_future``; neither runs an event loop.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from . import envvars
from .config import TRANSPORT_MODES
from .errors import EmbedError, InvalidRequestError, OverloadedError, error_from_response
from .options import EmbedOptions
from .results import EmbedResult, RerankResult

if TYPE_CHECKING:
    import ssl

    from .worker import Worker

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Tries of a request refused because the worker's queue is full (HTTP 429), with
#: exponential backoff from the server's Retry-After, at most RETRY_MAX_DELAY apart.
RETRY_ATTEMPTS = 8
RETRY_MAX_DELAY = 10.0


def _backoff(attempt: int, retry_after: float) -> float:
    """Seconds before try ``attempt + 2``: Retry-After doubled each time, with jitter so that
    the clients refused together do not all come back together."""
    return min(RETRY_MAX_DELAY, max(retry_after, 0.05) * 2**attempt) * random.uniform(0.5, 1.0)


def _retrying(submit: Callable[[], Future[T]]) -> Future[T]:
    """``submit()``, tried again later (on a timer, never blocking the caller) while it is
    refused with :class:`OverloadedError`; the returned future follows the accepted one, and
    cancelling it cancels that one."""
    try:
        return submit()
    except OverloadedError as exc:
        first = exc
    outer: Future[T] = Future()

    def attempt(number: int) -> None:
        if outer.cancelled():
            return
        try:
            inner = submit()
        except OverloadedError as exc:
            if number + 1 >= RETRY_ATTEMPTS:
                outer.set_exception(exc)
            else:
                _later(_backoff(number, exc.retry_after), attempt, number + 1)
            return
        except BaseException as exc:  # noqa: BLE001 - delivered through the future
            outer.set_exception(exc)
            return
        outer.add_done_callback(lambda f: inner.cancel() if f.cancelled() else None)
        inner.add_done_callback(lambda f: _copy(f, outer))

    _later(_backoff(0, first.retry_after), attempt, 1)
    return outer


def _later(delay: float, fn: Callable[..., None], *args: Any) -> None:
    timer = threading.Timer(delay, fn, args)
    timer.daemon = True
    timer.start()


def _copy(source: Future[T], target: Future[T]) -> None:
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif source.exception() is not None:
        target.set_exception(source.exception())
    else:
        target.set_result(source.result())


class Transport(Protocol):
    """Where embedding requests go."""

    kind: str
    timeout: float

    def submit(
        self,
        inputs: Sequence[str],
        options: EmbedOptions,
        *,
        first_index: int = 0,
    ) -> Future[EmbedResult]:
        """Queue one request (``first_index``: the caller's index of ``inputs[0]``)."""
        ...

    def submit_images(
        self, images: Sequence[Any], options: EmbedOptions, *, first_index: int = 0
    ) -> Future[EmbedResult]:
        """Queue one request of pictures for an image-text model."""
        ...

    def rerank(
        self, query: str, documents: Sequence[str], options: EmbedOptions
    ) -> Future[RerankResult]:
        """Queue one rerank request (scores in the documents' order)."""
        ...

    def info(self) -> dict[str, Any]: ...

    def model_info(self, name: str | None) -> dict[str, Any]:
        """What ``GET /v1/models/{id}`` says of a model (dimensions, prompts, ...)."""
        ...

    def close(self) -> None: ...


class LocalTransport:
    """This process's own worker (started on first use)."""

    kind = "local"

    def __init__(self, get_worker: Callable[[], Worker], *, timeout: float) -> None:
        self._get_worker = get_worker
        self.timeout = timeout

    def submit(
        self,
        inputs: Sequence[str],
        options: EmbedOptions,
        *,
        first_index: int = 0,
    ) -> Future[EmbedResult]:
        worker = self._get_worker()
        return _retrying(lambda: worker.submit(inputs, options, first_index=first_index))

    def submit_images(
        self, images: Sequence[Any], options: EmbedOptions, *, first_index: int = 0
    ) -> Future[EmbedResult]:
        worker = self._get_worker()
        return _retrying(lambda: worker.submit_images(images, options, first_index=first_index))

    def rerank(
        self, query: str, documents: Sequence[str], options: EmbedOptions
    ) -> Future[RerankResult]:
        worker = self._get_worker()
        return _retrying(lambda: worker.rerank(query, documents, options))

    def info(self) -> dict[str, Any]:
        return {"transport": self.kind, **self._get_worker().info()}

    def model_info(self, name: str | None) -> dict[str, Any]:
        return self._get_worker().model_card(name)

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

    def __init__(self, endpoint: ServerEndpoint, *, timeout: float) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._ssl = _ssl_context(endpoint.url)
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="mlx-embed-http")

    def _call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        # HTTP (ssl, http.client, email) only once a server is called: a kernel's own worker
        # and every process start never pay for it.
        import ssl
        import urllib.error
        import urllib.request

        request = urllib.request.Request(
            self.endpoint.url.rstrip("/") + "/" + path,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {self.endpoint.token}",
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(
                request, timeout=self.timeout, context=self._ssl
            ) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read())
            except ValueError:
                detail = None
            raise error_from_response(exc.code, detail, exc.headers.get("Retry-After")) from None
        except OSError as exc:
            untrusted = getattr(exc, "reason", exc)
            if isinstance(untrusted, ssl.SSLCertVerificationError):
                raise EmbedError(_untrusted_message(self.endpoint.url, untrusted)) from None
            raise EmbedError(
                f"Cannot reach the Jupyter server's embedding endpoint at "
                f"{self.endpoint.url}: {exc}"
            ) from exc

    def _post(self, path: str, body: dict[str, Any], first_index: int = 0) -> Any:
        """POST ``body``, tried again while the server's queue is full (HTTP 429)."""
        for attempt in itertools.count():
            try:
                return self._call(path, body)
            except OverloadedError as exc:
                if attempt + 1 >= RETRY_ATTEMPTS:
                    raise
                time.sleep(_backoff(attempt, exc.retry_after))
            except InvalidRequestError as exc:
                if first_index:  # the server counts from this request's first item
                    exc.message += f" (in the request starting at input[{first_index}])"
                    exc.args = (exc.message,)
                raise

    def _rerank(self, query: str, documents: list[str], options: EmbedOptions) -> RerankResult:
        body = {"query": query, "documents": documents, "return_documents": False}
        reply = self._post("v1/rerank", {**body, **options.wire()})
        scores = np.empty(len(documents), dtype=np.float32)
        for item in reply["results"]:
            scores[item["index"]] = item["relevance_score"]
        return RerankResult(
            scores=scores, model=reply["model"], prompt_tokens=int(reply["usage"]["total_tokens"])
        )

    def rerank(
        self, query: str, documents: Sequence[str], options: EmbedOptions
    ) -> Future[RerankResult]:
        return self._pool.submit(self._rerank, query, list(documents), options)

    def _embed(self, inputs: list[Any], first_index: int, options: EmbedOptions) -> EmbedResult:
        body: dict[str, Any] = {"input": inputs, "encoding_format": "base64", **options.wire()}
        reply = self._post("v1/embeddings", body, first_index)
        vectors = [
            np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
            for item in sorted(reply["data"], key=lambda item: item["index"])
        ]
        return EmbedResult(
            vectors=np.stack(vectors).astype(np.float32),
            model=reply["model"],
            prompt_tokens=int(reply["usage"]["prompt_tokens"]),
        )

    def submit(
        self,
        inputs: Sequence[str],
        options: EmbedOptions,
        *,
        first_index: int = 0,
    ) -> Future[EmbedResult]:
        return self._pool.submit(self._embed, list(inputs), first_index, options)

    def _embed_images(
        self, images: list[Any], first_index: int, options: EmbedOptions
    ) -> EmbedResult:
        from .images import data_uri, encoded, image_error

        items = []
        for i, image in enumerate(images):
            try:
                items.append({"image": data_uri(encoded(image))})
            except OSError as exc:
                raise image_error(first_index + i, f"cannot read the image ({exc})") from exc
        return self._embed(items, first_index, options)

    def submit_images(
        self, images: Sequence[Any], options: EmbedOptions, *, first_index: int = 0
    ) -> Future[EmbedResult]:
        return self._pool.submit(self._embed_images, list(images), first_index, options)

    def model_info(self, name: str | None) -> dict[str, Any]:
        if name is None:
            name = str(self._call("mlx-embed/status")["default_model"])
        from urllib.parse import quote

        card: dict[str, Any] = self._call(f"v1/models/{quote(name)}")
        return card

    def info(self) -> dict[str, Any]:
        status = self._call("mlx-embed/status")
        return {"transport": self.kind, "server_url": self.endpoint.url, **status}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _ssl_context(url: str) -> ssl.SSLContext | None:
    """For an HTTPS server: the system's trusted certificates (``SSL_CERT_FILE`` included),
    plus the server's own certificate when its extension exported it to its kernels, so that
    a self-signed certificate is trusted for the server that presents it."""
    if not url.lower().startswith("https:"):
        return None
    import ssl

    context = ssl.create_default_context()
    certfile = os.environ.get(envvars.SERVER_CERTFILE)
    if certfile:
        try:
            context.load_verify_locations(cafile=certfile)
            # The server's certificate itself is the trust anchor, even if a CA issued it.
            context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        except (OSError, ssl.SSLError) as exc:
            log.warning("cannot read the Jupyter server's certificate %s: %s", certfile, exc)
    return context


def _untrusted_message(url: str, error: ssl.SSLCertVerificationError) -> str:
    return (
        f"The Jupyter server at {url} uses an HTTPS certificate that this kernel does not "
        f"trust ({error.verify_message or error.reason}). Either trust it: start Jupyter with "
        "SSL_CERT_FILE=/path/to/the/certificate.pem in its environment (its kernels inherit "
        "it), or embed with a worker in this kernel instead: "
        '%config MLXEmbed.transport = "local"'
    )


def find_parent_server() -> ServerEndpoint | None:
    """The Jupyter server that started this kernel, if it runs our extension.

    Kernels launched by a Jupyter server have ``JPY_PARENT_PID`` set to the server's pid; the
    extension puts its pid in ``JUPYTER_MLX_EMBED_SERVER_PID``, which kernels inherit. The URL
    and token come from the server's runtime file, written once it listens (so the port is current).
    """
    parent = os.environ.get(envvars.JUPYTER_PARENT_PID)
    if not parent or os.environ.get(envvars.SERVER_PID) != parent:
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
