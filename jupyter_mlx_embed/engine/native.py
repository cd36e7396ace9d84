"""Build, cache and load the CPU fast path's C++ kernels (an MLX extension; engine-private).

The C++ in ``csrc/`` defines MLX primitives (matrix products on packed weights with fused
bias + GELU, residual add + LayerNorm, attention over a fused QKV projection: ``ops.cpp``,
``primitives.cpp``, ``runtime.cpp``) and their vectorised loops (``simd_*.cpp``), built once
for AVX2+FMA and once for AVX-512 and picked at run time. They are compiled with the system
C++ compiler and CMake against the installed mlx wheel's headers, with nanobind in MLX's
nanobind domain so that ``mlx.core.array`` objects pass straight through. Like MLX's own ops,
each takes an optional ``stream`` (an ``mx.Stream`` or ``mx.Device``; default: the current
stream). The build is cached like the BLAS shim (:mod:`._build`; key: the sources and the CMake
file, mlx, nanobind, Python and compiler versions); ``make install`` runs it so that first use
needs no compiler. A wheel carries them prebuilt instead (``hatch_build.py`` calls
:func:`build_prebuilt`), used when built for the running mlx, Python and these sources, else
they are built into the cache as from a checkout.

Anything that goes wrong (no compiler, no CMake, no nanobind, an ABI mismatch with mlx, a CPU
without AVX2) is logged once and makes :func:`load_kernels` return None: the caller then runs
the MLX-op fast path of :mod:`.cpu_kernels`. Nothing here raises into an import or an embed.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.metadata
import importlib.util
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from ..envvars import setting_variable
from ._build import BuildError, build_folder, build_once, content_key, find_compiler, run_step

__all__ = [
    "ENV_VAR",
    "PREBUILT",
    "KernelsInfo",
    "build_kernels",
    "build_prebuilt",
    "kernels_info",
    "load_kernels",
]

logger = logging.getLogger(__name__)

#: The ``native_kernels`` setting's variable: ``off`` disables the native kernels;
#: ``avx2``/``avx512`` forces that instruction set.
ENV_VAR = setting_variable("native_kernels")

_MODULE = "_jme_native"  # the NB_MODULE name in csrc/ops.cpp
_FILE = _MODULE + importlib.machinery.EXTENSION_SUFFIXES[0]  # what nanobind_add_module writes
#: The C++ sources, in ``csrc/`` beside this file: the module's own translation units, and
#: the vectorised ones compiled once per instruction set.
_MAIN_SOURCES = ("runtime.cpp", "primitives.cpp", "packing.cpp", "ops.cpp")
_SIMD_SOURCES = ("simd_norm_attention.cpp", "simd_products.cpp")
#: Compiled again for the other kinds of weights: with AVX512_BF16 flags (bfloat16), with AMX
#: flags (bfloat16 on AMX tiles), and once per instruction set for int8 (AVX-512 with VNNI
#: flags).
_PRODUCT_SOURCES = ("simd_products.cpp",)
_HEADERS = ("native.h", "spec.h", "simd_vec.h")
#: Every file a build reads: all of them feed the keys that decide rebuilds and whether a
#: prebuilt module matches.
_SOURCES = (*_HEADERS, *_MAIN_SOURCES, *_SIMD_SOURCES)
_BUILD_TIMEOUT_S = 600
#: A build for other sources or versions is removed when a new one is made only if no process
#: used it for this long: environments sharing one cache folder (a Jupyter server's and a
#: kernel's, say) each keep theirs instead of rebuilding in turn.
_STALE_AFTER_S = 30 * 24 * 3600
_OFF = ("0", "off", "false", "no", "none")
#: The folder beside this file that a wheel carries the prebuilt module in, with its key.
PREBUILT = "prebuilt"
_KEY_FILE = "key.json"
# What a prebuilt module must have been built for to be used. Not nanobind's version: the
# module links nanobind statically, and the ABI it shares with mlx.core is fixed by mlx's.
_MATCHED = ("mlx", "ext_suffix", "sources")

_CMAKE_LISTS = """\
cmake_minimum_required(VERSION 3.18)
project(jme_native LANGUAGES CXX)
set(CMAKE_CXX_STANDARD 20)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
set(CMAKE_POSITION_INDEPENDENT_CODE ON)
find_package(Python COMPONENTS Interpreter Development.Module REQUIRED)
find_package(nanobind CONFIG REQUIRED)
find_package(MLX CONFIG REQUIRED)
# The vectorised loops, once per instruction set (see simd_vec.h for why each copy must not
# share inline functions with the rest).
add_library(jme_avx2 OBJECT {simd})
target_compile_definitions(jme_avx2 PRIVATE JME_ISA=avx2 JME_WIDTH=8)
target_compile_options(jme_avx2 PRIVATE -O3 -mavx2 -mfma -fno-math-errno -fno-trapping-math)
add_library(jme_avx512 OBJECT {simd})
target_compile_definitions(jme_avx512 PRIVATE JME_ISA=avx512 JME_WIDTH=16)
target_compile_options(jme_avx512 PRIVATE -O3 -mavx2 -mfma -mavx512f -mavx512dq -mavx512vl
                       -mavx512bw -mprefer-vector-width=512 -fno-math-errno -fno-trapping-math)
