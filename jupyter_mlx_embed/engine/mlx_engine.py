"""The MLX engine: loads models and runs forward passes (the worker's entry into engine/).

An :class:`Engine` belongs to the thread that created it, which must be the worker thread:
MLX arrays and streams are thread-affine, so every ``mx`` call happens there. Only numpy
arrays and plain Python objects leave this module.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import EngineConfig
from ..errors import EmbedError, ModelLoadError, ModelTypeError
from ..modelspec import IMAGE_TEXT_MODEL_TYPES, ModelSpec
from . import blas, blas_probe, native
from ._build import build_folder
from .architectures import OWN_MODEL_TYPES
from .tokenization import BaseTokenizer, load_tokenizer

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A model in memory with its tokenizer."""

    spec: ModelSpec
    model: Any
    tokenizer: BaseTokenizer
    fast: Any = None  # a cpu_kernels.FastEncoder on the CPU device, else None
    fast_images: Any = None  # an image-text model's native_models.ImageTower, else None


# On Linux the mlx package holds only the Python bindings; libmlx comes from mlx-cpu or
# mlx-cuda-12 (which install the same files, so only one of them).
_NO_BACKEND = (
    "MLX is installed without a backend: install jupyter-mlx-embed[cpu] (CPU) or "
    "jupyter-mlx-embed[cuda] (NVIDIA GPU), e.g. pip install 'jupyter-mlx-embed[cpu]'"
)


@dataclass(frozen=True)
class PrecisionInfo:
    """The ``precision`` setting, the precision the matrix products run at, and why."""

    setting: str
    in_use: str
    detail: str


#: What each reduced precision runs on the native CPU path ('{}': what runs its products, as
#: the kernels' precisions() names it), and what it needs there.
_REDUCED = {
    "bf16": (
        "{} products (bfloat16 weights and inputs, float32 sums)",
        "a CPU with AMX or AVX512_BF16",
    ),
    "int8": (
        "int8 products (weights per output feature, inputs per token, int32 sums)",
        "AVX2, or AVX512_VNNI with the avx512 kernels",
    ),
}


def _precision(setting: str, cpu: bool, kernels: Any) -> PrecisionInfo:
    """The precision this engine runs: the setting where the native CPU path has its products
    (bf16 also on a GPU, as bfloat16 weights); otherwise fp32, saying why."""
    if setting == "fp32":
        return PrecisionInfo(setting, "fp32", "float32 products")
    if not cpu:
        if setting == "bf16":
            return PrecisionInfo(setting, "bf16", "bfloat16 weights on the GPU")
        return PrecisionInfo(setting, "fp32", f"{setting} runs on the native CPU kernels only")
    if kernels is None:
        return PrecisionInfo(
            setting, "fp32", f"{setting} needs the native CPU kernels (not loaded)"
        )
    detail, needs = _REDUCED[setting]
    runs_on = kernels.precisions().get(setting)
    if runs_on is None:
        return PrecisionInfo(setting, "fp32", f"{setting} needs {needs}")
    return PrecisionInfo(setting, setting, detail.format(runs_on.upper()))


