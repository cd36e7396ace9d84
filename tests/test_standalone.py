"""``jupyter-mlx-embed serve``: the same handlers in a plain Tornado app, token always required."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest

from .servers import free_port, running

BIN = Path(sys.executable).parent
TOKEN = "standalone-secret"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    log = tmp_path_factory.mktemp("standalone") / "serve.log"
    argv = [str(BIN / "jupyter"), "mlx-embed", "serve", "--port", str(port), "--token", TOKEN]
    env_path = {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    os.environ.update(env_path)
    url = f"http://127.0.0.1:{port}/v1"
    with running(argv, url + "/models", {"Authorization": f"Bearer {TOKEN}"}, log) as proc:
        yield url, proc


def _request(url: str, token: str | None, body: dict | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers)) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize("token", [None, "wrong"])
def test_token_is_required(server, token) -> None:
    url, _ = server
    status, body = _request(url + "/embeddings", token, {"input": "x"})
    assert status == 401
    assert body["error"]["code"] == "invalid_api_key"


def test_openai_client_works(server, corpus, reference) -> None:
    url, _ = server
    client = openai.OpenAI(base_url=url, api_key=TOKEN, max_retries=0)
    response = client.embeddings.create(model="all-MiniLM-L6-v2", input=corpus[:5])
    vectors = np.array([d.embedding for d in response.data], dtype=np.float32)
    assert np.sum(vectors * reference["embeddings"][:5], axis=1).min() >= 0.9999


def test_unknown_route_is_404_in_openai_shape(server) -> None:
    url, _ = server
    status, body = _request(url + "/chat/completions", TOKEN, {"messages": []})
    assert status == 404
    assert body["error"]["type"] == "invalid_request_error"


def test_same_validation_as_the_extension(server) -> None:
    url, _ = server
    status, body = _request(url + "/embeddings", TOKEN, {"input": [[1, "x"]]})
    assert status == 400 and body["error"]["param"] == "input"


def test_generated_token_is_printed_and_loopback_is_default(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "JUPYTER_MLX_EMBED_TOKEN"}
    with subprocess.Popen(
        [str(BIN / "jupyter-mlx-embed"), "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    ) as proc:
        first = proc.stdout.readline() if proc.stdout else ""
        token = first.strip().rsplit(" ", 1)[-1]
        assert first.startswith("API key") and len(token) >= 32
        second = proc.stdout.readline() if proc.stdout else ""
        assert f"http://127.0.0.1:{port}/v1" in second
        status, _ = _request(f"http://127.0.0.1:{port}/v1/models", token)
        assert status == 200
        proc.terminate()
        assert proc.wait(30) == 0


def test_sigterm_finishes_in_flight_request_and_exits_zero(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    argv = [str(BIN / "jupyter-mlx-embed"), "serve", "--port", str(port), "--token", TOKEN]
    with running(
        argv, url + "/models", {"Authorization": f"Bearer {TOKEN}"}, tmp_path / "log"
    ) as proc:
        texts = [f"paragraph {i} " + "with many words in it " * 20 for i in range(64)]
        result: dict[str, object] = {}

        def call() -> None:
            result["response"] = _request(url + "/embeddings", TOKEN, {"input": texts})

        thread = threading.Thread(target=call)
        thread.start()
        time.sleep(0.5)  # the request is in flight (model loading or computing)
        proc.send_signal(signal.SIGTERM)
        thread.join(120)
        status, body = result["response"]  # type: ignore[misc]
        assert status == 200 and len(body["data"]) == 64
        assert proc.wait(60) == 0


def test_info_command_reports_blas() -> None:
    out = subprocess.run(
        [str(BIN / "jupyter-mlx-embed"), "info"], capture_output=True, text=True, check=True
    )
    info = json.loads(out.stdout)
    assert info["blas"]["fast"] is True and info["state"] == "ready"
