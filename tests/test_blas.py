"""Tests for jupyter_mlx_embed.engine.blas (fast-BLAS preloading) and .blas_probe (bound-BLAS
detection)."""

from __future__ import annotations

import ctypes.util
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="BLAS preloading is Linux-only")

BLAS_PY = Path(__file__).resolve().parents[1] / "jupyter_mlx_embed" / "engine" / "blas.py"

# Each check runs in a fresh interpreter, so that its preload is the first of the process
# (importing the package itself preloads nothing: that happens when a worker starts).
PRELUDE = """
import dataclasses, importlib.util, json, logging, sys, warnings
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(levelname)s %(message)s")
warnings.simplefilter("always")
import jupyter_mlx_embed.engine.blas as blas
import jupyter_mlx_embed.engine.blas_probe as blas_probe

def asdict(info):
    return None if info is None else dataclasses.asdict(info)

def gflops(n=512, repeats=5):
    import statistics, time
    import mlx.core as mx
    a, b = mx.random.normal((n, n)), mx.random.normal((n, n))
    mx.eval(a, b)
    for _ in range(2):
        mx.eval(a @ b)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        mx.eval(a @ b)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9
"""


def _env(cache_home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("JUPYTER_MLX_EMBED_BLAS", "LD_PRELOAD")}
    env["XDG_CACHE_HOME"] = str(cache_home)
    env.update(extra)
    return env


