"""Build, cache and load the CPU fast path's C++ kernels (an MLX extension; engine-private).

``native_kernels.cpp`` defines MLX primitives (matrix products on packed weights with fused
bias + GELU, residual add + LayerNorm, attention over a fused QKV projection) and
``native_simd.cpp`` their vectorised loops, built once for AVX2+FMA and once for AVX-512 and
picked at run time. They are compiled with the system C++ compiler and CMake against the
installed mlx wheel's headers, with nanobind in MLX's nanobind domain so that
``mlx.core.array`` objects pass straight through. Like MLX's own ops, each takes an optional
``stream`` (an ``mx.Stream`` or ``mx.Device``; default: the current stream). The build is
cached like the BLAS shim (:mod:`._build`; key: sources, mlx, nanobind, Python and compiler
versions); ``make install`` runs it so that first use needs no compiler.

Anything that goes wrong (no compiler, no CMake, no nanobind, an ABI mismatch with mlx, a CPU
without AVX2) is logged once and makes :func:`load_kernels` return None: the caller then runs
the MLX-op fast path of :mod:`.cpu_kernels`. Nothing here raises into an import or an embed.
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import importlib.util
import logging
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ..envvars import setting_variable
from ._build import BuildError, build_folder, build_once, content_key, find_compiler, run_step

__all__ = ["ENV_VAR", "KernelsInfo", "build_kernels", "kernels_info", "load_kernels"]

logger = logging.getLogger(__name__)

#: The ``native_kernels`` setting's variable: ``off`` disables the native kernels;
#: ``avx2``/``avx512`` forces that instruction set.
ENV_VAR = setting_variable("native_kernels")

_MODULE = "_jme_native"  # the NB_MODULE name in native_kernels.cpp
_FILE = _MODULE + importlib.machinery.EXTENSION_SUFFIXES[0]  # what nanobind_add_module writes
_SOURCES = ("native_kernels.cpp", "native_simd.cpp")
_BUILD_TIMEOUT_S = 600
_OFF = ("0", "off", "false", "no", "none")

_CMAKE_LISTS = """\
cmake_minimum_required(VERSION 3.18)
project(jme_native LANGUAGES CXX)
set(CMAKE_CXX_STANDARD 20)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
set(CMAKE_POSITION_INDEPENDENT_CODE ON)
find_package(Python COMPONENTS Interpreter Development.Module REQUIRED)
find_package(nanobind CONFIG REQUIRED)
find_package(MLX CONFIG REQUIRED)
# The vectorised loops, once per instruction set (see native_simd.cpp for why each copy must
# not share inline functions with the rest).
add_library(jme_avx2 OBJECT "{simd}")
target_compile_definitions(jme_avx2 PRIVATE JME_ISA=avx2 JME_WIDTH=8)
target_compile_options(jme_avx2 PRIVATE -O3 -mavx2 -mfma -fno-math-errno -fno-trapping-math)
add_library(jme_avx512 OBJECT "{simd}")
target_compile_definitions(jme_avx512 PRIVATE JME_ISA=avx512 JME_WIDTH=16)
target_compile_options(jme_avx512 PRIVATE -O3 -mavx2 -mfma -mavx512f -mavx512dq -mavx512vl
                       -mavx512bw -mprefer-vector-width=512 -fno-math-errno -fno-trapping-math)
nanobind_add_module({module} NB_STATIC NB_DOMAIN mlx "{main}"
                    $<TARGET_OBJECTS:jme_avx2> $<TARGET_OBJECTS:jme_avx512>)
