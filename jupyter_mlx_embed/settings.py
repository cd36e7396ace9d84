"""User-facing settings as one traitlets ``Configurable`` (the edge; engine code never sees it).

The same keys work in ``jupyter_server_config.py`` (``c.MLXEmbed.default_model = ...``),
``ipython_config.py``, ``%config MLXEmbed.default_model = ...`` and on the command line
(``--MLXEmbed.token_budget=4096``). A trait left unset falls back to its
``JUPYTER_MLX_EMBED_*`` environment variable, then to the built-in default.
"""

from __future__ import annotations

from traitlets import Bool, Enum, Float, Int, List, Unicode
from traitlets.config import Configurable

from .config import ENV_PREFIX, EngineConfig

_D = EngineConfig()


def _help(text: str, name: str, default: object) -> str:
    return f"{text} Default {default!r}; env {ENV_PREFIX}{name.upper()}."


class MLXEmbed(Configurable):
    """Settings of the embedding worker and its HTTP endpoint."""

    default_model = Unicode(
        None,
        allow_none=True,
        help=_help("Model used when a request names none.", "default_model", _D.default_model),
    ).tag(config=True)
    model_roots = List(
        Unicode(),
        help=_help("Folders whose sub-folders (name or org/name) are models.", "model_roots", []),
    ).tag(config=True)
    allow_download = Bool(
        None,
        allow_none=True,
        help=_help("Download models missing from the Hugging Face cache.", "allow_download", False),
    ).tag(config=True)
    token_budget = Int(
        None,
        allow_none=True,
        help=_help(
            "Padded tokens (rows x longest row) per forward pass.", "token_budget", _D.token_budget
        ),
    ).tag(config=True)
    max_batch_size = Int(
        None,
        allow_none=True,
        help=_help("Rows per forward pass.", "max_batch_size", _D.max_batch_size),
    ).tag(config=True)
    batch_window_ms = Float(
        None,
        allow_none=True,
        help=_help(
            "Milliseconds the worker waits for concurrent requests to join a batch.",
            "batch_window_ms",
            _D.batch_window_ms,
        ),
    ).tag(config=True)
    queue_size = Int(
        None,
        allow_none=True,
        help=_help("Pending requests before new ones get 429.", "queue_size", _D.queue_size),
    ).tag(config=True)
    max_loaded_models = Int(
        None,
        allow_none=True,
        help=_help("Models kept in memory.", "max_loaded_models", _D.max_loaded_models),
    ).tag(config=True)
    max_inputs = Int(
        None,
        allow_none=True,
        help=_help("Items per request.", "max_inputs", _D.max_inputs),
    ).tag(config=True)
    max_request_tokens = Int(
        None,
        allow_none=True,
        help=_help(
            "Tokens per request, after truncation.", "max_request_tokens", _D.max_request_tokens
        ),
    ).tag(config=True)
    truncate = Bool(
        None,
        allow_none=True,
        help=_help(
            "Truncate over-long inputs to the model maximum; False rejects them with 400.",
            "truncate",
            True,
        ),
    ).tag(config=True)
    blas = Unicode(
        None,
        allow_none=True,
        help=_help(
            "Linux: path of a BLAS library exporting cblas_* for MLX; 'none' disables the preload.",
            "blas",
            "best found",
        ),
    ).tag(config=True)
    request_timeout = Float(
        None,
        allow_none=True,
        help=_help(
            "Seconds a blocking call (embed(), magics) waits for its vectors.",
            "request_timeout",
            _D.request_timeout,
        ),
    ).tag(config=True)
    cpu_fast_path = Bool(
        None,
        allow_none=True,
        help=_help(
            "CPU device: run BERT-family models with fused approximate GELU/softmax kernels "
            "(cos >= 0.99999 to exact); False runs the exact stock operations.",
            "cpu_fast_path",
            True,
        ),
    ).tag(config=True)
    cpu_streams = Int(
        None,
        allow_none=True,
        help=_help("CPU streams (threads) each forward pass is split over.", "cpu_streams", 4),
    ).tag(config=True)
    transport = Enum(
        ["auto", "local", "server"],
        None,
        allow_none=True,
        help="Kernels: 'server' uses the parent Jupyter server's worker over HTTP, 'local' "
        "starts a worker in the kernel, 'auto' picks the server when it runs the extension. "
        "Default 'auto'; env JUPYTER_MLX_EMBED_TRANSPORT.",
    ).tag(config=True)
    chunk_size = Int(
        256, help="Texts per request when %embed -i embeds a large collection (progress steps)."
    ).tag(config=True)
    preload = Bool(
        False, help="Load the default model when the server starts instead of on first use."
    ).tag(config=True)
    max_body_bytes = Int(
        16 * 1024 * 1024, help="Largest accepted request body in bytes (larger get 413)."
    ).tag(config=True)

    def engine_config(self) -> EngineConfig:
        """The engine configuration: traits set here, else the environment, else defaults."""
        names = [f for f in EngineConfig.__dataclass_fields__ if self.has_trait(f)]
        values = {name: getattr(self, name) for name in names}
        values["model_roots"] = tuple(self.model_roots) or None  # empty: not set here
        return EngineConfig.from_env(**values)
