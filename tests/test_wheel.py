"""A wheel of the checkout carries the native CPU kernels prebuilt (hatch_build.py), tagged for
this Python and platform, and the engine installed from it uses them without building."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from typing import Any

import pytest

from jupyter_mlx_embed.engine import native
from jupyter_mlx_embed.envvars import setting_variable

ROOT = Path(__file__).resolve().parent.parent
PREBUILT = f"jupyter_mlx_embed/engine/{native.PREBUILT}"
MODULE = "_jme_native" + (sysconfig.get_config_var("EXT_SUFFIX") or "")

built_here = pytest.mark.skipif(
    not (sys.platform.startswith("linux") and os.uname().machine == "x86_64"),
    reason="wheels carry the native kernels prebuilt on Linux x86-64 only",
)


def test_build_hook_loads_the_engine_build_with_the_standard_library_alone() -> None:
    """hatch_build.py imports engine/native.py (and what it imports) by path; in an isolated
    build environment nothing but hatchling, mlx, nanobind and CMake is installed, so none of
    that may import a third-party module, the package's ``__init__``, or ``mlx.core``."""
    code = (
        "import pathlib, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "import hatch_build\n"
        "class Refuse:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        top = name.partition('.')[0]\n"
        "        if top not in sys.stdlib_module_names and top != hatch_build._ALIAS:\n"
        "            raise ImportError(f'{name} imported')\n"
        "sys.meta_path.insert(0, Refuse())\n"
        f"native = hatch_build._load_native(pathlib.Path({str(ROOT)!r}) / 'jupyter_mlx_embed')\n"
        "assert callable(native.build_prebuilt)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of the checkout, built with this environment's hatchling, mlx and nanobind
    (the front end is already built, so only the kernels are compiled: a minute on two idle
    cores, a few on busy ones)."""
    out = tmp_path_factory.mktemp("dist")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    proc = subprocess.run(
        [*command, "--no-index", "-v", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=540,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    # The hook's own lines say why, where it fell back to a pure wheel.
    hook = [line.strip() for line in output.splitlines() if "native CPU kernels" in line]
    assert any("kernels prebuilt:" in line for line in hook), hook
    (built,) = out.glob("*.whl")
    return built


@built_here
@pytest.mark.slow
@pytest.mark.timeout(600)  # the first one to run builds the wheel
def test_wheel_holds_the_prebuilt_kernels_and_their_key(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert f"{PREBUILT}/{MODULE}" in names, sorted(n for n in names if "engine/" in n)
        # and the sources, built into the cache where the prebuilt module does not match
        assert {f"jupyter_mlx_embed/engine/csrc/{name}" for name in native._SOURCES} <= names
        key = json.loads(archive.read(f"{PREBUILT}/key.json"))
    assert key["mlx"] == importlib.metadata.version("mlx")
    assert key["ext_suffix"] == sysconfig.get_config_var("EXT_SUFFIX")
    assert key["nanobind"] == importlib.metadata.version("nanobind")


@built_here
@pytest.mark.slow
@pytest.mark.timeout(600)  # the first one to run builds the wheel
def test_wheel_is_tagged_for_this_python_and_platform(wheel: Path) -> None:
    python, abi, platform = wheel.stem.split("-")[-3:]
    assert python == abi == f"cp{sys.version_info.major}{sys.version_info.minor}"
    assert platform == "linux_x86_64"
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = (n for n in archive.namelist() if n.endswith(".dist-info/WHEEL"))
        assert "Root-Is-Purelib: false" in archive.read(metadata).decode()


@built_here
@pytest.mark.slow
@pytest.mark.timeout(600)  # the first one to run builds the wheel
def test_installed_wheel_loads_its_prebuilt_kernels(wheel: Path, tmp_path: Path) -> None:
    """From the unpacked wheel, with an empty cache folder: the prebuilt module passes the
    self-test and is used, and nothing is built into the cache."""
    site, cache = tmp_path / "site", tmp_path / "cache"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    code = (
        "import dataclasses, json\n"
        "from jupyter_mlx_embed.engine import native\n"
        "native.load_kernels()\n"
        "info = dataclasses.asdict(native.kernels_info())\n"
        "print(json.dumps({'file': native.__file__, 'info': info}))\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(site),
        setting_variable("cache_dir"): str(cache),
        "CXX": str(tmp_path / "no-compiler"),  # a fallback build fails at once, not in minutes
    }
    env.pop(native.ENV_VAR, None)
    # Run from tmp_path: ``python -c`` puts the working folder (the checkout's) first on the path.
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    child: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    assert Path(child["file"]).is_relative_to(site)  # the wheel's package, not the checkout's
    info = child["info"]
    assert info["loaded"], info["detail"]
    assert "prebuilt" in info["detail"]
    assert info["path"] == str(site / PREBUILT / MODULE)
    assert not list(cache.rglob("jme_native-*"))
