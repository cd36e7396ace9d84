"""The architecture stays visible: no layer imports upward, MLX only inside the engine."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "jupyter_mlx_embed"
PURE = ["errors", "config", "modelspec", "registry", "tokenization", "schema", "batching"]
ENGINE_SIDE = [*PURE, "engine", "_cpu_kernels", "worker", "api", "_blas", "embeddings", "transport"]
UI_LIBRARIES = {"tornado", "IPython", "ipywidgets", "ipykernel", "jupyter_server", "traitlets"}


def _imports(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_do_not_import_mlx(module: str) -> None:
    assert not {"mlx", "mlx_embeddings"} & _imports(module)


@pytest.mark.parametrize("module", ENGINE_SIDE)
def test_engine_side_imports_no_ui_framework(module: str) -> None:
    assert not UI_LIBRARIES & _imports(module)


def test_only_the_engine_imports_mlx() -> None:
    users = {p.stem for p in PACKAGE.glob("*.py") if {"mlx", "mlx_embeddings"} & _imports(p.stem)}
    assert users == {"engine", "_cpu_kernels"}


@pytest.mark.parametrize("module", ["handlers", "server"])
def test_http_layer_does_not_import_jupyter_or_ipython(module: str) -> None:
    assert not {"jupyter_server", "IPython", "ipywidgets", "mlx"} & _imports(module)


def test_importing_the_package_does_not_import_mlx() -> None:
    code = "import sys, jupyter_mlx_embed; print('mlx.core' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
