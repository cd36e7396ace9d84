"""The server extension's routes, auth and error contract, through a real in-process Jupyter
server (pytest-jupyter, non-root base URL)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import urllib.request
import uuid
from typing import Any

import pytest
from jupyter_server.auth import Authorizer

from jupyter_mlx_embed import codec

from .servers import closed_by_server, read_response, send

pytest_plugins = ("pytest_jupyter.jupyter_server",)

GOOD = {"input": "The worker still serves after a bad request.", "model": "all-MiniLM-L6-v2"}


@pytest.fixture
def jp_server_config(model_root, request) -> dict[str, Any]:
    """The server's config; ``indirect`` parametrization adds MLXEmbed settings."""
    settings = {"model_roots": [str(model_root)], "max_body_bytes": 3_000_000}
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_mlx_embed": True}},
        "MLXEmbed": {**settings, **getattr(request, "param", {})},
    }


@pytest.fixture
def post(jp_fetch):
    async def send(body: Any, *, raw: bool = False, **kwargs: Any):
        data = body if raw else json.dumps(body)
        # A module's first request waits for the native kernels, built anew under
        # pytest-jupyter's temporary HOME (the build cache lives under it): tens of seconds
        # on a busy machine, beyond jp_fetch's 20-second default.
        kwargs.setdefault("request_timeout", 120)
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
    "jp_server_config", [{"allow_token_ids": True, "max_body_bytes": 16 << 20}], indirect=True
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
    ("bad encoding", {"input": "x", "encoding_format": "int4"}, 400, "encoding_format"),
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


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", "v1/models", {"Authorization": ""}),
        ("POST", "v1/embeddings", {"Authorization": ""}),
        ("POST", "v1/embeddings", {"Authorization": "Bearer wrong"}),
        ("POST", "v1/embeddings", {"Authorization": "", "Cookie": "username-x=y"}),
        ("GET", "mlx-embed/status", {"Authorization": "token wrong"}),
        ("POST", "v1/chat/completions", {"Authorization": ""}),
    ],
    ids=["get-no-token", "post-no-token", "wrong-token", "bogus-cookie", "status", "unknown"],
)
async def test_missing_or_wrong_token_is_401_invalid_api_key(jp_fetch, method, path, headers):
    body = json.dumps(GOOD) if method == "POST" else None
    response = await jp_fetch(
        *path.split("/"), method=method, body=body, headers=headers, raise_error=False
    )
    assert response.code == 401  # not Jupyter's 403 "'_xsrf' argument missing from POST"
    error = _error(response)
    assert (error["type"], error["code"]) == ("authentication_error", "invalid_api_key")
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_bearer_token_is_accepted(post, jp_serverapp) -> None:
    response = await post(
        GOOD, headers={"Authorization": f"Bearer {jp_serverapp.identity_provider.token}"}
    )
    assert response.code == 200


async def test_login_cookie_needs_xsrf_like_the_rest_of_jupyter(jp_fetch, post) -> None:
    login = await jp_fetch("mlx-embed", "status")  # token-authenticated: sets the login cookie
    cookie = login.headers["Set-Cookie"].split(";", 1)[0]
    without = await post(GOOD, headers={"Authorization": "", "Cookie": cookie})
    assert without.code == 403
    assert _error(without)["type"] == "permission_error"
    xsrf = "0123456789abcdef"
    browser = {"Authorization": "", "Cookie": f"{cookie}; _xsrf={xsrf}", "X-XSRFToken": xsrf}
    assert (await post(GOOD, headers=browser)).code == 200


class DenyEmbeddingsAuthorizer(Authorizer):
    """Lets a user do everything in Jupyter except use the embedding routes."""

    def is_authorized(self, handler, user, action, resource) -> bool:
        return resource != "mlx_embed"


