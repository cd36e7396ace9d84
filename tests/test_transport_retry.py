"""A full queue (429 / OverloadedError) is retried by both transports, with backoff, bounded."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from jupyter_mlx_embed import OverloadedError
from jupyter_mlx_embed import transport as transport_module
from jupyter_mlx_embed.options import EmbedOptions
from jupyter_mlx_embed.standalone import ThreadedServer
from jupyter_mlx_embed.transport import LocalTransport, ServerEndpoint, ServerTransport


def _block(worker) -> threading.Event:
    gate = threading.Event()
    blocker = worker.call(lambda engine: gate.wait(30))
    while not blocker.running():
        time.sleep(0.005)
    return gate


def test_local_transport_retries_a_full_queue(make_worker) -> None:
    worker = make_worker(queue_size=1, batch_window_ms=0)
    transport = LocalTransport(lambda: worker, timeout=60)
    gate = _block(worker)
    futures = [transport.submit([f"text {i}"], EmbedOptions()) for i in range(3)]
    threading.Timer(0.5, gate.set).start()
    assert [f.result(timeout=60).vectors.shape for f in futures] == [(1, 384)] * 3


def test_retries_are_bounded(make_worker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport_module, "RETRY_ATTEMPTS", 3)
    worker = make_worker(queue_size=1, batch_window_ms=0)
    transport = LocalTransport(lambda: worker, timeout=60)
    gate = _block(worker)
    try:
        first = transport.submit(["first"], EmbedOptions())
        refused = transport.submit(["second"], EmbedOptions())
        with pytest.raises(OverloadedError):
            refused.result(timeout=30)
    finally:
        gate.set()
    assert first.result(timeout=60).vectors.shape == (1, 384)


def test_server_transport_retries_http_429(make_worker) -> None:
    worker = make_worker(queue_size=1, batch_window_ms=0)
    server = ThreadedServer.start(worker, port=0, token="retry-token")
    try:
        endpoint = ServerEndpoint(url=server.url.removesuffix("v1"), token="retry-token")
        transport = ServerTransport(endpoint, timeout=60)
        gate = _block(worker)
        with ThreadPoolExecutor(3) as pool:
            futures = [
                pool.submit(lambda i=i: transport.submit([f"t{i}"], EmbedOptions()).result())
                for i in range(3)
            ]
            time.sleep(0.5)  # all three were sent; two were refused with 429 meanwhile
            gate.set()
            assert [f.result(timeout=60).vectors.shape for f in futures] == [(1, 384)] * 3
        transport.close()
    finally:
        server.stop_soon()