# The products once more on bfloat16 weights (used where the CPU has AVX512_BF16), and on
# int8 weights (AVX2; AVX-512 where the CPU has AVX512_VNNI).
add_library(jme_avx512bf16 OBJECT {products})
target_compile_definitions(jme_avx512bf16 PRIVATE JME_ISA=avx512bf16 JME_WIDTH=16 JME_BF16=1)
target_compile_options(jme_avx512bf16 PRIVATE -O3 -mavx2 -mfma -mavx512f -mavx512dq -mavx512vl
                       -mavx512bw -mavx512bf16 -mprefer-vector-width=512 -fno-math-errno
                       -fno-trapping-math)
# And on AMX tiles (used, for bfloat16 weights, where the CPU has AMX-BF16).
add_library(jme_avx512amx OBJECT {products})
target_compile_definitions(jme_avx512amx PRIVATE JME_ISA=avx512amx JME_WIDTH=16 JME_AMX=1)
target_compile_options(jme_avx512amx PRIVATE -O3 -mavx2 -mfma -mavx512f -mavx512dq -mavx512vl
                       -mavx512bw -mavx512bf16 -mamx-tile -mamx-bf16
                       -mprefer-vector-width=512 -fno-math-errno -fno-trapping-math)
add_library(jme_avx2int8 OBJECT {products})
target_compile_definitions(jme_avx2int8 PRIVATE JME_ISA=avx2int8 JME_WIDTH=8 JME_INT8=1)
target_compile_options(jme_avx2int8 PRIVATE -O3 -mavx2 -mfma -fno-math-errno -fno-trapping-math)
add_library(jme_avx512int8 OBJECT {products})
target_compile_definitions(jme_avx512int8 PRIVATE JME_ISA=avx512int8 JME_WIDTH=16 JME_INT8=1)
target_compile_options(jme_avx512int8 PRIVATE -O3 -mavx2 -mfma -mavx512f -mavx512dq -mavx512vl
                       -mavx512bw -mavx512vnni -mprefer-vector-width=512 -fno-math-errno
                       -fno-trapping-math)
nanobind_add_module({module} NB_STATIC NB_DOMAIN mlx {main}
                    $<TARGET_OBJECTS:jme_avx2> $<TARGET_OBJECTS:jme_avx512>
                    $<TARGET_OBJECTS:jme_avx512bf16> $<TARGET_OBJECTS:jme_avx512amx>
                    $<TARGET_OBJECTS:jme_avx2int8>
                    $<TARGET_OBJECTS:jme_avx512int8>)
