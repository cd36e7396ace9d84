"""README "Using it with other libraries": the recipes, the fenced blocks after
``<!-- recipe: NAME -->`` markers (``<!-- example: ... -->`` blocks are
tests/test_client_libraries.py's). Every recipe is listed in ``RECIPES``, which says how it is
checked:

- ``native``: the integrations' native classes. Each runs as its own program, with the worker
  of its own process (the default transport outside Jupyter), and must leave ``texts`` and
  ``vectors`` (and ``question`` / ``query_vector``) that are ``embed()``'s.
- ``atlas-cli``, ``atlas-python``, ``atlas-native``: embedding-atlas. Each runs as its own
  program on a ``notes.parquet`` the test writes; the ``litellm`` ones against a real
  ``jupyter-mlx-embed serve``. The nearest-neighbour distances embedding-atlas stores must be
  those of the server's vectors, and the server's input counter must move by the recipes that
  call it (so the ``litellm`` ones reached the server and the native one did not). The command
  line gets ``--export-application DIR`` appended: it writes the viewer and its data instead
  of serving them.
- ``documented``: compiled, not run (Latent Scope: installing it brings torch's CUDA build and
  more, about 9 GB and 6 minutes; the recipe was checked by hand with latentscope 1.0.0).

embedding-atlas is not in the test extra: when this environment lacks it, it is installed from
the package index into a virtual environment of its own, built once and cached (in the user's
cache folder, ``jupyter-mlx-embed/test-venvs/``, or ``JME_TEST_VENVS_DIR``), as
tests/test_jupyter_ai.py does for jupyter-ai. Unlike that one, its ``.pth`` file (this checkout,
then this environment's site-packages) is written *before* ``pip install``: pip then counts
torch, sentence-transformers, LiteLLM, UMAP and pandas from here as installed, and adds about
170 MB in about 15 s instead of 6.8 GB with torch's CUDA build.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import jupyter_mlx_embed as jme
from jupyter_mlx_embed.config import EngineConfig
from jupyter_mlx_embed.worker import Worker

from .servers import standalone_server
from .side_venvs import side_python

README = Path(__file__).parents[1] / "README.md"
SECTION = "## Using it with other libraries"
MODEL = "all-MiniLM-L6-v2"  # publishes no prompts: queries and documents embed alike
TOKEN = "recipes-secret"
EMBEDDING_ATLAS = "embedding-atlas>=0.26,<1"

#: What the embedding-atlas recipes read from ``notes.parquet`` (column ``text``): four topics,
#: more rows than UMAP's 15 neighbours.
TEXTS = [
    "The cat sat on the mat.",
    "A kitten chased a ball of yarn.",
    "Dogs bark at the postman every morning.",
    "The parrot repeated every word it heard.",
    "Goldfish swim in circles in their bowl.",
    "Stock markets fell sharply on Monday.",
    "Bond yields rose after the central bank spoke.",
    "The company reported record quarterly profits.",
    "Investors sold shares as inflation climbed.",
    "The currency weakened against the dollar.",
    "Knead the dough for ten minutes.",
    "Bake the bread until the crust is golden.",
    "Whisk the eggs with a pinch of salt.",
    "Simmer the soup for an hour.",
    "Chop the onions finely before frying them.",
    "The striker scored in the final minute.",
    "The team won the championship on penalties.",
    "She ran the marathon in under three hours.",
    "The tennis match lasted five sets.",
    "The goalkeeper saved two penalties.",
]


@dataclass(frozen=True)
class Recipe:
    """How a README recipe is checked."""

    kind: str  # native, atlas-cli, atlas-python, atlas-native or documented
    modules: tuple[str, ...] = ()  # native: what it imports; skipped when one is missing


RECIPES = {
    "native-langchain": Recipe("native", ("langchain_core",)),
    "native-llama-index": Recipe("native", ("llama_index.core",)),
    "native-chroma": Recipe("native", ("chromadb",)),
    "native-haystack": Recipe("native", ("haystack",)),
    "embedding-atlas-cli": Recipe("atlas-cli"),
    "embedding-atlas-python": Recipe("atlas-python"),
    "embedding-atlas-native": Recipe("atlas-native"),
    "latent-scope": Recipe("documented"),
}

# Appended to a native recipe: hands its results back as JSON.
RESULTS = """
import json as _json, os as _os

def _rows(vs):
    return [[float(x) for x in v] for v in vs]

_out = {"texts": list(texts), "vectors": _rows(vectors)}
if "query_vector" in globals():
    _out["question"], _out["query_vector"] = question, _rows([query_vector])[0]
with open(_os.environ["JME_RESULT"], "w") as _f:
    _json.dump(_out, _f)