target_link_libraries({module} PRIVATE mlx)
set_target_properties({module} PROPERTIES LIBRARY_OUTPUT_DIRECTORY "{out}")
"""


@dataclass(frozen=True)
class KernelsInfo:
    """Whether the native kernels are in use, which instruction set, and why not if not."""

    loaded: bool
    isa: str | None
    path: str | None
    detail: str


_lock = threading.Lock()  # guards _loaded
_loaded: tuple[ModuleType | None, KernelsInfo] | None = None


def _source_dir() -> Path:
    return Path(__file__).parent


def _compiler_id(cxx: list[str]) -> str:
    """First line of ``cxx --version`` (part of the cache key); empty if it cannot run."""
    try:
        proc = subprocess.run([*cxx, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError, ValueError):
        return ""
    return proc.stdout.splitlines()[0] if proc.returncode == 0 and proc.stdout else ""


def _target(folder: Path, cxx_id: str) -> Path:
    import nanobind

    key = content_key(
        *((_source_dir() / name).read_bytes() for name in _SOURCES),
        importlib.metadata.version("mlx"),  # not mlx.core: importing it would bind a BLAS
        nanobind.__version__,
        sys.version,
        sysconfig.get_config_var("EXT_SUFFIX") or "",
        cxx_id,
    )
    # A folder per key: the module's file name is fixed (Python finds its init function by
    # it), and the folder also holds the marker of a failed build.
    return folder / f"jme_native-{key}" / _FILE


def build_kernels(cache_dir: Path | None = None, *, force: bool = False) -> Path | None:
    """Build (or reuse) the native kernels extension.

    Args:
        cache_dir: Where built files are kept; defaults to the ``builds`` folder in the
            engine's cache folder (``EngineConfig.cache_folder()``), as the BLAS shim's.
        force: Rebuild even if a cached build exists, or an earlier one failed.

    Returns:
        Path of the extension module, or None off Linux x86-64 or when the build is not
        possible (the reason is logged as a warning).
    """
    if not sys.platform.startswith("linux") or os.uname().machine != "x86_64":
        return None
    cmake, cxx = shutil.which("cmake"), find_compiler("CXX", ("c++", "g++", "clang++"))
    if cmake is None or cxx is None:
        logger.warning(
            "native kernels not built: %s not found", "cmake" if cmake is None else "c++"
        )
        return None
    try:
        import mlx
        import nanobind
    except ImportError as exc:
        logger.warning("native kernels not built: %s", exc)
        return None
    cxx_id = _compiler_id(cxx)
    if not cxx_id:
        logger.warning("native kernels not built: compiler %r does not run", shlex.join(cxx))
        return None
    folder = Path(cache_dir) if cache_dir is not None else build_folder()
    target = _target(folder, cxx_id)
    # A failed build leaves a marker, so that each new process does not spend the build time
    # again only to fail the same way; force (``build-kernels``) tries anyway.
    failed = target.with_name("FAILED")
    if not force and (target.is_file() or failed.is_file()):
        if not target.is_file():
            logger.warning(
                "native kernels not built: an earlier build failed (%s); "
                "`jupyter-mlx-embed build-kernels` tries again",
                failed,
            )
        return target if target.is_file() else None

    def build(output: Path) -> None:
        mlx_dir = Path(next(iter(mlx.__path__)))
        _run_build(output, cmake, shlex.join(cxx), mlx_dir, nanobind.cmake_dir())

    built = build_once(target, build, what="native kernels", force=force)
    try:
        if built is None:
            failed.write_text("see the log of the process that tried\n", encoding="utf-8")
        else:
            failed.unlink(missing_ok=True)
            # Builds for other sources or versions are stale (a process still using one
            # keeps its mapping after the unlink).
            for old in folder.glob("jme_native-*"):
                if old != target.parent:
                    shutil.rmtree(old, ignore_errors=True)
    except OSError:
        pass
    return built


def _run_build(output: Path, cmake: str, cxx: str, mlx_dir: Path, nb: str) -> None:
    """Configure and build the extension with CMake in a scratch folder beside ``output``,
    and copy the module to ``output``.

    Raises:
        BuildError: A step failed, or produced no module.
    """
    logger.info("building the native CPU kernels into %s (once; about 10-30 s)", output.parent)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=output.parent) as scratch:
        work = Path(scratch)
        out = work / "out"
        (work / "CMakeLists.txt").write_text(
            _CMAKE_LISTS.format(
                module=_MODULE,
                main=(_source_dir() / _SOURCES[0]).as_posix(),
                simd=(_source_dir() / _SOURCES[1]).as_posix(),
                out=out.as_posix(),
            ),
            encoding="utf-8",
        )
        configure = [
            cmake,
            "-S",
            str(work),
            "-B",
            str(work / "build"),
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DCMAKE_CXX_COMPILER={cxx}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dnanobind_DIR={nb}",
            f"-DMLX_DIR={mlx_dir / 'share' / 'cmake' / 'MLX'}",
        ]
        run_step(configure, _BUILD_TIMEOUT_S)
        jobs = str(os.cpu_count() or 1)
        run_step([cmake, "--build", str(work / "build"), "--parallel", jobs], _BUILD_TIMEOUT_S)
        built = out / _FILE
        if not built.is_file():
            raise BuildError(f"the build produced no {built.name}")
        shutil.copyfile(built, output)


def _import(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(_MODULE, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _self_test(module: ModuleType) -> None:
    """Run each op once on the CPU, the stream given as an argument: fails if mlx.core.array
    or mlx.core.Device does not cross (a nanobind ABI mismatch)."""
    import mlx.core as mx

    cpu = mx.cpu
    x = mx.ones((4, 6), stream=cpu)
    packed = module.pack_linear(x, stream=cpu)
    outputs = (
        module.linear(x, packed, 4, mx.zeros((4,), stream=cpu), True, 2, stream=cpu),
        module.add_layernorm(
            x, x, None, mx.ones((6,), stream=cpu), mx.zeros((6,), stream=cpu), 1e-5, stream=cpu
        ),
        module.attention(x, mx.array([0, 3, 4]), 1, stream=cpu),
    )
    mx.eval(*outputs)


def _load(cache_dir: Path | None, setting: str | None) -> tuple[ModuleType | None, KernelsInfo]:
    choice = (setting or "").strip().lower()
    if choice in _OFF:
        return None, KernelsInfo(False, None, None, f"disabled ({ENV_VAR}={choice})")
    path = build_kernels(cache_dir)
    if path is None:
        return None, KernelsInfo(False, None, None, "not built (see the log for why)")
    try:
        module = _import(path)
        if choice:
            module.set_isa(choice)
        _self_test(module)
    except Exception as exc:  # noqa: BLE001  (any failure means: run the MLX-op path)
        logger.warning("native kernels %s unusable: %r", path, exc)
        return None, KernelsInfo(False, None, str(path), f"unusable: {exc!r}")
    isa = module.isa()
    logger.info("native kernels loaded (%s) from %s", isa, path)
    return module, KernelsInfo(True, isa, str(path), f"{isa} kernels from {path}")


def load_kernels(cache_dir: Path | None = None, setting: str | None = None) -> ModuleType | None:
    """The native kernels module, building it first if needed; None if unavailable.

    The first call decides (and logs why not, once); later calls return the same answer.

    Args:
        cache_dir: Build cache directory (default: as :func:`build_kernels`).
        setting: The ``native_kernels`` setting: ``off`` (or ``0``, ``false``, ``no``,
            ``none``) disables them, ``avx2`` or ``avx512`` picks that instruction set;
            None or empty: the widest this CPU runs.
    """
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = _load(cache_dir, setting)
        return _loaded[0]


def kernels_info() -> KernelsInfo:
    """What :func:`load_kernels` decided (``loaded`` False with no detail before it ran)."""
    loaded = _loaded
    return loaded[1] if loaded else KernelsInfo(False, None, None, "not loaded yet")
