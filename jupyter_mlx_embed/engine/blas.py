"""Preload a fast CBLAS on Linux before mlx.core is imported, so that libmlx binds to it.

The policy: which library to load (the configured one, else scipy-openblas32 through a small
C shim built once into the engine's cache folder, else a system OpenBLAS), with which OpenBLAS
kernels (``OPENBLAS_CORETYPE``). Which library libmlx then actually bound is
:mod:`.blas_probe`'s to tell.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..envvars import setting_variable
from ._build import BuildError, build_folder, build_once, content_key, find_compiler, run_step
from .blas_probe import (
    SHIM_PREFIX,
    SLOW_BLAS_ADVICE,
    BlasInfo,
    classify_library,
    global_cblas_provider,
    libmlx_mapped,
    library_path,
    symbol_address,
)

__all__ = ["ENV_VAR", "build_shim", "openblas_core", "preload_fast_blas"]

logger = logging.getLogger(__name__)

#: Environment variable naming a library that exports ``cblas_*``; ``none`` disables preloading.
ENV_VAR = setting_variable("blas")

_SHIM_SOURCE = Path(__file__).with_name("cblas_shim.c")
# os.RTLD_* only exist on POSIX; the module must still import on Windows (where it is a no-op).
_DLOPEN_MODE = getattr(os, "RTLD_NOW", 2) | getattr(os, "RTLD_GLOBAL", 0x100)
_COMPILE_TIMEOUT_S = 120

_ALREADY_IMPORTED_MSG = (
    "mlx.core was imported before jupyter_mlx_embed could preload a fast BLAS, so MLX is bound "
    "to whatever BLAS it linked at import time (with the mlx[cpu] wheel: a slow reference BLAS, "
    "~30x slower matmuls). Import jupyter_mlx_embed (or start the embedding worker) before "
    "importing mlx, or start Python with LD_PRELOAD=/path/to/libopenblas.so.0."
)

_lock = threading.Lock()  # guards _result
_result: BlasInfo | None = None
# Keep loaded handles referenced for the life of the process (ctypes never dlcloses, but the
# intent is explicit: the symbols must stay in the global scope for libmlx to bind to).
_handles: list[ctypes.CDLL] = []


def _mlx_loaded() -> bool:
    return "mlx.core" in sys.modules or libmlx_mapped()


# --------------------------------------------------------------------------------------------
# Shim build
# --------------------------------------------------------------------------------------------


def _scipy_openblas_lib() -> Path | None:
    """Path of libscipy_openblas.so from the scipy-openblas32 wheel, if installed."""
    try:
        import scipy_openblas32  # optional dependency, only needed here

        lib = Path(scipy_openblas32.get_lib_dir()) / scipy_openblas32.get_library(fullname=True)
    except (ImportError, AttributeError, OSError, IndexError) as exc:  # absent, or new layout
        logger.debug("scipy-openblas32 not usable: %s", exc)
        return None
    return lib.resolve() if lib.is_file() else None


def build_shim(cache_dir: Path | None = None, *, force: bool = False) -> Path | None:
    """Build (or reuse) the CBLAS forwarding shim for scipy-openblas32.

    The shim's name is a key of its C source, the library it forwards to and the machine; it
    is written atomically, so concurrent builders and interrupted builds never expose a
    partial file. ``make install`` (``jupyter-mlx-embed build-blas``) builds it ahead of time,
    so that first use needs no compiler.

    Args:
        cache_dir: Output directory; defaults to the ``builds`` folder in the engine's cache
            folder (``EngineConfig.cache_folder()``).
        force: Rebuild even if a cached shim exists (e.g. it failed to load).

    Returns:
        Path of the shim, or None if not on Linux, scipy-openblas32 or a compiler is missing,
        or compilation failed (the reason is logged).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        source = _SHIM_SOURCE.read_bytes()
    except OSError as exc:
        logger.warning("CBLAS shim source missing (%s); is package data installed?", exc)
        return None
    openblas = _scipy_openblas_lib()
    if openblas is None:
        logger.debug("scipy-openblas32 not installed; no CBLAS shim")
        return None
    folder = Path(cache_dir) if cache_dir is not None else build_folder()
    key = content_key(source, os.fsencode(openblas), platform.machine())
    target = folder / f"{SHIM_PREFIX}{key}.so"
    if target.is_file() and not force:
        return target
    cc = find_compiler("CC", ("cc", "gcc", "clang"))
    if cc is None:
        logger.debug("no C compiler found ($CC, cc, gcc, clang); cannot build CBLAS shim")
        return None

    def compile_shim(output: Path) -> None:
        # Link against libscipy_openblas (DT_NEEDED + absolute rpath) instead of relying on it
        # being loaded RTLD_GLOBAL first: the shim is then self-contained (dlopen of the shim
        # alone pulls in exactly this library), -z defs catches a missing symbol at build time
        # rather than at load time, and a moved/removed wheel makes loading fail loudly.
        run_step(
            [
                *cc,
                "-shared",
                "-fPIC",
                "-O2",
                "-o",
                str(output),
                str(_SHIM_SOURCE),
                str(openblas),
                f"-Wl,-rpath,{openblas.parent}",
                "-Wl,-z,defs",
            ],
            _COMPILE_TIMEOUT_S,
        )
        if not output.is_file():
            raise BuildError(f"the compiler wrote no {output.name}")
        output.chmod(0o755)

    return build_once(target, compile_shim, what="CBLAS shim", force=force)


