"""The rerank routes as their clients speak them (#25), against a real ``jupyter server`` with
the extension and a real ``jupyter-mlx-embed serve``: the official ``cohere`` clients (v1 and
v2 APIs), TEI's ``POST rerank``, errors in the OpenAI error shape naming the field, a hostile
request among good ones, ``rerank()`` in a kernel going through the server's worker, and the
README's reranking examples run as programs.

README examples are the fenced blocks after ``<!-- rerank-example: NAME -->`` in its
"Reranking" section; a Python one leaves ``query``, ``documents`` and ``ranked`` ((index,
score) pairs, best first) behind, a shell one prints the server's JSON answer."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from .servers import free_port, jupyter_server_argv, run_in_kernel, running

cohere = pytest.importorskip("cohere")

TOKEN = "rerank-token"
BASE = "/jme/"
QUERY = "how do I read a file line by line"
DOCUMENTS = [
    "Use open() and iterate over the file object: each iteration gives one line.",
    "The giant panda is a bear species endemic to China.",
    "Le café est très chaud, n'est-ce pas ?",
    "readline() reads a single line from the file.",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, ms_marco: Path) -> Iterator[str]:
    """Base URL of a running ``jupyter server`` whose model root holds the reranker."""
    port = free_port()
    root = tmp_path_factory.mktemp("root")
    argv = jupyter_server_argv(port, TOKEN, BASE, root, f"--MLXEmbed.model_roots={ms_marco.parent}")
    url = f"http://127.0.0.1:{port}{BASE}"
    with running(argv, url + "api/status", {"Authorization": f"token {TOKEN}"}, root / "log"):
        yield url


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory, ms_marco: Path) -> Iterator[str]:
    """URL of a ``jupyter-mlx-embed serve`` whose default reranker is the reranker (TEI's
    clients name no model)."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    argv = [sys.executable, "-m", "jupyter_mlx_embed", "serve", "--port", str(port)]
    argv += ["--token", TOKEN, "--model-root", str(ms_marco.parent), "--reranker", ms_marco.name]
    url = f"http://127.0.0.1:{port}/"
    with running(argv, url + "v1/models", {"Authorization": f"Bearer {TOKEN}"}, log):
        yield url


@pytest.fixture(scope="module")
def expected(ms_marco: Path) -> np.ndarray:
    """sentence-transformers' CrossEncoder scores of (QUERY, DOCUMENTS)."""
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(ms_marco), device="cpu")
    return np.asarray(model.predict([(QUERY, d) for d in DOCUMENTS]), dtype=np.float32)


def _post(url: str, body: object, token: str | None = TOKEN) -> tuple[int, object]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, json.dumps(body).encode(), headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _in_order(results: list, key: str = "relevance_score") -> np.ndarray:
    scores = np.full(len(DOCUMENTS), np.nan, dtype=np.float32)
    for item in results:
        item = item if isinstance(item, dict) else item.dict()
        scores[item["index"]] = item[key]
    return scores


@pytest.mark.parametrize("which", ["server", "standalone"])
def test_cohere_v2_client(which, request, ms_marco, expected) -> None:
    url = request.getfixturevalue(which)
    with httpx.Client(timeout=120) as http:
        client = cohere.ClientV2(base_url=url.rstrip("/"), api_key=TOKEN, httpx_client=http)
        reply = client.rerank(model=ms_marco.name, query=QUERY, documents=DOCUMENTS, top_n=3)
    assert [r.index for r in reply.results] == list(np.argsort(-expected, kind="stable")[:3])
    for result in reply.results:
        assert result.relevance_score == pytest.approx(float(expected[result.index]), abs=1e-4)
    assert reply.meta.api_version.version == "2" and reply.meta.tokens.input_tokens > 0


@pytest.mark.parametrize("which", ["server", "standalone"])
def test_cohere_v1_client_with_documents(which, request, ms_marco, expected) -> None:
    url = request.getfixturevalue(which)
    documents = [{"text": d} for d in DOCUMENTS]  # v1 also takes objects
    with httpx.Client(timeout=120) as http:
        client = cohere.Client(base_url=url.rstrip("/"), api_key=TOKEN, httpx_client=http)
        reply = client.rerank(
            model=ms_marco.name, query=QUERY, documents=documents, return_documents=True
        )
    np.testing.assert_allclose(_in_order(reply.results), expected, atol=1e-4)
    assert all(r.document.text == DOCUMENTS[r.index] for r in reply.results)


