"""Preload a fast CBLAS before mlx.core is imported on Linux, and report which BLAS MLX bound."""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import hashlib
import json
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..envvars import setting_variable

__all__ = [
    "ENV_VAR",
    "BlasInfo",
    "build_shim",
    "detect_bound_blas",
    "main",
    "openblas_core",
    "preload_fast_blas",
]

logger = logging.getLogger(__name__)

#: Environment variable naming a library that exports ``cblas_*``; ``none`` disables preloading.
ENV_VAR = setting_variable("blas")

_SHIM_SOURCE = Path(__file__).with_name("cblas_shim.c")
_SHIM_PREFIX = "libjme_cblas_shim-"
# os.RTLD_* only exist on POSIX; the module must still import on Windows (where it is a no-op).
_DLOPEN_MODE = getattr(os, "RTLD_NOW", 2) | getattr(os, "RTLD_GLOBAL", 0x100)
_COMPILE_TIMEOUT_S = 120

_ALREADY_IMPORTED_MSG = (
    "mlx.core was imported before jupyter_mlx_embed could preload a fast BLAS, so MLX is bound "
    "to whatever BLAS it linked at import time (with the mlx[cpu] wheel: a slow reference BLAS, "
    "~30x slower matmuls). Import jupyter_mlx_embed (or start the embedding worker) before "
    "importing mlx, or start Python with LD_PRELOAD=/path/to/libopenblas.so.0."
)
_REFERENCE_MSG = (
    "MLX is using the slow reference BLAS bundled with mlx-cpu (matmuls ~30x slower). Call "
    "jupyter_mlx_embed.engine.blas.preload_fast_blas() before the first `import mlx.core`, set "
    f"{ENV_VAR}=/path/to/lib exporting cblas_sgemm, or LD_PRELOAD such a library."
)

# RLock because preload_fast_blas() calls build_shim(), which also takes the lock.
_lock = threading.RLock()
_result: BlasInfo | None = None
# Keep loaded handles referenced for the life of the process (ctypes never dlcloses, but the
# intent is explicit: the symbols must stay in the global scope for libmlx to bind to).
_handles: list[ctypes.CDLL] = []


@dataclass(frozen=True)
class BlasInfo:
    """Which BLAS provides ``cblas_sgemm`` to MLX, and how it got there."""

    name: str
    path: str | None
    fast: bool
    source: str
    detail: str = ""


# --------------------------------------------------------------------------------------------
# Low-level helpers (Linux/glibc)
# --------------------------------------------------------------------------------------------


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


def _dladdr(address: int | None) -> str | None:
    """Return the real path of the shared object containing ``address`` (None if unknown)."""
    if not address:
        return None
    libc = ctypes.CDLL(None)
    dladdr = libc.dladdr
    dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    dladdr.restype = ctypes.c_int
    info = _DlInfo()
    if not dladdr(ctypes.c_void_p(address), ctypes.byref(info)) or not info.dli_fname:
        return None
    return os.path.realpath(os.fsdecode(info.dli_fname))


def _symbol_address(lib: ctypes.CDLL, name: str) -> int | None:
    """dlsym ``name`` in ``lib``'s lookup scope (the library plus its dependencies)."""
    try:
        func = getattr(lib, name)
    except AttributeError:
        return None
    return ctypes.cast(func, ctypes.c_void_p).value


def _read_maps() -> list[tuple[int, int, str, int, str]]:
    """Parse /proc/self/maps into (start, end, perms, offset, path) for file-backed mappings."""
    rows = []
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            parts = line.split(None, 5)
            if len(parts) < 6 or not parts[5].startswith("/"):
                continue
            start, end = (int(x, 16) for x in parts[0].split("-"))
            rows.append((start, end, parts[1], int(parts[2], 16), parts[5].rstrip("\n")))
    return rows


def _is_libmlx(path: str) -> bool:
    return os.path.basename(path).startswith("libmlx.so")


def _libmlx_loaded() -> bool:
    """True if libmlx is mapped, even if imported by something other than ``mlx.core``."""
    try:
        return any(_is_libmlx(row[4]) for row in _read_maps())
    except OSError:
        return False


def _mlx_loaded() -> bool:
    return "mlx.core" in sys.modules or _libmlx_loaded()


