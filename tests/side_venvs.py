"""Cached Python environments for libraries that cannot share the test environment (jupyter-ai
2.x needs langchain-core < 1) or are too large for the ``test`` extra (embedding-atlas pulls
CUDA torch), that still see this environment's packages after their own (a ``.pth``)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import platformdirs
import pytest

import jupyter_mlx_embed

#: pip's words for an index that cannot provide a requirement (the tests skip then).
UNREACHABLE = (
    "No matching distribution found",
    "Could not find a version that satisfies",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Network is unreachable",
)


def appended_paths() -> list[str]:
    """Where this process imports ``jupyter_mlx_embed`` from, then this environment's
    site-packages: what a side environment sees after its own packages."""
    paths = [str(Path(jupyter_mlx_embed.__file__).resolve().parent.parent)]
    for name in ("purelib", "platlib"):
        path = sysconfig.get_paths()[name]
        if path not in paths:
            paths.append(path)
    return paths


def _pip_install(python: Path, requirement: str) -> None:
    """``pip install requirement``; skip when the package index cannot provide it."""
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", requirement],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode == 0:
        return
    output = done.stdout + done.stderr
    if any(sign in output for sign in UNREACHABLE):
        pytest.skip(f"the package index cannot provide {requirement}: {output.strip()[-500:]}")
    pytest.fail(f"pip install {requirement} failed:\n{output}")


def side_python(name: str, requirement: str, *, reuse_ours: bool) -> Path:
    """The Python of a cached environment with ``requirement`` (built on first use into a
    scratch folder and renamed into place: an interrupted build is never reused; of two
    concurrent builds, the first rename wins). Call it with ``-m`` only: the environment
    was built under another name, so its scripts' ``#!`` lines are wrong.

    Args:
        name: The environment's folder name, before its key.
        requirement: What pip installs.
        reuse_ours: Write the ``.pth`` before installing, so that pip takes what this
            environment already has (a requirement that must not replace our versions
            installs into its own environment first, with False).
    """
    appended = appended_paths()
    key = "\n".join([requirement, sys.version, sys.base_prefix, *appended])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    default = Path(platformdirs.user_cache_dir("jupyter-mlx-embed")) / "test-venvs"
    venv = Path(os.environ.get("JME_TEST_VENVS_DIR") or default) / f"{name}-{digest}"
    python = venv / "bin" / "python"
    if python.exists():
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{venv.name}-", dir=venv.parent))
    try:
        subprocess.run([sys.executable, "-m", "venv", str(scratch)], check=True)
        (site,) = scratch.glob("lib/python*/site-packages")
        pth = site / "zz_jupyter_mlx_embed_tests.pth"
        if reuse_ours:
            pth.write_text("".join(p + "\n" for p in appended))
        _pip_install(scratch / "bin" / "python", requirement)
        pth.write_text("".join(p + "\n" for p in appended))
        try:
            scratch.rename(venv)
        except OSError:
            if not python.exists():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return python