"""

# Defined before the embedding-atlas Python recipes: saves the neighbours of a result.
DUMP = """
import json as _json, os as _os

def _dump(name, frame):
    rows = [{"ids": [int(i) for i in n["ids"]], "distances": [float(d) for d in n["distances"]]}
            for n in frame["neighbors"]]
    with open(_os.path.join(_os.environ["JME_RESULT"], name + ".json"), "w") as f:
        _json.dump({"texts": frame["text"].tolist(), "neighbors": rows}, f)
"""


def _blocks(marker: str) -> dict[str, tuple[str, str]]:
    """``{name: (language, code)}`` for the blocks after ``<!-- MARKER: NAME -->`` in the
    README section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n" + SECTION + "\n", 1)[1].split("\n## ", 1)[0]
    pattern = rf"<!-- {marker}: ([\w-]+) -->\n```(\w+)\n(.*?)```"
    return {name: (language, code) for name, language, code in re.findall(pattern, section, re.S)}


def readme_recipes() -> dict[str, tuple[str, str]]:
    """The README section's recipes."""
    return _blocks("recipe")


def setup_block() -> str:
    """The section's ``setup`` example: ``BASE_URL`` and ``API_KEY`` from the environment."""
    return _blocks("example")["setup"][1]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package
        return False


def _environment(**extra: str) -> dict[str, str]:
    """This environment for a recipe's program: no OpenAI settings, no Jupyter server to find
    (its own worker serves the native classes), no network for telemetry or price lists."""
    gone = ("OPENAI_", "JPY_", "JUPYTER_MLX_EMBED_URL", "JUPYTER_MLX_EMBED_TOKEN")
    env = {k: v for k, v in os.environ.items() if not k.startswith(gone)}
    env.pop("JUPYTER_MLX_EMBED_SERVER_PID", None)
    env.update(
        JUPYTER_MLX_EMBED_TRANSPORT="local",
        HF_HUB_OFFLINE="1",
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        HAYSTACK_TELEMETRY_ENABLED="False",
        ANONYMIZED_TELEMETRY="False",
        **extra,
    )
    return env


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> None:
    done = subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-6000:])


def assert_same_vectors(got: Any, expected: np.ndarray) -> None:
    """Cosine similarity of each pair at least 0.9999."""
    vectors = np.asarray(got, dtype=np.float32)
    assert vectors.shape == expected.shape
    cosine = np.sum(vectors * expected, axis=-1) / (
        np.linalg.norm(vectors, axis=-1) * np.linalg.norm(expected, axis=-1)
    )
    assert float(np.min(cosine)) >= 0.9999


# --------------------------------------------------------------------------- every recipe


def test_every_readme_recipe_is_checked() -> None:
    assert set(readme_recipes()) == set(RECIPES)


def test_python_recipes_compile() -> None:
    for name, (language, code) in readme_recipes().items():
        if language == "python":
            compile(code, f"README recipe {name}", "exec")


# --------------------------------------------------------------------------- native classes


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n, r in RECIPES.items() if r.kind == "native"])
def test_native_recipe_gives_embeds_vectors(
    name: str, default_worker: Worker, tmp_path: Path
) -> None:
    absent = [m for m in RECIPES[name].modules if not _installed(m)]
    if absent:
        pytest.skip(f"{', '.join(absent)} not installed (the test extra has them)")
    script = tmp_path / "recipe.py"
    script.write_text(readme_recipes()[name][1] + RESULTS, encoding="utf-8")
    result = tmp_path / "result.json"
    _run([sys.executable, str(script)], tmp_path, _environment(JME_RESULT=str(result)), 300)
    out = json.loads(result.read_text())

    assert len(out["texts"]) >= 2
    assert_same_vectors(out["vectors"], jme.embed(out["texts"], model=MODEL))
    expected = jme.embed([out["question"]], model=MODEL)
    assert_same_vectors([out["query_vector"]], expected)


# ---------------------------------------------------------------------------- embedding-atlas