@pytest.mark.parametrize(
    "jp_server_config",
    [
        {
            "ServerApp": {
                "jpserver_extensions": {"jupyter_mlx_embed": True},
                "authorizer_class": f"{__name__}.DenyEmbeddingsAuthorizer",
            }
        }
    ],
)
async def test_authenticated_user_without_permission_is_403(post) -> None:
    response = await post(GOOD)
    assert response.code == 403
    assert _error(response)["type"] == "permission_error"


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
@pytest.mark.parametrize("path", ["v1/chat/completions", "v1/embeddings/extra", "v1"])
async def test_unknown_v1_route_is_an_openai_404(jp_fetch, method, path) -> None:
    body = "{}" if method == "POST" else None
    response = await jp_fetch(*path.split("/"), method=method, body=body, raise_error=False)
    assert response.code == 404
    assert response.headers["Content-Type"].startswith("application/json")
    error = _error(response)
    assert (error["type"], error["code"]) == ("invalid_request_error", "not_found")


async def test_models_list_and_retrieve(jp_fetch) -> None:
    listed = json.loads((await jp_fetch("v1", "models")).body)
    assert listed["object"] == "list"
    ids = {m["id"] for m in listed["data"]}
    assert {"all-MiniLM-L6-v2", "tiny-bert-cls", "tiny-qwen3-last"} <= ids
    assert all(m["object"] == "model" for m in listed["data"])
    one = json.loads((await jp_fetch("v1", "models", "tiny-bert-cls")).body)
    openai_fields = {k: one[k] for k in ("id", "object", "created", "owned_by")}
    assert openai_fields == {
        "id": "tiny-bert-cls",
        "object": "model",
        "created": 0,
        "owned_by": "root",
    }
    missing = await jp_fetch("v1", "models", "no-such-model", raise_error=False)
    assert missing.code == 404
    assert _error(missing)["code"] == "model_not_found"


async def test_a_huge_model_name_is_not_echoed_into_the_answer_or_the_log(post, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    response = await post({"input": "x", "model": "m" * (1 << 20)})
    assert response.code == 404 and _error(response)["code"] == "model_not_found"
    assert len(response.body) < 2048
    assert "(1048576 characters)" in _error(response)["message"]
    assert caplog.records and max(len(r.getMessage()) for r in caplog.records) < 2048


async def test_a_huge_model_id_in_the_path_is_not_echoed_into_the_answer(jp_fetch) -> None:
    response = await jp_fetch("v1", "models", "m" * 60_000, raise_error=False)
    assert response.code == 404 and _error(response)["code"] == "model_not_found"
    assert len(response.body) < 2048


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


async def test_http_clients_inside_the_server_get_the_inprocess_endpoint(
    jp_serverapp, jp_base_url, jp_http_port
) -> None:
    """A client inside the server process that blocks the server's event loop while it
    waits (jupyter-ai's /ask through an OpenAI provider) is answered by the in-process
    endpoint; the server's own routes cannot answer it while that loop waits."""
    import jupyter_mlx_embed as jme

    texts = ["asked from inside the Jupyter server"]
    with jme.openai_client(max_retries=0) as client:  # called on the loop's thread
        assert f":{jp_http_port}/" not in str(client.base_url)
        answer = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts)
    assert len(answer.data[0].embedding) == 384
    main = f"http://127.0.0.1:{jp_http_port}{jp_base_url}v1/embeddings"
    request = urllib.request.Request(
        main,
        data=json.dumps({"input": texts}).encode(),
        headers={"Authorization": f"Bearer {jp_serverapp.identity_provider.token}"},
    )
    with pytest.raises(OSError, match="timed out"):  # the deadlock the endpoint avoids
        urllib.request.urlopen(request, timeout=1)


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


# -- bodies: authentication first, limits while reading ---------------------------------


@pytest.fixture
def port(jp_fetch, jp_http_port) -> int:
    """The in-process server's port, listening (jp_fetch starts the HTTP server)."""
    return int(jp_http_port)


