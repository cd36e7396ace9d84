"""Benchmark the HTTP path: many concurrent one-text requests against one batch request.

Run with ``python bench/bench_http.py [--rounds N] [--clients C] [--texts N]``. It starts
``jupyter-mlx-embed serve`` (the same handlers as the Jupyter extension), warms it up, then
alternates, in each round, (a) one ``POST /v1/embeddings`` carrying every text (the offline
batch rate, HTTP cost negligible) and (b) the same texts sent one per request by C concurrent
clients on keep-alive connections. It prints tokens/s of both and the ratio (b)/(a): how much
of the batch rate dynamic batching recovers for many small requests. Issue #16's target is
a ratio of at least 0.75 with 48 clients (the default). The server runs with the vector cache
off, since every round sends the same texts.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import corpus

from jupyter_mlx_embed.registry import bundled_model_path

TOKEN = "bench-token"
TARGET = 0.75  # issue #16: concurrent one-text clients keep this share of the batch rate


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(conn: http.client.HTTPConnection, texts: list[str]) -> int:
    body = json.dumps({"input": texts, "encoding_format": "base64"})
    conn.request("POST", "/v1/embeddings", body, {"Authorization": f"Bearer {TOKEN}"})
    reply = conn.getresponse()
    data = reply.read()
    if reply.status != 200:
        raise RuntimeError(f"HTTP {reply.status}: {data[:200]!r}")
    return int(json.loads(data)["usage"]["prompt_tokens"])


def batch_rate(port: int, texts: list[str]) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    start = time.perf_counter()
    tokens = _post(conn, texts)
    rate = tokens / (time.perf_counter() - start)
    conn.close()
    return rate


def concurrent_rate(port: int, texts: list[str], clients: int) -> float:
    chunks = [texts[i::clients] for i in range(clients)]
    totals = [0] * clients
    barrier = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        barrier.wait()
        totals[i] = sum(_post(conn, [text]) for text in chunks[i])
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return sum(totals) / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=48)
    parser.add_argument("--texts", type=int, default=256)
    args = parser.parse_args()
    model_path = bundled_model_path()
    if model_path is None:
        raise SystemExit("the bundled model is not installed: run `make install` first")
    texts = corpus.sentences(corpus.load_tokenizer(model_path), args.texts)
    port = _free_port()
    command = Path(sys.executable).parent / "jupyter-mlx-embed"
    env = {**os.environ, "JUPYTER_MLX_EMBED_TOKEN": TOKEN, "JUPYTER_MLX_EMBED_CACHE": "false"}
    server = subprocess.Popen(
        [str(command), "serve", "--port", str(port), "--preload"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        server.stdout.readline()  # "Serving ..." once the model is loaded
        batch_rate(port, texts)
        concurrent_rate(port, texts, args.clients)  # warm-up: compiles every shape once
        batch, many = [], []
        for _ in range(args.rounds):
            batch.append(batch_rate(port, texts))
            time.sleep(0.3)
            many.append(concurrent_rate(port, texts, args.clients))
            time.sleep(0.3)
    finally:
        server.terminate()
        server.wait(60)
    ratios = sorted(m / b for m, b in zip(many, batch, strict=True))
    print(f"{args.texts} sentences, {args.clients} clients, {args.rounds} rounds")
    print("| path | tokens/s (median) | best |\n|---|---:|---:|")
    print(f"| one batch request | {statistics.median(batch):,.0f} | {max(batch):,.0f} |")
    print(
        f"| one text per request, concurrent | {statistics.median(many):,.0f} | {max(many):,.0f} |"
    )
    print(
        f"\nconcurrent / batch: {statistics.median(ratios):.2f} "
        f"[{ratios[0]:.2f}-{ratios[-1]:.2f}] (paired per round), "
        f"best/best {max(many) / max(batch):.2f}; target >= {TARGET}: "
        + ("met" if statistics.median(ratios) >= TARGET else "MISSED")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