def _run(body: str, env: dict[str, str]) -> tuple[dict, str]:
    """Run PRELUDE + body in a fresh interpreter; body must print one JSON line last."""
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(body)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def _load_blas() -> Any:
    """A fresh copy of the module (its own preload state), inside the package."""
    name = "jupyter_mlx_embed.engine.blas_under_test"
    spec = importlib.util.spec_from_file_location(name, BLAS_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _is_fast_provider(path: str | None) -> bool:
    return path is not None and ("jme_cblas_shim" in path or "openblas" in path)


PRELOAD_IMPORT_DETECT = """
pre = blas.preload_fast_blas({args})
import mlx.core
bound = blas_probe.detect_bound_blas(pre)
print(json.dumps({{"pre": asdict(pre), "bound": asdict(bound), "gflops": gflops()}}))
"""


def test_preload_then_import_is_fast(tmp_path: Path) -> None:
    # One OpenBLAS thread: ~100 GFLOP/s here and immune to CPU contention from other processes,
    # which makes multi-threaded OpenBLAS (busy-waiting workers) drop to ~11 GFLOP/s on 2 vCPUs.
    env = _env(tmp_path, OPENBLAS_NUM_THREADS="1")
    out, _ = _run(PRELOAD_IMPORT_DETECT.format(args=""), env)
    pre, bound = out["pre"], out["bound"]
    assert pre["fast"] and pre["source"] in ("preloaded", "already-global"), pre
    assert bound["fast"], bound
    assert _is_fast_provider(bound["path"]), bound
    assert bound["path"] == pre["path"]
    # ~100 GFLOP/s (1 thread) with OpenBLAS vs ~3-6 with the bundled reference BLAS.
    assert out["gflops"] > 20, out


def test_import_mlx_first_is_reported(tmp_path: Path) -> None:
    body = """
    import mlx.core
    with warnings.catch_warnings(record=True) as caught:
        pre = blas.preload_fast_blas()
    bound = blas_probe.detect_bound_blas(pre)
    print(json.dumps({"pre": asdict(pre), "bound": asdict(bound),
                      "warnings": [str(w.message) for w in caught]}))
    """
    out, _ = _run(body, _env(tmp_path))
    assert out["pre"]["source"] == "already-imported"
    assert "before importing mlx" in out["pre"]["detail"]
    assert any("before importing mlx" in w for w in out["warnings"]), out["warnings"]
    bound = out["bound"]
    assert bound["name"] == "reference (slow)" and not bound["fast"], bound
    assert "mlx_cpu.libs" in bound["path"]
    assert "slow reference BLAS" in bound["detail"]
    assert not any(tmp_path.rglob("*.so")), "nothing should be built once mlx is imported"


def test_env_none_disables_preloading(tmp_path: Path) -> None:
    env = _env(tmp_path, JUPYTER_MLX_EMBED_BLAS="none")
    out, _ = _run(PRELOAD_IMPORT_DETECT.replace(', "gflops": gflops()', "").format(args=""), env)
    assert out["pre"]["source"] == "disabled" and out["pre"]["path"] is None
    assert out["bound"]["name"] == "reference (slow)" and not out["bound"]["fast"]
    assert not any(tmp_path.rglob("*.so"))


@pytest.mark.parametrize(
    "bad",
    ["/nonexistent/libcblas_missing.so", ctypes.util.find_library("m") or "libm.so.6"],
    ids=["missing-file", "no-cblas-symbols"],
)
def test_bad_configured_path_falls_back(tmp_path: Path, bad: str) -> None:
    body = PRELOAD_IMPORT_DETECT.replace(', "gflops": gflops()', "").format(args=repr(bad))
    out, stderr = _run(body, _env(tmp_path))
    assert out["pre"]["fast"] and out["pre"]["source"] == "preloaded", out["pre"]
    assert out["bound"]["fast"] and _is_fast_provider(out["bound"]["path"]), out["bound"]
    assert f"configured BLAS {bad!r} is unusable" in stderr
    assert "falling back" in stderr


def test_env_configured_library_is_used(tmp_path: Path) -> None:
    blas = _load_blas()
    shim = blas.build_shim(tmp_path / "prebuilt")
    if shim is None:
        pytest.skip("scipy-openblas32 or a C compiler is unavailable")
    env = _env(tmp_path / "empty-cache", JUPYTER_MLX_EMBED_BLAS=str(shim))
    body = PRELOAD_IMPORT_DETECT.replace(', "gflops": gflops()', "").format(args="")
    out, _ = _run(body, env)
    assert out["pre"]["source"] == "configured" and out["pre"]["path"] == str(shim)
    assert out["bound"]["source"] == "configured" and out["bound"]["path"] == str(shim)
    assert not (tmp_path / "empty-cache").exists(), "a working configured lib needs no build"


def test_shim_cache_is_reused_and_rebuilt_atomically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blas = _load_blas()
    first = blas.build_shim(tmp_path)
    if first is None:
        pytest.skip("scipy-openblas32 or a C compiler is unavailable")
    stat = first.stat()
    second = blas.build_shim(tmp_path)
    assert second == first
    assert (second.stat().st_mtime_ns, second.stat().st_ino) == (stat.st_mtime_ns, stat.st_ino)
    assert [p.name for p in tmp_path.iterdir()] == [first.name], "no temp files left behind"

    # A changed C source gets a new cache entry; the old one is left untouched.
    changed = tmp_path / "src" / "_cblas_shim.c"
    changed.parent.mkdir()
    changed.write_text(blas._SHIM_SOURCE.read_text() + "\n/* changed */\n")
    monkeypatch.setattr(blas, "_SHIM_SOURCE", changed)
    third = blas.build_shim(tmp_path)
    assert third is not None and third != first and first.stat().st_ino == stat.st_ino

    # A corrupt cached shim is replaced (by rename, not in place) on the next preload.
    first.write_bytes(b"not an ELF file")
    corrupt_ino = first.stat().st_ino
    body = f"""
    import pathlib
    info = blas.preload_fast_blas(cache_dir=pathlib.Path({str(tmp_path)!r}))
    print(json.dumps(asdict(info)))
    """
    out, _ = _run(body, _env(tmp_path / "unused"))
    assert out["path"] == str(first) and out["fast"], out
    assert first.stat().st_ino != corrupt_ino


def test_shim_build_creates_its_folders_private(tmp_path: Path) -> None:
    blas = _load_blas()
    folder = tmp_path / "cache" / "builds"
    if blas.build_shim(folder) is None:
        pytest.skip("scipy-openblas32 or a C compiler is unavailable")
    for created in (folder, folder.parent):
        assert created.stat().st_mode & 0o777 == 0o700, created


def test_concurrent_builds_do_not_clash(tmp_path: Path) -> None:
    body = f"""
    import ctypes, pathlib
    path = blas.build_shim(pathlib.Path({str(tmp_path)!r}))
    ok = path is not None and hasattr(ctypes.CDLL(str(path)), "cblas_sgemm")
    print(json.dumps({{"path": str(path), "ok": ok}}))
    """
    code = PRELUDE + textwrap.dedent(body)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            env=_env(tmp_path / "unused"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    if results[0]["path"] == "None":
        pytest.skip("scipy-openblas32 or a C compiler is unavailable")
    assert all(r["ok"] for r in results), results
    assert len({r["path"] for r in results}) == 1
    assert [p.name for p in tmp_path.iterdir() if p.name != "unused"] == [
        Path(results[0]["path"]).name
    ]


def test_detect_without_mlx_does_not_import_it() -> None:
    out, _ = _run(
        'print(json.dumps({"info": asdict(blas_probe.detect_bound_blas()), '
        '"mlx": "mlx.core" in sys.modules}))',
        _env(Path("/nonexistent")),
    )
    assert out["info"]["name"] == "unknown" and "not imported" in out["info"]["detail"]
    assert out["mlx"] is False


_AVX512 = {"avx512f", "avx512bw", "avx512dq", "avx512vl"}


def _cpu_has_avx512() -> bool:
    with open("/proc/cpuinfo") as f:
        flags = next((line for line in f if line.startswith("flags")), "")
    return _AVX512.issubset(flags.split(":", 1)[-1].split())


@pytest.mark.parametrize(
    ("setting", "expected"),
    [("auto", "SkylakeX" if _cpu_has_avx512() else "Haswell"), ("inherit", "Haswell")],
)
def test_blas_core_setting_picks_the_kernels_of_the_engines_openblas(
    tmp_path: Path, setting: str, expected: str
) -> None:
    # The environment pins OpenBLAS to its AVX2 kernels, as some machines do: "auto" still
    # runs the CPU's best ones in the engine's copy, "inherit" keeps the pin; either way the
    # variable is left as it was for the process's other libraries.
    env = _env(tmp_path, OPENBLAS_CORETYPE="Haswell")
    result, _ = _run(
        f"""
        import os
        info = blas.preload_fast_blas(core={setting!r})
        print(json.dumps({{"core": blas.openblas_core(), "fast": info.fast,
                           "variable": os.environ.get("OPENBLAS_CORETYPE")}}))
        """,
        env,
    )
    assert result == {"core": expected, "fast": True, "variable": "Haswell"}


def test_blas_core_setting_names_a_core(tmp_path: Path) -> None:
    result, _ = _run(
        """
        blas.preload_fast_blas(core="Haswell")
        print(json.dumps({"core": blas.openblas_core()}))
        """,
        _env(tmp_path),
    )
    assert result == {"core": "Haswell"}


def test_libmlx_got_layout_is_kept_per_version_of_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process start reads the kept layout instead of libmlx's relocations; another file
    (or the same path rewritten) is read afresh."""
    from jupyter_mlx_embed.engine import blas_probe

    spec = importlib.util.find_spec("mlx")
    assert spec is not None and spec.submodule_search_locations
    libmlx = Path(next(iter(spec.submodule_search_locations))) / "lib" / "libmlx.so"
    fresh = blas_probe._read_got_layout(str(libmlx))
    assert fresh is not None
    assert blas_probe._got_layout(str(libmlx), tmp_path) == fresh  # read once, kept

    def unread(path: str) -> None:
        raise AssertionError(f"{path} was read again")

    with monkeypatch.context() as patched:
        patched.setattr(blas_probe, "_read_got_layout", unread)
        assert blas_probe._got_layout(str(libmlx), tmp_path) == fresh
    copy = tmp_path / "libmlx.so"
    copy.write_bytes(libmlx.read_bytes())
    assert blas_probe._got_layout(str(copy), tmp_path) == fresh
    assert len(list(tmp_path.glob("libmlx-got-*.json"))) == 2