target_link_libraries({module} PRIVATE mlx)
set_target_properties({module} PROPERTIES LIBRARY_OUTPUT_DIRECTORY "{out}")
"""


@dataclass(frozen=True)
class KernelsInfo:
    """Whether the native kernels are in use, which instruction set, and why not if not;
    ``precisions``: the reduced ``precision`` settings they run, each with what runs it
    (``bf16``: ``amx`` or ``avx512_bf16``; ``int8``: ``avx2`` or ``avx512_vnni``)."""

    loaded: bool
    isa: str | None
    path: str | None
    detail: str
    precisions: dict[str, str] = field(default_factory=dict)


_lock = threading.Lock()  # guards _loaded
_loaded: tuple[ModuleType | None, KernelsInfo] | None = None


def _source_dir() -> Path:
    return Path(__file__).parent


def _csrc() -> Path:
    return _source_dir() / "csrc"


def _source_parts() -> list[bytes | str]:
    """Each source's name and content, for the keys: a renamed or an added file counts too."""
    return [part for name in _SOURCES for part in (name, (_csrc() / name).read_bytes())]


def _cmake_paths(names: tuple[str, ...]) -> str:
    """Sources as a CMake list of quoted absolute paths."""
    return " ".join(f'"{(_csrc() / name).as_posix()}"' for name in names)


