"""Helpers that run real server processes for client tests."""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def send(port: int, head: str, body: bytes = b"", host: str = "127.0.0.1") -> socket.socket:
    """Open a connection and send raw request bytes (headers, perhaps part of a body)."""
    sock = socket.create_connection((host, port), timeout=30)
    sock.sendall(head.encode() + body)
    return sock


def read_response(sock: socket.socket, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP response from ``sock``: status, headers (lower-case names), body."""
    sock.settimeout(timeout)
    response = http.client.HTTPResponse(sock)
    response.begin()
    headers = {name.lower(): value for name, value in response.getheaders()}
    return response.status, headers, response.read()


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """Whether the server closes ``sock`` within ``timeout`` seconds (anything it still sends
    is discarded)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError):
        pass
    except TimeoutError:
        return False
    finally:
        sock.close()
    return True


def wait_http(
    url: str,
    headers: dict[str, str],
    proc: subprocess.Popen[str],
    timeout: float,
    context: ssl.SSLContext | None = None,
) -> None:
    """Poll ``url`` until it answers (any status below 500) or the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            request = urllib.request.Request(url, headers=headers)
            urllib.request.urlopen(request, timeout=2, context=context)
            return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@contextmanager
def running(
    argv: Sequence[str],
    url: str,
    headers: dict[str, str],
    log: Path,
    timeout: float = 90,
    context: ssl.SSLContext | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[str]]:
    """Start ``argv`` (``env`` over this process's environment, in ``cwd``), wait for
    ``url`` (HTTPS: verified with ``context``), yield the process, then stop it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    with log.open("w") as out:
        proc = subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd
        )
        try:
            wait_http(url, headers, proc, timeout, context)
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def jupyter_server_argv(port: int, token: str, base_url: str, root: Path, *extra: str) -> list[str]:
    """Command line of a real ``jupyter server`` with our extension (auto-enabled)."""
    return [
        sys.executable,
        "-m",
        "jupyter_server",
        "--no-browser",
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.base_url={base_url}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.allow_root=True",
        *extra,
    ]


@contextmanager
def jupyter_server(root: Path, token: str, base_url: str = "/") -> Iterator[str]:
    """A real ``jupyter server`` with our extension on a free port, serving ``root``; yields
    its URL (with ``base_url``) once it answers. Its log is ``root / "server.log"``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}{base_url}"
    argv = jupyter_server_argv(port, token, base_url, root)
    with running(
        argv, url + "api/status", {"Authorization": f"token {token}"}, root / "server.log"
    ):
        yield url


@contextmanager
def standalone_server(folder: Path, token: str) -> Iterator[str]:
    """A real ``jupyter-mlx-embed serve`` on a free port; yields its base URL (``.../v1``)
    once it answers. Its log is ``folder / "serve.log"``."""
    port = free_port()
    argv = [str(Path(sys.executable).parent / "jupyter-mlx-embed"), "serve", "--port", str(port)]
    url = f"http://127.0.0.1:{port}/v1"
    headers = {"Authorization": f"Bearer {token}"}
    with running([*argv, "--token", token], url + "/models", headers, folder / "serve.log"):
        yield url


async def run_in_kernel(
    server_url: str, token: str, code: str, timeout: float = 120, ca_certs: str | None = None
) -> dict[str, Any]:
    """Start a kernel through a Jupyter server's REST API, run ``code`` over the kernel
    websocket, and return ``{"stdout", "stderr", "status", "error"}``; the kernel is deleted.
    ``ca_certs``: the certificate file that an HTTPS server's certificate is checked with."""
    import asyncio
    import uuid

    from tornado.httpclient import AsyncHTTPClient, HTTPRequest
    from tornado.websocket import websocket_connect

    headers = {"Authorization": f"token {token}"}
    http = AsyncHTTPClient()
    created = await http.fetch(
        server_url + "api/kernels",
        method="POST",
        body=json.dumps({"name": "python3"}),
        headers=headers,
        ca_certs=ca_certs,
    )
    kernel_id = json.loads(created.body)["id"]
    ws_url = server_url.replace("http", "ws", 1) + f"api/kernels/{kernel_id}/channels"
    conn = await websocket_connect(HTTPRequest(ws_url, headers=headers, ca_certs=ca_certs))
    msg_id, session = uuid.uuid4().hex, uuid.uuid4().hex
    conn.write_message(
        json.dumps(
            {
                "header": {
                    "msg_id": msg_id,
                    "username": "test",
                    "session": session,
                    "msg_type": "execute_request",
                    "version": "5.3",
                },
                "parent_header": {},
                "metadata": {},
                "channel": "shell",
                "buffers": [],
                "content": {
                    "code": code,
                    "silent": False,
                    "store_history": False,
                    "user_expressions": {},
                    "allow_stdin": False,
                    "stop_on_error": True,
                },
            }
        )
    )
    out: dict[str, Any] = {"stdout": "", "stderr": "", "status": None, "error": None}
    idle = replied = False
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        while not (idle and replied):
            remaining = deadline - asyncio.get_running_loop().time()
            raw = await asyncio.wait_for(conn.read_message(), max(remaining, 0.1))
            if raw is None:
                raise RuntimeError("kernel websocket closed")
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out[content["name"]] += content["text"]
            elif kind == "error":
                out["error"] = f"{content['ename']}: {content['evalue']}"
            elif kind == "execute_reply":
                out["status"], replied = content["status"], True
            elif kind == "status" and content["execution_state"] == "idle":
                idle = True
    finally:
        conn.close()
        await http.fetch(
            server_url + f"api/kernels/{kernel_id}",
            method="DELETE",
            headers=headers,
            raise_error=False,
            ca_certs=ca_certs,
        )
    return out