# --------------------------------------------------------------------------------------------
# Preloading
# --------------------------------------------------------------------------------------------


def _try_load(path: str, name: str, source: str, failures: list[str]) -> BlasInfo | None:
    """dlopen ``path`` RTLD_GLOBAL and check that it provides ``cblas_sgemm``."""
    try:
        lib = ctypes.CDLL(path, mode=_DLOPEN_MODE)
    except OSError as exc:
        failures.append(f"{path}: cannot load ({exc})")
        return None
    address = symbol_address(lib, "cblas_sgemm")
    if address is None:
        failures.append(f"{path}: loaded but does not export cblas_sgemm")
        return None
    _handles.append(lib)
    provider = library_path(address) or path
    label, fast = classify_library(provider)
    if label == "unknown":
        label = name  # e.g. "configured": an unrecognised library the user chose
    detail = f"cblas_sgemm from {provider}"
    if not fast:
        detail += "; this looks like the reference BLAS, expect slow matmuls"
    return BlasInfo(name=label, path=provider, fast=fast, source=source, detail=detail)


def _system_openblas_candidates() -> list[str]:
    triplet = f"{platform.machine()}-linux-gnu"
    candidates = []
    found = ctypes.util.find_library("openblas")
    if found:
        candidates.append(found)  # a soname such as libopenblas.so.0; dlopen searches for it
    for sub in ("", "openblas-pthread/", "openblas-openmp/", "openblas-serial/"):
        candidates.append(f"/usr/lib/{triplet}/{sub}libopenblas.so.0")
    candidates += ["/usr/lib64/libopenblas.so.0", "/usr/lib/libopenblas.so.0"]
    # Only the soname from find_library may be a bare name; skip absolute paths that are absent.
    return [
        c
        for i, c in enumerate(candidates)
        if c not in candidates[:i] and (not c.startswith("/") or os.path.exists(c))
    ]


#: OpenBLAS's name for the kernels of CPUs with AVX-512 F, BW, DQ and VL (Skylake-X and
#: later, AMD Zen 4 and 5). On such CPUs an environment may pin OpenBLAS to its AVX2
#: ("Haswell") kernels with OPENBLAS_CORETYPE, which halves sgemm (110 against 213 GFLOP per
#: CPU-second at the model's shapes, BENCHMARKS.md): the engine's own copy ignores it.
_AVX512_CORE = "SkylakeX"
_AVX512_FLAGS = {"avx512f", "avx512bw", "avx512dq", "avx512vl"}
_CORE_VARIABLE = "OPENBLAS_CORETYPE"


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _wanted_core(core: str) -> str | None:
    """The OPENBLAS_CORETYPE to load OpenBLAS with for the ``blas_core`` setting ``core``;
    None leaves the environment as it is."""
    if core == "inherit":
        return None
    if core == "auto":
        return _AVX512_CORE if _AVX512_FLAGS.issubset(_cpu_flags()) else None
    return core


@contextmanager
def _openblas_core(core: str | None) -> Iterator[None]:
    """OPENBLAS_CORETYPE set to ``core`` while an OpenBLAS loads (it reads the variable in
    its constructor), then restored, so other libraries see the environment unchanged."""
    if core is None:
        yield
        return
    before = os.environ.get(_CORE_VARIABLE)
    os.environ[_CORE_VARIABLE] = core
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(_CORE_VARIABLE, None)
        else:
            os.environ[_CORE_VARIABLE] = before


def openblas_core() -> str | None:
    """The kernels the preloaded OpenBLAS runs (e.g. ``"SkylakeX"``), or None when the BLAS
    is not an OpenBLAS this module loaded."""
    for handle in reversed(_handles):
        for name in ("scipy_openblas_get_corename", "openblas_get_corename"):
            function = getattr(handle, name, None)
            if function is not None:
                function.restype = ctypes.c_char_p
                value = function()
                return value.decode("ascii", "replace").strip() if value else None
    return None


