"""A kernel started by a Jupyter server with the extension uses the server's worker: the
vectors are the same and the kernel never imports MLX."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from jupyter_mlx_embed.errors import EmbedError
from jupyter_mlx_embed.options import EmbedOptions
from jupyter_mlx_embed.transport import ServerEndpoint, ServerTransport

from .servers import free_port, jupyter_server, jupyter_server_argv, run_in_kernel, running

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
    with jupyter_server(tmp_path_factory.mktemp("kernel-root"), TOKEN, "/k/") as url:
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


# -- HTTPS with a self-signed certificate --------------------------------------------------


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, and its key."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certfile, keyfile


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """URL and certificate file of a Jupyter server with the extension, over HTTPS with a
    self-signed certificate."""
    root = tmp_path_factory.mktemp("https-root")
    certfile, keyfile = _self_signed(tmp_path_factory.mktemp("tls"))
    port = free_port()
    url = f"https://localhost:{port}/s/"
    argv = jupyter_server_argv(
        port,
        TOKEN,
        "/s/",
        root,
        f"--ServerApp.certfile={certfile}",
        f"--ServerApp.keyfile={keyfile}",
    )
    context = ssl.create_default_context(cafile=str(certfile))
    headers = {"Authorization": f"token {TOKEN}"}
    with running(argv, url + "api/status", headers, root / "server.log", context=context):
        yield url, certfile


def test_untrusted_https_certificate_is_a_clear_error(https_server, monkeypatch) -> None:
    url, _ = https_server
    monkeypatch.delenv("JUPYTER_MLX_EMBED_SERVER_CERTFILE", raising=False)
    transport = ServerTransport(ServerEndpoint(url=url, token=TOKEN), timeout=30)
    try:
        with pytest.raises(EmbedError) as caught:
            transport.submit(["x"], EmbedOptions()).result(60)
    finally:
        transport.close()
    message = caught.value.message
    assert f"The Jupyter server at {url} uses an HTTPS certificate" in message
    assert "self-signed certificate" in message  # what OpenSSL found
    assert "SSL_CERT_FILE=" in message and '%config MLXEmbed.transport = "local"' in message


def test_kernel_trusts_its_https_servers_own_certificate(https_server) -> None:
    url, certfile = https_server
    code = (
        "%load_ext jupyter_mlx_embed\n"
        "import jupyter_mlx_embed as jme\n"
        "v = %embed over HTTPS\n"
        "print('RESULT', {'shape': list(v.shape), 'kind': jme.get_transport().kind})"
    )
    out = asyncio.run(run_in_kernel(url, TOKEN, code, ca_certs=str(certfile)))
    assert out["status"] == "ok", out
    assert "RESULT {'shape': [384], 'kind': 'server'}" in out["stdout"]


def test_kernel_magic_explains_an_untrusted_certificate(https_server) -> None:
    url, certfile = https_server
    code = (
        "import os\n"
        "os.environ.pop('JUPYTER_MLX_EMBED_SERVER_CERTFILE')\n"  # as if the server had not said
        "%load_ext jupyter_mlx_embed\n"
        "%embed over HTTPS\n"
    )
    out = asyncio.run(run_in_kernel(url, TOKEN, code, ca_certs=str(certfile)))
    assert out["status"] == "error"
    shown = out["stderr"]  # a UsageError is one line on stderr, without a traceback
    assert "UsageError: The Jupyter server at" in shown and "SSL_CERT_FILE" in shown
    assert "CERTIFICATE_VERIFY_FAILED" not in shown and "Traceback" not in shown