class Engine:
    """Loads models into an LRU and turns token ids into pooled, L2-normalised vectors.

    Create it on the thread that will use it. Creating it preloads a fast BLAS on Linux
    (which must happen before ``mlx.core`` is first imported) and then imports MLX.
    """

    def __init__(self, config: EngineConfig) -> None:
        self._owner = threading.get_ident()
        self._config = config
        if config.cpu_streams > 1:
            # Several streams each call BLAS: one BLAS thread per stream, not two (which
            # oversubscribes the cores). OpenBLAS reads this once, when it is loaded.
            os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        builds = build_folder(config)  # the BLAS shim and the native kernels are kept here
        preloaded = blas.preload_fast_blas(config.blas, cache_dir=builds, core=config.blas_core)
        try:
            import mlx.core as mx
        except ImportError as exc:
            raise ImportError(f"{_NO_BACKEND} ({exc})") from exc

        self._mx = mx
        self.blas = blas_probe.detect_bound_blas(preloaded, keep_in=builds)
        #: OpenBLAS's kernels ("SkylakeX", "Haswell"...), when the BLAS is an OpenBLAS.
        self.blas_core = blas.openblas_core()
        self.device = str(mx.default_device())
        self.mlx_version = getattr(mx, "__version__", "unknown")
        self._cpu = mx.default_device() == mx.cpu
        if self._cpu and not self.blas.fast:  # on a GPU the matrix products run there
            log.warning("MLX uses a slow BLAS: %s", self.blas.detail or self.blas.name)
        self.malloc_tuned = self._cpu and _keep_freed_memory()
        # The C++ kernels of the CPU fast path; None (logged once) runs its MLX-op version.
        self._kernels = None
        self.native_kernels = native.KernelsInfo(False, None, None, "not used on this device")
        if self._cpu and config.cpu_fast_path:
            self._kernels = native.load_kernels(builds, config.native_kernels)
            self.native_kernels = native.kernels_info()
        elif self._cpu:
            self.native_kernels = native.KernelsInfo(False, None, None, "cpu_fast_path is off")
        self.precision = _precision(config.precision, self._cpu, self._kernels)
        if self.precision.in_use != config.precision:
            log.warning("precision %s: %s", config.precision, self.precision.detail)
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()

    def release_thread(self) -> None:
        """Free MLX's state of the worker thread (its streams) while the thread still runs.

        MLX frees it in thread-local destructors otherwise, which take the GIL: a worker
        thread that ends while the interpreter finalizes would then abort the process.
        """
        self._check_thread()
        clear = getattr(self._mx, "clear_streams", None)  # MLX >= 0.30
        if clear is not None:
            self._mx.synchronize()
            clear()

    def _check_thread(self) -> None:
        if threading.get_ident() != self._owner:
            raise RuntimeError("MLX engine used from a thread other than its worker thread")

    @property
    def loaded_models(self) -> list[str]:
        """Names of the models in memory, most recently used last."""
        return [m.spec.name for m in self._models.values()]

    def load(self, spec: ModelSpec) -> LoadedModel:
        """Return the model for ``spec``, loading it (and evicting the LRU one) if needed.

        Raises:
            ModelLoadError: Weights or tokenizer could not be loaded.
        """
        self._check_thread()
        key = str(spec.path)
        loaded = self._models.get(key)
        if loaded is not None:
            self._models.move_to_end(key)
            return loaded
        loaded = self._load(spec)
        self._models[key] = loaded
        while len(self._models) > self._config.max_loaded_models:
            _, evicted = self._models.popitem(last=False)
            log.info("evicting model %s", evicted.spec.name)
            del evicted
            self._mx.clear_cache()
        return loaded

    def _load(self, spec: ModelSpec) -> LoadedModel:
        log.info("loading model %s from %s", spec.name, spec.path)
        # A reranker's pairs whose second texts get token type 1 (ids offset by the vocabulary).
        segments = spec.reranker is not None and spec.reranker.segments
        try:
            model = _build_model(self._mx, spec)
            if not self._cpu and self.precision.in_use == "bf16":
                model.set_dtype(self._mx.bfloat16)
            if self._cpu:
                # Half precision matmuls are a slow scalar loop on MLX's CPU backend (the
                # bf16 precision packs its own copy of the weights: see cpu_kernels).
                model.set_dtype(self._mx.float32)
                if spec.quantization is not None and self._config.cpu_fast_path:
                    # So is its quantized matmul (figures in BENCHMARKS.md). The float32
                    # weights dequantized once are the values the quantized kernels compute
                    # with, so the vectors stay the checkpoint's own; memory is float32's.
                    count = _dequantize(self._mx, model)
                    log.info("dequantized %d layers of %s for the CPU", count, spec.name)
                self._mx.eval(model.parameters())
            tokenizer = load_tokenizer(
                spec.path,
                max_length=spec.max_seq_length,
                vocab_size=spec.vocab_size,
                segments=segments,
                # SigLIP reads texts padded to its whole context, without a mask.
                pad=spec.model_type in IMAGE_TEXT_MODEL_TYPES,
            )
        except EmbedError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"Loading model '{spec.name}' failed: {exc}") from exc
        fast: Any = None  # a FastEncoder or a native_models.PreNormEncoder
        fast_images: Any = None
        if self._cpu and self._config.cpu_fast_path and spec.model_type in IMAGE_TEXT_MODEL_TYPES:
            if self._kernels is not None and not _quantized_layers(model):
                from .native_models import siglip_towers

                fast, fast_images = siglip_towers(
                    model, self._kernels, self._config.cpu_streams, self.precision.in_use
                )
        elif self._cpu and self._config.cpu_fast_path:
            from .cpu_kernels import FAST_MODEL_TYPES, FastEncoder

            still_quantized = _quantized_layers(model)
            if still_quantized:  # FastEncoder multiplies the weights as float matrices
                log.warning(
                    "model %s keeps quantized layers (%s); running the stock forward",
                    spec.name,
                    ", ".join(still_quantized[:3]),
                )
            elif spec.model_type in FAST_MODEL_TYPES:
                fast = FastEncoder(
                    model,
                    spec.model_type,
                    self._config.cpu_streams,
                    kernels=self._kernels,
                    precision=self.precision.in_use,
                    segments=spec.vocab_size if segments else 0,
                    keep_stock=False,
                )
            elif self._kernels is not None:
                from .native_models import NATIVE_MODEL_TYPES, prenorm_encoder

                if spec.model_type in NATIVE_MODEL_TYPES:  # None: a feature it lacks (logged)
                    fast = prenorm_encoder(
                        model,
                        spec.model_type,
                        self._kernels,
                        self._config.cpu_streams,
                        precision=self.precision.in_use,
                        keep_stock=False,
                    )
        return LoadedModel(
            spec=spec, model=model, tokenizer=tokenizer, fast=fast, fast_images=fast_images
        )

    def embed(self, loaded: LoadedModel, rows: Sequence[Sequence[int]]) -> np.ndarray:
        """One float32 row per row of token ids: the pooled, L2-normalised vector, or for a
        reranker its pair's score and logit (pairs' second texts carry token type 1 as ids
        offset by the vocabulary size, see ``Reranker.segments``)."""
        self._check_thread()
        mx = self._mx
        ids, mask = _pad(rows, loaded.spec.pad_token_id)
        mode = loaded.spec.pooling
        finish: Any
        if loaded.spec.reranker is not None:
            head = loaded.model[_HEAD]
            finish = lambda h, m: head(_pool(mx, mode, h, m))  # noqa: E731
        else:
            # sentence-transformers' Dense modules act on the pooled vector, before
            # normalisation; so does an image-text model's text head.
            dense = loaded.model[_DENSE] if loaded.spec.dense else _projection(loaded.model)
            finish = lambda h, m: _normalize(mx, dense(_pool(mx, mode, h, m)))  # noqa: E731
        if loaded.fast is not None:
            # Finished on each part's own stream: no hand-over to another stream's thread.
            vectors = loaded.fast(ids, mask, finish)
        else:
            m = mx.array(mask)
            vectors = finish(self._hidden(loaded, mx.array(ids), m), m)
        mx.eval(vectors)
        return np.array(vectors, dtype=np.float32, copy=True)

    def embed_images(self, loaded: LoadedModel, pixels: np.ndarray) -> np.ndarray:
        """One float32 unit row per picture of ``pixels`` ((n, h, w, 3) uint8, resized for
        the model): its image tower's vector, normalised."""
        from ..images import normalise

        self._check_thread()
        assert loaded.spec.image is not None
        x = self._mx.array(normalise(pixels, loaded.spec.image))
        tower = loaded.fast_images or loaded.model.image_features
        vectors = _normalize(self._mx, tower(x))
        self._mx.eval(vectors)
        return np.array(vectors, dtype=np.float32, copy=True)

    def _hidden(self, loaded: LoadedModel, ids: Any, mask: Any) -> Any:
        model, kind = loaded.model, loaded.spec.model_type
        if kind in ("bert", "xlm_roberta"):
            types = None
            if loaded.spec.reranker is not None and loaded.spec.reranker.segments:
                from .cpu_kernels import split_segments

                ids, types = split_segments(ids, loaded.spec.vocab_size)
            return model(ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        if kind == "qwen3":
            return model.model(ids, attention_mask=mask)
        if kind == "modernbert":
            out = model.model(ids, attention_mask=mask, return_dict=True)
            return out["last_hidden_state"]
        if kind in OWN_MODEL_TYPES:  # engine/architectures: the last hidden state itself
            return model(ids, attention_mask=mask)
        raise ModelLoadError(f"No forward pass for model_type '{kind}'")


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc malloc.h)