def test_jina_shape_on_the_jupyter_server(server, ms_marco, expected) -> None:
    status, body = _post(
        server + "v1/rerank", {"model": ms_marco.name, "query": QUERY, "documents": DOCUMENTS}
    )
    assert status == 200 and isinstance(body, dict)
    assert body["model"] == ms_marco.name and body["usage"]["total_tokens"] > 0
    results = body["results"]
    assert [r["relevance_score"] for r in results] == sorted(
        (r["relevance_score"] for r in results), reverse=True
    )
    assert all(r["document"]["text"] == DOCUMENTS[r["index"]] for r in results)  # Jina default
    np.testing.assert_allclose(_in_order(results), expected, atol=1e-4)


def test_tei_shape_with_the_default_reranker(standalone, expected) -> None:
    status, body = _post(standalone + "rerank", {"query": QUERY, "texts": DOCUMENTS})
    assert status == 200 and isinstance(body, list) and "text" not in body[0]
    np.testing.assert_allclose(_in_order(body, "score"), expected, atol=1e-4)
    status, raw = _post(
        standalone + "rerank",
        {"query": QUERY, "texts": DOCUMENTS, "raw_scores": True, "return_text": True},
    )
    assert status == 200 and isinstance(raw, list)
    logits = _in_order(raw, "score")
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), expected, atol=1e-4)
    assert all(item["text"] == DOCUMENTS[item["index"]] for item in raw)


@pytest.mark.parametrize(
    ("path", "body", "status", "param", "words"),
    [
        ("v1/rerank", {"query": "q", "documents": ["d", ""]}, 400, "documents", "documents[1]"),
        ("v1/rerank", {"query": "q", "documents": ["d", 3]}, 400, "documents", "documents[1]"),
        ("v1/rerank", {"documents": ["d"]}, 400, "query", "'query' is required"),
        ("v1/rerank", {"query": "q", "documents": ["d"], "top_n": 0}, 400, "top_n", "top_n"),
        ("v2/rerank", {"query": "q", "documents": [{"x": 1}]}, 400, "documents", "'text'"),
        ("rerank", {"query": "q", "texts": ["d"]}, 400, "model", "no default reranker"),
        ("v1/rerank", {"query": "q", "documents": ["d"] * 1001}, 400, "documents", "1000"),
        ("v1/rerank", {"model": "all-MiniLM-L6-v2", "query": "q", "documents": ["d"]}, 400,
         "model", "embedding model"),
        ("v1/embeddings", {"model": "RERANKER", "input": ["d"]}, 400, "model", "reranker"),
    ],
)  # fmt: skip
def test_errors_name_the_field(server, ms_marco, path, body, status, param, words) -> None:
    if path != "rerank" and "model" not in body:
        body = {**body, "model": ms_marco.name}
    if body.get("model") == "RERANKER":
        body = {**body, "model": ms_marco.name}
    code, reply = _post(server + path, body)
    assert isinstance(reply, dict)
    assert code == status and reply["error"]["param"] == param, reply
    assert words in reply["error"]["message"]


def test_token_is_required(server, standalone) -> None:
    for url in (server + "v1/rerank", standalone + "v2/rerank", standalone + "rerank"):
        code, reply = _post(url, {"query": "q", "documents": ["d"]}, token=None)
        assert code in (401, 403) and isinstance(reply, dict) and "error" in reply


