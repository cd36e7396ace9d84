"""Load test: many concurrent clients, mixed requests, hostile and abandoned ones among them.

Run with ``python bench/bench_load.py [--clients 64] [--seconds 120] [--json REPORT]``. It
starts ``jupyter-mlx-embed serve`` (or uses ``--url`` and ``--token``) and runs C client
threads on keep-alive connections until the time is up. Each client sends, at random:

- one text (most requests; their latency is the "small request" figure),
- a batch of 4 to 32 texts,
- a hostile request (invalid Unicode, token ids, not JSON, wrong types, absurd values, a
  prompt put before 2,048 inputs: too long in characters, or filling the model's context),
- a large batch of long paragraphs that it abandons after 0.1 s (closes the socket).

Beside them, an attacker keeps 200 sockets open that each send half a request line (and
reconnects those the server closes). Then, on the same server, a one-text client measures its
latency alone and behind large requests in flight (one of 2,048 passages of 128-256 tokens;
three of 512), in forward-pass times (the server's /metrics counts the passes).

Every text comes from a fixed pool whose vectors are fetched first, so each answer is checked
for cross-talk: each row must be the vector of its own text (best match in the pool). Server
RSS is sampled every second. Prints a report; exits 1 when a valid request failed, a row
belonged to another text, or a hostile request got anything but a 4xx.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import corpus
import numpy as np

from jupyter_mlx_embed.registry import bundled_model_path

TOKEN = "load-test-token"
POOL = 400
HOSTILE = [
    b'{"input": ["fine", "\\ud800 lone surrogate"]}',
    b'{"input": [[15339, 1917]]}',
    b"input=not-json",
    b'{"input": ["ok", 5]}',
    b'{"input": "x", "dimensions": 100000}',
    b'{"input": ""}',
    b'{"input": "x", "model": "../../etc/passwd"}',
    b"[" * 50_000 + b"]" * 50_000,
    # Prompt amplification: a prompt is paid once per input.
    json.dumps({"input": ["a short text"] * 2048, "prompt": "word " * 2000}).encode(),
    json.dumps({"input": ["a short text"] * 2048, "prompt": "word " * 400}).encode(),
    json.dumps({"input": ["fine"], "prompt": "query\ud800: "}).encode(),
]
#: Room for the 2,048 passages of the run behind large requests.
LARGE_LIMIT = ["--max-request-tokens", "600000"]
#: Sockets the attacker keeps half-open.
HALF_OPEN = 200


class Client(threading.Thread):
    """One simulated client on its own keep-alive connection."""

    def __init__(self, run: LoadRun, seed: int) -> None:
        super().__init__(daemon=True)
        self.run_state, self.rng = run, random.Random(seed)
        self.conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(*self.run_state.address, timeout=300)
        return self.conn

    def _post(self, body: bytes) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {self.run_state.token}"}
        try:
            conn = self._connection()
            conn.request("POST", self.run_state.path, body, headers)
            reply = conn.getresponse()
            data = reply.read()
            if reply.getheader("Connection", "").lower() == "close":
                conn.close()
                self.conn = None
            return reply.status, data
        except (OSError, http.client.HTTPException) as exc:
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            return 0, repr(exc).encode()

    def run(self) -> None:
        state = self.run_state
        while time.monotonic() < state.deadline:
            roll = self.rng.random()
            if roll < 0.65:
                self._valid("single", [self.rng.randrange(POOL)])
            elif roll < 0.90:
                picks = [self.rng.randrange(POOL) for _ in range(self.rng.randint(4, 32))]
                self._valid("batch", picks)
            elif roll < 0.95:
                self._hostile(self.rng.choice(HOSTILE))
            else:
                self._abandon()

    def _valid(self, kind: str, picks: list[int]) -> None:
        state = self.run_state
        body = json.dumps({"input": [state.texts[i] for i in picks], "encoding_format": "base64"})
        started = time.monotonic()
        status, data = self._post(body.encode())
        elapsed = time.monotonic() - started
        with state.lock:
            state.counts[kind] += 1
            if kind == "single":
                state.latencies.append((started, elapsed))
        if status != 200:
            with state.lock:
                state.failures.append(f"{kind}: HTTP {status} {data[:160]!r}")
            return
        rows = sorted(json.loads(data)["data"], key=lambda item: item["index"])
        vectors = np.stack(
            [np.frombuffer(base64.b64decode(r["embedding"]), dtype="<f4") for r in rows]
        )
        scores = vectors @ state.reference.T
        wrong = [i for i, p in enumerate(picks) if scores[i].argmax() != p or scores[i, p] < 0.999]
        if wrong or len(rows) != len(picks):
            with state.lock:
                state.crosstalk += max(len(wrong), 1)

    def _hostile(self, body: bytes) -> None:
        status, data = self._post(body)
        with self.run_state.lock:
            self.run_state.counts["hostile"] += 1
            if not 400 <= status < 500:
                self.run_state.unexpected.append(f"hostile: HTTP {status} {data[:160]!r}")

    def _abandon(self) -> None:
        state = self.run_state
        body = json.dumps({"input": state.paragraphs}).encode()
        head = (
            f"POST {state.path} HTTP/1.1\r\nHost: load\r\nAuthorization: Bearer {state.token}"
            f"\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        try:
            with socket.create_connection(state.address, timeout=10) as sock:
                sock.sendall(head + body)
                time.sleep(0.1)
        except OSError:
            pass
        with state.lock:
            state.counts["abandoned"] += 1


class HalfOpen(threading.Thread):
    """An attacker: keeps ``HALF_OPEN`` sockets that send half a request line, reopening
    each one the server closes, until the run's deadline."""

    def __init__(self, run: LoadRun) -> None:
        super().__init__(daemon=True)
        self.run_state = run
        self.opened = 0

    def _open(self) -> socket.socket | None:
        try:
            sock = socket.create_connection(self.run_state.address, timeout=5)
            sock.sendall(b"POST /v1/emb")
            sock.setblocking(False)
            self.opened += 1
            return sock
        except OSError:
            return None

    def run(self) -> None:
        socks: list[socket.socket | None] = [self._open() for _ in range(HALF_OPEN)]
        while time.monotonic() < self.run_state.deadline:
            for k, sock in enumerate(socks):
                closed = sock is None
                if sock is not None:
                    try:
                        closed = sock.recv(1) == b""
                    except BlockingIOError:
                        pass
                    except OSError:
                        closed = True
                if closed:
                    if sock is not None:
                        sock.close()
                    socks[k] = self._open()
            time.sleep(0.2)
        for sock in socks:
            if sock is not None:
                sock.close()


