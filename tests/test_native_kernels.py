"""The C++ kernels of the CPU fast path (engine/native.py): each op against MLX's own ops,
the bundled model's vectors with and without them, and the fallback when they cannot be
built."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jupyter_mlx_embed import Worker
from jupyter_mlx_embed.engine import native

pytestmark = pytest.mark.skipif(
    not (sys.platform.startswith("linux") and os.uname().machine == "x86_64"),
    reason="the native kernels are built for Linux x86-64 only",
)

# Odd sizes on purpose: not multiples of the 8- and 16-float vectors, and a row of 1 token.
LENGTHS = [1, 7, 17, 33, 2, 64]


def on_worker(worker: Worker, fn: Callable[[Any, Any], Any]) -> Any:
    """Run ``fn(kernels, mx)`` on the worker's MLX thread, once per instruction set."""

    def run(engine: Any) -> Any:
        import mlx.core as mx

        kernels = engine._kernels
        assert kernels is not None, engine.native_kernels.detail
        results = {}
        for isa in kernels.supported_isas():
            kernels.set_isa(isa)
            results[isa] = fn(kernels, mx)
        kernels.set_isa(kernels.supported_isas()[0])
        return results

    return worker.call(run).result()


def test_kernels_are_loaded_and_reported(worker: Worker) -> None:
    info = worker.info()["native_kernels"]
    assert info["loaded"], info["detail"]
    assert info["isa"] in ("avx2", "avx512")
    # The reduced precisions this CPU runs, and on what (/proc/cpuinfo says which it has).
    flags = Path("/proc/cpuinfo").read_text()
    bf16 = "amx" if "amx_bf16" in flags else "avx512_bf16" if "avx512_bf16" in flags else None
    int8 = "avx2" if info["isa"] == "avx2" else "avx512_vnni" if "avx512_vnni" in flags else None
    assert info["precisions"] == {
        **({"bf16": bf16} if bf16 and info["isa"] == "avx512" else {}),
        **({"int8": int8} if int8 else {}),
    }


def test_linear_with_bias_and_gelu_matches_exact_gelu(worker: Worker) -> None:
    def check(k: Any, mx: Any) -> float:
        import mlx.nn as nn

        x, w, bias = (
            mx.random.normal((3, 5, 37)),
            mx.random.normal((75, 37)),
            mx.random.normal((75,)),
        )
        expected = nn.gelu(x @ w.T + bias)
        return max(
            float(
                mx.abs(
                    k.linear(x, k.pack_linear(w), 75, bias, gelu=True, threads=t) - expected
                ).max()
            )
            for t in (1, 2)
        )

    for isa, error in on_worker(worker, check).items():
        assert error < 2e-5, isa


@pytest.mark.parametrize("residual", [True, False])
def test_add_layernorm_matches_layer_norm(worker: Worker, residual: bool) -> None:
    def check(k: Any, mx: Any) -> float:
        h, r = mx.random.normal((4, 9, 45)) * 3, mx.random.normal((4, 9, 45))
        bias, weight, beta = (mx.random.normal((45,)) for _ in range(3))
        expected = mx.fast.layer_norm(h + r + bias if residual else h, weight, beta, 1e-12)
        got = k.add_layernorm(
            h, r if residual else None, bias if residual else None, weight, beta, 1e-12
        )
        return float(mx.abs(got - expected).max())

    for isa, error in on_worker(worker, check).items():
        assert error < 1e-5, isa


