"""The official ``openai`` client and many concurrent clients against a real ``jupyter server``
subprocess with the extension enabled (as a user would run it)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import openai
import pytest

from .servers import free_port, jupyter_server_argv, running

TOKEN = "test-token-123"
BASE = "/jme/"


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, model_root: Path
) -> Iterator[tuple[str, Path]]:
    """URL and log file of a running ``jupyter server`` (module-wide; its own process owns
    MLX), logging at debug level (every request)."""
    port = free_port()
    root = tmp_path_factory.mktemp("root")
    argv = jupyter_server_argv(
        port,
        TOKEN,
        BASE,
        root,
        f"--MLXEmbed.model_roots={model_root}",
        "--MLXEmbed.token_budget=4096",
        "--MLXEmbed.batch_window_ms=5",
        "--ServerApp.log_level=DEBUG",
    )
    url = f"http://127.0.0.1:{port}{BASE}"
    headers = {"Authorization": f"token {TOKEN}"}
    with running(argv, url + "api/status", headers, root / "server.log"):
        yield url, root / "server.log"


@pytest.fixture(scope="module")
def server(served: tuple[str, Path]) -> str:
    return served[0]


@pytest.fixture(scope="module")
def client(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server + "v1", api_key=TOKEN, max_retries=0)


def _vectors(response) -> np.ndarray:
    return np.array([d.embedding for d in response.data], dtype=np.float32)


def test_default_base64_request_matches_reference(client, corpus, reference) -> None:
    response = client.embeddings.create(model="all-MiniLM-L6-v2", input=corpus)
    vectors = _vectors(response)  # the client asked for base64 and decoded it
    cos = np.sum(vectors * reference["embeddings"], axis=1)
    assert cos.min() >= 0.9999
    assert response.usage.prompt_tokens == int(reference["token_counts"].sum())
    assert [d.index for d in response.data] == list(range(len(corpus)))


def test_float_encoding(client, corpus, reference) -> None:
    response = client.embeddings.create(
        model="all-MiniLM-L6-v2", input=corpus[0], encoding_format="float"
    )
    assert float(_vectors(response)[0] @ reference["embeddings"][0]) >= 0.9999


def test_dimensions(client, corpus, reference) -> None:
    response = client.embeddings.create(model="all-MiniLM-L6-v2", input=corpus[:3], dimensions=48)
    vectors = _vectors(response)
    expected = reference["embeddings"][:3, :48]
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert vectors.shape == (3, 48)
    assert np.sum(vectors * expected, axis=1).min() >= 0.9999


def test_models(client) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"all-MiniLM-L6-v2", "tiny-modernbert-mean"} <= ids
    assert client.models.retrieve("tiny-modernbert-mean").owned_by == "root"


def test_other_models_by_name(client) -> None:
    response = client.embeddings.create(model="tiny-qwen3-last", input=["the cat sat"])
    assert len(response.data[0].embedding) == 32


def test_errors_surface_as_openai_exceptions(client) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.embeddings.create(model="all-MiniLM-L6-v2", input="")
    assert bad.value.body["param"] == "input"
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="does-not-exist", input="x")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            base_url=str(client.base_url), api_key="wrong", max_retries=0
        ).embeddings.create(model="all-MiniLM-L6-v2", input="x")


def test_command_line_configuration_reaches_the_worker(server) -> None:
    request = urllib.request.Request(
        server + "mlx-embed/status", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    status = json.loads(urllib.request.urlopen(request).read())
    assert status["token_budget"] == 4096


def _batches(server: str) -> int:
    """Forward passes the server's worker has run so far."""
    request = urllib.request.Request(
        server + "mlx-embed/status", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    return int(json.loads(urllib.request.urlopen(request).read())["batches"])


def _post(server: str, text: str) -> np.ndarray:
    request = urllib.request.Request(
        server + "v1/embeddings",
        data=json.dumps({"input": text, "encoding_format": "float"}).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    body = json.loads(urllib.request.urlopen(request, timeout=60).read())
    return np.asarray(body["data"][0]["embedding"], dtype=np.float32)


def test_48_concurrent_clients_get_their_own_vectors_faster_than_in_sequence(
    server, client
) -> None:
    texts = [
        f"Client number {i} asks about topic {i * 7 % 13} and nothing else." for i in range(48)
    ]
    expected = _vectors(client.embeddings.create(model="all-MiniLM-L6-v2", input=texts))

    def sequential() -> tuple[float, list[np.ndarray]]:
        start = time.perf_counter()
        out = [_post(server, t) for t in texts]
        return time.perf_counter() - start, out

    def concurrent() -> tuple[float, list[np.ndarray]]:
        with ThreadPoolExecutor(48) as pool:
            start = time.perf_counter()
            out = list(pool.map(lambda t: _post(server, t), texts))
            return time.perf_counter() - start, out

    # Best of three, alternating, to damp this machine's drift.
    seq_times, conc_times, conc_batches = [], [], []
    for _ in range(3):
        t_seq, got_seq = sequential()
        before = _batches(server)
        t_conc, got_conc = concurrent()
        conc_batches.append(_batches(server) - before)
        seq_times.append(t_seq)
        conc_times.append(t_conc)
        for got in (got_seq, got_conc):
            cos = np.sum(np.stack(got) * expected, axis=1)
            assert cos.min() >= 0.9999, "a client received a vector that is not its own"
    speedup = min(seq_times) / min(conc_times)
    print(
        f"sequential {min(seq_times):.3f}s, concurrent {min(conc_times):.3f}s, x{speedup:.1f}; "
        f"forward passes for 48 concurrent requests: {conc_batches}"
    )
    # The worker batches concurrent requests (one forward pass each would be 48), and they
    # finish sooner than one after the other. (One sentence's forward pass is about 2 ms, so
    # the sequential time is mostly each request's HTTP and JSON, which batching cannot save.)
    assert min(conc_batches) <= 24
    assert speedup >= 1.4


def test_token_in_urls_never_reaches_the_server_log(served, client) -> None:
    url, log = served
    start = log.stat().st_size  # (at debug level, Jupyter's own start-up lines show its config)
    for path, body in [
        ("v1/embeddings", {"input": "fine"}),
        ("v1/embeddings", {"input": "x", "model": "broken-weights"}),  # a logged 500
        ("v1/embeddings", {"input": ""}),
        ("v1/no-such-route", None),
    ]:
        request = urllib.request.Request(
            f"{url}{path}?token={TOKEN}", None if body is None else json.dumps(body).encode()
        )
        try:
            urllib.request.urlopen(request, timeout=60).read()
        except urllib.error.HTTPError as exc:
            assert exc.code in (400, 404, 500)
    time.sleep(0.5)
    text = log.read_bytes()[start:].decode()
    assert "Uncaught exception POST" in text and "token=[secret]" in text
    assert TOKEN not in text