def _compiler_id(cxx: list[str]) -> str:
    """First line of ``cxx --version`` (part of the cache key); empty if it cannot run."""
    try:
        proc = subprocess.run([*cxx, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError, ValueError):
        return ""
    return proc.stdout.splitlines()[0] if proc.returncode == 0 and proc.stdout else ""


@dataclass(frozen=True)
class _Toolchain:
    """What a build needs: the tools, and where mlx's and nanobind's CMake files are."""

    cmake: str
    cxx: list[str]
    cxx_id: str
    mlx_dir: Path
    nanobind_dir: str
    nanobind_version: str


def _toolchain() -> _Toolchain:
    """The tools and libraries a build needs (imports neither ``mlx.core`` nor anything else
    that binds a BLAS).

    Raises:
        BuildError: Not Linux x86-64, or one of them is missing (the message says which).
    """
    if not sys.platform.startswith("linux") or os.uname().machine != "x86_64":
        raise BuildError("the native kernels are for Linux x86-64 only")
    cmake, cxx = shutil.which("cmake"), find_compiler("CXX", ("c++", "g++", "clang++"))
    if cmake is None or cxx is None:
        raise BuildError(f"{'cmake' if cmake is None else 'c++'} not found")
    try:
        import mlx
        import nanobind
    except ImportError as exc:
        raise BuildError(str(exc)) from exc
    cxx_id = _compiler_id(cxx)
    if not cxx_id:
        raise BuildError(f"compiler {shlex.join(cxx)!r} does not run")
    return _Toolchain(
        cmake=cmake,
        cxx=cxx,
        cxx_id=cxx_id,
        mlx_dir=Path(next(iter(mlx.__path__))),
        nanobind_dir=nanobind.cmake_dir(),
        nanobind_version=nanobind.__version__,
    )


def _target(folder: Path, tools: _Toolchain) -> Path:
    key = content_key(
        *_source_parts(),
        _CMAKE_LISTS,
        importlib.metadata.version("mlx"),  # not mlx.core: importing it would bind a BLAS
        tools.nanobind_version,
        sys.version,
        sysconfig.get_config_var("EXT_SUFFIX") or "",
        tools.cxx_id,
    )
    # A folder per key: the module's file name is fixed (Python finds its init function by
    # it), and the folder also holds the marker of a failed build.
    return folder / f"jme_native-{key}" / _FILE


def _prebuilt_key() -> dict[str, str]:
    """What a prebuilt module is used for: this mlx, this Python's extension suffix, and these
    sources (with the CMake file that builds them).

    Raises:
        importlib.metadata.PackageNotFoundError: mlx is not installed.
    """
    return {
        "mlx": importlib.metadata.version("mlx"),
        "ext_suffix": sysconfig.get_config_var("EXT_SUFFIX") or "",
        "sources": content_key(*_source_parts(), _CMAKE_LISTS),
    }


def _prebuilt_dir() -> Path:
    return _source_dir() / PREBUILT


def _prebuilt() -> Path | None:
    """The module the installed wheel carries, if it was built for this mlx, Python and these
    sources; None otherwise (a mismatch is logged)."""
    folder = _prebuilt_dir()
    key_file = folder / _KEY_FILE
    if not key_file.is_file():
        logger.debug("no prebuilt native kernels in %s", folder)
        return None
    try:
        built_for = json.loads(key_file.read_text(encoding="utf-8"))
        if not isinstance(built_for, dict):
            raise ValueError(f"{key_file} holds no JSON object")
        running = _prebuilt_key()
    except (OSError, ValueError, importlib.metadata.PackageNotFoundError) as exc:
        logger.info("prebuilt native kernels in %s ignored: %s", folder, exc)
        return None
    differs = [name for name in _MATCHED if built_for.get(name) != running[name]]
    if differs:
        logger.info(
            "prebuilt native kernels in %s ignored: built for %s, running %s; "
            "building them into the cache instead",
            folder,
            {name: built_for.get(name) for name in differs},
            {name: running[name] for name in differs},
        )
        return None
    path = folder / _FILE
    if not path.is_file():
        logger.info("prebuilt native kernels ignored: %s is missing", path)
        return None
    return path


def build_prebuilt(folder: Path) -> list[Path]:
    """Build the kernels as a wheel carries them (``hatch_build.py``): the module and the key
    file that :func:`build_kernels` checks before using it, both written into ``folder``.

    Args:
        folder: An existing folder; the wheel's ``jupyter_mlx_embed/engine/prebuilt``.

    Returns:
        The module's and the key file's paths.

    Raises:
        BuildError: Not Linux x86-64, a tool or library missing, or a failed step.
    """
    tools = _toolchain()
    module = folder / _FILE
    _run_build(module, tools)
    # The nanobind and compiler versions are recorded for the curious, not matched.
    key = {**_prebuilt_key(), "nanobind": tools.nanobind_version, "compiler": tools.cxx_id}
    key_file = folder / _KEY_FILE
    key_file.write_text(json.dumps(key, indent=2) + "\n", encoding="utf-8")
    return [module, key_file]


def build_kernels(
    cache_dir: Path | None = None, *, force: bool = False, prebuilt: bool = True
) -> Path | None:
    """The native kernels extension: the one the installed wheel carries when it was built
    for this mlx, Python and these sources, else built into (or reused from) the cache.

    Args:
        cache_dir: Where built files are kept; defaults to the ``builds`` folder in the
            engine's cache folder (``EngineConfig.cache_folder()``), as the BLAS shim's.
        force: Rebuild even if a cached build exists, or an earlier one failed (a matching
            prebuilt module is still preferred).
        prebuilt: Whether a matching prebuilt module may answer.

    Returns:
        Path of the extension module, or None off Linux x86-64 or when the build is not
        possible (the reason is logged as a warning).
    """
    if not sys.platform.startswith("linux") or os.uname().machine != "x86_64":
        return None
    if prebuilt and (path := _prebuilt()) is not None:
        return path
    try:
        tools = _toolchain()
    except BuildError as exc:
        logger.warning("native kernels not built: %s", exc)
        return None
    folder = Path(cache_dir) if cache_dir is not None else build_folder()
    target = _target(folder, tools)
    # A failed build leaves a marker, so that each new process does not spend the build time
    # again only to fail the same way; force (``build-kernels``) tries anyway.
    failed = target.with_name("FAILED")
    if not force and (target.is_file() or failed.is_file()):
        if target.is_file():
            _mark_used(target.parent)
        else:
            logger.warning(
                "native kernels not built: an earlier build failed (%s); "
                "`jupyter-mlx-embed build-kernels` tries again",
                failed,
            )
        return target if target.is_file() else None

    built = build_once(
        target, lambda output: _run_build(output, tools), what="native kernels", force=force
    )
    try:
        if built is None:
            failed.write_text("see the log of the process that tried\n", encoding="utf-8")
        else:
            failed.unlink(missing_ok=True)
            # Builds for other sources or versions that nothing used for a while are stale;
            # another environment sharing the cache folder keeps its own (a process still
            # using a removed one keeps its mapping after the unlink).
            stale_before = time.time() - _STALE_AFTER_S
            for old in folder.glob("jme_native-*"):
                if old != target.parent and old.stat().st_mtime < stale_before:
                    shutil.rmtree(old, ignore_errors=True)
    except OSError:
        pass
    return built


def _mark_used(folder: Path) -> None:
    """Touch a build's folder: its modification time says when a process last used it."""
    with contextlib.suppress(OSError):
        os.utime(folder)


def _run_build(output: Path, tools: _Toolchain) -> None:
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
                main=_cmake_paths(_MAIN_SOURCES),
                simd=_cmake_paths(_SIMD_SOURCES),
                products=_cmake_paths(_PRODUCT_SOURCES),
                out=out.as_posix(),
            ),
            encoding="utf-8",
        )
        configure = [
            tools.cmake,
            "-S",
            str(work),
            "-B",
            str(work / "build"),
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DCMAKE_CXX_COMPILER={shlex.join(tools.cxx)}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dnanobind_DIR={tools.nanobind_dir}",
            f"-DMLX_DIR={tools.mlx_dir / 'share' / 'cmake' / 'MLX'}",
        ]
        run_step(configure, _BUILD_TIMEOUT_S)
        jobs = str(os.cpu_count() or 1)
        run_step(
            [tools.cmake, "--build", str(work / "build"), "--parallel", jobs], _BUILD_TIMEOUT_S
        )
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