def _keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 512 << 20) -> bool:
    """Let glibc's malloc keep freed blocks for reuse instead of handing them back to the OS.

    MLX's CPU allocator mallocs and frees every intermediate array. Past glibc's default mmap
    threshold each such block is a fresh mapping whose pages the kernel must fault in and
    zero, a sizeable share of a forward pass over short sentences (figures in BENCHMARKS.md).
    Blocks below ``mmap_threshold`` (glibc's maximum) now come from the heap, and up to
    ``trim_threshold`` of free heap is kept. Process-wide; skipped where the user tuned malloc
    through the environment, and a no-op without glibc (returns False).
    """
    if sys.platform != "linux" or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )


_MODELS_ALIAS = "jupyter_mlx_embed._mlx_embeddings_models"
#: The child of a loaded model holding its sentence-transformers Dense modules.
_DENSE = "st_dense"
#: The child of a loaded reranker holding its classification head (``architectures.classifier``).
_HEAD = "score_head"


def _architecture(model_type: str) -> Any:
    """The ``mlx_embeddings.models.<model_type>`` module, imported without the package's
    ``__init__``: that imports ``mlx_vlm`` and ``transformers`` (and torch when installed),
    seconds of start-up and hundreds of MiB for nothing we use. The architecture files are
    loaded from mlx-embeddings' own folder under a private package name. Architectures of
    our own (:data:`OWN_MODEL_TYPES`) come from ``engine/architectures``."""
    import importlib
    import importlib.machinery
    import importlib.util
    import sys

    if model_type in OWN_MODEL_TYPES:
        return importlib.import_module(f"{__package__}.architectures.{model_type}")
    if _MODELS_ALIAS not in sys.modules:
        found = importlib.util.find_spec("mlx_embeddings")
        if found is None or not found.submodule_search_locations:
            raise ModelLoadError("mlx-embeddings is not installed")
        folder = str(Path(next(iter(found.submodule_search_locations))) / "models")
        spec = importlib.machinery.ModuleSpec(_MODELS_ALIAS, None, is_package=True)
        spec.submodule_search_locations = [folder]
        sys.modules[_MODELS_ALIAS] = importlib.util.module_from_spec(spec)
    return importlib.import_module(f"{_MODELS_ALIAS}.{model_type}")


