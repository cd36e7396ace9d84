"""README "Using it with other libraries": each example runs as its own program against a real
``jupyter-mlx-embed serve`` (the curl and ``openai`` ones also against a real ``jupyter server``)
and must return the server's own vectors; the library quirks the section names are checked too.

Examples are the fenced blocks after ``<!-- example: NAME -->`` markers in that section; every
one is listed in ``EXAMPLES`` (a test checks both ways). A Python example runs after the
``setup`` block, reads ``JME_BASE_URL`` / ``JME_API_KEY`` from the environment and leaves
``texts`` and ``vectors`` behind, optionally ``small`` (the same texts at 64 dimensions) and
``question`` / ``query_vector``. Examples whose library is not installed are skipped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from .servers import jupyter_server, standalone_server

README = Path(__file__).parents[1] / "README.md"
SECTION = "## Using it with other libraries"
MODEL = "all-MiniLM-L6-v2"
TOKEN = "client-library-secret"
SMALL = 64  # the dimensions the examples ask for


@dataclass(frozen=True)
class Example:
    """How a README example is run."""

    modules: tuple[str, ...] = ()  # what it imports; skipped when one is missing
    programs: tuple[str, ...] = ()  # what it runs; skipped when one is missing
    jupyter: bool = False  # also run against a Jupyter server


EXAMPLES = {
    "curl": Example(programs=("curl",), jupyter=True),
    "openai": Example(("openai",), jupyter=True),
    "openai-async": Example(("openai",), jupyter=True),
    "langchain": Example(("langchain_openai",)),
    "llamaindex": Example(("llama_index.embeddings.openai_like",)),
    "litellm": Example(("litellm",)),
    "chroma": Example(("chromadb",)),
    "haystack": Example(("haystack",)),
}

# Appended to every Python example: hands its results back as JSON.
RESULTS = """
import json as _json, os as _os

def _rows(vs):
    return [[float(x) for x in v] for v in vs]

_out = {"texts": list(texts), "vectors": _rows(vectors)}
if "small" in globals():
    _out["small"] = _rows(small)
if "query_vector" in globals():
    _out["question"], _out["query_vector"] = question, _rows([query_vector])[0]
with open(_os.environ["JME_RESULT"], "w") as _f:
    _json.dump(_out, _f)
"""


def readme_examples() -> dict[str, tuple[str, str]]:
    """``{name: (language, code)}`` for every marked block in the README section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n" + SECTION + "\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"<!-- example: ([\w-]+) -->\n```(\w+)\n(.*?)```", section, re.S)
    return {name: (language, code) for name, language, code in blocks}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package
        return False


# ---------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL (``.../v1``) of a real ``jupyter-mlx-embed serve``."""
    with standalone_server(tmp_path_factory.mktemp("standalone"), TOKEN) as url:
        yield url


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL (``.../v1``, under a non-root ``base_url``) of a real ``jupyter server``."""
    with jupyter_server(tmp_path_factory.mktemp("jupyter"), TOKEN, "/jme/") as url:
        yield url + "v1"


def server_vectors(base_url: str, texts: list[str], dimensions: int | None = None) -> np.ndarray:
    """The server's own vectors for ``texts``, fetched without any client library."""
    body: dict[str, Any] = {"model": MODEL, "input": texts, "encoding_format": "float"}
    if dimensions is not None:
        body["dimensions"] = dimensions
    request = urllib.request.Request(
        base_url + "/embeddings",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        data = json.loads(response.read())["data"]
    return np.array([item["embedding"] for item in data], dtype=np.float32)


def assert_same_vectors(got: Any, expected: np.ndarray) -> None:
    got = np.asarray(got, dtype=np.float32)
    assert got.shape == expected.shape
    cos = np.sum(got * expected, axis=1) / (
        np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1)
    )
    assert cos.min() >= 0.9999


# ---------------------------------------------------------------- running examples