def _open(path: Path, choice: str) -> ModuleType:
    """Import the module at ``path``, pick the instruction set ``choice`` (empty: the widest),
    and run the self-test; raises whatever fails."""
    module = _import(path)
    if choice:
        module.set_isa(choice)
    _self_test(module)
    return module


def _in_use(module: ModuleType, path: Path, where: str) -> tuple[ModuleType, KernelsInfo]:
    isa = module.isa()
    logger.info("native kernels loaded (%s, %s) from %s", isa, where, path)
    detail = f"{isa} kernels {where}: {path}"
    return module, KernelsInfo(True, isa, str(path), detail, dict(module.precisions()))


def _load(cache_dir: Path | None, setting: str | None) -> tuple[ModuleType | None, KernelsInfo]:
    choice = (setting or "").strip().lower()
    if choice in _OFF:
        return None, KernelsInfo(False, None, None, f"disabled ({ENV_VAR}={choice})")
    path = build_kernels(cache_dir)
    if path is not None and path.parent == _prebuilt_dir():
        try:
            return _in_use(_open(path, choice), path, "prebuilt with the package")
        except Exception as exc:  # noqa: BLE001  (any failure means: try a build of our own)
            logger.warning("prebuilt native kernels %s unusable (%r); building them", path, exc)
            path = build_kernels(cache_dir, prebuilt=False)
    if path is None:
        return None, KernelsInfo(False, None, None, "not built (see the log for why)")
    try:
        return _in_use(_open(path, choice), path, "built into the cache")
    except Exception as exc:  # noqa: BLE001  (any failure means: run the MLX-op path)
        logger.warning("native kernels %s unusable: %r", path, exc)
        return None, KernelsInfo(False, None, str(path), f"unusable: {exc!r}")


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