def _head(base_url: str, path: str, token: str | None, **headers: str) -> str:
    lines = [f"POST {base_url}{path} HTTP/1.1", "Host: localhost"]
    if token is not None:
        lines.append(f"Authorization: token {token}")
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return "\r\n".join(lines) + "\r\n\r\n"


async def test_unauthenticated_body_is_never_read(port, jp_base_url, jp_serverapp) -> None:
    head = _head(jp_base_url, "v1/embeddings", None, Content_Length=str(32 << 20))
    sock = await asyncio.to_thread(send, port, head, b"x" * 65536)
    status, _, body = await asyncio.to_thread(read_response, sock)
    assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
    assert await asyncio.to_thread(closed_by_server, sock, 5)  # the rest is never read


async def test_declared_oversized_body_is_413_before_it_is_sent(
    port, jp_base_url, jp_serverapp
) -> None:
    token = jp_serverapp.identity_provider.token
    head = _head(jp_base_url, "v1/embeddings", token, Content_Length=str(32 << 20))
    sock = await asyncio.to_thread(send, port, head)  # headers only
    status, _, body = await asyncio.to_thread(read_response, sock)
    assert status == 413 and json.loads(body)["error"]["code"] == "payload_too_large"
    assert await asyncio.to_thread(closed_by_server, sock, 5)


async def test_chunked_body_is_refused_as_soon_as_it_exceeds_the_limit(
    port, jp_base_url, jp_serverapp, post
) -> None:
    token = jp_serverapp.identity_provider.token
    head = _head(jp_base_url, "v1/embeddings", token, Transfer_Encoding="chunked")
    chunk = b"%x\r\n%s\r\n" % (1 << 20, b" " * (1 << 20))
    sock = await asyncio.to_thread(send, port, head, chunk * 3)  # 3 MiB > 3 MB, no end
    status, _, body = await asyncio.to_thread(read_response, sock)
    assert status == 413 and "3000000 bytes" in json.loads(body)["error"]["message"]
    assert await asyncio.to_thread(closed_by_server, sock, 5)
    assert (await post(GOOD)).code == 200


@pytest.mark.parametrize(
    "jp_server_config",
    [
        {
            "ServerApp": {"jpserver_extensions": {"jupyter_mlx_embed": True}},
            "MLXEmbed": {"body_timeout": 0.5},
        }
    ],
)
async def test_stalled_body_is_cut_off_after_body_timeout(
    port, jp_base_url, jp_serverapp, post
) -> None:
    token = jp_serverapp.identity_provider.token
    head = _head(jp_base_url, "v1/embeddings", token, Content_Length="1000")
    sock = await asyncio.to_thread(send, port, head, b'{"input": ')
    started = asyncio.get_running_loop().time()
    assert await asyncio.to_thread(closed_by_server, sock, 10)
    assert asyncio.get_running_loop().time() - started < 5
    assert (await post(GOOD)).code == 200


# -- secrets in logs -----------------------------------------------------------------------


