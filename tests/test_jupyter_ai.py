"""jupyter-ai 2.x end to end: ``/learn`` and ``/ask`` in a real ``jupyter server`` whose
embeddings provider is ours, found through jupyter-ai's entry point
(``jupyter_mlx_embed.integrations.jupyter_ai``).

Checked: jupyter-ai lists and uses the provider; ``/learn`` embeds the documents (on Dask's
threads) and ``/ask`` retrieves the right one (an offline LLM echoes its prompt, so the answer
shows the retrieved context in rank order); both go to this server's worker in-process (its
counters move, and no HTTP request for embeddings reaches either of its endpoints); and the
server keeps answering ``GET api/status`` throughout (the regression: an HTTP provider
pointed at the same server blocked its event loop for good).

jupyter-ai 2.x needs langchain-core<1 and this environment has 1.x, so the server runs from a
virtual environment of its own, built once from the package index and cached (in the user's
cache folder, ``jupyter-mlx-embed/test-venvs/``, or ``JME_TEST_VENVS_DIR``). A ``.pth`` file
appends this checkout and this environment's site-packages after its own: jupyter-ai's
packages win, while ``jupyter_mlx_embed``, MLX and the model come from here.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from .servers import free_port, running
from .side_venvs import side_python

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

JUPYTER_AI = "jupyter-ai>=2.31,<3"
ENTRY_POINT_GROUP = "jupyter_ai.embeddings_model_providers"
PROVIDER = "jupyter-mlx-embed"
MODEL = "all-MiniLM-L6-v2"
TOKEN = "jupyter-ai-test-token"
#: The longest a ``GET api/status`` may take while /learn and /ask run.
STALL_LIMIT = 2.0

#: The documents /learn reads (one chunk each); /ask's question is about the first.
DOCS = {
    "zorblax.md": "Zorblax fermentation turns purple moss into a fizzy drink called glimmerade.",
    "sourdough.md": "Sourdough bread rises because wild yeast ferments the flour overnight.",
    "lighthouse.md": "The Quenby lighthouse is painted with green and white stripes.",
    "tandem.md": "On a tandem bicycle the rider at the back is called the stoker.",
    "chess.md": "In chess, castling moves the king two squares towards a rook.",
    "tides.md": "Spring tides happen when the sun and the moon line up with the earth.",
}
QUESTION = "What does zorblax fermentation make?"

#: An offline LLM provider for jupyter-ai (``jupyter_ai.model_providers`` entry point) that
#: answers with its whole prompt.
ECHO_MODULE = """
from typing import Any, ClassVar

from jupyter_ai_magics import BaseProvider
from langchain_core.language_models.llms import LLM