def _preload(configured: str | None, cache_dir: Path | None, core: str = "auto") -> BlasInfo:
    failures: list[str] = []

    already = global_cblas_provider()
    if already is not None:
        # Something (LD_PRELOAD, an earlier RTLD_GLOBAL load) already provides cblas_sgemm in
        # the global scope; it precedes anything we could load, so loading more is pointless.
        label, fast = classify_library(already)
        detail = f"cblas_sgemm already globally provided by {already}"
        if not fast:
            detail += "; " + SLOW_BLAS_ADVICE
            logger.warning(detail)
        return BlasInfo(name=label, path=already, fast=fast, source="already-global", detail=detail)

    if configured:
        info = _try_load(configured, "configured", "configured", failures)
        if info is not None:
            return info
        logger.warning(
            "configured BLAS %r is unusable (%s); falling back to scipy-openblas32 / system "
            "OpenBLAS",
            configured,
            failures[-1],
        )

    with _openblas_core(_wanted_core(core)):
        return _preload_openblas(cache_dir, failures)


def _preload_openblas(cache_dir: Path | None, failures: list[str]) -> BlasInfo:
    """scipy-openblas32 through the shim, else a system OpenBLAS."""
    shim = build_shim(cache_dir)
    if shim is not None:
        info = _try_load(str(shim), "scipy-openblas (shim)", "preloaded", failures)
        if info is None:
            # A cached shim can be stale (e.g. scipy-openblas32 reinstalled); rebuild it once.
            logger.debug("cached CBLAS shim unusable (%s); rebuilding", failures[-1])
            shim = build_shim(cache_dir, force=True)
            if shim is not None:
                info = _try_load(str(shim), "scipy-openblas (shim)", "preloaded", failures)
        if info is not None:
            return info
    else:
        failures.append("scipy-openblas32 shim: unavailable (package or C compiler missing)")

    system = _system_openblas_candidates()
    for candidate in system:
        info = _try_load(candidate, "openblas (system)", "preloaded", failures)
        if info is not None:
            return info
    if not system:
        failures.append("system OpenBLAS: not found")

    for failure in failures:
        logger.debug("BLAS candidate rejected: %s", failure)
    detail = "no fast BLAS could be preloaded: " + "; ".join(failures) + ". " + SLOW_BLAS_ADVICE
    logger.warning(detail)
    return BlasInfo(
        name="reference (slow)", path=None, fast=False, source="no-candidate", detail=detail
    )


def preload_fast_blas(
    configured: str | None = None, *, cache_dir: Path | None = None, core: str = "auto"
) -> BlasInfo | None:
    """Load a fast library exporting ``cblas_*`` RTLD_GLOBAL so that libmlx binds to it.

    Must run before ``mlx.core`` is first imported: libmlx resolves its BLAS symbols when it
    is loaded. Candidates, first usable wins: ``configured`` (else ``$JUPYTER_MLX_EMBED_BLAS``;
    ``none`` disables preloading), scipy-openblas32 through a compiled shim, system OpenBLAS.
    Idempotent and thread-safe: later calls return the first call's result.

    Args:
        configured: Path of a library exporting ``cblas_sgemm``, or ``"none"``.
        cache_dir: Where the shim is built and kept (default: as :func:`build_shim`).
        core: Kernels of the OpenBLAS loaded: ``"auto"`` (AVX-512 ones where the CPU has
            it, whatever ``OPENBLAS_CORETYPE`` says), ``"inherit"`` or an OpenBLAS core name.

    Returns:
        What was loaded (``source`` is ``configured``, ``preloaded``, ``disabled``,
        ``already-global``, ``no-candidate`` or ``already-imported``), or None off Linux.
    """
    global _result
    if not sys.platform.startswith("linux"):
        return None  # macOS: MLX uses Accelerate/Metal; nothing to do.
    with _lock:
        if _result is not None:
            return _result
        if _mlx_loaded():
            warnings.warn(_ALREADY_IMPORTED_MSG, RuntimeWarning, stacklevel=2)
            logger.warning(_ALREADY_IMPORTED_MSG)
            _result = BlasInfo(
                name="unknown",
                path=None,
                fast=False,
                source="already-imported",
                detail=_ALREADY_IMPORTED_MSG
                + " Use blas_probe.detect_bound_blas() to see what was bound.",
            )
            return _result
        choice = configured if configured is not None else os.environ.get(ENV_VAR)
        choice = (choice or "").strip() or None
        if choice is not None and choice.lower() == "none":
            _result = BlasInfo(
                name="reference (slow)",
                path=None,
                fast=False,
                source="disabled",
                detail=f"BLAS preloading disabled ({ENV_VAR}=none or configured 'none')",
            )
            logger.info(_result.detail)
            return _result
        _result = _preload(choice, cache_dir, core)
        logger.info("BLAS preload: %s (%s) %s", _result.name, _result.source, _result.path or "")
        return _result