async def test_token_in_the_url_never_reaches_the_logs(jp_fetch, jp_serverapp, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    token = jp_serverapp.identity_provider.token
    query = {"headers": {"Authorization": ""}, "params": {"token": token}, "raise_error": False}
    statuses = [
        (await jp_fetch("v1", "embeddings", method="POST", body=json.dumps(GOOD), **query)).code,
        (await jp_fetch("v1", "embeddings", method="POST", body="{", **query)).code,
        (
            await jp_fetch(
                "v1",
                "embeddings",
                method="POST",
                body=json.dumps({"input": "x", "model": "broken-weights"}),
                **query,
            )
        ).code,
        (await jp_fetch("v1", "nothing-here", **query)).code,
        (await jp_fetch("v1", "models", **query)).code,
    ]
    assert statuses == [200, 400, 500, 404, 200]
    assert "Uncaught exception POST" in caplog.text  # the 500 was logged, with the URI
    assert "token=[secret]" in caplog.text
    assert token not in caplog.text


# -- the event loop stays free -----------------------------------------------------------

#: Seconds the event loop may stall while a 15 MB request is decoded and answered.
MAX_LOOP_STALL = 0.03


@pytest.mark.parametrize(
    # One compute thread: with one per core (the default) the worker's forward of the
    # large response's 2,048 texts keeps both of a 2-core host's cores busy, and the loop
    # then waits for a core rather than for this layer (1 in 3 attempts over 30 ms).
    "jp_server_config",
    [{"allow_token_ids": True, "max_body_bytes": 16 << 20, "cpu_streams": 1}],
    indirect=True,
)
@pytest.mark.parametrize("kind", ["long-texts", "token-ids", "large-response"])
async def test_a_15_mb_request_never_stalls_the_servers_event_loop(
    jp_serverapp, port, jp_base_url, kind
) -> None:
    # Every kernel's websocket shares this loop: decoding, validating and answering a large
    # request must happen off it, in pieces short enough for the GIL to change hands. The
    # tiny model and one compute thread keep the worker's share of the machine small, so
    # that the figure is ours.
    url = f"http://127.0.0.1:{port}{jp_base_url}v1/embeddings"
    token = jp_serverapp.identity_provider.token
    loop = asyncio.get_running_loop()

    def body() -> bytes:
        tag = uuid.uuid4().hex  # inputs no cache has seen
        if kind == "long-texts":  # 2,048 texts of 7 KB, one token each for the tiny model
            # (many tokens per text add the engine's tokenizer time, not this layer's)
            inputs: list[Any] = [f"{tag}{i}" + "x" * 7000 for i in range(2048)]
            request: dict[str, Any] = {"input": inputs, "model": "tiny-bert-cls"}
        elif kind == "token-ids":  # 2,048 rows of 1,800 ids
            salt = int(tag[:4], 16)
            inputs = [[6 + (i * j + salt) % 40 for j in range(1800)] for i in range(2048)]
            request = {"input": inputs, "model": "tiny-bert-cls"}
        else:  # 2,048 short texts and 15 MB of JSON whitespace: a 17 MB answer of floats
            texts = [json.dumps(f"text {i} {tag}") for i in range(2048)]
            padded = ("," + " " * 7300).join(texts)
            return f'{{"input": [{padded}], "encoding_format": "float"}}'.encode()
        return json.dumps({**request, "encoding_format": "float"}).encode()

    def call(data: bytes) -> bytes:
        headers = {"Authorization": f"token {token}", "Content-Type": "application/json"}
        with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=600) as r:
            return r.read()

    async def worst_stall(data: bytes) -> float:
        gaps: list[float] = []

        async def tick() -> None:
            last = loop.time()
            while True:
                await asyncio.sleep(0.005)
                now = loop.time()
                gaps.append(now - last - 0.005)
                last = now

        ticker = asyncio.ensure_future(tick())
        try:
            answer = await asyncio.to_thread(call, data)
        finally:
            ticker.cancel()
        assert len(json.loads(answer)["data"]) == 2048
        print(
            f"{kind}: {len(data) / 1e6:.1f} MB in, {len(answer) / 1e6:.1f} MB out, "
            f"{len(gaps)} ticks, worst loop stall {max(gaps) * 1000:.1f} ms"
        )
        return max(gaps)

    # Best of five: a busy machine (other processes, the worker's threads, a garbage
    # collection of the whole process: ~0.2 s here) adds stalls of its own now and then;
    # work done on the loop, or a long C call holding the GIL, would show in every attempt.
    # On 2 cores the best attempt stalls 6-11 ms when nothing else runs, 15-28 ms with other
    # processes busy on both cores (the GIL's 5 ms switch interval and garbage collections of
    # the young token-id rows included); decoding the token ids in one msgspec call stalls it
    # ~40 ms, in one orjson call ~60 ms, encoding the answer in one json.dumps ~0.3 s.
    stalls = []
    for _ in range(5):
        data = await asyncio.to_thread(body)
        assert len(data) > 14_000_000
        stalls.append(await worst_stall(data))
        if stalls[-1] < MAX_LOOP_STALL:
            break
    assert min(stalls) < MAX_LOOP_STALL, f"the event loop stalled for {min(stalls) * 1000:.0f} ms"


