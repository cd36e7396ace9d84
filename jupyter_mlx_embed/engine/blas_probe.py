"""Which BLAS libmlx bound ``cblas_sgemm`` to, read from its GOT (engine-private, Linux/glibc).

Loading nothing and importing no MLX: it reads ``/proc/self/maps``, libmlx's relocations
(pyelftools) and the address in its GOT slot, and names the library there with ``dladdr``.
Where that slot lies in the file can be kept in a folder the caller names (the engine's builds
folder), per version of libmlx, so that a process start reads no ELF and imports no pyelftools.
:mod:`.blas`, which decides what to load before ``mlx.core`` is imported, uses the same
helpers to see what a library it loaded provides.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..envvars import setting_variable
from ..fileio import atomic_path

logger = logging.getLogger(__name__)

__all__ = [
    "SHIM_PREFIX",
    "SLOW_BLAS_ADVICE",
    "BlasInfo",
    "classify_library",
    "detect_bound_blas",
    "global_cblas_provider",
    "libmlx_mapped",
    "library_path",
    "symbol_address",
]

#: File name prefix of the CBLAS shim that :mod:`.blas` builds for scipy-openblas32.
SHIM_PREFIX = "libjme_cblas_shim-"

#: What to do about a slow reference BLAS (part of the warnings that report one).
SLOW_BLAS_ADVICE = (
    "MLX is using the slow reference BLAS bundled with mlx-cpu (matmuls ~30x slower). Call "
    "jupyter_mlx_embed.engine.blas.preload_fast_blas() before the first `import mlx.core`, set "
    f"{setting_variable('blas')}=/path/to/lib exporting cblas_sgemm, or LD_PRELOAD such a library."
)


@dataclass(frozen=True)
class BlasInfo:
    """Which BLAS provides ``cblas_sgemm`` to MLX, and how it got there."""

    name: str
    path: str | None
    fast: bool
    source: str
    detail: str = ""


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


def library_path(address: int | None) -> str | None:
    """The real path of the shared object containing ``address`` (``dladdr``; None if
    unknown)."""
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


def symbol_address(lib: ctypes.CDLL, name: str) -> int | None:
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


def libmlx_mapped() -> bool:
    """True if libmlx is mapped, even if loaded by something other than ``mlx.core``."""
    try:
        return any(_is_libmlx(row[4]) for row in _read_maps())
    except OSError:
        return False


def classify_library(path: str) -> tuple[str, bool]:
    """Map a provider library path to a (label, fast) pair."""
    low = os.path.realpath(path).lower()
    base = os.path.basename(low)
    if "mlx_cpu.libs" in low:
        return "reference (slow)", False
    if base.startswith(SHIM_PREFIX) or "scipy_openblas" in low or "scipy-openblas" in low:
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


def global_cblas_provider() -> str | None:
    """Path of the library already providing ``cblas_sgemm`` in the global scope, if any."""
    try:
        return library_path(symbol_address(ctypes.CDLL(None), "cblas_sgemm"))
    except OSError:
        return None


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


def _read_got_layout(path: str) -> tuple[int, int] | None:
    """(p_vaddr of the first PT_LOAD segment, r_offset of the ``cblas_sgemm`` relocation) in
    the ELF file ``path``; None if it has no such relocation.

    Raises:
        ImportError: pyelftools is not installed.
    """
    from elftools.elf.elffile import ELFFile  # lazy, optional

    with open(path, "rb") as fh:
        elf = ELFFile(fh)
        loads = [seg for seg in elf.iter_segments() if seg["p_type"] == "PT_LOAD"]
        reloc = _find_relocation_offset(elf, "cblas_sgemm")
    return (int(loads[0]["p_vaddr"]), int(reloc)) if loads and reloc is not None else None


def _got_layout(path: str, keep_in: Path | None) -> tuple[int, int] | None:
    """:func:`_read_got_layout`, kept in the folder ``keep_in`` (if it exists) per version of
    the file (path, size, modification time): reading libmlx's relocations costs more than
    the rest of a process start."""
    if keep_in is None:
        return _read_got_layout(path)
    stat = os.stat(path)
    version = f"{os.path.realpath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()
    record = keep_in / f"libmlx-got-{hashlib.sha256(version).hexdigest()[:16]}.json"
    try:
        kept = json.loads(record.read_text(encoding="utf-8"))
        return (int(kept[0]), int(kept[1])) if kept else None
    except (OSError, ValueError, TypeError, IndexError):
        pass
    layout = _read_got_layout(path)
    try:
        if keep_in.is_dir():  # the caller's to make
            with atomic_path(record) as staged:
                staged.write_text(json.dumps(layout), encoding="utf-8")
    except OSError as exc:
        logger.debug("cannot keep libmlx's GOT layout in %s: %s", record, exc)
    return layout


def _detect_linux(preloaded: BlasInfo | None, keep_in: Path | None) -> BlasInfo:
    maps = _read_maps()
    libmlx = next((row for row in maps if _is_libmlx(row[4]) and row[3] == 0), None)
    if libmlx is None:
        return BlasInfo(
            "unknown", None, False, "detected", "libmlx.so is not mapped in this process"
        )
    path = libmlx[4]
    try:
        layout = _got_layout(path, keep_in)
    except ImportError:
        return BlasInfo("unknown", None, False, "detected", "pyelftools is not installed")
    if layout is None:
        return BlasInfo("unknown", None, False, "detected", f"no cblas_sgemm relocation in {path}")
    first_vaddr, reloc = layout
    # The offset-0 mapping starts at the page holding the first PT_LOAD (p_vaddr normally 0).
    page = os.sysconf("SC_PAGE_SIZE")
    bias = libmlx[0] - (first_vaddr & ~(page - 1))
    slot = bias + reloc
    # Never dereference an address that is not a readable mapping of libmlx itself.
    if not any(r[4] == path and r[0] <= slot < r[1] - 7 and r[2].startswith("r") for r in maps):
        return BlasInfo("unknown", None, False, "detected", f"GOT slot {slot:#x} is not mapped")
    target = ctypes.c_void_p.from_address(slot).value
    provider = library_path(target)
    if provider is None:
        return BlasInfo("unknown", None, False, "detected", f"dladdr failed for {target!r}")
    if os.path.realpath(path) == provider:
        # Lazy binding: the slot still points back into libmlx's PLT (not called yet).
        return BlasInfo("unknown", None, False, "detected", "cblas_sgemm not bound yet (lazy)")

    label, fast = classify_library(provider)
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
        detail += ". " + SLOW_BLAS_ADVICE
    return BlasInfo(name=label, path=provider, fast=fast, source=source, detail=detail)


def detect_bound_blas(preloaded: BlasInfo | None = None, keep_in: Path | None = None) -> BlasInfo:
    """Report which library libmlx actually bound ``cblas_sgemm`` to (never raises).

    Reads libmlx's GOT slot for ``cblas_sgemm`` and resolves it with ``dladdr``; merely being
    mapped (``/proc/self/maps``) does not mean a library is used. Only meaningful after
    ``mlx.core`` is imported; this function never imports mlx itself.

    Args:
        preloaded: What :func:`.blas.preload_fast_blas` loaded, if anything: when libmlx
            bound that library, the result keeps its ``source`` (``configured``,
            ``preloaded``...) rather than ``external``.
        keep_in: A folder (of this user's) to keep where libmlx's GOT slot lies, per version
            of libmlx; None reads it from the file each time.

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
        return _detect_linux(preloaded, keep_in)
    except Exception as exc:  # noqa: BLE001  (diagnostics must never break the caller)
        return BlasInfo("unknown", None, False, "detected", f"detection failed: {exc!r}")