def _modernbert_activation(nn: Any, model: Any, config: dict[str, Any]) -> None:
    """The MLP activation ``config.json`` names, as transformers computes it: mlx-embeddings'
    ModernBERT always builds the tanh approximation (``nn.GELU(approx="precise")``), while
    transformers' ``gelu`` (gte-modernbert-base, ModernBERT-base) is the exact erf GELU."""
    exact = {"gelu": "none", "gelu_pytorch_tanh": "precise", "gelu_new": "precise"}
    approx = exact.get(str(config.get("hidden_activation", "gelu")))
    if approx is None:
        raise ModelTypeError(
            f"ModernBERT with hidden_activation {config.get('hidden_activation')!r} is not "
            f"supported (supported: {', '.join(exact)})"
        )
    for layer in model.model.layers:
        layer.mlp.act = nn.GELU(approx=approx)


def _build_model(mx: Any, spec: ModelSpec) -> Any:
    """Instantiate the ``mlx_embeddings`` architecture and load its weights.

    This does what ``mlx_embeddings.utils.load_model`` does for text models.
    """
    import json

    import mlx.nn as nn

    arch = _architecture(spec.model_type)
    config = json.loads((spec.path / "config.json").read_text(encoding="utf-8"))
    weights: dict[str, Any] = {}
    for file in sorted(spec.path.glob("model*.safetensors")):
        weights.update(mx.load(str(file)))
    if not weights:
        raise ModelLoadError(f"Model '{spec.name}' has no model*.safetensors weights")
    head_weights: dict[str, Any] = {}
    if spec.reranker is not None:  # the encoder is the embedding architecture, the head ours
        from .architectures import classifier

        config = classifier.encoder_config(spec.reranker, config)
        weights, head_weights = classifier.split_weights(spec.reranker, weights)
    model = arch.Model(arch.ModelArgs.from_dict(config))
    if hasattr(model, "sanitize"):
        weights = model.sanitize(weights)
    quantization = spec.quantization
    if quantization is not None:  # MLX-quantized checkpoints (mlx-community conversions)
        # As mlx-embeddings' loader: the layers stored with scales, with per-layer settings
        # where the block has an entry for the layer's path (mlx-lm mixed-bit conversions).
        overrides = config["quantization"]

        def stored_quantized(path: str, module: Any) -> bool | dict[str, Any]:
            if f"{path}.scales" not in weights:
                return False
            override = overrides.get(path)
            return dict(override) if isinstance(override, dict) else True

        nn.quantize(
            model,
            group_size=quantization.group_size,
            bits=quantization.bits,
            mode=quantization.mode,
            class_predicate=stored_quantized,
        )
    model.load_weights(list(weights.items()))
    if spec.model_type == "modernbert":
        _modernbert_activation(nn, model, config)
    if spec.dense:  # a child of the model: cast, evaluated and evicted with it
        from .architectures.dense import load_dense

        model[_DENSE] = load_dense(spec.dense, spec.name)
    if spec.reranker is not None:
        model[_HEAD] = classifier.load_head(spec.reranker, config, head_weights, spec.name)
    mx.eval(model.parameters())
    model.eval()
    return model


