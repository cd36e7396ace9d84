"""The architecture stays visible: every import of the package's own modules, at module level
or inside a function, follows the layer map below; MLX is imported only inside ``engine/``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "jupyter_mlx_embed"

#: module -> (rank, side). A module may import modules of a lower rank, on the shared
#: ``core`` side or on its own side; ``entry`` modules may import anything below them.
LAYERS: dict[str, tuple[int, str]] = {
    # Pure foundations.
    "_version": (0, "core"),
    "envvars": (0, "core"),
    "fileio": (0, "core"),  # atomic writes
    "errors": (0, "core"),
    "results": (0, "core"),
    "metrics": (0, "core"),
    "engine": (0, "core"),  # engine/__init__: a docstring only
    "engine.partition": (0, "core"),
    "config": (1, "core"),
    "images": (2, "core"),  # pictures decoded and resized as a model's processor does
    "validation": (3, "core"),
    "options": (4, "core"),  # one request's options, checked once
    "modelspec": (1, "core"),
    "schema": (4, "core"),
    "ranking": (0, "core"),  # ranked hits and their tables (search, rerank)
    "quantization": (0, "core"),  # int8, uint8 and binary vectors (numpy)
    "rerank_schema": (1, "core"),  # the rerank routes' wire shapes (Jina/Cohere v1, v2, TEI)
    "codec": (1, "core"),  # the JSON text of HTTP bodies, decoded and encoded in pieces
    "engine.tokenization": (1, "core"),
    "engine.blas_probe": (1, "core"),  # which BLAS libmlx bound (GOT, dladdr)
    "engine._build": (2, "core"),  # compiles into the cache folder (the settings say where)
    "engine.blas": (3, "core"),  # which BLAS to preload; builds the shim
    "engine.native": (3, "core"),  # builds and loads the C++ kernels
    "registry": (2, "core"),
    "identity": (3, "core"),  # a model folder's identity (the cache's key, job manifests)
    "_cachefile": (0, "core"),  # the cache's SQLite file: schema, keys, checksums, locks
    "cache": (4, "core"),
    "engine.cpu_kernels": (2, "core"),
    "engine.native_models": (3, "core"),  # the pre-norm models on the native kernels
    # Model code mlx-embeddings lacks (imported by mlx_engine on the worker thread).
    "engine.architectures": (0, "core"),  # the package: a docstring and its model types
    "engine.architectures.gemma3_text": (1, "core"),
    "engine.architectures.nomic_bert": (1, "core"),
    "engine.architectures.siglip": (2, "core"),  # SigLIP's towers (modelspec's defaults)
    "engine.architectures.dense": (2, "core"),  # sentence-transformers Dense heads
    "engine.architectures.classifier": (3, "core"),  # cross-encoders' score heads
    "engine.mlx_engine": (4, "core"),
    "scheduling": (0, "core"),  # the worker's batching policy, pure
    "preparation": (5, "core"),  # cache lookup and tokenizing, off the MLX thread
    "worker": (6, "core"),
    "transport": (7, "core"),
    "api": (8, "core"),
    "settings": (8, "core"),  # traitlets, for the front ends
    # Batch jobs (batch/): ray and pyarrow imported lazily.
    "batch": (0, "core"),  # batch/__init__: a docstring only
    "batch.readers": (1, "core"),  # Parquet, JSONL, CSV read into Arrow tables
    "batch.parts": (1, "core"),  # a file job's part files and manifest (resuming)
    "batch.tables": (7, "core"),  # one Arrow table embedded on one worker
    "batch.raydata": (8, "core"),  # Ray Data actors, embed_dataset
    "batch.filejob": (9, "core"),  # resumable file jobs: input, drivers, embed_file
    "distributed": (10, "core"),  # the public import path: re-exports batch/
    # HTTP: Tornado routes, then the two servers that mount them.
    "routes": (9, "http"),
    "serverext": (11, "http"),  # mounts the routes; its in-process endpoint is standalone's
    "standalone": (10, "http"),
    # Notebook: results with search, then IPython magics and the explorer (explorer/).
    "progress": (7, "notebook"),  # tqdm bars that saved notebooks show finished (IPython)
    "embeddings": (9, "notebook"),
    "magics": (10, "notebook"),
    "explorer": (0, "notebook"),  # explorer/__init__: a docstring only
    "explorer._umap_process": (0, "notebook"),  # UMAP fits in a helper process
    "explorer._format": (1, "notebook"),  # how texts, counts and errors are worded
    "explorer.data": (1, "notebook"),  # colours, scores, seriation: numpy and scipy only
    "explorer.filtering": (2, "notebook"),  # the filter's masks: pandas query, keyword, range
    "explorer.export": (2, "notebook"),  # the HTML page and the Parquet table (pyarrow lazily)
    "explorer.density": (1, "notebook"),  # density contours: numpy, scipy, contourpy
    "explorer.projection": (2, "notebook"),  # 2-D maps: numpy, the settings (umap lazily)
    "explorer.clusters": (3, "notebook"),  # named clusters (hdbscan, scikit-learn lazily)
    "explorer.background": (4, "notebook"),  # the map's thread, hand-off to the kernel's loop
    "explorer.thumbnails": (3, "notebook"),  # pictures' thumbnails, made on demand, kept
    "explorer.snapshot": (10, "notebook"),  # the static PNG (Pillow, IPython's display)
    "explorer.table": (10, "notebook"),  # table input, colourings by column
    "explorer.query": (10, "notebook"),  # the query lifecycle, neighbours
    "explorer.heatmap": (10, "notebook"),  # the selection's similarity matrix
    "explorer.widget": (11, "notebook"),  # SimilarityExplorer: synced traits, observers
    # Integrations (integrations/): other libraries' classes over the transport.
    "integrations": (0, "core"),  # integrations/__init__: a docstring only
    "integrations.client": (9, "core"),  # a model, its prompts and where requests go
    "integrations.langchain": (10, "core"),
    "integrations.llama_index": (10, "core"),
    "integrations.chroma": (10, "core"),
    "integrations.haystack": (10, "core"),
    "integrations.jupyter_ai": (10, "core"),
    # Entry points.
    "cli": (11, "entry"),
    "__main__": (12, "entry"),
    "__init__": (12, "entry"),
}

#: (importer, imported) pairs allowed against the map, each with its reason.
EXCEPTIONS: dict[tuple[str, str], str] = {
    ("magics", "standalone"): "%embed_serve runs the HTTP routes on the kernel's worker",
    ("explorer.projection", "progress"): "project()'s UMAP bar, shown only from a user's call",
}

MLX = {"mlx", "mlx_embeddings"}
UI_LIBRARIES = {"tornado", "IPython", "ipywidgets", "ipykernel", "jupyter_server", "anywidget"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    name = ".".join(parts)
    return name.removesuffix(".__init__") if len(parts) > 1 else name


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(module: str, source: str) -> tuple[set[str], set[str]]:
    """The package modules and the outside top-level packages that ``source`` (the code of
    ``module``) imports anywhere, including inside functions and ``TYPE_CHECKING`` blocks."""
    own: set[str] = set()
    outside: set[str] = set()
    package = module.split(".")[:-1] if module not in ("engine",) else ["engine"]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("jupyter_mlx_embed."):
                    own.add(alias.name.removeprefix("jupyter_mlx_embed."))
                else:
                    outside.add(alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                assert node.module is not None
                if node.module.startswith("jupyter_mlx_embed."):
                    own.add(node.module.removeprefix("jupyter_mlx_embed."))
                elif node.module != "jupyter_mlx_embed":
                    outside.add(node.module.split(".")[0])
                continue
            base = package[: len(package) - (node.level - 1)]
            if node.module:
                own.add(".".join([*base, node.module]))
            else:  # from . import x
                own.update(".".join([*base, alias.name]) for alias in node.names)
    return own, outside


def violations(module: str, source: str) -> list[str]:
    """Imports in ``source`` (the code of ``module``) that break the layer map."""
    rank, side = LAYERS[module]
    found = []
    for target in sorted(imports(module, source)[0]):
        if target not in LAYERS:
            found.append(f"{module} imports {target}, which is not in the layer map")
            continue
        target_rank, target_side = LAYERS[target]
        allowed = target_rank < rank and (side == "entry" or target_side in ("core", side))
        if not allowed and (module, target) not in EXCEPTIONS:
            found.append(
                f"{module} ({rank}, {side}) imports {target} ({target_rank}, {target_side})"
            )
    return found


def test_every_module_is_in_the_layer_map() -> None:
    assert set(_modules()) == set(LAYERS)


@pytest.mark.parametrize("module", sorted(LAYERS))
def test_imports_follow_the_layer_map(module: str) -> None:
    assert violations(module, _modules()[module].read_text()) == []


def test_exceptions_are_still_needed() -> None:
    sources = {m: imports(m, p.read_text())[0] for m, p in _modules().items()}
    assert [pair for pair in EXCEPTIONS if pair[1] not in sources[pair[0]]] == []


@pytest.mark.parametrize(
    ("module", "code"),
    [
        ("worker", "from .api import embed"),  # upward
        ("errors", "def f():\n    from . import config\n"),  # upward, inside a function
        ("engine.mlx_engine", "from ..worker import Worker"),  # upward from a subpackage
        ("routes", "from .magics import EmbedMagics"),  # across sides
        ("transport", "from .transport import Transport"),  # itself: same rank
        ("api", "import jupyter_mlx_embed.explorer.widget"),  # absolute form
    ],
)
def test_the_check_catches_an_upward_import(module: str, code: str) -> None:
    assert violations(module, code) != []


def test_only_engine_modules_import_mlx() -> None:
    users = {m for m, p in _modules().items() if MLX & imports(m, p.read_text())[1]}
    assert users == {
        "engine.cpu_kernels",
        "engine.mlx_engine",
        "engine.native",
        "engine.native_models",
        "engine.architectures.dense",
        "engine.architectures.classifier",
        "engine.architectures.gemma3_text",
        "engine.architectures.nomic_bert",
        "engine.architectures.siglip",
    }


@pytest.mark.parametrize("module", [m for m, (rank, _) in LAYERS.items() if rank <= 6])
def test_core_imports_no_ui_framework(module: str) -> None:
    assert not UI_LIBRARIES & imports(module, _modules()[module].read_text())[1]


@pytest.mark.parametrize("module", ["routes", "standalone"])
def test_http_layer_does_not_import_jupyter_or_ipython(module: str) -> None:
    outside = imports(module, _modules()[module].read_text())[1]
    assert not {"jupyter_server", "IPython", "ipywidgets", "anywidget"} & outside


def test_importing_the_package_does_not_import_mlx() -> None:
    code = "import sys, jupyter_mlx_embed; print('mlx.core' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
