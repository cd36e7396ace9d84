"""Engine configuration as a frozen dataclass (pure: no traitlets, no MLX).

The traitlets ``Configurable`` that users set lives at the edges (server extension,
IPython extension) and is turned into an :class:`EngineConfig` there. Every field has an
environment-variable fallback so the standalone command and plain scripts can be configured
without code.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL = "all-MiniLM-L6-v2"
ENV_PREFIX = "JUPYTER_MLX_EMBED_"


@dataclass(frozen=True)
class EngineConfig:
    """Settings of one engine worker.

    Attributes:
        default_model: Model used when a request names none.
        model_roots: Folders whose sub-folders (``name`` or ``org/name``) are models.
        allow_download: Allow fetching models missing from the Hugging Face cache.
        token_budget: Upper bound on padded tokens (rows x longest) in one forward pass.
        max_batch_size: Upper bound on rows in one forward pass.
        batch_window_ms: How long the worker waits for more requests to join a batch.
        queue_size: Pending requests accepted before submissions fail as overloaded.
        max_loaded_models: Models kept in memory (least recently used are evicted).
        max_inputs: Most items in one request.
        max_request_tokens: Most tokens (after truncation) in one request.
        truncate: Truncate over-long inputs to the model maximum (else reject them).
        blas: Path of a BLAS library exporting ``cblas_*`` to load before MLX (Linux);
            ``"none"`` disables preloading; ``None`` picks the best one found.
        request_timeout: Seconds a blocking ``embed()`` call waits for its result.
        cpu_fast_path: On the CPU device, run BERT-family models with fused approximate
            GELU/softmax kernels (cos >= 0.99999 to the exact model); off: exact stock ops.
        cpu_streams: CPU streams each forward pass is split over (threads for MLX's
            single-threaded elementwise kernels); 1 disables the split.
    """

    default_model: str = DEFAULT_MODEL
    model_roots: tuple[Path, ...] = ()
    allow_download: bool = False
    token_budget: int = 8192
    max_batch_size: int = 64
    batch_window_ms: float = 2.0
    queue_size: int = 256
    max_loaded_models: int = 2
    max_inputs: int = 2048
    max_request_tokens: int = 300_000
    truncate: bool = True
    blas: str | None = None
    request_timeout: float = 600.0
    cpu_fast_path: bool = True
    cpu_streams: int = 4

    def __post_init__(self) -> None:
        for name in (
            "token_budget",
            "max_batch_size",
            "queue_size",
            "max_loaded_models",
            "max_inputs",
            "max_request_tokens",
            "cpu_streams",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.batch_window_ms < 0:
            raise ValueError(f"batch_window_ms must be >= 0, got {self.batch_window_ms!r}")
        object.__setattr__(self, "model_roots", tuple(Path(p) for p in self.model_roots))

    def replace(self, **changes: object) -> EngineConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: object
    ) -> EngineConfig:
        """Build a config from ``JUPYTER_MLX_EMBED_*`` variables, then apply ``overrides``.

        Args:
            environ: The environment to read (defaults to ``os.environ``).
            **overrides: Field values that win over the environment.

        Raises:
            ValueError: A variable holds a value of the wrong type.
        """
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


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


def _parse(name: str, raw: str) -> object:
    """Parse one environment value according to the field's type."""
    default = EngineConfig.__dataclass_fields__[name].default
    var = ENV_PREFIX + name.upper()
    if name == "model_roots":
        return tuple(Path(p).expanduser() for p in raw.split(os.pathsep) if p)
    if isinstance(default, bool):
        try:
            return _BOOL_WORDS[raw.strip().lower()]
        except KeyError:
            raise ValueError(f"{var} must be one of {sorted(_BOOL_WORDS)}, got {raw!r}") from None
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{var} must be an integer, got {raw!r}") from None
    if isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{var} must be a number, got {raw!r}") from None
    return raw