def test_models_say_their_task(server, ms_marco) -> None:
    request = urllib.request.Request(
        server + "v1/models", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        cards = {card["id"]: card for card in json.loads(response.read())["data"]}
    assert cards[ms_marco.name]["task"] == "rerank"
    assert cards["all-MiniLM-L6-v2"]["task"] == "embed"


def test_a_hostile_request_among_good_ones(server, ms_marco, expected) -> None:
    good = {"model": ms_marco.name, "query": QUERY, "documents": DOCUMENTS}
    hostile = [
        {"model": ms_marco.name, "query": QUERY, "documents": ["x" * 200_000] * 40},
        {"model": ms_marco.name, "query": "q" * 500_000, "documents": ["d"]},
        {"model": ms_marco.name, "query": QUERY, "documents": [None]},
    ]
    with ThreadPoolExecutor(8) as pool:
        goods = [pool.submit(_post, server + "v1/rerank", good) for _ in range(12)]
        bads = [pool.submit(_post, server + "v1/rerank", body) for body in hostile]
        for future in goods:
            code, body = future.result()
            assert code == 200 and isinstance(body, dict)
            np.testing.assert_allclose(_in_order(body["results"]), expected, atol=1e-4)
        codes = [future.result()[0] for future in bads]
    # Long texts are truncated to the context (cost bounded), a null document refused.
    assert codes == [200, 200, 400]


def test_rerank_in_a_kernel_goes_through_the_servers_worker(server, ms_marco, expected) -> None:
    code = (
        "import sys, json, jupyter_mlx_embed as jme\n"
        f"r = jme.rerank({QUERY!r}, {DOCUMENTS!r}, model={ms_marco.name!r}, top_n=2)\n"
        "print(json.dumps({'scores': r.scores.tolist(), 'top': r.indices.tolist(),"
        " 'transport': jme.get_transport().kind, 'mlx': 'mlx.core' in sys.modules}))\n"
    )
    out = asyncio.run(run_in_kernel(server, TOKEN, code))
    assert out["status"] == "ok", out
    reply = json.loads(out["stdout"].strip().splitlines()[-1])
    assert reply["transport"] == "server" and reply["mlx"] is False
    np.testing.assert_allclose(reply["scores"], expected, atol=1e-4)
    assert reply["top"] == list(np.argsort(-expected, kind="stable")[:2])


README = Path(__file__).parents[1] / "README.md"
#: Appended to a Python example: hands its results back as JSON.
RESULTS = """
import json as _json, os as _os
with open(_os.environ["JME_RESULT"], "w") as _f:
    _json.dump({"query": query, "documents": documents,
                "ranked": [[int(i), float(s)] for i, s in ranked]}, _f)
"""


def readme_examples() -> dict[str, tuple[str, str]]:
    """``{name: (language, code)}`` of the README's reranking examples."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Reranking\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"<!-- rerank-example: ([\w-]+) -->\n```(\w+)\n(.*?)```", section, re.S)
    return {name: (language, code) for name, language, code in blocks}


def test_the_readme_has_the_examples_run_here() -> None:
    assert set(readme_examples()) == {"curl", "cohere", "langchain"}


@pytest.mark.slow
@pytest.mark.parametrize("which", ["server", "standalone"])
@pytest.mark.parametrize("name", ["curl", "cohere", "langchain"])
def test_readme_example(name, which, request, ms_marco, tmp_path) -> None:
    if name == "langchain":
        pytest.importorskip("langchain_cohere")
    url: str = request.getfixturevalue(which)
    language, code = readme_examples()[name]
    result = tmp_path / "result.json"
    env = {
        **os.environ,
        "JME_SERVER_URL": url.rstrip("/"),
        "JME_API_KEY": TOKEN,
        "JME_RERANKER": ms_marco.name,
        "JME_RESULT": str(result),
    }
    if language == "bash":
        done = subprocess.run(["bash", "-c", code], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        body = re.search(r"-d '(.*?)'\n", code, re.S)
        assert body is not None
        sent = json.loads(body.group(1).replace("'\"$JME_RERANKER\"'", ms_marco.name))
        query, documents = sent["query"], sent["documents"]
        answer = json.loads(done.stdout)["results"]
        ranked = [(r["index"], r["relevance_score"]) for r in answer]
    else:
        script = tmp_path / "example.py"
        script.write_text(code + RESULTS, encoding="utf-8")
        done = subprocess.run(
            [sys.executable, str(script)], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-4000:]
        out = json.loads(result.read_text())
        query, documents, ranked = out["query"], out["documents"], out["ranked"]
    status, own = _post(
        url + "v1/rerank", {"model": ms_marco.name, "query": query, "documents": documents}
    )
    assert status == 200 and isinstance(own, dict)
    best = [(r["index"], r["relevance_score"]) for r in own["results"]][: len(ranked)]
    assert len(ranked) == 2 and [i for i, _ in ranked] == [i for i, _ in best]
    np.testing.assert_allclose([s for _, s in ranked], [s for _, s in best], atol=1e-5)