@pytest.mark.parametrize("width", [32, 20])
def test_attention_matches_masked_softmax_per_sequence(worker: Worker, width: int) -> None:
    heads = 3
    offsets = np.concatenate([[0], np.cumsum(LENGTHS)]).astype(np.int32)

    def check(k: Any, mx: Any) -> float:
        qkv = mx.random.normal((int(offsets[-1]), 3 * heads * width))
        query_bias = mx.random.normal((heads * width,))
        got = [k.attention(qkv, mx.array(offsets), heads, query_bias, threads=t) for t in (1, 2, 3)]
        # Reference: the packed sequences padded into one batch, padding masked out.
        longest = max(LENGTHS)
        index = np.zeros((len(LENGTHS), longest), dtype=np.int32)
        valid = np.arange(longest)[None, :] < np.array(LENGTHS)[:, None]
        index[valid] = np.arange(offsets[-1])
        padded = qkv[mx.array(index)].reshape(len(LENGTHS), longest, 3, heads, width)
        q, key, v = (padded[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
        q = q + query_bias.reshape(heads, 1, width)
        mask = mx.where(mx.array(valid), 0.0, -mx.inf)[:, None, None, :]
        weights = mx.softmax(q @ key.transpose(0, 1, 3, 2) + mask, axis=-1)
        expected = (weights @ v).transpose(0, 2, 1, 3).reshape(len(LENGTHS), longest, -1)
        rows = np.flatnonzero(valid)  # padded positions of the packed tokens, in order
        expected = expected.reshape(-1, heads * width)[mx.array(rows.astype(np.int32))]
        return max(float(mx.abs(g - expected).max()) for g in got)

    for isa, error in on_worker(worker, check).items():
        assert error < 1e-5, isa


def test_packed_weights_and_results_start_at_a_cache_line(worker: Worker) -> None:
    """MLX puts an array's data 8 bytes into its block; the kernels' own arrays start at 64
    bytes, so that the products' vector loads of packed weights never straddle two lines."""

    def check(k: Any, mx: Any) -> list[int]:
        w, x = mx.random.normal((100, 48)), mx.random.normal((5, 48))
        arrays = [k.pack_linear(w), k.pack_glu(w, w), k.linear(x, k.pack_linear(w), 100)]
        arrays += [k.pack_linear(w, precision=p) for p in ("bf16", "int8") if p in k.precisions()]
        mx.eval(arrays)
        plain = mx.abs(w)
        mx.eval(plain)
        # bfloat16 has no buffer format: its bits viewed as uint16 (the same data)
        arrays = [mx.view(a, mx.uint16) if a.dtype == mx.bfloat16 else a for a in arrays]
        offsets = [np.asarray(memoryview(a)).ctypes.data % 64 for a in arrays]
        return [*offsets, np.asarray(memoryview(plain)).ctypes.data % 64]

    for isa, offsets in on_worker(worker, check).items():
        assert offsets[:-1] == [0] * (len(offsets) - 1), isa
        assert offsets[-1] != 0, "MLX's own arrays now start at a cache line: drop Aligned"


@pytest.mark.parametrize("rows", [1, 7, 13, 25, 100, 300])
def test_linear_matches_matmul(worker: Worker, rows: int) -> None:
    """Packed products against MLX's matmul: columns that are no multiple of a panel, an odd
    number of panels, rows that are no multiple of a tile nor of a row block, and the columns
    split over one to three threads."""

    def check(k: Any, mx: Any) -> float:
        worst = 0.0
        for cols, depth in ((37, 5), (33, 17), (160, 300), (96, 3100), (1152, 384), (384, 1536)):
            w, x = mx.random.normal((cols, depth)), mx.random.normal((rows, depth))
            packed = k.pack_linear(w)
            expected = x @ w.T
            scale = float(mx.abs(expected).max())
            for threads in (1, 2, 3):
                got = k.linear(x, packed, cols, threads=threads)
                worst = max(worst, float(mx.abs(got - expected).max()) / scale)
        return worst

    for isa, error in on_worker(worker, check).items():
        assert error < 1e-5, isa


def test_linear_on_two_streams_at_once(worker: Worker) -> None:
    """Two streams asking for the helper threads together: one gets them, the other runs
    alone, and both get their own product."""

    def check(k: Any, mx: Any) -> float:
        streams = [mx.new_stream(mx.cpu) for _ in range(2)]
        w = mx.random.normal((1536, 384))
        packed = k.pack_linear(w)
        xs = [mx.random.normal((40, 384)) for _ in streams]
        outs = []
        for _ in range(20):
            for s, x in zip(streams, xs, strict=True):
                with mx.stream(s):
                    outs.append(k.linear(x, packed, 1536, threads=2))
        mx.eval(outs)
        return max(float(mx.abs(out - xs[i % 2] @ w.T).max()) for i, out in enumerate(outs))

    for isa, error in on_worker(worker, check).items():
        assert error < 1e-3, isa


def test_ops_take_the_stream_or_device_to_run_on(worker: Worker) -> None:
    """Each op takes ``stream=`` as MLX's own ops do: a new CPU stream, the CPU device, or
    None (the current stream) give the same result."""

    def check(k: Any, mx: Any) -> float:
        x, w = mx.random.normal((9, 24)), mx.random.normal((40, 24))
        norm = (mx.ones((24,)), mx.zeros((24,)))
        offsets = mx.array([0, 4, 9])
        worst = 0.0
        for stream in (mx.new_stream(mx.cpu), mx.cpu, None):
            packed = k.pack_linear(w, stream=stream)
            outputs = (
                k.linear(x, packed, 40, threads=2, stream=stream),
                k.add_layernorm(x, x, None, *norm, 1e-5, stream=stream),
                k.attention(mx.concatenate([x] * 3, axis=1), offsets, 3, stream=stream),
            )
            mx.eval(outputs)
            expected = (
                x @ w.T,
                mx.fast.layer_norm(x + x, *norm, 1e-5),
                k.attention(mx.concatenate([x] * 3, axis=1), offsets, 3),
            )
            worst = max(
                worst,
                *(float(mx.abs(o - e).max()) for o, e in zip(outputs, expected, strict=True)),
            )
        return worst

    for isa, error in on_worker(worker, check).items():
        assert error < 1e-4, isa


def test_linear_jobs_of_changing_sizes_back_to_back(worker: Worker) -> None:
    """Many small jobs one after the other, their chunk counts changing from job to job, each
    evaluated alone: helpers wake at every point of a job (or after it), and every product
    must still be its own."""

    def check(k: Any, mx: Any) -> float:
        shapes = [(5, 16), (33, 16), (200, 16), (64, 16)]
        weights = [mx.random.normal((cols, depth)) for cols, depth in shapes]
        packed = [k.pack_linear(w) for w in weights]
        worst = 0.0
        for i in range(300):
            j = i % len(shapes)
            x = mx.random.normal((1 + i % 7, shapes[j][1]))
            got = k.linear(x, packed[j], shapes[j][0], threads=2)
            worst = max(worst, float(mx.abs(got - x @ weights[j].T).max()))
        return worst

    for isa, error in on_worker(worker, check).items():
        assert error < 1e-4, isa


def test_linear_helpers_work_in_a_forked_child(tmp_path: Path) -> None:
    """A fork keeps none of the parent's helper threads: the child starts its own instead of
    waiting for threads that do not exist."""
    script = tmp_path / "fork.py"
    script.write_text(
        "import os\n"
        "from jupyter_mlx_embed.engine import blas, native\n"
        "blas.preload_fast_blas()\n"
        "import mlx.core as mx\n"
        "k = native.load_kernels()\n"
        "w = mx.random.normal((384, 384))\n"
        "p = k.pack_linear(w)\n"
        "x = mx.random.normal((9, 384))\n"
        "mx.eval(k.linear(x, p, 384, threads=2))\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    s = mx.new_stream(mx.cpu)\n"
        "    with mx.stream(s):\n"
        "        err = float(mx.abs(k.linear(x, p, 384, threads=2) - x @ w.T).max())\n"
        "    os._exit(0 if err < 1e-3 else 3)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "raise SystemExit(os.waitstatus_to_exitcode(status))\n",
        encoding="utf-8",
    )
    proc = subprocess.run([sys.executable, str(script)], timeout=120, capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]


def test_encoder_gives_the_same_hidden_states_on_one_thread_and_on_three(worker: Worker) -> None:
    """The whole-encoder op over several packed sequences: the helpers' split of every step
    (products, attention, LayerNorm rows) changes nothing but float rounding."""

    def run(engine: Any) -> float:
        import mlx.core as mx

        fast = engine.load(worker.registry.resolve(None)).fast
        offsets = np.concatenate([[0], np.cumsum(LENGTHS)]).astype(np.int32)
        ids = mx.array(np.arange(1000, 1000 + offsets[-1], dtype=np.int32))
        positions = mx.array(np.concatenate([np.arange(n) for n in LENGTHS]).astype(np.int32))
        with mx.stream(fast._streams[0]):
            one, three = (
                fast._native_forward(ids, positions, mx.array(offsets), threads)
                for threads in (1, 3)
            )
            return float(mx.abs(one - three).max())

    assert worker.call(run).result() < 1e-4


def test_bad_arguments_are_named(worker: Worker) -> None:
    def check(k: Any, mx: Any) -> list[str]:
        messages = []
        for call in (
            lambda: k.linear(mx.zeros((2, 8)), k.pack_linear(mx.zeros((5, 8))), 5, mx.zeros((7,))),
            lambda: k.add_layernorm(
                mx.zeros((2, 8)), mx.zeros((2, 9)), None, *[mx.ones(8)] * 2, 1e-5
            ),
            lambda: k.attention(mx.zeros((4, 10)), mx.array([0, 4]), 2),
            lambda: k.add_layernorm(
                mx.zeros((2, 8), dtype=mx.float16), None, None, *[mx.ones(8)] * 2, 1e-5
            ),
            lambda: k.linear(mx.zeros((2, 8)), k.pack_linear(mx.zeros((5, 9))), 5),
            lambda: k.linear(mx.zeros((2, 8)), k.pack_linear(mx.zeros((5, 8))), 50),
            lambda: k.encoder(mx.zeros((3, 8)), mx.array([0, 3]), [mx.zeros((8,))] * 5, 2, 1e-5),
        ):
            with pytest.raises(ValueError) as caught:
                call()
            messages.append(str(caught.value))
        return messages

    for messages in on_worker(worker, check).values():
        assert messages[0].startswith("bias must have shape (5,)")
        assert messages[1].startswith("residual must have the shape of h")
        assert "3 * heads" in messages[2]
        assert messages[3].startswith("h must be float32")
        assert messages[4].startswith("packed must come from pack_linear")
        assert messages[5].startswith("cols must be the packed weight's output features")
        assert messages[6].startswith("layers must hold 12 arrays per layer")


def test_model_vectors_with_and_without_native_kernels(worker: Worker, corpus) -> None:
    """The engine's native encoder (which let the stock layers' matrices go) against the
    MLX-op fast path on a second copy of the model."""
    from jupyter_mlx_embed.engine.cpu_kernels import FastEncoder
    from jupyter_mlx_embed.engine.mlx_engine import _build_model

    def both(engine: Any) -> tuple[np.ndarray, np.ndarray]:
        import mlx.core as mx

        loaded = engine.load(worker.registry.resolve(None))
        rows = loaded.tokenizer.encode_texts(corpus)
        assert loaded.fast._kernels is not None
        assert loaded.model.encoder.layer[0].intermediate.dense.weight.size == 0  # let go
        with_native = engine.embed(loaded, rows)
        native_fast = loaded.fast
        stock = _build_model(mx, loaded.spec)
        stock.set_dtype(mx.float32)
        loaded.fast = FastEncoder(stock, loaded.spec.model_type, 4, kernels=None)
        try:
            return with_native, engine.embed(loaded, rows)
        finally:
            loaded.fast = native_fast

    with_native, without = worker.call(both).result()
    assert with_native.shape == without.shape == (len(corpus), 384)
    assert float(np.min(np.sum(with_native * without, axis=1))) >= 0.99999


def _child_info(tmp_path: Path, **env: str) -> dict[str, Any]:
    """info()["native_kernels"] and one vector from a fresh process with ``env`` set."""
    code = (
        "import json\n"
        "from jupyter_mlx_embed import EngineConfig, Worker\n"
        "with Worker(EngineConfig.from_env(cache=False)) as w:\n"
        "    vector = w.submit(['native kernels fall back']).result().vectors[0]\n"
        "    print(json.dumps({'info': w.info()['native_kernels'], 'vector': vector.tolist()}))\n"
    )
    child_env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), **env}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=child_env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout.splitlines()[-1]))


