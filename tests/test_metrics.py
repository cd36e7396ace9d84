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
    invalid = {"model": "unknown", "outcome": "invalid_request_error"}
    assert delta("jupyter_mlx_embed_requests_total", **invalid) == 1
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
    after = _samples((await jp_fetch("metrics")).body.decode())
    labels = {"model": "all-MiniLM-L6-v2", "outcome": "ok"}
    requests = "jupyter_mlx_embed_requests_total"
    assert _value(after, requests, **labels) - _value(before, requests, **labels) == 1
    inputs = "jupyter_mlx_embed_inputs_total"
    assert _value(after, inputs, **labels) - _value(before, inputs, **labels) == 2
