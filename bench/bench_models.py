"""Benchmark jupyter_mlx_embed per architecture against sentence-transformers and ONNX Runtime.

Issue #24 wants every supported architecture on a fast CPU path. The models are random-weight
copies of published ones at their published shapes, file layout and dtype
(``tests/real_models.py``: bge-base-en-v1.5, gte-modernbert-base, Qwen3-Embedding-0.6B,
embeddinggemma-300m, multilingual-e5-base), built once into ``--root`` (by default
``~/.cache/jupyter-mlx-embed-bench``); speed does not depend on the weights' values. Run::

    python bench/bench_models.py [--models NAME ...] [--rounds N] [--quick] [--json OUT]

e.g. ``--models gte-modernbert-base --quick`` for one architecture in a few minutes.
Per model, three sides embed the same texts, each in its own long-lived, warmed-up process,
taking turns within each round (the order rotates per round), as in ``bench_embed.py``:

- MLX: jupyter_mlx_embed with the vector cache off;
- torch: sentence-transformers in float32 (it would load Qwen3-Embedding's bfloat16 weights
  as bfloat16, many times slower on CPUs without bfloat16 arithmetic), batches of 32;
- with ``--sides``, also ``mlx-bf16``, ``mlx-int8`` (the ``precision`` settings) and ``onnx-int8``
  (ONNX Runtime's ``quantize_dynamic`` of the fused export: int8 weights, activations
  quantized at run time), the reduced-precision options of each;
- ONNX Runtime: the transformer exported with torch's TorchScript exporter (eager attention)
  and fused by ``onnxruntime.transformers.optimizer`` (its BERT fusions; only BERT and
  XLM-R get the fused Attention), run in a stock ``InferenceSession`` as infinity,
  fastembed or TEI users run it: batches of 32 sorted by length, right-padded, pooled as
  the model's ``1_Pooling`` says, its Dense layers applied, L2-normalised. An architecture
  the exporter cannot handle is reported with the reason, and its ORT column left empty.
  Exports are cached under ``--root``/onnx.

Workloads: sentences of 8-40 tokens and passages of 128-256 tokens (``corpus.py``; tokens
counted with the model's own tokenizer, special tokens included). Reported per model:
tokens/s per workload (median and best round), MLX's paired per-round ratio to each side
(median [min-max]; > 1: MLX faster), single-text latency p50, time to first vector of a fresh
process, peak RSS of each side's process, and each side's min cosine to torch (a side that
tokenizes or pools differently would be fast and wrong). The CPU model and its vector ISA are
printed first: numbers from different machines do not compare.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import bench_embed
import corpus
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from jupyter_mlx_embed.config import PRECISIONS  # noqa: E402
from jupyter_mlx_embed.envvars import setting_variable  # noqa: E402
from tests.real_models import PUBLISHED, build_model, layer_count, width  # noqa: E402

SIDES = ("mlx", "mlx-bf16", "mlx-int8", "torch", "onnx", "onnx-int8")
DEFAULT_SIDES = ("mlx", "torch", "onnx")
NAMES = {
    "mlx": "MLX",
    "mlx-bf16": "MLX bf16",
    "mlx-int8": "MLX int8",
    "torch": "sentence-transformers (torch)",
    "onnx": "ONNX Runtime",
    "onnx-int8": "ORT dynamic int8",
}
#: Sides of reduced precision (their fidelity floor is 0.999 cosine, not 0.9999).
REDUCED = ("mlx-bf16", "mlx-int8", "onnx-int8")
#: The ``precision`` setting of each MLX side.
PRECISION = {"mlx": "fp32", "mlx-bf16": "bf16", "mlx-int8": "int8"}
#: The paired ratios reported, where both sides ran: (side, reference); > 1: side faster.
RATIOS = (
    ("mlx", "torch"),
    ("mlx", "onnx"),
    ("mlx-bf16", "mlx"),
    ("mlx-bf16", "onnx"),
    ("mlx-int8", "mlx"),
    ("mlx-int8", "onnx"),
    ("onnx-int8", "onnx"),
)
DEFAULT_MODELS = ("bge-base-en-v1.5", "gte-modernbert-base", "Qwen3-Embedding-0.6B")
DEFAULT_ROOT = Path.home() / ".cache" / "jupyter-mlx-embed-bench"
BATCH_SIZE = 32
EXPORT_TIMEOUT_S = 1800
med = statistics.median
# The vector cache off, no hub, quiet libraries (bench_embed's child environment).
CHILD_ENV = bench_embed.CHILD_ENV
# ISA flags worth naming: they decide which kernels each side can use.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "neon", "sve")


def precision_argument(parser: argparse.ArgumentParser) -> None:
    """``--precision``: the ``precision`` setting of a benchmark's single MLX side."""
    parser.add_argument(
        "--precision", default="fp32", choices=PRECISIONS, help="the MLX side's precision"
    )


