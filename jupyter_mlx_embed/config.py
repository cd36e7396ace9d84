"""Every user-facing setting, declared once (pure: no traitlets, no MLX).

Each setting is a dataclass field whose metadata carries its help text; the environment
variable (:func:`.envvars.setting_variable`), the ``MLXEmbed`` trait (:mod:`.settings`), the
``serve`` command's flag (:mod:`.cli`) and the README's table are all derived from it.
:class:`EngineConfig` holds what the worker uses, :class:`ServingConfig` what the front ends
(servers, kernels, the Python API) use.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .envvars import setting_variable

#: The bundled model, and the default model unless configured otherwise.
DEFAULT_MODEL = "all-MiniLM-L6-v2"
#: Port of the standalone and kernel-side servers.
DEFAULT_PORT = 8000
TRANSPORT_MODES = ("auto", "local", "server")
#: Precisions of the native CPU path's matrix products (the first is the default).
PRECISIONS = ("fp32", "bf16", "int8")

_C = TypeVar("_C", bound="_Settings")


def setting(
    default: Any,
    help: str,
    *,
    minimum: float | None = None,
    choices: tuple[str, ...] | None = None,
    flag: str | None = None,
    servers: bool = True,
) -> Any:
    """A settings field: its default, help text, and optional bounds, choices and CLI flag
    (``servers``: whether the ``serve`` command takes it; kernel-only settings do not)."""
    metadata = {
        "help": help,
        "minimum": minimum,
        "choices": choices,
        "flag": flag,
        "servers": servers,
    }
    return field(default=default, metadata=metadata)


class _Settings:
    """Shared behaviour of the settings dataclasses: checks, env fallback, copies."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            minimum, choices = f.metadata["minimum"], f.metadata["choices"]
            if minimum is not None and value is not None and value < minimum:
                raise ValueError(f"{f.name} must be >= {minimum}, got {value!r}")
            if choices is not None and value not in choices:
                raise ValueError(f"{f.name} must be one of {', '.join(choices)}, got {value!r}")
        if hasattr(self, "model_roots"):
            roots = tuple(Path(p).expanduser() for p in self.model_roots)
            object.__setattr__(self, "model_roots", roots)

    def replace(self: _C, **changes: Any) -> _C:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    @classmethod
    def from_env(cls: type[_C], environ: Mapping[str, str] | None = None, **overrides: Any) -> _C:
        """Settings from ``JUPYTER_MLX_EMBED_*`` variables, then ``overrides`` (``None``
        values are ignored, so unset options fall through to the environment).

        Args:
            environ: The environment to read (defaults to ``os.environ``).
            **overrides: Field values that win over the environment.

        Raises:
            ValueError: A variable or override holds an invalid value.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            raw = env.get(setting_variable(f.name))
            if raw:
                values[f.name] = parse_setting(f, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass(frozen=True)
class EngineConfig(_Settings):
    """Settings of one worker: models, batching, limits and the CPU engine."""

    default_model: str = setting(
        DEFAULT_MODEL, "Model used when a request names none.", flag="--model"
    )
    default_reranker: str | None = setting(
        None,
        "Reranker used when a rerank request names none (TEI clients never do); unset, such "
        "a request is refused (HTTP 400).",
        flag="--reranker",
    )
    model_roots: tuple[Path, ...] = setting(
        (),
        "Folders whose sub-folders (name or org/name) are models; os.pathsep-separated in "
        "the environment variable.",
        flag="--model-root",
    )
    allow_download: bool = setting(False, "Download models missing from the Hugging Face cache.")
    token_budget: int = setting(
        8192, "Padded tokens (rows x longest row) per forward pass.", minimum=1
    )
    max_batch_size: int = setting(64, "Rows per forward pass.", minimum=1)
    batch_window_ms: float = setting(
        2.0, "Milliseconds the worker waits for concurrent requests to join a batch.", minimum=0
    )
    queue_size: int = setting(
        256, "Pending requests before new ones are refused (HTTP 429).", minimum=1
    )
    max_loaded_models: int = setting(
        2, "Models kept in memory (the least recently used is evicted).", minimum=1
    )
    max_inputs: int = setting(2048, "Items per request.", minimum=1)
    max_rerank_documents: int = setting(1000, "Documents per rerank request.", minimum=1)
    max_request_tokens: int = setting(300_000, "Tokens per request, after truncation.", minimum=1)
    truncate: bool = setting(
        True, "Truncate over-long inputs to the model maximum; false rejects them (HTTP 400)."
    )
    allow_token_ids: bool = setting(
        False,
        "Accept inputs given as token ids of the model's own vocabulary; off, they are "
        "refused (HTTP 400), because clients such as LangChain send ids of another tokenizer "
        "by default, which would give wrong vectors.",
    )
    cache: bool = setting(
        True,
        "Keep every vector in a persistent cache on disk, shared by all processes: texts "
        "embedded before (same model, same text) are not computed again.",
    )
    cache_dir: str | None = setting(
        None,
        "Folder of the vector cache, with the stored 2-D maps and compiled kernels beside it; "
        "unset: the user's cache folder (jupyter-mlx-embed).",
    )
    cache_size_mb: int = setting(
        2048, "Largest size of the vector cache in MiB (least recently used evicted).", minimum=1
    )
    cpu_fast_path: bool = setting(
        True,
        "CPU device: run BERT-family models with fused approximate GELU/softmax kernels "
        "(cosine >= 0.99999 to exact), and dequantize MLX-quantized checkpoints at load; "
        "false runs the exact stock operations (quantized kernels kept: slow on the CPU).",
    )
    cpu_streams: int = setting(
        4, "CPU streams (threads) each forward pass is split over.", minimum=1
    )
    native_kernels: str | None = setting(
        None,
        "Linux x86-64 CPU fast path: the instruction set of its C++ kernels, 'avx2' or "
        "'avx512'; 'off' runs its MLX-op version instead; unset picks the widest this CPU runs.",
    )
    precision: str = setting(
        "fp32",
        "CPU fast path: precision of the native matrix products. 'bf16' rounds weights and "
        "inputs to bfloat16 and sums in float32 (CPUs with AMX, on its tiles, or "
        "AVX512_BF16); 'int8' rotates "
        "weights and inputs by a Hadamard matrix (blocks of 64), rounds them to int8 (per "
        "output feature, per token) and sums in int32 (AVX2 CPUs, and AVX-512 ones with "
        "VNNI). Each is faster than fp32 where the CPU runs it well and moves vectors a "
        "little, int8 more (see BENCHMARKS.md). Where the CPU lacks "
        "them fp32 runs, as it does for models without a native path "
        "(info()['precision'] says which). Vectors are cached per precision.",
        choices=PRECISIONS,
    )
    blas: str | None = setting(
        None,
        "Linux: path of a BLAS library exporting cblas_* for MLX; 'none' disables the "
        "preload; unset picks the best one found.",
    )
    blas_core: str = setting(
        "auto",
        "Linux: kernels of the OpenBLAS the engine loads: 'auto' (the best this CPU runs: "
        "AVX-512 where it has it, even if OPENBLAS_CORETYPE names an older core, which then "
        "still applies to numpy's copy), 'inherit' (OPENBLAS_CORETYPE, else OpenBLAS's own "
        "choice) or an OpenBLAS core name (e.g. Haswell).",
    )

    def cache_folder(self) -> Path:
        """The folder of the vector cache: ``cache_dir``, else the user's cache folder. Other
        caches derived from vectors (2-D maps) keep their own sub-folders beside it."""
        if self.cache_dir:
            return Path(self.cache_dir).expanduser()
        import platformdirs

        return Path(platformdirs.user_cache_dir("jupyter-mlx-embed"))


@dataclass(frozen=True)
class ServingConfig(_Settings):
    """Settings of the front ends: servers, kernels and the Python API."""

    transport: str = setting(
        "auto",
        "Kernels: 'server' uses the parent Jupyter server's worker over HTTP, 'local' starts "
        "a worker in the kernel, 'auto' picks the server when it runs the extension.",
        choices=TRANSPORT_MODES,
        servers=False,
    )
    request_timeout: float = setting(
        600.0,
        "Seconds embed(), aembed() and the magics wait for vectors.",
        minimum=0,
        servers=False,
    )
    chunk_size: int = setting(
        256,
        "Texts per request when embed() or %embed -i embeds a large collection (progress steps).",
        minimum=1,
        servers=False,
    )
    preload: bool = setting(
        False, "Servers: load the default model at start instead of on first use."
    )
    max_body_bytes: int = setting(
        16 * 1024 * 1024, "Servers: largest request body in bytes (larger get 413).", minimum=1
    )
    body_timeout: float = setting(
        60.0,
        "Servers: seconds a client has to send a request body before the connection is "
        "closed (the standalone server also closes connections idle this long).",
        minimum=0.001,
    )
    inprocess_endpoint: bool = setting(
        True,
        "Jupyter server: also serve the endpoint on a loopback port with a thread and event "
        "loop of its own, for HTTP clients inside the server process (jupyter-ai's OpenAI "
        "providers), which the server's loop cannot answer while they block it; "
        "openai_endpoint() in that process and the server's log name it.",
        servers=False,
    )
    metrics_auth: bool = setting(
        True,
        "Standalone server: GET /metrics needs the token; false serves it to anyone who can "
        "reach the server (a Prometheus scraper on a trusted network).",
    )
    max_connections: int = setting(
        128,
        "Standalone server: authenticated connections at most (more are answered 503 and "
        "closed), and as many again that have not authenticated (a new one closes the oldest; "
        "those under half a second old are spared, up to twice as many).",
        minimum=1,
    )


#: Every settings class, in the order the documentation lists them.
SETTINGS_CLASSES: tuple[type[EngineConfig], type[ServingConfig]] = (EngineConfig, ServingConfig)

_BOOL_WORDS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}


def parse_setting(f: dataclasses.Field[Any], raw: str) -> Any:
    """Parse a setting's value from text (an environment variable or a CLI flag).

    Raises:
        ValueError: ``raw`` is not a value of the field's type.
    """
    kind, var = f.type, setting_variable(f.name)
    if f.name == "model_roots":
        return tuple(Path(p) for p in raw.split(os.pathsep) if p)
    if kind == "bool":
        try:
            return _BOOL_WORDS[raw.strip().lower()]
        except KeyError:
            raise ValueError(f"{var} must be one of {sorted(_BOOL_WORDS)}, got {raw!r}") from None
    if kind in ("int", "float"):
        try:
            return int(raw) if kind == "int" else float(raw)
        except ValueError:
            noun = "an integer" if kind == "int" else "a number"
            raise ValueError(f"{var} must be {noun}, got {raw!r}") from None
    return raw
