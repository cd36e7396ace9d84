"""A kernel started by a Jupyter server with the extension uses the server's worker: the
vectors are the same and the kernel never imports MLX."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import numpy as np
import pytest

from .servers import free_port, jupyter_server_argv, run_in_kernel, running

TOKEN = "kernel-test-token"

CODE = """
%load_ext jupyter_mlx_embed
import json, sys
vector = %embed The kernel asks its server for this vector.
%embed_info
loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_embeddings'))
print('RESULT ' + json.dumps({'mlx_modules': loaded, 'vector': vector.tolist()}))
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    root = tmp_path_factory.mktemp("kernel-root")
    url = f"http://127.0.0.1:{port}/k/"
    argv = jupyter_server_argv(port, TOKEN, "/k/", root)
    with running(
        argv, url + "api/status", {"Authorization": f"token {TOKEN}"}, root / "server.log"
    ):
        yield url


def _result(stdout: str) -> dict:
    line = next(line for line in stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def test_kernel_uses_the_servers_worker_without_importing_mlx(server: str) -> None:
    out = asyncio.run(run_in_kernel(server, TOKEN, CODE))
    assert out["status"] == "ok", out
    result = _result(out["stdout"])
    assert result["mlx_modules"] == []
    assert "transport      server" in out["stdout"]
    port_and_base = server.split("127.0.0.1", 1)[1]  # the runtime file may say "localhost"
    assert port_and_base in out["stdout"].split("server         ", 1)[1].splitlines()[0]
    # The same vector the server's worker gives over HTTP, and the same as a local worker.
    import jupyter_mlx_embed as jme

    jme.set_transport("local")
    try:
        local = jme.embed("The kernel asks its server for this vector.")
    finally:
        jme.get_worker().close()
    np.testing.assert_allclose(np.asarray(result["vector"], dtype=np.float32), local, atol=1e-5)


def test_forcing_local_transport_in_the_kernel(server: str) -> None:
    code = "%config MLXEmbed.transport = 'local'\n" + CODE
    out = asyncio.run(run_in_kernel(server, TOKEN, code))
    assert out["status"] == "ok", out
    assert "transport      local" in out["stdout"]
    assert "mlx.core" in _result(out["stdout"])["mlx_modules"]


def test_server_transport_is_the_default_for_embed_in_kernels(server: str) -> None:
    code = (
        "import sys, jupyter_mlx_embed as jme\n"
        "v = jme.embed(['one', 'two'])\n"
        "print('RESULT', {'shape': list(v.shape), 'kind': jme.get_transport().kind,"
        " 'mlx': 'mlx.core' in sys.modules})"
    )
    out = asyncio.run(run_in_kernel(server, TOKEN, code))
    assert out["status"] == "ok", out
    assert "RESULT {'shape': [2, 384], 'kind': 'server', 'mlx': False}" in out["stdout"]