# -- JSON in pieces --------------------------------------------------------------------------

JSON_CASES = [
    '{"input": ["a", "b"], "model": "m"}',
    '  {"input" : [ [1, 2 ,3], [ 4 ] , [-5, 6e2, 7.5] ], "x": {"y": [true, false, null]}} ',
    '{"input": "\\u00e9\\n\\"q\\"", "k": {}, "l": [], "d": {"a": 1, "a": 2}}',
    '[1, 2, 3, "x", [1, [2, [3]]], {"a": [1, 2]}]',
    '"just a string"',
    "12345",
]
BAD_JSON = [
    '{"input": [1, 2,]}',
    '{"input": [1,, 2]}',
    '{"input": [1 2]}',
    '{"input": [01]}',
    '{"input": [1, NaN]}',
    '{"input": Infinity}',
    '{"input": ["a"] "b"}',
    '{"input" ["a"]}',
    "{input: 1}",
    '{"a": 1} x',
    '{"a": [1, 2}',
    "[",
    "",
]


def test_no_single_json_call_decodes_more_than_a_piece_of_a_large_body(monkeypatch) -> None:
    spans: list[int] = []

    class Recording(json.JSONDecoder):
        def raw_decode(self, s: str, idx: int = 0) -> tuple[Any, int]:
            value, end = super().raw_decode(s, idx)
            spans.append(end - idx)
            return value, end

    monkeypatch.setattr(codec, "_DECODER", Recording(parse_constant=codec._reject_constant))
    rows = [[(i * j) % 30000 for j in range(1800)] for i in range(2048)]
    texts = ["word " * 1400 for _ in range(2048)]
    for request in ({"input": rows}, {"input": texts}, {"input": [x for r in rows for x in r]}):
        text = json.dumps(request)
        spans.clear()
        assert codec.parse_large_json_body(text.encode()) == request
        assert max(spans) <= 64 * 1024 + 2, (len(text), max(spans))


@pytest.mark.parametrize("text", JSON_CASES)
def test_json_in_pieces_decodes_like_json_loads(text: str, monkeypatch) -> None:
    monkeypatch.setattr(codec, "_JSON_PIECE_CHARS", 0)  # walk every array and object
    assert codec.decode_json_in_pieces(text) == json.loads(text)
    rows = {"input": [[j * i for j in range(300)] for i in range(50)], "t": ["é" * 9] * 50}
    big = json.dumps(rows)
    assert codec.decode_json_in_pieces(big) == rows


@pytest.mark.parametrize("text", BAD_JSON)
def test_json_in_pieces_refuses_what_json_loads_refuses(text: str, monkeypatch) -> None:
    monkeypatch.setattr(codec, "_JSON_PIECE_CHARS", 0)
    with pytest.raises(ValueError):
        json.loads(text, parse_constant=codec._reject_constant)
    with pytest.raises(ValueError):
        codec.decode_json_in_pieces(text)


def test_json_in_pieces_encodes_like_json_dumps(monkeypatch) -> None:
    response = {"object": "list", "data": [{"index": i, "e": [0.5, -1e-7]} for i in range(3)]}
    assert codec.encode_json_in_pieces(response) == [json.dumps(response).encode()]
    assert codec.encode_json_in_pieces({"data": []}) == [b'{"data": []}']
    assert codec.encode_json_in_pieces([1, "é", {}]) == [json.dumps([1, "é", {}]).encode()]
    monkeypatch.setattr(codec, "PIECE_BYTES", 100)
    pieces = codec.encode_json_in_pieces(response)
    assert b"".join(pieces) == json.dumps(response).encode()
    assert len(pieces) > 1
    assert all(len(piece) < 100 + 40 for piece in pieces)  # a piece ends after one item