def use_precision(precision: str) -> str:
    """Have the MLX processes started from now on run at ``precision`` (they read it from
    the environment); returns the MLX side's name for the tables."""
    os.environ[setting_variable("precision")] = precision
    return NAMES["mlx"] + ("" if precision == "fp32" else f" {precision}")


def cpu_description() -> str:
    """The CPU model, core count and its vector ISA extensions (Linux /proc/cpuinfo; macOS
    sysctl; else what ``platform`` says)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        fields: dict[str, str] = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
        model = fields.get("model name", model)
        if "cpu family" in fields:  # virtual machines often name only the brand
            model += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
        flags = set((fields.get("flags") or fields.get("Features") or "").split())
    except OSError:
        out = subprocess.run(
            ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True
        )
        model = out.stdout.strip() or model
    isa = [f for f in ISA_FLAGS if f in flags] or ["unknown"]
    return f"{model}, {os.cpu_count()} logical CPUs, ISA: {' '.join(isa)}"


# ---------------------------------------------------------------------------------------
# The ONNX Runtime side.


def _st_modules(folder: Path) -> tuple[str, list[np.ndarray]]:
    """The pooling mode of ``1_Pooling`` and the weights of the Dense modules after it."""
    from safetensors.numpy import load_file

    pooling, dense = "mean", []
    for module in json.loads((folder / "modules.json").read_text()):
        kind = module["type"].rsplit(".", 1)[-1]
        if kind == "Pooling":
            config = json.loads((folder / module["path"] / "config.json").read_text())
            modes = [k for k, v in config.items() if k.startswith("pooling_mode_") and v is True]
            pooling = modes[0].removeprefix("pooling_mode_")
        elif kind == "Dense":
            dense.append(
                load_file(str(folder / module["path"] / "model.safetensors"))["linear.weight"]
            )
    return pooling, dense


class OrtEmbedder:
    """Texts -> normalised float32 vectors through an ``onnxruntime.InferenceSession``."""

    def __init__(self, folder: Path, onnx_path: Path) -> None:
        import onnxruntime

        self.session = onnxruntime.InferenceSession(
            str(onnx_path), providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self.session.get_inputs()}
        self._tok = corpus.load_tokenizer(folder)
        limit = json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"]
        self._tok.enable_truncation(max_length=limit)  # the model's, as the other sides
        self._pooling, self._dense = _st_modules(folder)
        pad = json.loads((folder / "config.json").read_text()).get("pad_token_id")
        self._pad = pad if isinstance(pad, int) else 0

    def _pool(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self._pooling == "cls_token":
            return hidden[:, 0]
        if self._pooling == "lasttoken":
            return hidden[np.arange(len(hidden)), mask.sum(axis=1) - 1]
        weights = mask[:, :, None].astype(np.float32)
        return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)

    def __call__(self, texts: list[str]) -> np.ndarray:
        encodings = self._tok.encode_batch(texts, add_special_tokens=True)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        parts: list[np.ndarray] = []
        for start in range(0, len(order), BATCH_SIZE):
            rows = order[start : start + BATCH_SIZE]
            width = max(len(encodings[i].ids) for i in rows)
            ids = np.full((len(rows), width), self._pad, dtype=np.int64)
            mask = np.zeros_like(ids)
            for r, i in enumerate(rows):
                ids[r, : len(encodings[i].ids)] = encodings[i].ids
                mask[r, : len(encodings[i].ids)] = 1
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            (hidden,) = self.session.run(None, {k: v for k, v in feed.items() if k in self._inputs})
            pooled = self._pool(hidden, mask)
            for weight in self._dense:
                pooled = pooled @ weight.T
            pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
            parts.append(pooled)
        vectors = np.concatenate(parts)
        vectors[order] = vectors.copy()  # back to the callers' order
        return vectors


def _gemma_masks(mask: Any, window: int) -> dict[str, Any]:
    """EmbeddingGemma's two additive attention masks, built from the padding mask with plain
    tensor operations: transformers builds them with ``torch.vmap`` (its mask functions
    combine a bidirectional overlay), which the TorchScript exporter cannot trace. Global
    layers see every real token; sliding layers those less than ``window`` positions away
    (transformers' causal sliding window or-ed with its bidirectional overlay)."""
    import torch

    keep = mask[:, None, None, :].bool()
    pos = torch.arange(mask.shape[1], device=mask.device)
    near = (pos[:, None] - pos[None, :]).abs() < window
    lowest = torch.finfo(torch.float32).min

    def additive(allowed: Any) -> Any:
        return torch.zeros(allowed.shape, dtype=torch.float32).masked_fill(~allowed, lowest)

    return {"full_attention": additive(keep), "sliding_attention": additive(keep & near)}


def _export(folder: Path, out: Path) -> dict[str, Any]:
    """Export ``folder``'s transformer to ``out`` and fuse it; returns the fusion counts.
    Runs in its own process (``--export``): torch and the exporter stay out of the sides."""
    import torch
    from transformers import AutoModel

    config = json.loads((folder / "config.json").read_text())
    bert_like = config["model_type"] in ("bert", "xlm-roberta", "nomic_bert")
    # Eager attention: ORT's Attention fusion matches the eager pattern (see onnx_side.py).
    model = AutoModel.from_pretrained(
        str(folder), attn_implementation="eager", dtype=torch.float32
    ).eval()

    class _Hidden(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            extra: dict[str, Any] = {"token_type_ids": token_type_ids} if bert_like else {}
            if config["model_type"] in ("qwen3", "gemma3_text"):
                extra["use_cache"] = False
            if config["model_type"] == "gemma3_text":
                attention_mask = _gemma_masks(attention_mask, config["sliding_window"])
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask, **extra)
            return out.last_hidden_state

    names = ["input_ids", "attention_mask", *(["token_type_ids"] if bert_like else [])]
    ids = torch.ones((2, 16), dtype=torch.long)
    args = (ids, torch.ones_like(ids), *([torch.zeros_like(ids)] if bert_like else []))
    axes = {0: "batch", 1: "sequence"}
    raw = out.with_name("raw.onnx")
    with torch.no_grad():
        torch.onnx.export(
            _Hidden(model),
            args,
            str(raw),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={name: axes for name in (*names, "last_hidden_state")},
            opset_version=17,
            dynamo=False,
        )
    del model
    from onnxruntime.transformers.optimizer import optimize_model

    heads = config.get("num_attention_heads") or config.get("n_head", 0)
    optimized = optimize_model(
        str(raw), model_type="bert", num_heads=heads, hidden_size=width(config)
    )
    stats = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
    large = sum(f.stat().st_size for f in out.parent.iterdir()) > (1 << 31) - (1 << 26)
    optimized.save_model_to_file(str(out), use_external_data_format=large)
    for stale in out.parent.iterdir():  # the raw graph and its external data, if any
        if stale.name != out.name and not stale.name.startswith(out.name):
            stale.unlink()
    return stats


def ensure_onnx(folder: Path, root: Path, exporter: str = __file__) -> tuple[Path | None, str]:
    """The fused ONNX file of ``folder`` (exported once, cached) and a note: the fused
    operators, or why there is no export. ``exporter``: the script run as ``exporter --export
    FOLDER OUT`` (printing the fusions as its last line), this one by default."""
    import onnxruntime

    cache = root / "onnx" / f"{folder.name}-ort{onnxruntime.__version__}"
    info_path, onnx_path = cache / "info.json", cache / "model.onnx"
    if not info_path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        try:
            out = subprocess.run(
                [sys.executable, exporter, "--export", str(folder), str(onnx_path)],
                capture_output=True,
                text=True,
                timeout=EXPORT_TIMEOUT_S,
                check=False,
            )
            if out.returncode == 0:
                info = {"fusions": json.loads(out.stdout.splitlines()[-1])}
            else:
                lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
                info = {"error": lines[-1] if lines else f"exit status {out.returncode}"}
        except subprocess.TimeoutExpired:
            info = {"error": f"export ran over {EXPORT_TIMEOUT_S} s"}
        info_path.write_text(json.dumps(info) + "\n")  # written last: marks the cache complete
    info = json.loads(info_path.read_text())
    if "error" in info:
        return None, f"no ONNX export: {info['error']}"
    fused = ", ".join(f"{k} {v}" for k, v in sorted(info["fusions"].items())) or "none"
    return onnx_path, f"fused operators: {fused}"


# ---------------------------------------------------------------------------------------
# The sides' processes.


def int8_model(onnx_path: Path) -> Path:
    """ONNX Runtime's dynamic int8 quantization of the fused model (weights int8 per tensor,
    activations quantized per batch at run time), made once beside it."""
    out = onnx_path.with_name("model-int8.onnx")
    if not out.is_file():
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        scratch = out.with_suffix(".partial.onnx")
        # The fused operators (com.microsoft) defeat ONNX's shape inference: their outputs
        # are float32.
        options = {"DefaultTensorType": onnx.TensorProto.FLOAT}
        quantize_dynamic(onnx_path, scratch, weight_type=QuantType.QInt8, extra_options=options)
        scratch.replace(out)
    return out


def _load_side(side: str, folder: Path, onnx_path: str) -> tuple[Callable[[Any], Any], dict]:
    """The side's embed function (texts -> normalised float32 vectors) and its versions."""
    if side in ("onnx", "onnx-int8"):
        import onnxruntime

        path = Path(onnx_path) if side == "onnx" else int8_model(Path(onnx_path))
        embedder = OrtEmbedder(folder, path)
        embedder(["warm up"])
        return embedder, {"onnxruntime": onnxruntime.__version__}
    if side == "torch":
        import sentence_transformers
        import torch
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(
            str(folder), device="cpu", model_kwargs={"dtype": torch.float32}
        )

        def embed(texts: list[str]) -> np.ndarray:
            return model.encode(
                texts, batch_size=BATCH_SIZE, normalize_embeddings=True, show_progress_bar=False
            )

        embed(["warm up"])
        return embed, {
            "torch": torch.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "torch_threads": torch.get_num_threads(),
        }
    import jupyter_mlx_embed

    jupyter_mlx_embed.configure(
        model_roots=(folder.parent,),
        default_model=folder.name,
        cache=False,
        precision=PRECISION[side],
    )

    def embed_mlx(texts: list[str]) -> np.ndarray:
        return jupyter_mlx_embed.embed(texts, model=folder.name)

    embed_mlx(["warm up"])
    data = jupyter_mlx_embed.info()
    kernels = data.get("native_kernels") or {}
    return embed_mlx, {
        "jupyter_mlx_embed": data["version"],
        "mlx": data.get("mlx_version"),
        "blas": (data.get("blas") or {}).get("name"),
        "native_kernels": kernels.get("isa") if kernels.get("loaded") else kernels.get("detail"),
        f"precision_{side}": (data.get("precision") or {}).get("in_use"),
    }


#: Loads a side in its process: (side, model folder, ONNX path) -> (its function, versions).
Loader = Callable[[str, Path, str], tuple[Callable[[Any], Any], dict]]


def _serve(side: str, folder: str, onnx_path: str, conn: Connection, load: Loader) -> None:
    """Child process: load the side, then answer ``(op, inputs)`` messages until ``None``."""
    import resource

    try:
        embed, info = load(side, Path(folder), onnx_path)
        conn.send(("ok", info))
        while (msg := conn.recv()) is not None:
            op, texts = msg
            if op == "batch":
                start, cpu = time.perf_counter(), time.process_time()
                vectors = np.asarray(embed(texts))
                wall = time.perf_counter() - start
                conn.send(("ok", (wall, (time.process_time() - cpu) / wall, vectors)))
            elif op == "each":
                times = []
                for text in texts:
                    start = time.perf_counter()
                    embed([text])
                    times.append(time.perf_counter() - start)
                conn.send(("ok", times))
            elif op == "rss":
                conn.send(("ok", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
    except BaseException:  # noqa: BLE001 - report any failure to the parent, then stop
        conn.send(("error", traceback.format_exc()))


class Side:
    """Parent's handle on one side's long-lived process (``load``: how it loads the side, a
    module-level function: the process is spawned)."""

    def __init__(
        self, side: str, folder: Path, onnx_path: Path | None, load: Loader = _load_side
    ) -> None:
        self.name = side
        context = mp.get_context("spawn")
        self.conn, child = context.Pipe()
        self.proc = context.Process(
            target=_serve, args=(side, str(folder), str(onnx_path), child, load), daemon=True
        )
        self.proc.start()
        self.info = self._reply()

    def _reply(self) -> Any:
        return bench_embed.reply(self.conn, self.name, 1800)

    def ask(self, op: str, payload: Any = None) -> Any:
        time.sleep(bench_embed.PAUSE_S)
        self.conn.send((op, payload))
        return self._reply()

    def close(self) -> None:
        self.conn.send(None)
        self.proc.join(30)


_FIRST_VECTOR = {
    "torch": "import torch\nfrom sentence_transformers import SentenceTransformer\n"
    "m = SentenceTransformer({folder!r}, device='cpu', model_kwargs={{'dtype': torch.float32}})\n"
    "m.encode(['Hello, world.'], normalize_embeddings=True)\n",
    "onnx": "import sys\nsys.path.insert(0, {bench!r})\nfrom pathlib import Path\n"
    "from bench_models import OrtEmbedder\n"
    "OrtEmbedder(Path({folder!r}), Path({onnx!r}))(['Hello, world.'])\n",
    "mlx": "import jupyter_mlx_embed\njupyter_mlx_embed.embed(['Hello, world.'], model={name!r})\n",
    "mlx-bf16": "import jupyter_mlx_embed\njupyter_mlx_embed.configure(precision='bf16')\n"
    "jupyter_mlx_embed.embed(['Hello, world.'], model={name!r})\n",
    "mlx-int8": "import jupyter_mlx_embed\njupyter_mlx_embed.configure(precision='int8')\n"
    "jupyter_mlx_embed.embed(['Hello, world.'], model={name!r})\n",
    "onnx-int8": "import sys\nsys.path.insert(0, {bench!r})\nfrom pathlib import Path\n"
    "from bench_models import OrtEmbedder, int8_model\n"
    "OrtEmbedder(Path({folder!r}), int8_model(Path({onnx!r})))(['Hello, world.'])\n",
}


def first_vector_s(
    side: str, folder: Path, onnx_path: Path | None, probes: dict[str, str] = _FIRST_VECTOR
) -> float:
    """Seconds from launching a fresh Python process to its first vector (``probes``: each
    side's code that loads it and computes one)."""
    code = probes[side].format(
        folder=str(folder), name=folder.name, onnx=str(onnx_path), bench=str(Path(__file__).parent)
    )
    code += "import time; print(time.time())\n"
    env = {**os.environ, **CHILD_ENV, "JUPYTER_MLX_EMBED_MODEL_ROOTS": str(folder.parent)}
    start = time.time()
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"the {side} first-vector probe failed:\n{out.stderr}")
    return float(out.stdout.split()[-1]) - start


# ---------------------------------------------------------------------------------------
# One model's run and its table.


def _ratios(sides: list[str]) -> list[tuple[str, str]]:
    """The :data:`RATIOS` whose two sides both ran."""
    return [(a, b) for a, b in RATIOS if a in sides and b in sides]


def _ratio_cells(values: dict[str, list[float]], sides: list[str], higher: bool) -> list[str]:
    """Each of :func:`_ratios`: paired per-round ratios, median [min-max] (> 1: the first
    side faster)."""
    cells = []
    for side, reference in _ratios(sides):
        pairs = zip(values[reference], values[side], strict=True)
        cells.append(bench_embed._spread([m / o if higher else o / m for o, m in pairs]))
    return cells


def _row(label: str, values: dict[str, list[float]], sides: list[str], fmt: str, higher: bool):
    best = max if higher else min
    cells = [f"{med(values[s]):{fmt}} ({best(values[s]):{fmt}})" for s in sides]
    return f"| {label} | " + " | ".join(cells + _ratio_cells(values, sides, higher)) + " |"


def run_model(name: str, args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """Build (or find) the model, measure every side on it, and return figures and table."""
    folder = build_model(name, args.root, layers=args.layers)
    tok = corpus.load_tokenizer(folder)
    n_short, n_para, n_each = (32, 8, 10) if args.quick else (args.sentences, args.passages, 30)
    workloads = {
        f"{n_short} sentences": corpus.sentences(tok, n_short),
        f"{n_para} passages": corpus.paragraphs(tok, n_para),
    }
    tokens = {w: sum(corpus.count_tokens(tok, texts)) for w, texts in workloads.items()}
    sides = [s for s in SIDES if s in args.sides]
    onnx_path, onnx_note = None, "ONNX Runtime not measured"
    if {"onnx", "onnx-int8"} & set(sides):
        print(f"[{name}] exporting to ONNX (cached after the first run) ...", flush=True)
        onnx_path, onnx_note = ensure_onnx(folder, args.root)
        print(f"[{name}] {onnx_note}", flush=True)
        if onnx_path is None:
            sides = [s for s in sides if not s.startswith("onnx")]

    print(
        f"[{name}] time to first vector: {args.probes} fresh process(es) per side ...", flush=True
    )
    ttfv = {s: [first_vector_s(s, folder, onnx_path) for _ in range(args.probes)] for s in sides}
    print(f"[{name}] starting the long-lived processes and warming up ...", flush=True)
    procs = {s: Side(s, folder, onnx_path) for s in sides}
    cosine: dict[str, float] = {}
    for texts in workloads.values():  # warm-up pass, also gives the fidelity check
        vecs = {s: procs[s].ask("batch", texts)[2] for s in sides}
        for s in sides:
            if s != "torch" and "torch" in vecs:
                cos = bench_embed.min_cosine(vecs["torch"], vecs[s])
                cosine[s] = min(cosine.get(s, 1.0), cos)
    tps = {w: {s: [] for s in sides} for w in workloads}
    busy: dict[str, list[float]] = {s: [] for s in sides}  # CPU time / wall time per batch
    p50: dict[str, list[float]] = {s: [] for s in sides}
    short = workloads[f"{n_short} sentences"]
    for r in range(args.rounds):
        order = sides[r % len(sides) :] + sides[: r % len(sides)]
        line = f"[{name}] round {r + 1}/{args.rounds} ({', '.join(order)})"
        for w, texts in workloads.items():
            for s in order:
                wall, cores, _ = procs[s].ask("batch", texts)
                tps[w][s].append(tokens[w] / wall)
                busy[s].append(cores)
            line += f"  {w}: " + ", ".join(f"{s} {tps[w][s][-1]:,.0f}" for s in sides) + " tok/s"
        for s in order:
            p50[s].append(med(procs[s].ask("each", short[:n_each])) * 1e3)
        print(line, flush=True)
    rss = {s: procs[s].ask("rss") for s in sides}
    info = {s: procs[s].info for s in sides}
    for proc in procs.values():
        proc.close()

    config = json.loads((folder / "config.json").read_text())
    rows = [
        f"### {name} ({PUBLISHED[name].repo} shapes, {layer_count(config)} layers, "
        f"{PUBLISHED[name].dtype.lower()} weights)",
        "",
        "| Measure | "
        + " | ".join(NAMES[s] for s in sides)
        + "".join(f" | {NAMES[a]} / {NAMES[b]}, paired" for a, b in _ratios(sides))
        + " |",
        "|---|" + "---:|" * (len(sides) + len(_ratios(sides))),
    ]
    dashes = " | -" * len(_ratios(sides))
    for w in workloads:
        label = f"{w} ({tokens[w]:,} tokens), tokens/s"
        rows.append(_row(label, tps[w], sides, ",.0f", higher=True))
    rows.append(_row("single-text latency p50, ms", p50, sides, ".1f", higher=False))
    rows.append(_row("time to first vector, s", ttfv, sides, ".2f", higher=False))
    cores = " | ".join(bench_embed._spread(busy[s], unit="") for s in sides)
    rows.append(f"| CPU cores busy in batch runs | {cores}{dashes} |")
    peaks = " | ".join(f"{rss[s]:,.0f}" for s in sides)
    rows.append(f"| peak RSS, MiB | {peaks}{dashes} |")
    cells = " | ".join(
        "(reference)" if s == "torch" else f"{cosine[s]:.6f}" if s in cosine else "-" for s in sides
    )
    rows.append(f"| min cosine to torch | {cells}{dashes} |")
    low = [s for s, c in cosine.items() if c < (0.999 if s in REDUCED else 0.9999)]
    report = (
        "\n".join(rows)
        + f"\n\nSides: median (best) over {args.rounds} round(s); ratios > 1: the first side "
        "faster; cores busy: CPU time / wall time, median [min-max] (below the core count: the "
        f"side did not get every core, e.g. on a shared machine). ONNX: {onnx_note}."
        + (
            f"\nFIDELITY: {', '.join(low)} below 0.9999 (reduced precision: 0.999) cosine to torch."
            if low
            else ""
        )
    )
    result = {
        "model": name,
        "folder": str(folder),
        "layers": layer_count(config),
        "tokens": tokens,
        "tokens_per_s": tps,
        "latency_p50_ms": p50,
        "first_vector_s": ttfv,
        "peak_rss_mib": rss,
        "cores_busy": busy,
        "min_cosine_to_torch": cosine,
        "onnx": onnx_note,
        "versions": info,
    }
    return result, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        nargs="+",
        default=list(DEFAULT_MODELS),
        choices=list(PUBLISHED),
        help=f"architectures to run (default: {' '.join(DEFAULT_MODELS)})",
    )
    parser.add_argument("--rounds", type=int, default=3, help="paired rounds (default 3)")
    parser.add_argument("--quick", action="store_true", help="1 round of small workloads")
    parser.add_argument("--sentences", type=int, default=128, help="sentences per round")
    parser.add_argument("--passages", type=int, default=32, help="passages per round")
    parser.add_argument("--probes", type=int, default=1, help="fresh processes per side")
    parser.add_argument(
        "--sides",
        nargs="+",
        default=list(DEFAULT_SIDES),
        choices=SIDES,
        help=f"sides to measure (default: {' '.join(DEFAULT_SIDES)}); mlx-bf16, mlx-int8: "
        "those precisions; onnx-int8: ONNX Runtime's dynamic int8 quantization",
    )
    parser.add_argument("--layers", type=int, help="fewer layers than published")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="built models' cache")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--export", nargs=2, metavar=("FOLDER", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.export:  # the exporter's own process (ensure_onnx)
        stats = _export(Path(args.export[0]), Path(args.export[1]))
        print(json.dumps(stats))
        return 0
    if args.quick:
        args.rounds = 1
    onnx = ("torch", "onnx", "onnxruntime")
    needed = {"torch": ("torch", "sentence_transformers"), "onnx": onnx, "onnx-int8": onnx}
    missing = sorted(
        {m for s in args.sides for m in needed.get(s, ()) if not importlib.util.find_spec(m)}
    )
    if missing:
        print(
            f"error: {', '.join(missing)} not importable; install the bench extra "
            "(pip install -e '.[bench]') or leave those sides out with --sides",
            file=sys.stderr,
        )
        return 2
    os.environ.update(CHILD_ENV)
    print(f"CPU: {cpu_description()}", flush=True)
    results, reports = [], []
    for name in args.models:
        result, report = run_model(name, args)
        results.append(result)
        reports.append(report)
        print("\n" + report + "\n", flush=True)
    versions = {k: v for r in results for info in r["versions"].values() for k, v in info.items()}
    print(f"CPU: {cpu_description()}\nversions: {json.dumps(versions)}\n")
    if len(reports) > 1:  # all tables together at the end of a long run
        print("\n\n".join(reports))
    if args.json:
        machine = {"cpu": cpu_description(), "platform": platform.platform()}
        args.json.write_text(json.dumps({"machine": machine, "models": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
