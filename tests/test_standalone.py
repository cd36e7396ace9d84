"""``jupyter-mlx-embed serve``: the same handlers in a plain Tornado app, token always required."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
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
from IPython.core.interactiveshell import InteractiveShell

from jupyter_mlx_embed.standalone import HEADER_TIMEOUT

from .servers import closed_by_server, free_port, read_response, running, send

BIN = Path(sys.executable).parent
TOKEN = "standalone-secret"


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    """URL, process and log file of a ``jupyter mlx-embed serve`` (module-wide)."""
    port = free_port()
    log = tmp_path_factory.mktemp("standalone") / "serve.log"
    argv = [str(BIN / "jupyter"), "mlx-embed", "serve", "--port", str(port), "--token", TOKEN]
    env_path = {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    os.environ.update(env_path)
    url = f"http://127.0.0.1:{port}/v1"
    with running(argv, url + "/models", {"Authorization": f"Bearer {TOKEN}"}, log) as proc:
        yield url, proc, log


@pytest.fixture(scope="module")
def server(served: tuple[str, subprocess.Popen[str], Path]) -> tuple[str, subprocess.Popen[str]]:
    return served[0], served[1]


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """Port of a server with small limits: 8 connections, 2 s body timeout, 1 MB bodies."""
    port = free_port()
    argv = [str(BIN / "jupyter-mlx-embed"), "serve", "--port", str(port), "--token", TOKEN]
    argv += ["--max-connections", "8", "--body-timeout", "2", "--max-body-bytes", "1000000"]
    log = tmp_path_factory.mktemp("limited") / "serve.log"
    url = f"http://127.0.0.1:{port}/v1/models"
    with running(argv, url, {"Authorization": f"Bearer {TOKEN}"}, log):
        yield port


def _request(url: str, token: str | None, body: dict | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers)) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


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


def _head(path: str, token: str | None, **headers: str) -> str:
    lines = [f"POST {path} HTTP/1.1", "Host: localhost"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return "\r\n".join(lines) + "\r\n\r\n"


def _rss(pid: int) -> int:
    psutil = pytest.importorskip("psutil")
    return int(psutil.Process(pid).memory_info().rss)


def test_unauthenticated_half_sent_bodies_are_never_buffered(served) -> None:
    url, proc, _ = served
    port = _port(url)
    _request(url + "/models", TOKEN)  # warm
    before = _rss(proc.pid)
    head = _head("/v1/embeddings", None, Content_Length=str(32 << 20))
    sockets = [send(port, head, b"x" * (1 << 20)) for _ in range(20)]  # 20 x 1 MiB sent
    try:
        for sock in sockets:
            status, _, body = read_response(sock)
            assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
            assert closed_by_server(sock, 5)
    finally:
        for sock in sockets:
            sock.close()
    grown = (_rss(proc.pid) - before) / 2**20
    print(f"server grew by {grown:.1f} MiB")
    assert grown < 16


def test_declared_oversized_body_is_413_before_it_is_sent(limited) -> None:
    sock = send(limited, _head("/v1/embeddings", TOKEN, Content_Length=str(32 << 20)))
    status, _, body = read_response(sock)
    assert status == 413 and json.loads(body)["error"]["type"] == "invalid_request_error"
    assert closed_by_server(sock, 5)


def test_chunked_body_is_refused_as_soon_as_it_exceeds_the_limit(limited) -> None:
    chunk = b"%x\r\n%s\r\n" % (1 << 19, b" " * (1 << 19))
    sock = send(limited, _head("/v1/embeddings", TOKEN, Transfer_Encoding="chunked"), chunk * 2)
    status, _, body = read_response(sock)
    assert status == 413 and "1000000 bytes" in json.loads(body)["error"]["message"]
    assert closed_by_server(sock, 5)


def test_stalled_body_is_cut_off_after_body_timeout(limited) -> None:
    sock = send(limited, _head("/v1/embeddings", TOKEN, Content_Length="1000"), b'{"input": ')
    started = time.monotonic()
    assert closed_by_server(sock, 10)
    assert 1.5 < time.monotonic() - started < 6


def _get_keep_alive(conn: http.client.HTTPConnection, path: str) -> int:
    conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
    response = conn.getresponse()
    response.read()
    return response.status


def test_authenticated_connections_beyond_max_connections_get_503(limited) -> None:
    kept = [http.client.HTTPConnection("127.0.0.1", limited, timeout=30) for _ in range(8)]
    try:
        assert [_get_keep_alive(conn, "/v1/models") for conn in kept] == [200] * 8
        extra = send(limited, _head("/v1/models", TOKEN).replace("POST", "GET", 1))
        status, headers, body = read_response(extra)
        error = json.loads(body)["error"]
        assert status == 503 and error["code"] == "too_many_connections"
        assert headers["connection"] == "close" and headers["retry-after"] == "1"
        assert closed_by_server(extra, 5)
    finally:
        for conn in kept:
            conn.close()
    deadline = time.monotonic() + 5
    while True:  # the closed ones free their places
        status, _ = _request(f"http://127.0.0.1:{limited}/v1/models", TOKEN)
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 200


def test_half_sent_request_lines_never_lock_out_authenticated_clients(served) -> None:
    url, _, _ = served
    port = _port(url)
    assert _request(url + "/embeddings", TOKEN, {"input": "warm up"})[0] == 200
    # 200 half-sent request lines, more than max_connections (128), held open; before each
    # round below, 50 more arrive (an attacker reconnecting). None has sent its headers.
    half_open = [send(port, "POST /v1/emb") for _ in range(200)]
    try:
        for _ in range(5):
            half_open += [send(port, "POST /v1/emb") for _ in range(50)]
            started = time.monotonic()
            status, body = _request(url + "/embeddings", TOKEN, {"input": "still served"})
            assert status == 200 and len(body["data"]) == 1
            with urllib.request.urlopen(url.removesuffix("/v1") + "/health", timeout=5) as health:
                assert health.status == 200
            assert time.monotonic() - started < 1.0
    finally:
        for sock in half_open:
            sock.close()


def test_header_deadline_closes_connections_that_never_authenticate(served) -> None:
    url, _, _ = served
    port = _port(url)
    kept = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    assert _get_keep_alive(kept, "/v1/models") == 200
    authenticated = kept.sock
    half_open = send(port, "POST /v1/emb")
    started = time.monotonic()
    assert closed_by_server(half_open, HEADER_TIMEOUT + 5)
    assert HEADER_TIMEOUT - 0.5 < time.monotonic() - started < HEADER_TIMEOUT + 3
    time.sleep(1.0)  # an authenticated connection may stay idle for longer (body_timeout)
    assert _get_keep_alive(kept, "/v1/models") == 200 and kept.sock is authenticated
    kept.close()


def test_routes_without_a_token_take_no_body(served) -> None:
    url, _, _ = served
    sock = send(_port(url), _head("/health", None, Content_Length=str(1 << 20)), b"x" * 1000)
    status, _, body = read_response(sock, timeout=5)
    assert status == 413 and json.loads(body)["error"]["type"] == "invalid_request_error"
    assert closed_by_server(sock, 5)


HUGE = "m" * (1 << 20)
ECHOED = {
    "model name": ("/embeddings", {"input": "x", "model": HUGE}, 404),
    "model path": ("/models/" + HUGE[:60000], None, 404),
    "unknown route": ("/" + HUGE[:60000], None, 404),
    "dimensions": ("/embeddings", {"input": "x", "dimensions": HUGE}, 400),
    "prompt name": ("/embeddings", {"input": "x", "prompt_name": HUGE}, 400),
}


@pytest.mark.parametrize(("path", "body", "status"), ECHOED.values(), ids=ECHOED.keys())
def test_huge_client_strings_are_not_echoed_into_answers_or_logs(
    served, path, body, status
) -> None:
    url, _, log = served
    logged = log.stat().st_size
    answered, error = _request(url + path, TOKEN, body)
    assert answered == status
    assert len(json.dumps(error)) < 2048, error["error"]["message"][:300]
    time.sleep(0.5)  # the log is line-buffered; let the lines arrive
    with log.open("rb") as out:
        out.seek(logged)
        lines = out.read().decode(errors="replace").splitlines()
    assert lines and max(len(line) for line in lines) < 2048


def test_token_never_appears_in_the_log(served) -> None:
    url, _, log = served
    leaked = "leaked-" + TOKEN
    for path, token in [
        (f"/models?token={TOKEN}", TOKEN),
        (f"/models?api_key={TOKEN}&x=1", TOKEN),
        (f"/embeddings?token={leaked}", None),
        (f"/chat/completions?token={TOKEN}", TOKEN),
    ]:
        _request(url + path, token, {"input": "x"} if "embeddings" in path else None)
    time.sleep(0.5)  # the log is line-buffered; let the last lines arrive
    text = log.read_text()
    assert "200 GET /v1/models?token=[secret]" in text  # access lines are still written
    assert "api_key=[secret]&x=1" in text
    assert TOKEN not in text


def _post_keep_alive(conn: http.client.HTTPConnection, body: dict) -> tuple[int, str, dict]:
    conn.request(
        "POST",
        "/v1/embeddings",
        json.dumps(body),
        {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    response = conn.getresponse()
    return response.status, response.getheader("Connection", ""), json.loads(response.read())


def test_sigterm_under_keep_alive_load_finishes_in_flight_refuses_new_and_exits_zero(
    tmp_path: Path,
) -> None:
    port = free_port()
    argv = [str(BIN / "jupyter-mlx-embed"), "serve", "--port", str(port), "--token", TOKEN]
    url = f"http://127.0.0.1:{port}/v1"
    with running(
        argv, url + "/models", {"Authorization": f"Bearer {TOKEN}"}, tmp_path / "log"
    ) as proc:
        idle = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        assert _post_keep_alive(idle, {"input": "warm up"})[0] == 200  # kept alive
        long = [f"paragraph {i} " + "with many words in it " * 25 for i in range(512)]
        results: dict[str, object] = {}

        def call_long() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            results["long"] = _post_keep_alive(conn, {"input": long})
            results["long_done"] = time.monotonic()

        def load(n: int) -> None:  # a keep-alive client sending requests back to back
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            answers = []
            try:
                while True:
                    answer = _post_keep_alive(conn, {"input": f"client {n} asks"})
                    answers.append(answer)
                    if answer[1] == "close":
                        break
            except OSError as exc:  # recorded for the assertion below
                answers.append(exc)
            results[f"load{n}"] = answers

        threads = [threading.Thread(target=call_long)]
        threads += [threading.Thread(target=load, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)  # the long request is in flight, the load clients are busy
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        status, connection, body = _post_keep_alive(idle, {"input": "too late"})
        assert (status, connection) == (503, "close")
        assert body["error"]["code"] == "server_shutting_down"
        for thread in threads:
            thread.join(300)
        status, connection, body = results["long"]  # type: ignore[misc]
        assert status == 200 and len(body["data"]) == 512 and connection == "close"
        for n in range(4):
            answers = results[f"load{n}"]
            assert all(isinstance(a, tuple) for a in answers), answers  # no reset mid-request
            assert {a[0] for a in answers} <= {200, 503} and answers[-1][1] == "close"
        assert proc.wait(30) == 0
        assert time.monotonic() - results["long_done"] < 10  # type: ignore[operator]


def test_info_command_reports_blas() -> None:
    out = subprocess.run(
        [str(BIN / "jupyter-mlx-embed"), "info"], capture_output=True, text=True, check=True
    )
    info = json.loads(out.stdout)
    assert info["blas"]["fast"] is True and info["state"] == "ready"


# -- %embed_serve: the kernel-side server ----------------------------------------------------


@pytest.fixture
def shell(monkeypatch: pytest.MonkeyPatch) -> Iterator[InteractiveShell]:
    import jupyter_mlx_embed as jme

    monkeypatch.setenv("JUPYTER_MLX_EMBED_TOKEN", "")  # so the magic's token is removed after
    ip = InteractiveShell.instance()
    jme.set_transport("local")
    ip.run_line_magic("load_ext", "jupyter_mlx_embed")
    yield ip
    jme.get_worker().close()


def test_embed_serve_answers_cells_of_its_own_kernel_and_clients_while_a_cell_runs(
    shell, capsys
) -> None:
    async def kernel() -> None:
        # Like ipykernel: cells run on the thread of a running event loop, blocking it.
        shell.run_line_magic("embed_serve", "--port 0")
        printed = capsys.readouterr().out
        assert os.environ["JUPYTER_MLX_EMBED_TOKEN"] not in printed
        snippet = printed[printed.index("import os") :]
        # The printed snippet, run as a later cell: the official client, in the same thread.
        snippet = snippet.replace("OpenAI(", "OpenAI(timeout=30, max_retries=0, ")
        snippet = snippet.replace("client.embeddings", "response = client.embeddings")
        shell.run_cell(snippet).raise_error()
        data = shell.user_ns.pop("response").data
        assert len(data) == 1 and len(data[0].embedding) == 384

        url = re.search(r"Serving at (\S+) ", printed).group(1)  # type: ignore[union-attr]
        answered: dict[str, float] = {}

        def outside_client() -> None:
            client = openai.OpenAI(
                base_url=url, api_key=os.environ["JUPYTER_MLX_EMBED_TOKEN"], max_retries=0
            )
            client.embeddings.create(model="all-MiniLM-L6-v2", input="while a cell runs")
            answered["at"] = time.monotonic()

        thread = threading.Thread(target=outside_client)
        shell.user_ns["answered"] = answered
        started = time.monotonic()
        thread.start()
        busy = shell.run_cell(  # a busy cell: Python work on the kernel's thread for 60 s at most
            "import time\n"
            "t0 = time.monotonic()\n"
            "while 'at' not in answered and time.monotonic() - t0 < 60:\n"
            "    sum(range(1000))\n"
        )
        busy.raise_error()
        thread.join(60)
        assert "at" in answered and answered["at"] - started < 30

    try:
        asyncio.run(kernel())
    finally:
        shell.run_line_magic("embed_serve", "--stop")


@pytest.mark.parametrize(("path", "token"), [("/v1/nothing", TOKEN), ("/v1/models", "wrong")])
def test_an_error_before_the_body_says_it_closes_the_connection(served, path, token) -> None:
    """A request refused before its body is read (401, an unknown route) ends its connection:
    the answer says so (``Connection: close``), so a keep-alive client does not send its next
    request down a closed connection (which it would see as a reset)."""
    url, _, _ = served
    conn = http.client.HTTPConnection("127.0.0.1", _port(url), timeout=30)
    try:
        for _ in range(3):
            conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
            refused = conn.getresponse()
            refused.read()
            assert refused.status in (401, 404)
            assert refused.getheader("Connection", "").lower() == "close"
            assert _get_keep_alive(conn, "/v1/models") == 200  # on a new connection
    finally:
        conn.close()