class EchoProvider(BaseProvider, LLM):
    id: ClassVar[str] = "jme-echo"
    name: ClassVar[str] = "Echo (jupyter-mlx-embed tests)"
    models: ClassVar[list[str]] = ["prompt"]
    model_id_key: ClassVar[str] = "model_id"

    @property
    def _llm_type(self) -> str:
        return "jme-echo"

    def _call(self, prompt: str, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> str:
        return "ECHO: " + prompt
"""


@pytest.fixture(scope="module")
def jai_python() -> Path:
    """The Python of a cached environment with jupyter-ai 2.x that also sees this one's
    packages (built on first use: about a minute). Called with ``-m`` only: the
    environment was built under another name, so its scripts' ``#!`` lines are wrong."""
    return side_python("jupyter-ai-2", JUPYTER_AI, reuse_ours=False)


@pytest.fixture(scope="module")
def echo_provider(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the echo LLM's module and a ``dist-info`` with its entry point, for
    ``PYTHONPATH``."""
    folder = tmp_path_factory.mktemp("echo-provider")
    (folder / "jme_echo_llm.py").write_text(ECHO_MODULE)
    info = folder / "jme_echo_llm-0.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: jme-echo-llm\nVersion: 0.0.0\n")
    (info / "entry_points.txt").write_text(
        "[jupyter_ai.model_providers]\njme-echo = jme_echo_llm:EchoProvider\n"
    )
    return folder


def _get(url: str, timeout: float = 10) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


@contextmanager
def _jupyter_server(python: Path, home: Path, pythonpath: Path) -> Iterator[tuple[str, Path]]:
    """A ``jupyter server`` with our extension and jupyter-ai (our embeddings, the echo LLM),
    serving ``home/root``; yields its URL and log file."""
    port = free_port()
    config = home / "config"
    config.mkdir()
    settings = {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_mlx_embed": True, "jupyter_ai": True},
            "log_level": "DEBUG",  # Jupyter logs successful requests at debug level
            # The in-process endpoint's access lines (logger jupyter_mlx_embed.kernel_server
            # .access, INFO for answered requests), which Python would not show by default.
            "logging_config": {
                "loggers": {"jupyter_mlx_embed": {"level": "DEBUG", "handlers": ["console"]}}
            },
        },
        "AiExtension": {
            "default_language_model": "jme-echo:prompt",
            "default_embeddings_model": f"{PROVIDER}:{MODEL}",
            # jupyter-ai 2.x turns the Dask dashboard off through a setting current
            # distributed rejects ("Scheduler failed to start"): /learn would wait forever.
            "enable_dask_dashboard": True,
        },
    }
    (config / "jupyter_server_config.json").write_text(json.dumps(settings))
    env = {
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "PYTHONPATH": str(pythonpath),
        "JUPYTER_MLX_EMBED_CACHE": "false",
    }
    argv = [
        str(python),
        "-m",
        "jupyter_server",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--IdentityProvider.token={TOKEN}",
        f"--ServerApp.root_dir={home / 'root'}",
        "--ServerApp.allow_root=True",
    ]
    url = f"http://127.0.0.1:{port}/"
    log = home / "server.log"
    headers = {"Authorization": f"token {TOKEN}"}
    with running(argv, url + "api/status", headers, log, 120, env=env, cwd=home):
        yield url, log


class _Poller(threading.Thread):
    """Times ``GET api/status`` every 20 ms until stopped."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.times: list[float] = []
        self.errors: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.02):
            start = time.monotonic()
            try:
                _get(self.url + "api/status", timeout=30)
            except OSError as exc:
                self.errors.append(repr(exc))
            self.times.append(time.monotonic() - start)


async def _chat(url: str, prompts: list[str], timeout: float = 120) -> list[str]:
    """Send each prompt over jupyter-ai's chat websocket in turn; the body of the agent's
    reply to each."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    ws_url = url.replace("http", "ws", 1) + "api/ai/chats"
    request = HTTPRequest(ws_url, headers={"Authorization": f"token {TOKEN}"})
    conn = await websocket_connect(request)

    async def receive() -> dict[str, Any]:
        raw = await asyncio.wait_for(conn.read_message(), timeout)
        if raw is None:
            raise RuntimeError("jupyter-ai closed the chat websocket")
        return json.loads(raw)

    replies = []
    try:
        assert (await receive())["type"] == "connection"
        for prompt in prompts:
            await conn.write_message(json.dumps({"prompt": prompt}))
            human = await receive()
            while not (human["type"] == "human" and human["prompt"] == prompt):
                human = await receive()
            reply = await receive()
            while not (reply["type"] == "agent" and reply.get("reply_to") == human["id"]):
                reply = await receive()
            replies.append(reply["body"])
    finally:
        conn.close()
        # Until the server has answered the close: its socket is then closed, not left to
        # the garbage collector (a ResourceWarning); a hung server does not answer.
        with suppress(asyncio.TimeoutError):
            while await asyncio.wait_for(conn.read_message(), 10) is not None:
                pass
    return replies


def _worker_inputs(url: str) -> int:
    return int(_get(url + "mlx-embed/status")["inputs"])


def test_learn_and_ask_use_the_servers_worker(
    jai_python: Path, echo_provider: Path, tmp_path: Path
) -> None:
    registered = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP).names
    assert PROVIDER in registered, (
        f"this environment's jupyter-mlx-embed metadata lacks the {ENTRY_POINT_GROUP} entry "
        f"point (an install older than pyproject.toml's): pip install -e ."
    )
    docs = tmp_path / "root" / "docs"
    docs.mkdir(parents=True)
    for name, text in DOCS.items():
        (docs / name).write_text(text + "\n")

    with _jupyter_server(jai_python, tmp_path, echo_provider) as (url, log):
        # Our extension loaded in jupyter-ai's environment, and jupyter-ai found our provider
        # through its entry point and took it as the embeddings model.
        assert _get(url + "mlx-embed/status")["state"] in ("starting", "ready")
        providers = _get(url + "api/ai/providers/embeddings")["providers"]
        ours = next((p for p in providers if p["id"] == PROVIDER), None)
        assert ours is not None, [p["id"] for p in providers]
        assert MODEL in ours["models"]
        config = _get(url + "api/ai/config")
        assert config["embeddings_provider_id"] == f"{PROVIDER}:{MODEL}"
        assert config["model_provider_id"] == "jme-echo:prompt"

        before = _worker_inputs(url)
        poller = _Poller(url)
        poller.start()
        try:
            started = time.monotonic()
            (learned,) = asyncio.run(_chat(url, ["/learn docs"]))
            after_learn = _worker_inputs(url)
            (answer,) = asyncio.run(_chat(url, [f"/ask {QUESTION}"]))
            after_ask = _worker_inputs(url)
            flow = time.monotonic() - started
        finally:
            poller.halt.set()
            poller.join()

        assert "I have learned documents" in learned, learned
        # One chunk a document, each embedded by the worker; then /ask's one question.
        assert after_learn - before == len(DOCS)
        assert after_ask - after_learn == 1

        # The echoed prompt holds the retrieved documents, best first: the question's own
        # document leads, and not every document was retrieved.
        found = {name: answer.find(text) for name, text in DOCS.items() if text in answer}
        assert found, answer
        assert min(found, key=found.__getitem__) == "zorblax.md", answer
        assert len(found) < len(DOCS), answer

        # The server answered throughout.
        assert not poller.errors, poller.errors
        assert len(poller.times) >= 3, (flow, poller.times)
        assert max(poller.times) < STALL_LIMIT, (flow, sorted(poller.times)[-5:])

        # No embeddings request went over HTTP, to /v1 or to the in-process endpoint. The
        # controls show that the log would have shown one: a request to each endpoint.
        assert "v1/embeddings" not in log.read_text()
        request = urllib.request.Request(
            url + "v1/embeddings",
            data=json.dumps({"model": MODEL, "input": "control"}).encode(),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=30).close()
        inprocess = next(
            line.rsplit(" at ", 1)[1].strip()
            for line in log.read_text().splitlines()
            if "in-process endpoint for clients inside this server at" in line
        )  # its /v1
        unauthorised = urllib.request.Request(
            inprocess.rstrip("/") + "/embeddings", data=b"{}", method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(unauthorised, timeout=30)
        denied.value.close()
        assert denied.value.code == 401
        deadline = time.monotonic() + 10  # access lines are written after the response
        access: list[str] = []
        while len(access) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
            access = [line for line in log.read_text().splitlines() if "v1/embeddings" in line]
        assert len(access) == 2, access