class LoadRun:
    """Shared state of one load run."""

    def __init__(
        self, url: str, token: str, seconds: float, texts: list[str], paragraphs: list[str]
    ):
        rest = url.split("://", 1)[1]
        hostport, _, prefix = rest.partition("/")
        host, _, port = hostport.rpartition(":")
        self.address = (host, int(port))
        self.path = "/" + (prefix.rstrip("/") + "/" if prefix else "") + "embeddings"
        self.token, self.texts, self.paragraphs = token, texts, paragraphs
        self.deadline = time.monotonic() + seconds
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.latencies: list[tuple[float, float]] = []
        self.failures: list[str] = []
        self.unexpected: list[str] = []
        self.crosstalk = 0
        self.reference = np.zeros((0, 0), dtype=np.float32)

    def fetch_reference(self) -> None:
        client = Client(self, 0)
        body = json.dumps({"input": self.texts, "encoding_format": "base64"}).encode()
        status, data = client._post(body)
        if status != 200:
            raise RuntimeError(f"reference request failed: HTTP {status} {data[:200]!r}")
        rows = sorted(json.loads(data)["data"], key=lambda item: item["index"])
        self.reference = np.stack(
            [np.frombuffer(base64.b64decode(r["embedding"]), dtype="<f4") for r in rows]
        )


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run_load(
    url: str, token: str, *, clients: int, seconds: float, server_pid: int | None
) -> dict[str, Any]:
    """Run the load against ``url`` (an OpenAI ``base_url``) and return the report."""
    tok = corpus.load_tokenizer(bundled_model_path())
    texts = corpus.sentences(tok, POOL, seed=7)
    paragraphs = corpus.paragraphs(tok, 128, seed=7)
    state = LoadRun(url, token, seconds, texts, paragraphs)
    state.fetch_reference()
    state.deadline = time.monotonic() + seconds
    start = time.monotonic()
    rss: list[tuple[float, float]] = []
    sampling = threading.Event()

    def sample() -> None:
        import psutil

        process = psutil.Process(server_pid)
        while not sampling.wait(1.0):
            rss.append((time.monotonic() - start, process.memory_info().rss / 2**20))

    if server_pid is not None:
        threading.Thread(target=sample, daemon=True).start()
    attacker = HalfOpen(state)
    attacker.start()
    threads = [Client(state, seed) for seed in range(1, clients + 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    attacker.join()
    sampling.set()
    warm = min(20.0, seconds / 4)
    small = [t * 1000 for at, t in state.latencies if at - start >= warm]
    after_warmup = [m for at, m in rss if at >= warm]
    # A leak grows without end; a heap that reached its working size only moves up and down.
    # So the second half of the run (after warm-up) is compared with the first half.
    half = len(after_warmup) // 2
    return {
        "clients": clients,
        "seconds": seconds,
        "requests": dict(state.counts),
        "valid_failures": len(state.failures),
        "failure_examples": state.failures[:5],
        "crosstalk_rows": state.crosstalk,
        "hostile_unexpected": len(state.unexpected),
        "hostile_examples": state.unexpected[:5],
        "half_open_sockets_opened": attacker.opened,
        "small_latency_ms": {
            "p50": _percentile(small, 50),
            "p95": _percentile(small, 95),
            "p99": _percentile(small, 99),
            "max": max(small, default=float("nan")),
        },
        "rss_mib": {
            "after_warmup": after_warmup[0] if after_warmup else None,
            "end": after_warmup[-1] if after_warmup else None,
            "max": max(after_warmup, default=None),
            "first_half_max": max(after_warmup[:half], default=None),
            "second_half_max": max(after_warmup[half:], default=None),
            "every_10s": [round(m) for m in after_warmup[::10]],
        },
    }


def _batches(state: LoadRun) -> float:
    """Forward passes the server has run (its /metrics)."""
    conn = http.client.HTTPConnection(*state.address, timeout=30)
    path = state.path.rsplit("/", 2)[0] + "/metrics" if state.path.count("/") > 1 else "/metrics"
    conn.request("GET", path, headers={"Authorization": f"Bearer {state.token}"})
    text = conn.getresponse().read().decode()
    conn.close()
    for line in text.splitlines():
        if line.startswith("jupyter_mlx_embed_batch_rows_count"):
            return float(line.split()[-1])
    raise RuntimeError("no batch count in /metrics")


def run_behind(url: str, token: str) -> dict[str, Any]:
    """One-text latency alone, then behind large requests in flight (see the docstring)."""
    tok = corpus.load_tokenizer(bundled_model_path())
    passages = corpus.paragraphs(tok, 200, seed=3)
    state = LoadRun(url, token, 0, corpus.sentences(tok, POOL, seed=11), [])
    probe = Client(state, 0)

    def one(i: int) -> float:
        body = json.dumps({"input": [f"{i} {state.texts[i % POOL]}"]}).encode()
        started = time.monotonic()
        status, data = probe._post(body)
        if status != 200:
            raise RuntimeError(f"one-text request failed: HTTP {status} {data[:200]!r}")
        return (time.monotonic() - started) * 1000

    idle = [one(i) for i in range(60)]
    report: dict[str, Any] = {
        "idle_ms": {"p50": _percentile(idle, 50), "p99": _percentile(idle, 99)}
    }
    for name, sizes in (("one 2048-input request", [2048]), ("three 512-input", [512] * 3)):
        bodies = [
            json.dumps(
                {
                    "input": [f"{k} {j} {passages[j % len(passages)]}" for j in range(n)],
                    "encoding_format": "base64",
                }
            ).encode()
            for k, n in enumerate(sizes)
        ]
        statuses: list[int] = []
        bigs = [
            threading.Thread(
                target=lambda b=b, out=statuses: out.append(Client(state, 1)._post(b)[0])
            )
            for b in bodies
        ]
        before, started = _batches(state), time.monotonic()
        for big in bigs:
            big.start()
        time.sleep(0.5)  # the large ones are under way
        latencies, i = [], 1000
        while any(big.is_alive() for big in bigs):
            latencies.append(one(i))
            i += 1
        for big in bigs:
            big.join()
        if statuses != [200] * len(sizes):
            raise RuntimeError(f"large requests failed: {statuses}")
        batch_ms = (time.monotonic() - started) * 1000 / max(1.0, _batches(state) - before)
        report[name] = {
            "requests_behind": len(latencies),
            "p50_ms": _percentile(latencies, 50),
            "p99_ms": _percentile(latencies, 99),
            "max_ms": max(latencies, default=float("nan")),
            "mean_batch_ms": batch_ms,
            "p99_in_batches": _percentile(latencies, 99) / batch_ms,
        }
    return report


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--url", help="an OpenAI base_url to load instead of starting a server")
    parser.add_argument("--token", default=TOKEN)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    server = None
    url, pid = args.url, None
    if url is None:
        port = _free_port()
        command = Path(sys.executable).parent / "jupyter-mlx-embed"
        server = subprocess.Popen(
            [str(command), "serve", "--port", str(port), "--preload", *LARGE_LIMIT],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={
                **os.environ,
                "JUPYTER_MLX_EMBED_TOKEN": args.token,
                "JUPYTER_MLX_EMBED_CACHE": "false",
            },
        )
        assert server.stdout is not None
        server.stdout.readline()  # "Serving ..." once the model is loaded
        url, pid = f"http://127.0.0.1:{port}/v1", server.pid
    try:
        report = run_load(
            url, args.token, clients=args.clients, seconds=args.seconds, server_pid=pid
        )
        report["behind_large"] = run_behind(url, args.token)
    finally:
        if server is not None:
            server.terminate()
            server.wait(60)
    print(json.dumps(report, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    latency = report["small_latency_ms"]
    print(
        f"\n{args.clients} clients, {args.seconds:.0f} s: {sum(report['requests'].values())} "
        f"requests {report['requests']}; valid failures {report['valid_failures']}, cross-talk "
        f"rows {report['crosstalk_rows']}, hostile not 4xx {report['hostile_unexpected']}; "
        f"single-text latency p50 {latency['p50']:.0f} ms, p99 {latency['p99']:.0f} ms; "
        f"server RSS after warm-up, max of each half: {report['rss_mib']['first_half_max']:.0f} "
        f"-> {report['rss_mib']['second_half_max']:.0f} MiB"
    )
    for name, row in report["behind_large"].items():
        if name != "idle_ms":
            print(
                f"one text behind {name}: p50 {row['p50_ms']:.0f} ms, p99 {row['p99_ms']:.0f} ms "
                f"({row['p99_in_batches']:.1f} forward passes of {row['mean_batch_ms']:.0f} ms; "
                f"idle p50 {report['behind_large']['idle_ms']['p50']:.0f} ms)"
            )
    bad = report["valid_failures"] or report["crosstalk_rows"] or report["hostile_unexpected"]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