@pytest.fixture(scope="module")
def atlas_python() -> Path:
    """A Python with embedding-atlas: this one when it has it, else the cached environment's
    (built on first use). Called with ``-m`` only: a cached environment was built under
    another name, so its scripts' ``#!`` lines are wrong."""
    if _installed("embedding_atlas"):
        return Path(sys.executable)
    return side_python("embedding-atlas", EMBEDDING_ATLAS, reuse_ours=True)


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL (``.../v1``) of a real ``jupyter-mlx-embed serve``."""
    with standalone_server(tmp_path_factory.mktemp("standalone"), TOKEN) as url:
        yield url


def _get(url: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def served_inputs(base_url: str) -> int:
    """How many inputs the server has embedded."""
    return int(_get(base_url.removesuffix("/v1") + "/mlx-embed/status")["inputs"])


def server_vectors(base_url: str, texts: list[str]) -> np.ndarray:
    """The server's own vectors for ``texts``, fetched without any client library."""
    request = urllib.request.Request(
        base_url + "/embeddings",
        data=json.dumps({"model": MODEL, "input": texts}).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        data = json.loads(response.read())["data"]
    return np.array([item["embedding"] for item in data], dtype=np.float64)


def assert_neighbours_of(neighbours: list[dict[str, Any]], vectors: np.ndarray) -> None:
    """Each row's stored neighbours are at the cosine distances of ``vectors``: the map was
    made from these vectors."""
    assert len(neighbours) == len(vectors)
    norms = np.linalg.norm(vectors, axis=1)
    cosine = vectors @ vectors.T / np.outer(norms, norms)
    for row, found in enumerate(neighbours):
        ids, distances = np.asarray(found["ids"]), np.asarray(found["distances"])
        assert len(ids) >= 5 and row in ids
        # UMAP's neighbour search reports opposed vectors (cosine < 0) at distance 1.
        expected = np.minimum(1 - cosine[row, ids], 1.0)
        np.testing.assert_allclose(distances, expected, atol=2e-4)


@pytest.fixture
def atlas_workdir(tmp_path: Path) -> Path:
    """A folder with ``notes.parquet`` (``TEXTS`` in column ``text``)."""
    import pandas as pd

    pd.DataFrame({"text": TEXTS}).to_parquet(tmp_path / "notes.parquet")
    return tmp_path


def _atlas_environment(workdir: Path, base_url: str, result: Path) -> dict[str, str]:
    """embedding-atlas caches projections under the texts and model name but not the server
    (README): a fresh cache folder, so that every run asks the server. The worker's compiled
    files stay where they are."""
    return _environment(
        JME_BASE_URL=base_url,
        JME_API_KEY=TOKEN,
        JME_RESULT=str(result),
        XDG_CACHE_HOME=str(workdir / "xdg-cache"),
        JUPYTER_MLX_EMBED_CACHE_DIR=str(EngineConfig.from_env().cache_folder()),
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_embedding_atlas_command_line_uses_the_server(
    atlas_python: Path, standalone: str, atlas_workdir: Path
) -> None:
    import pandas as pd

    language, code = readme_recipes()["embedding-atlas-cli"]
    assert language == "bash"
    programs = atlas_workdir / "bin"
    programs.mkdir()
    command = programs / "embedding-atlas"
    command.write_text(f'#!/bin/sh\nexec "{atlas_python}" -m embedding_atlas.cli "$@"\n')
    command.chmod(0o755)
    env = _atlas_environment(atlas_workdir, standalone, atlas_workdir / "unused")
    env["PATH"] = f"{programs}{os.pathsep}{env['PATH']}"
    exported = atlas_workdir / "atlas"

    before = served_inputs(standalone)
    _run(["bash", "-c", f"{code.strip()} --export-application {exported}"], atlas_workdir, env, 600)
    assert served_inputs(standalone) - before == len(TEXTS)

    table = pd.read_parquet(exported / "data" / "dataset.parquet")
    assert table["text"].tolist() == TEXTS
    assert {"projection_x", "projection_y"} <= set(table.columns)
    neighbours = [dict(n) for n in table["__neighbors"]]
    assert_neighbours_of(neighbours, server_vectors(standalone, TEXTS))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_embedding_atlas_python_recipes(
    atlas_python: Path, standalone: str, atlas_workdir: Path
) -> None:
    recipes = readme_recipes()
    names = [n for n, r in RECIPES.items() if r.kind in ("atlas-python", "atlas-native")]
    parts = [setup_block(), DUMP]
    for name in names:
        parts += [recipes[name][1], f"_dump({name!r}, df)\n"]
    script = atlas_workdir / "recipes.py"
    script.write_text("\n".join(parts), encoding="utf-8")
    env = _atlas_environment(atlas_workdir, standalone, atlas_workdir)

    before = served_inputs(standalone)
    # One program: UMAP's compiled code, about a minute's work, serves both.
    _run([str(atlas_python), str(script)], atlas_workdir, env, 600)
    # Only the litellm recipe called the server; the native one used its own worker.
    assert served_inputs(standalone) - before == len(TEXTS)

    vectors = server_vectors(standalone, TEXTS)
    for name in names:
        out = json.loads((atlas_workdir / f"{name}.json").read_text())
        assert out["texts"] == TEXTS
        assert_neighbours_of(out["neighbors"], vectors)