def test_failed_build_falls_back_to_the_mlx_op_path(worker: Worker, tmp_path: Path) -> None:
    failed = _child_info(tmp_path, CXX=str(tmp_path / "no-such-compiler"))
    assert not failed["info"]["loaded"]
    assert "not built" in failed["info"]["detail"]
    expected = worker.submit(["native kernels fall back"]).result().vectors[0]
    assert float(np.dot(failed["vector"], expected)) >= 0.99999


def test_environment_variable_disables_the_kernels(tmp_path: Path) -> None:
    child = _child_info(tmp_path, **{native.ENV_VAR: "off"})
    assert not child["info"]["loaded"]
    assert child["info"]["detail"] == f"disabled ({native.ENV_VAR}=off)"


def test_avx2_kernels_give_the_same_vectors(worker: Worker, tmp_path: Path) -> None:
    """An AVX2-only CPU runs other tiles and panel widths; forced here (where the CPU has
    AVX-512 too), in a child process sharing the built extension through the usual cache."""
    cache = os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
    child = _child_info(tmp_path, XDG_CACHE_HOME=cache, **{native.ENV_VAR: "avx2"})
    assert child["info"]["isa"] == "avx2"
    expected = worker.submit(["native kernels fall back"]).result().vectors[0]
    assert float(np.dot(child["vector"], expected)) >= 0.99999