def _dequantize(mx: Any, model: Any) -> int:
    """Replace each quantized Linear and Embedding of ``model`` by a float32 one holding its
    dequantized weight (the values the quantized kernels multiply by); returns the count."""
    import mlx.nn as nn
    from mlx.utils import tree_map_with_path

    replaced = 0

    def plain(path: str, module: Any) -> Any:
        nonlocal replaced
        if not isinstance(module, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            return module
        weight = mx.dequantize(
            module["weight"],
            scales=module["scales"],
            biases=module.get("biases"),
            group_size=module.group_size,
            bits=module.bits,
            mode=module.mode,
            dtype=mx.float32,
        )
        layer: Any
        if isinstance(module, nn.QuantizedEmbedding):
            layer = nn.Embedding(*weight.shape)
        else:
            layer = nn.Linear(weight.shape[1], weight.shape[0], bias="bias" in module)
            if "bias" in module:
                layer.bias = module["bias"]
        layer.weight = weight  # replaces the (lazy, never computed) random initial weight
        replaced += 1
        return layer

    model.update_modules(
        tree_map_with_path(plain, model.leaf_modules(), is_leaf=nn.Module.is_module)
    )
    return replaced


def _quantized_layers(model: Any) -> list[str]:
    """Paths of the layers of ``model`` that still hold quantized weights (with scales)."""
    return [path for path, module in model.named_modules() if "scales" in module]


def _projection(model: Any) -> Any:
    """What maps a pooled text vector before normalisation: an image-text model's text head
    (``project_text``), else nothing."""
    project = getattr(model, "project_text", None)
    return project if callable(project) else lambda pooled: pooled


def _pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad rows of ids to the longest; returns (ids int32, mask float32)."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int32)
    mask = np.zeros((len(rows), width), dtype=np.float32)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1.0
    return ids, mask


def _normalize(mx: Any, pooled: Any) -> Any:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    norm = mx.sqrt(mx.sum(pooled * pooled, axis=-1, keepdims=True))
    return pooled / mx.maximum(norm, 1e-12)


def _pool(mx: Any, mode: str, hidden: Any, mask: Any) -> Any:
    """sentence-transformers pooling of ``hidden`` (B, T, D) under ``mask`` (B, T)."""
    m = mask[:, :, None]
    if mode == "cls":
        return hidden[:, 0]
    if mode == "lasttoken":
        last = (mx.sum(mask, axis=1) - 1).astype(mx.int32)
        return mx.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
    if mode == "max":
        return mx.max(mx.where(m > 0, hidden, -1e9), axis=1)
    counts = mx.maximum(mx.sum(m, axis=1), 1e-9)
    summed = mx.sum(hidden * m, axis=1)
    if mode == "mean":
        return summed / counts
    if mode == "mean_sqrt_len_tokens":
        return summed / mx.sqrt(counts)
    raise ModelLoadError(f"Unknown pooling mode '{mode}'")