def _environment(base_url: str, result: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(
        JME_BASE_URL=base_url,
        JME_API_KEY=TOKEN,
        JME_RESULT=str(result),
        # No network here: LiteLLM would fetch its price list, Haystack and Chroma send
        # telemetry.
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        HAYSTACK_TELEMETRY_ENABLED="False",
        ANONYMIZED_TELEMETRY="False",
    )
    return env


def run_python_example(code: str, base_url: str, workdir: Path) -> dict[str, Any]:
    """Run ``setup`` + ``code`` as a fresh program and return the results it leaves."""
    setup = readme_examples()["setup"][1]
    script = workdir / "example.py"
    script.write_text(setup + "\n" + code + RESULTS, encoding="utf-8")
    result = workdir / "result.json"
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=workdir,
        env=_environment(base_url, result),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(result.read_text())


def run_shell_example(code: str, base_url: str, workdir: Path) -> dict[str, Any]:
    """Run a shell example; its stdout is the server's JSON answer, its texts the request's."""
    done = subprocess.run(
        ["bash", "-c", code],
        cwd=workdir,
        env=_environment(base_url, workdir / "unused"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    body = re.search(r"-d '(.*?)'", code, re.S)
    assert body, "the example sends a JSON body with -d '...'"
    texts = json.loads(body.group(1))["input"]
    response = json.loads(done.stdout)
    return {"texts": texts, "vectors": [item["embedding"] for item in response["data"]]}


CASES = [
    pytest.param(name, server, id=f"{name}-{server}")
    for name, example in EXAMPLES.items()
    for server in ("standalone", "jupyter")[: 2 if example.jupyter else 1]
]


def test_every_readme_example_is_run() -> None:
    assert set(readme_examples()) == {"setup", *EXAMPLES}


@pytest.mark.slow
@pytest.mark.parametrize(("name", "server"), CASES)
def test_readme_example_returns_the_servers_vectors(
    name: str, server: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    example = EXAMPLES[name]
    absent = [m for m in example.modules if not _installed(m)]
    absent += [p for p in example.programs if shutil.which(p) is None]
    if absent:
        pytest.skip(f"{', '.join(absent)} not installed (the test extra has them)")
    base_url: str = request.getfixturevalue(server)
    language, code = readme_examples()[name]
    run = run_shell_example if language == "bash" else run_python_example
    out = run(code, base_url, tmp_path)

    assert len(out["texts"]) >= 2
    assert_same_vectors(out["vectors"], server_vectors(base_url, out["texts"]))
    if "small" in out:
        assert_same_vectors(out["small"], server_vectors(base_url, out["texts"], SMALL))
    if "query_vector" in out:
        expected = server_vectors(base_url, [out["question"]])
        assert_same_vectors([out["query_vector"]], expected)


# ---------------------------------------------------------------- the quirks the README names


def test_langchain_without_the_flag_sends_token_ids_and_gets_a_400(
    standalone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    openai = pytest.importorskip("openai")
    tiktoken = pytest.importorskip("tiktoken")
    langchain_openai = pytest.importorskip("langchain_openai")
    # tiktoken downloads OpenAI's encodings; a byte-level one stands in (the ids differ,
    # what LangChain does with them does not).
    encoding = tiktoken.Encoding(
        name="bytes",
        pat_str=r"[\s\S]",
        mergeable_ranks={bytes([i]): i for i in range(256)},
        special_tokens={},
    )
    monkeypatch.setattr(tiktoken, "encoding_for_model", lambda _name: encoding)
    monkeypatch.setattr(tiktoken, "get_encoding", lambda _name: encoding)
    # Our own HTTP client, closed here: the library's would be left to the garbage collector,
    # whose ResourceWarning (an error under this suite's filterwarnings) could land anywhere.
    with httpx.Client() as http, pytest.raises(openai.BadRequestError) as refused:
        langchain_openai.OpenAIEmbeddings(
            model=MODEL, base_url=standalone, api_key=TOKEN, max_retries=0, http_client=http
        ).embed_documents(["The cat sat on the mat."])
    assert refused.value.status_code == 400
    assert refused.value.code == "token_ids_not_accepted"


def test_llamaindex_openai_embedding_takes_model_name_but_checks_model(standalone: str) -> None:
    module = pytest.importorskip("llama_index.embeddings.openai")
    texts = ["The cat sat on the mat."]
    with httpx.Client() as http:  # closed here (see above)
        works = module.OpenAIEmbedding(
            model_name=MODEL, api_base=standalone, api_key=TOKEN, http_client=http
        )
        vectors = works.get_text_embedding_batch(texts)
    assert_same_vectors(vectors, server_vectors(standalone, texts))
    with pytest.raises(ValueError, match="is not a valid OpenAIEmbeddingModelType"):
        module.OpenAIEmbedding(model=MODEL, api_base=standalone, api_key=TOKEN)


def test_litellm_refuses_dimensions_unless_allowed(
    standalone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("litellm")
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    with pytest.raises(litellm.UnsupportedParamsError, match="Setting dimensions is not supported"):
        litellm.embedding(
            model=f"openai/{MODEL}",
            input=["x"],
            api_base=standalone,
            api_key=TOKEN,
            dimensions=SMALL,
        )