def _prebuilt_here(monkeypatch: pytest.MonkeyPatch, folder: Path, **key: str) -> Path:
    """A stand-in for a wheel's prebuilt folder in ``folder``: an empty module file and a key
    (this install's, with ``key`` changed)."""
    monkeypatch.setattr(native, "_prebuilt_dir", lambda: folder)
    folder.mkdir(exist_ok=True)
    (folder / "key.json").write_text(json.dumps({**native._prebuilt_key(), **key}))
    module = folder / native._FILE
    module.write_bytes(b"")
    return module


def test_prebuilt_module_with_a_matching_key_is_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    module = _prebuilt_here(monkeypatch, tmp_path / "prebuilt")
    assert native.build_kernels(tmp_path / "builds") == module


@pytest.mark.parametrize("changed", ["mlx", "ext_suffix", "sources"])
def test_prebuilt_module_with_a_mismatched_key_falls_back_to_the_cache(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    changed: str,
) -> None:
    _prebuilt_here(monkeypatch, tmp_path / "prebuilt", **{changed: "other"})
    # The cached build itself is not run: only where it goes matters here.
    monkeypatch.setattr(native, "build_once", lambda target, build, **_: target)
    with caplog.at_level("INFO", logger=native.__name__):
        path = native.build_kernels(tmp_path / "builds")
    assert path is not None and path.is_relative_to(tmp_path / "builds")
    assert f"built for {{'{changed}': 'other'}}" in caplog.text


