"""Prometheus metrics of the embedding worker (pure: no MLX; prometheus_client only).

They live in prometheus_client's default registry, which is what Jupyter server's own
authenticated ``/metrics`` route exposes, and what the standalone server serves. Names carry
the ``jupyter_mlx_embed_`` prefix. Model labels are model names the registry resolved (or
``unknown``), never raw client input, so a client cannot create unbounded label values.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

PREFIX = "jupyter_mlx_embed"
#: The model label of requests whose model was never resolved.
UNKNOWN_MODEL = "unknown"

REQUESTS = Counter(
    f"{PREFIX}_requests",
    "Embedding requests by model and outcome (ok, cancelled, or the OpenAI error type).",
    ["model", "outcome"],
)
INPUTS = Counter(
    f"{PREFIX}_inputs", "Texts (or token-id rows) in finished requests.", ["model", "outcome"]
)
TOKENS = Counter(
    f"{PREFIX}_tokens", "Tokens of the inputs embedded (cache hits included).", ["model"]
)
CACHE_HITS = Counter(f"{PREFIX}_cache_hits", "Inputs answered from the vector cache.", ["model"])
CACHE_MISSES = Counter(f"{PREFIX}_cache_misses", "Inputs the cache did not hold.", ["model"])
MODEL_LOADS = Counter(f"{PREFIX}_model_loads", "Model loads by outcome.", ["model", "outcome"])
MODEL_LOAD_SECONDS = Histogram(
    f"{PREFIX}_model_load_seconds",
    "Time to load a model into memory.",
    ["model"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
REQUEST_SECONDS = Histogram(
    f"{PREFIX}_request_duration_seconds",
    "Time from submission to answer, per request.",
    ["model"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
QUEUE_WAIT_SECONDS = Histogram(
    f"{PREFIX}_queue_wait_seconds",
    "Time a request waited before the worker took it up.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BATCH_ROWS = Histogram(
    f"{PREFIX}_batch_rows",
    "Rows per forward pass.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
BATCH_PADDED_TOKENS = Histogram(
    f"{PREFIX}_batch_padded_tokens",
    "Padded tokens (rows x longest row) per forward pass.",
    buckets=(16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768),
)
QUEUE_DEPTH = Gauge(f"{PREFIX}_queue_depth", "Requests submitted and not yet answered.")
BUSY = Gauge(f"{PREFIX}_busy", "1 while a forward pass or model load runs.")


def watch_queue(depth: Callable[[], float]) -> None:
    """Report ``depth()`` as the queue depth (the process's current worker)."""
    QUEUE_DEPTH.set_function(depth)
