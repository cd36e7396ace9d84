"""Prometheus metrics after real requests, read back with prometheus_client's own parser."""

from __future__ import annotations

import json

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from jupyter_mlx_embed import InvalidRequestError

pytest_plugins = ("pytest_jupyter.jupyter_server",)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_worker_metrics_count_real_requests(make_worker) -> None:
    before = _samples(generate_latest(REGISTRY).decode())
    worker = make_worker(cache=False)
    served = worker.submit(["one text", "two texts"]).result()
    worker.submit(["three"], model="tiny-bert-cls").result()
    with pytest.raises(InvalidRequestError):
        worker.submit([""])
    after = _samples(generate_latest(REGISTRY).decode())

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    model = "all-MiniLM-L6-v2"
    assert delta("jupyter_mlx_embed_requests_total", model=model, outcome="ok") == 1
    assert delta("jupyter_mlx_embed_inputs_total", model=model, outcome="ok") == 2
    assert delta("jupyter_mlx_embed_requests_total", model="tiny-bert-cls", outcome="ok") == 1
    assert delta("jupyter_mlx_embed_tokens_total", model=model) == served.prompt_tokens
    assert delta("jupyter_mlx_embed_model_loads_total", model="tiny-bert-cls", outcome="ok") == 1
    assert delta("jupyter_mlx_embed_batch_rows_count") == 2
    assert delta("jupyter_mlx_embed_batch_rows_sum") == 3
    assert delta("jupyter_mlx_embed_request_duration_seconds_count", model=model) == 1
    assert delta("jupyter_mlx_embed_queue_wait_seconds_count") == 2
    assert _value(after, "jupyter_mlx_embed_queue_depth") == 0


@pytest.fixture
def jp_server_config(model_root) -> dict:
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_mlx_embed": True}},
        "MLXEmbed": {"model_roots": [str(model_root)]},
    }


async def test_jupyters_authenticated_metrics_route_exposes_them(jp_fetch) -> None:
    before = _samples((await jp_fetch("metrics")).body.decode())
    body = json.dumps({"input": ["scraped", "twice"]})
    response = await jp_fetch("v1", "embeddings", method="POST", body=body)
    assert response.code == 200
    for bad in ("not json", json.dumps({"input": ""})):  # refused before the worker
        refused = await jp_fetch("v1", "embeddings", method="POST", body=bad, raise_error=False)
        assert refused.code == 400
    after = _samples((await jp_fetch("metrics")).body.decode())
    invalid = {"model": "unknown", "outcome": "invalid_request_error"}
    name = "jupyter_mlx_embed_requests_total"
    assert _value(after, name, **invalid) - _value(before, name, **invalid) == 2
    labels = {"model": "all-MiniLM-L6-v2", "outcome": "ok"}
    requests = "jupyter_mlx_embed_requests_total"
    assert _value(after, requests, **labels) - _value(before, requests, **labels) == 1
    inputs = "jupyter_mlx_embed_inputs_total"
    assert _value(after, inputs, **labels) - _value(before, inputs, **labels) == 2


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.mark.parametrize("metrics_auth", [True, False])
def test_standalone_serves_metrics_and_an_open_health_check(make_worker, metrics_auth) -> None:
    from jupyter_mlx_embed.config import ServingConfig
    from jupyter_mlx_embed.standalone import ThreadedServer

    worker = make_worker()
    config = ServingConfig(metrics_auth=metrics_auth)
    server = ThreadedServer.start(worker, port=0, token="metrics-token", config=config)
    root = server.url.removesuffix("/v1")
    try:
        worker.submit(["counted"]).result()
        status, body = _get(root + "/metrics", "metrics-token")
        assert status == 200
        assert _value(_samples(body.decode()), "jupyter_mlx_embed_queue_depth") == 0
        anonymous, _ = _get(root + "/metrics")
        assert anonymous == (401 if metrics_auth else 200)
        status, body = _get(root + "/health")  # no token needed, nothing private in it
        assert (status, json.loads(body)) == (200, {"status": "ready"})
    finally:
        server.stop_soon()
    worker.close()
    assert worker.health() == "failed"  # closed: a load balancer should stop sending


def test_health_is_loading_while_a_preload_runs(make_worker) -> None:
    import threading

    worker = make_worker()
    gate = threading.Event()
    blocker = worker.call(lambda engine: gate.wait(30))
    preload = worker.preload("tiny-bert-cls")
    assert worker.health() == "loading"
    gate.set()
    blocker.result(timeout=30)
    preload.result(timeout=60)
    assert worker.health() == "ready"