def test_prebuilt_module_that_fails_to_load_falls_back_to_a_build(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _prebuilt_here(monkeypatch, tmp_path / "prebuilt")  # an empty file: no module to import

    def no_toolchain() -> None:
        raise native.BuildError("no compiler here")

    monkeypatch.setattr(native, "_toolchain", no_toolchain)
    module, info = native._load(tmp_path / "builds", None)
    assert module is None and not info.loaded
    assert "prebuilt native kernels" in caplog.text and "unusable" in caplog.text
    assert "no compiler here" in caplog.text


def test_a_new_build_keeps_other_environments_builds_in_use(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Two environments sharing a cache folder (other mlx, other sources) must not delete
    each other's builds, or each start would rebuild; builds unused for long are removed."""
    builds = tmp_path / "builds"
    in_use, unused = builds / "jme_native-aaaa", builds / "jme_native-bbbb"
    for folder in (in_use, unused):
        folder.mkdir(parents=True)
        (folder / native._FILE).write_bytes(b"")
    month_ago = time.time() - 31 * 24 * 3600
    os.utime(unused, (month_ago, month_ago))
    monkeypatch.setattr(native, "_prebuilt_dir", lambda: tmp_path / "no-prebuilt")

    def build(target: Path, make, **_) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"")
        return target

    monkeypatch.setattr(native, "build_once", build)
    built = native.build_kernels(builds)
    assert built is not None and built.parent not in (in_use, unused)
    assert in_use.is_dir() and not unused.exists()
    # Reusing a build marks it used, so it is not the next one removed.
    os.utime(built.parent, (month_ago, month_ago))
    assert native.build_kernels(builds) == built
    assert built.parent.stat().st_mtime > month_ago + 24 * 3600


def test_every_file_in_csrc_feeds_the_build_keys() -> None:
    """A source or header missing from the list would change a build without changing its
    keys: a stale cached or prebuilt module would then be used."""
    csrc = Path(native.__file__).with_name("csrc")
    assert sorted(p.name for p in csrc.iterdir() if p.is_file()) == sorted(native._SOURCES)


def test_a_changed_header_changes_both_build_keys(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    csrc = tmp_path / "csrc"
    csrc.mkdir()
    for name in native._SOURCES:
        (csrc / name).write_bytes((native._csrc() / name).read_bytes())
    monkeypatch.setattr(native, "_csrc", lambda: csrc)
    tools = native._Toolchain("cmake", ["c++"], "c++ 1", tmp_path, str(tmp_path), "2.0")
    before = native._prebuilt_key()["sources"], native._target(tmp_path, tools)
    with (csrc / "spec.h").open("a", encoding="utf-8") as header:
        header.write("// changed\n")
    after = native._prebuilt_key()["sources"], native._target(tmp_path, tools)
    assert before[0] != after[0] and before[1] != after[1]


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("parts", [1, 2, 4, 7])
def test_packed_parts_keep_order_and_even_out_work(seed: int, parts: int) -> None:
    from jupyter_mlx_embed.engine.partition import packed_bounds, part_cost

    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, rng.choice([40, 256]), size=rng.integers(1, 100))
    bounds = packed_bounds(lengths, parts)
    assert bounds[0] == 0 and bounds[-1] == len(lengths)
    assert all(lo < hi for lo, hi in itertools.pairwise(bounds))
    assert len(bounds) - 1 <= parts
    costs = part_cost(1, lengths.astype(float))
    largest = max(costs[lo:hi].sum() for lo, hi in itertools.pairwise(bounds))
    assert largest <= costs.sum() / parts + costs.max() + 1e-9
