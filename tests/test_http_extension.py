"""The server extension's routes, auth and error contract, through a real in-process Jupyter
server (pytest-jupyter, non-root base URL)."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest

pytest_plugins = ("pytest_jupyter.jupyter_server",)

GOOD = {"input": "The worker still serves after a bad request.", "model": "all-MiniLM-L6-v2"}


@pytest.fixture
def jp_server_config(model_root) -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_mlx_embed": True}},
        "MLXEmbed": {"model_roots": [str(model_root)], "max_body_bytes": 3_000_000},
    }


@pytest.fixture
def post(jp_fetch):
    async def send(body: Any, *, raw: bool = False, **kwargs: Any):
        data = body if raw else json.dumps(body)
        return await jp_fetch(
            "v1", "embeddings", method="POST", body=data, raise_error=False, **kwargs
        )

    return send


def _error(response) -> dict[str, Any]:
    body = json.loads(response.body)
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in body["error"]["message"]
    return body["error"]


async def test_float_embeddings_response_shape(post) -> None:
    response = await post({"input": ["first text", "second text"], "encoding_format": "float"})
    assert response.code == 200
    body = json.loads(response.body)
    assert body["object"] == "list" and body["model"] == "all-MiniLM-L6-v2"
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert all(d["object"] == "embedding" and len(d["embedding"]) == 384 for d in body["data"])
    assert body["usage"] == {"prompt_tokens": 8, "total_tokens": 8}


async def test_base64_roundtrip_matches_float(post) -> None:
    import base64

    import numpy as np

    as_float = json.loads((await post({"input": "same text"})).body)["data"][0]["embedding"]
    b64 = json.loads((await post({"input": "same text", "encoding_format": "base64"})).body)
    decoded = np.frombuffer(base64.b64decode(b64["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_array_equal(decoded, np.asarray(as_float, dtype=np.float32))


async def test_token_ids_are_refused_by_default_with_the_fix(post) -> None:
    # LangChain's OpenAIEmbeddings sends tiktoken ids; read as BERT ids they would silently
    # give vectors unrelated to the text ("hello world" -> cos 0.17), so they are refused.
    response = await post({"input": [[15339, 1917]]})
    assert response.code == 400
    error = _error(response)
    assert error["code"] == "token_ids_not_accepted" and error["param"] == "input"
    assert "check_embedding_ctx_length=False" in error["message"]


@pytest.mark.parametrize(
    "jp_server_config",
    [
        {
            "ServerApp": {"jpserver_extensions": {"jupyter_mlx_embed": True}},
            "MLXEmbed": {"allow_token_ids": True},
        }
    ],
)
async def test_token_id_inputs_when_allowed(post) -> None:
    one = json.loads((await post({"input": [7592, 2088]})).body)
    many = json.loads((await post({"input": [[7592, 2088], [2088]]})).body)
    assert one["data"][0]["embedding"] == many["data"][0]["embedding"]
    assert many["usage"]["prompt_tokens"] == 4 + 3


async def test_dimensions_and_user(post) -> None:
    body = json.loads((await post({"input": "x y", "dimensions": 12, "user": "me"})).body)
    assert len(body["data"][0]["embedding"]) == 12


async def test_unknown_fields_are_ignored(post) -> None:
    assert (await post({"input": "x", "input_type": "query"})).code == 200


MALFORMED: list[tuple[str, Any, int, str | None]] = [
    ("empty body", b"", 400, None),
    ("blank body", b"  \n", 400, None),
    ("truncated json", b'{"input": "x"', 400, None),
    ("not json", b"input=x", 400, None),
    ("invalid utf-8", b'{"input": "\xff\xfe"}', 400, None),
    ("nan constant", b'{"input": "x", "dimensions": NaN}', 400, None),
    ("deep nesting", b"[" * 200_000 + b"]" * 200_000, 400, None),
    ("array body", [1, 2], 400, None),
    ("string body", "input", 400, None),
    ("null body", None, 400, None),
    ("missing input", {}, 400, "input"),
    ("null input", {"input": None}, 400, "input"),
    ("empty string", {"input": ""}, 400, "input"),
    ("empty array", {"input": []}, 400, "input"),
    ("empty string item", {"input": ["a", ""]}, 400, "input"),
    ("number input", {"input": 42}, 400, "input"),
    ("bool input", {"input": True}, 400, "input"),
    ("object input", {"input": {"text": "x"}}, 400, "input"),
    ("mixed str int", {"input": ["a", 1]}, 400, "input"),
    ("null item", {"input": ["a", None]}, 400, "input"),
    ("empty token row", {"input": [[]]}, 400, "input"),
    ("second row empty", {"input": [[1, 2], []]}, 400, "input"),
    ("string in tokens", {"input": [[1, "a"]]}, 400, "input"),
    ("float token", {"input": [[1.5]]}, 400, "input"),
    ("negative token", {"input": [-1]}, 400, "input"),
    ("negative in row", {"input": [[5, -5]]}, 400, "input"),
    ("row then string", {"input": [[1, 2], "a"]}, 400, "input"),
    ("bool tokens", {"input": [True, False]}, 400, "input"),
    ("float list", {"input": [1e3, 2.0]}, 400, "input"),
    ("triple nesting", {"input": [[[1]]]}, 400, "input"),
    ("too many inputs", {"input": ["x"] * 2049}, 400, "input"),
    ("token beyond vocab", {"input": [[30522]]}, 400, "input"),
    ("huge token", {"input": [[10**30]]}, 400, "input"),
    ("numeric model", {"input": "x", "model": 123}, 400, "model"),
    ("empty model", {"input": "x", "model": ""}, 400, "model"),
    ("unknown model", {"input": "x", "model": "nope"}, 404, "model"),
    ("traversal model", {"input": "x", "model": "../../etc/passwd"}, 404, "model"),
    ("absolute path model", {"input": "x", "model": "/etc"}, 404, "model"),
    ("chat model", {"input": "x", "model": "chat-llama"}, 400, "model"),
    ("unsupported arch", {"input": "x", "model": "odd-type"}, 400, "model"),
    ("bad encoding", {"input": "x", "encoding_format": "int8"}, 400, "encoding_format"),
    ("numeric encoding", {"input": "x", "encoding_format": 1}, 400, "encoding_format"),
    ("zero dimensions", {"input": "x", "dimensions": 0}, 400, "dimensions"),
    ("negative dimensions", {"input": "x", "dimensions": -1}, 400, "dimensions"),
    ("string dimensions", {"input": "x", "dimensions": "8"}, 400, "dimensions"),
    ("float dimensions", {"input": "x", "dimensions": 1.5}, 400, "dimensions"),
    ("bool dimensions", {"input": "x", "dimensions": True}, 400, "dimensions"),
    ("too many dimensions", {"input": "x", "dimensions": 385}, 400, "dimensions"),
    ("numeric user", {"input": "x", "user": 5}, 400, "user"),
    ("too many tokens", {"input": ["word " * 300] * 1300}, 400, "input"),
    ("lone surrogate", b'{"input": ["fine", "\\ud800 broken"]}', 400, "input"),
    ("body too large", {"input": ["x" * 1000] * 2048 * 2}, 413, None),
]


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [pytest.param(body, status, param, id=name) for name, body, status, param in MALFORMED],
)
async def test_malformed_request_gets_openai_error_then_good_request_works(
    post, body, status, param
) -> None:
    raw = isinstance(body, bytes)
    response = await post(body, raw=raw)
    assert response.code == status
    error = _error(response)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    if status == 404:
        assert error["code"] == "model_not_found"
    good = await post(GOOD)
    assert good.code == 200
    assert len(json.loads(good.body)["data"][0]["embedding"]) == 384


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
async def test_wrong_method_is_405(jp_fetch, method) -> None:
    body = "{}" if method in ("PUT", "PATCH") else None
    response = await jp_fetch(
        "v1",
        "embeddings",
        method=method,
        body=body,
        raise_error=False,
        allow_nonstandard_methods=True,
    )
    assert response.code == 405
    assert _error(response)["type"] == "invalid_request_error"


async def test_missing_token_is_refused(jp_fetch) -> None:
    response = await jp_fetch("v1", "models", headers={"Authorization": ""}, raise_error=False)
    assert response.code in (401, 403)
    assert _error(response)["type"] in ("authentication_error", "permission_error")


async def test_wrong_token_is_refused(post) -> None:
    response = await post(GOOD, headers={"Authorization": "Bearer wrong"})
    assert response.code in (401, 403)
    _error(response)


async def test_bearer_token_is_accepted(post, jp_serverapp) -> None:
    response = await post(
        GOOD, headers={"Authorization": f"Bearer {jp_serverapp.identity_provider.token}"}
    )
    assert response.code == 200


async def test_cookie_without_xsrf_is_refused(post) -> None:
    response = await post(GOOD, headers={"Authorization": "", "Cookie": "username-x=y"})
    assert response.code == 403


async def test_models_list_and_retrieve(jp_fetch) -> None:
    listed = json.loads((await jp_fetch("v1", "models")).body)
    assert listed["object"] == "list"
    ids = {m["id"] for m in listed["data"]}
    assert {"all-MiniLM-L6-v2", "tiny-bert-cls", "tiny-qwen3-last"} <= ids
    assert all(m["object"] == "model" for m in listed["data"])
    one = json.loads((await jp_fetch("v1", "models", "tiny-bert-cls")).body)
    assert one == {"id": "tiny-bert-cls", "object": "model", "created": 0, "owned_by": "root"}
    missing = await jp_fetch("v1", "models", "no-such-model", raise_error=False)
    assert missing.code == 404
    assert _error(missing)["code"] == "model_not_found"


async def test_status_route_reports_worker_state(jp_fetch, post) -> None:
    await post(GOOD)
    status = json.loads((await jp_fetch("mlx-embed", "status")).body)
    assert status["state"] == "ready"
    assert status["loaded_models"] == ["all-MiniLM-L6-v2"]
    assert status["requests"] >= 1 and status["tokens"] > 0
    assert status["blas"]["fast"] is True
    assert status["queue_depth"] == 0


async def test_model_load_failure_is_500_without_traceback(post) -> None:
    response = await post({"input": "x", "model": "broken-weights"})
    assert response.code == 500
    error = _error(response)
    assert error["type"] == "server_error" and error["code"] == "model_load_failed"
    assert (await post(GOOD)).code == 200


def _block_worker(jp_serverapp) -> threading.Event:
    worker = jp_serverapp.web_app.settings["mlx_embed_worker"]
    gate = threading.Event()
    blocker = worker.call(lambda engine: gate.wait(30))
    while not blocker.running():
        threading.Event().wait(0.005)
    return gate


@pytest.mark.parametrize(
    "jp_server_config",
    [
        {
            "ServerApp": {"jpserver_extensions": {"jupyter_mlx_embed": True}},
            "MLXEmbed": {"queue_size": 1, "batch_window_ms": 0.0},
        }
    ],
)
async def test_full_queue_is_429_with_retry_after(post, jp_serverapp) -> None:
    gate = _block_worker(jp_serverapp)
    first = asyncio.ensure_future(post(GOOD))
    await asyncio.sleep(0.2)  # the first request is queued behind the blocker
    second = await post(GOOD)
    assert second.code == 429
    assert int(second.headers["Retry-After"]) >= 1
    assert _error(second)["type"] == "rate_limit_error"
    gate.set()
    assert (await first).code == 200


async def test_client_disconnect_leaves_no_work_behind(
    post, jp_serverapp, jp_http_port, jp_base_url
) -> None:
    worker = jp_serverapp.web_app.settings["mlx_embed_worker"]
    await post(GOOD)
    inputs_before = worker.stats.inputs
    gate = _block_worker(jp_serverapp)
    token = jp_serverapp.identity_provider.token
    body = json.dumps({"input": ["abandoned"] * 5}).encode()
    _, writer = await asyncio.open_connection("127.0.0.1", jp_http_port)
    writer.write(
        f"POST {jp_base_url}v1/embeddings HTTP/1.1\r\nHost: localhost\r\n"
        f"Authorization: token {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    await asyncio.sleep(0.3)  # queued behind the blocker
    writer.close()
    await asyncio.sleep(0.3)  # the server notices the closed connection
    gate.set()
    good = await post(GOOD)
    assert good.code == 200
    assert worker.stats.inputs == inputs_before + 1  # the abandoned request never ran
    assert worker.stats.requests_failed == 0


async def test_embed_in_the_server_process_uses_the_extensions_worker(jp_serverapp) -> None:
    import jupyter_mlx_embed as jme

    worker = jp_serverapp.web_app.settings["mlx_embed_worker"]
    assert jme.get_worker() is worker  # one owner: no second worker is started
    served = worker.stats.inputs
    vector = await jme.aembed("embedded by another extension in the server process")
    assert vector.shape == (384,) and worker.stats.inputs == served + 1


async def test_stopping_the_extension_does_not_block_the_event_loop(jp_serverapp) -> None:
    (app,) = jp_serverapp.extension_manager.extension_apps["jupyter_mlx_embed"]
    gate = _block_worker(jp_serverapp)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.ensure_future(tick())
    stopping = asyncio.ensure_future(app.stop_extension())
    await asyncio.sleep(0.3)  # the worker is still draining: the loop keeps running
    assert not stopping.done() and ticks >= 10
    gate.set()
    await stopping
    ticker.cancel()
    assert not app.worker.alive