def _classify(path: str) -> tuple[str, bool]:
    """Map a provider library path to a (label, fast) pair."""
    low = os.path.realpath(path).lower()
    base = os.path.basename(low)
    if "mlx_cpu.libs" in low:
        return "reference (slow)", False
    if base.startswith(_SHIM_PREFIX) or "scipy_openblas" in low or "scipy-openblas" in low:
        return "scipy-openblas (shim)", True
    # Vendor checks come before the generic "libblas" test: on Debian the realpath of the
    # libblas.so.3 alternative is e.g. .../openblas-pthread/libblas.so.3, which is fast.
    if "openblas" in low:
        system = low.startswith(("/usr/", "/lib"))
        return ("openblas (system)" if system else "openblas"), True
    if "mkl" in low:
        return "mkl", True
    if "blis" in low:
        return "blis", True
    if "atlas" in low:
        return "atlas", True
    if "libblas" in low or "libcblas" in low:
        return "reference (slow)", False
    return "unknown", True


def _global_cblas_provider() -> str | None:
    """Path of the library already providing ``cblas_sgemm`` in the global scope, if any."""
    try:
        return _dladdr(_symbol_address(ctypes.CDLL(None), "cblas_sgemm"))
    except OSError:
        return None


# --------------------------------------------------------------------------------------------
# Shim build
# --------------------------------------------------------------------------------------------


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jupyter-mlx-embed"


def _scipy_openblas_lib() -> Path | None:
    """Path of libscipy_openblas.so from the scipy-openblas32 wheel, if installed."""
    try:
        import scipy_openblas32  # optional dependency, only needed here

        lib = Path(scipy_openblas32.get_lib_dir()) / scipy_openblas32.get_library(fullname=True)
    except (ImportError, AttributeError, OSError, IndexError) as exc:  # absent, or new layout
        logger.debug("scipy-openblas32 not usable: %s", exc)
        return None
    return lib.resolve() if lib.is_file() else None


def _compiler() -> list[str] | None:
    """C compiler command: $CC (may contain flags) or the first of cc/gcc/clang on PATH."""
    env_cc = os.environ.get("CC", "").strip()
    if env_cc:
        return shlex.split(env_cc)
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return [found]
    return None


def _shim_path(cache_dir: Path, source: bytes, openblas: Path) -> Path:
    # Hash the C source and the backing library path so either change yields a new file name.
    digest = hashlib.sha256()
    for part in (source, os.fsencode(openblas), platform.machine().encode()):
        digest.update(part + b"\0")
    return cache_dir / f"{_SHIM_PREFIX}{digest.hexdigest()[:16]}.so"


def build_shim(cache_dir: Path | None = None, *, force: bool = False) -> Path | None:
    """Build (or reuse) the CBLAS forwarding shim for scipy-openblas32.

    The shim is written atomically (compiled to a temporary name, then renamed), so concurrent
    builders and interrupted builds never expose a partial file. Used by ``make install`` to
    pre-build it, so that first use needs no compiler.

    Args:
        cache_dir: Output directory; defaults to ``$XDG_CACHE_HOME/jupyter-mlx-embed``.
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
    cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    target = _shim_path(cache_dir, source, openblas)
    with _lock:
        if target.is_file() and not force:
            return target
        cc = _compiler()
        if cc is None:
            logger.debug("no C compiler found ($CC, cc, gcc, clang); cannot build CBLAS shim")
            return None
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(
                prefix=f".{target.stem}-", suffix=".so.tmp", dir=cache_dir
            )
            os.close(fd)
        except OSError as exc:
            logger.warning("cannot write CBLAS shim into %s: %s", cache_dir, exc)
            return None
        # Link against libscipy_openblas (DT_NEEDED + absolute rpath) instead of relying on it
        # being loaded RTLD_GLOBAL first: the shim is then self-contained (dlopen of the shim
        # alone pulls in exactly this library), -z defs catches a missing symbol at build time
        # rather than at load time, and a moved/removed wheel makes loading fail loudly.
        cmd = [
            *cc,
            "-shared",
            "-fPIC",
            "-O2",
            "-o",
            tmp_name,
            str(_SHIM_SOURCE),
            str(openblas),
            f"-Wl,-rpath,{openblas.parent}",
            "-Wl,-z,defs",
        ]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=_COMPILE_TIMEOUT_S, check=False
            )
            if proc.returncode != 0:
                logger.warning(
                    "building CBLAS shim failed (%s):\n%s", shlex.join(cmd), proc.stderr.strip()
                )
                return None
            os.chmod(tmp_name, 0o755)
            os.replace(tmp_name, target)  # atomic within one directory
        except (OSError, subprocess.SubprocessError) as exc:
            logger.warning("building CBLAS shim failed (%s): %s", shlex.join(cmd), exc)
            return None
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
        logger.debug("built CBLAS shim %s", target)
        return target


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
    address = _symbol_address(lib, "cblas_sgemm")
    if address is None:
        failures.append(f"{path}: loaded but does not export cblas_sgemm")
        return None
    _handles.append(lib)
    provider = _dladdr(address) or path
    label, fast = _classify(provider)
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

    already = _global_cblas_provider()
    if already is not None:
        # Something (LD_PRELOAD, an earlier RTLD_GLOBAL load) already provides cblas_sgemm in
        # the global scope; it precedes anything we could load, so loading more is pointless.
        label, fast = _classify(already)
        detail = f"cblas_sgemm already globally provided by {already}"
        if not fast:
            detail += "; " + _REFERENCE_MSG
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
    detail = "no fast BLAS could be preloaded: " + "; ".join(failures) + ". " + _REFERENCE_MSG
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
        cache_dir: Shim build/cache directory (default ``$XDG_CACHE_HOME/jupyter-mlx-embed``).
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
                detail=_ALREADY_IMPORTED_MSG + " Use detect_bound_blas() to see what was bound.",
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


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------


def _find_relocation_offset(elf: Any, symbol: str) -> int | None:
    """r_offset of the relocation that fills ``symbol``'s GOT slot (.rela.plt first)."""
    from elftools.elf.relocation import RelocationSection  # lazy, optional

    sections = [s for s in elf.iter_sections() if isinstance(s, RelocationSection)]
    # JUMP_SLOT relocations for called functions normally live in .rela.plt; it is small, so
    # scan it before the much larger .rela.dyn.
    sections.sort(key=lambda s: not s.name.endswith(".plt"))
    for section in sections:
        symtab = elf.get_section(section["sh_link"])
        if symtab is None or not hasattr(symtab, "get_symbol"):
            continue
        for rel in section.iter_relocations():
            index = rel["r_info_sym"]
            if index and symtab.get_symbol(index).name == symbol:
                return rel["r_offset"]
    return None


def _detect_linux() -> BlasInfo:
    maps = _read_maps()
    libmlx = next((row for row in maps if _is_libmlx(row[4]) and row[3] == 0), None)
    if libmlx is None:
        return BlasInfo(
            "unknown", None, False, "detected", "libmlx.so is not mapped in this process"
        )
    path = libmlx[4]
    try:
        from elftools.elf.elffile import ELFFile  # lazy, optional
    except ImportError:
        return BlasInfo("unknown", None, False, "detected", "pyelftools is not installed")
    with open(path, "rb") as fh:
        elf = ELFFile(fh)
        loads = [seg for seg in elf.iter_segments() if seg["p_type"] == "PT_LOAD"]
        reloc = _find_relocation_offset(elf, "cblas_sgemm")
    if not loads or reloc is None:
        return BlasInfo("unknown", None, False, "detected", f"no cblas_sgemm relocation in {path}")
    # The offset-0 mapping starts at the page holding the first PT_LOAD (p_vaddr normally 0).
    page = os.sysconf("SC_PAGE_SIZE")
    bias = libmlx[0] - (loads[0]["p_vaddr"] & ~(page - 1))
    slot = bias + reloc
    # Never dereference an address that is not a readable mapping of libmlx itself.
    if not any(r[4] == path and r[0] <= slot < r[1] - 7 and r[2].startswith("r") for r in maps):
        return BlasInfo("unknown", None, False, "detected", f"GOT slot {slot:#x} is not mapped")
    target = ctypes.c_void_p.from_address(slot).value
    provider = _dladdr(target)
    if provider is None:
        return BlasInfo("unknown", None, False, "detected", f"dladdr failed for {target!r}")
    if os.path.realpath(path) == provider:
        # Lazy binding: the slot still points back into libmlx's PLT (not called yet).
        return BlasInfo("unknown", None, False, "detected", "cblas_sgemm not bound yet (lazy)")

    label, fast = _classify(provider)
    preloaded = _result
    if preloaded is not None and preloaded.path and os.path.realpath(preloaded.path) == provider:
        source = preloaded.source
        if source == "configured" and label == "unknown":
            label = "configured"
    elif not fast and "mlx_cpu.libs" in provider:
        source = "bundled"
    elif any(provider == os.path.realpath(p) for p in os.environ.get("LD_PRELOAD", "").split()):
        source = "LD_PRELOAD"
    else:
        source = "external"
    detail = f"libmlx {path} binds cblas_sgemm to {provider}"
    if not fast:
        detail += ". " + _REFERENCE_MSG
    return BlasInfo(name=label, path=provider, fast=fast, source=source, detail=detail)


def detect_bound_blas() -> BlasInfo:
    """Report which library libmlx actually bound ``cblas_sgemm`` to (never raises).

    Reads libmlx's GOT slot for ``cblas_sgemm`` and resolves it with ``dladdr``; merely being
    mapped (``/proc/self/maps``) does not mean a library is used. Only meaningful after
    ``mlx.core`` is imported; this function never imports mlx itself.

    Returns:
        A BlasInfo; ``name`` is ``"unknown"`` with the reason in ``detail`` when undeterminable.
    """
    if sys.platform == "darwin":
        return BlasInfo("accelerate", None, True, "not-linux", "MLX uses Accelerate/Metal on macOS")
    if not sys.platform.startswith("linux"):
        return BlasInfo("unknown", None, False, "not-linux", f"unsupported platform {sys.platform}")
    if "mlx.core" not in sys.modules:
        return BlasInfo(
            "unknown", None, False, "not-imported", "mlx.core is not imported yet; nothing bound"
        )
    try:
        return _detect_linux()
    except Exception as exc:  # noqa: BLE001  (diagnostics must never break the caller)
        return BlasInfo("unknown", None, False, "detected", f"detection failed: {exc!r}")


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _matmul_gflops(n: int = 512, repeats: int = 5) -> float:
    import statistics
    import time

    mx = sys.modules["mlx.core"]
    a, b = mx.random.normal((n, n)), mx.random.normal((n, n))
    mx.eval(a, b)
    for _ in range(2):
        mx.eval(a @ b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        mx.eval(a @ b)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def main(argv: list[str] | None = None) -> int:
    """Build the shim, preload, import mlx.core, detect; print a JSON report.

    Args:
        argv: Command line arguments; ``--build-only`` skips preloading and mlx,
            ``--bench`` adds a 512^3 float32 matmul GFLOP/s figure.

    Returns:
        Process exit status (0 on success, 1 if the shim build failed with ``--build-only``).
    """
    import argparse
    import importlib

    parser = argparse.ArgumentParser(
        prog="python -m jupyter_mlx_embed.engine.blas", description=__doc__
    )
    parser.add_argument("--build-only", action="store_true", help="only build the shim")
    parser.add_argument("--bench", action="store_true", help="measure matmul GFLOP/s")
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    shim = build_shim(args.cache_dir)
    report: dict[str, object] = {"shim": str(shim) if shim else None}
    if args.build_only:
        print(json.dumps(report, indent=2))
        return 0 if shim is not None or not sys.platform.startswith("linux") else 1
    preloaded = preload_fast_blas(cache_dir=args.cache_dir)
    report["preload"] = dataclasses.asdict(preloaded) if preloaded else None
    try:
        importlib.import_module("mlx.core")
    except ImportError as exc:
        report["mlx_import_error"] = repr(exc)
    report["bound"] = dataclasses.asdict(detect_bound_blas())
    if args.bench and "mlx.core" in sys.modules:
        report["matmul_512_gflops"] = round(_matmul_gflops(), 1)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    # Under ``python -m`` this file runs as a second module object (__main__); use the package's
    # copy when importable so the cached preload state is the one jupyter_mlx_embed itself sees.
    import importlib

    try:
        _entry = importlib.import_module("jupyter_mlx_embed.engine.blas").main
    except ImportError:
        _entry = main
    raise SystemExit(_entry())
