"""Pictures over HTTP (#26), against a real ``jupyter server`` with the extension and a real
``jupyter-mlx-embed serve``: Jina's ``{"text"}`` / ``{"image": data URI}`` items in one
``v1/embeddings`` request (``data`` in ``input``'s order), the refusals (URLs, paths, corrupt
pictures, a picture whose header claims a billion pixels, pictures for a text-only model),
one hostile request among good ones, the model card, and ``embed_images`` in a kernel going
through the server's worker."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import struct
import sys
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from .servers import free_port, jupyter_server_argv, run_in_kernel, running

Image = pytest.importorskip("PIL.Image")

TOKEN = "image-token"
BASE = "/jme/"


def _png(seed: int, size: tuple[int, int] = (96, 128)) -> bytes:
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


def _uri(content: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(content).decode()


def _bomb() -> bytes:
    """A valid PNG of a few bytes whose header says 30,000 x 30,000 pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, siglip: Path) -> Iterator[str]:
    port = free_port()
    root = tmp_path_factory.mktemp("root")
    argv = jupyter_server_argv(port, TOKEN, BASE, root, f"--MLXEmbed.model_roots={siglip.parent}")
    url = f"http://127.0.0.1:{port}{BASE}"
    with running(argv, url + "api/status", {"Authorization": f"token {TOKEN}"}, root / "log"):
        yield url


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory, siglip: Path) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    argv = [sys.executable, "-m", "jupyter_mlx_embed", "serve", "--port", str(port)]
    argv += ["--token", TOKEN, "--model-root", str(siglip.parent), "--no-cache"]
    url = f"http://127.0.0.1:{port}/"
    with running(argv, url + "v1/models", {"Authorization": f"Bearer {TOKEN}"}, log):
        yield url


def _post(url: str, body: object) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    request = urllib.request.Request(url + "v1/embeddings", json.dumps(body).encode(), headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _vectors(body: dict) -> np.ndarray:
    assert [item["index"] for item in body["data"]] == list(range(len(body["data"])))
    return np.array([item["embedding"] for item in body["data"]], dtype=np.float32)


@pytest.mark.parametrize("which", ["server", "standalone"])
def test_texts_and_pictures_in_one_request_keep_their_order(which, request, siglip) -> None:
    url = request.getfixturevalue(which)
    items = [
        {"text": "a red car"},
        {"image": _uri(_png(1))},
        "a plain string",
        {"image": _uri(_png(2))},
    ]
    status, body = _post(url, {"model": siglip.name, "input": items})
    assert status == 200, body
    mixed = _vectors(body)
    assert mixed.shape == (4, 768)
    assert body["usage"]["prompt_tokens"] == 2 * 64 + 2 * 196  # padded texts, 14 x 14 patches
    _, texts = _post(url, {"model": siglip.name, "input": ["a red car", "a plain string"]})
    _, pictures = _post(url, {"model": siglip.name, "input": [items[1], items[3]]})
    np.testing.assert_allclose(mixed[[0, 2]], _vectors(texts), atol=1e-6)
    np.testing.assert_allclose(mixed[[1, 3]], _vectors(pictures), atol=1e-6)


@pytest.mark.parametrize(
    ("image", "status", "code", "words"),
    [
        ("https://example.com/cat.png", 400, "invalid_image", "not fetched"),
        ("file:///etc/hostname", 400, "invalid_image", "not fetched"),
        ("/etc/hostname", 400, "invalid_image", "not fetched"),
        (_uri(b"not a picture at all"), 400, "invalid_image", "Pillow"),
        ("data:image/png;base64,!!!", 400, "invalid_image", "base64"),
        (_uri(_bomb()), 400, "invalid_image", "than the maximum of 64000000"),
    ],
)
def test_a_bad_picture_is_a_400_naming_its_index(standalone, siglip, image, status, code, words):
    body = {
        "model": siglip.name,
        "input": [{"text": "fine"}, {"image": _uri(_png(3))}, {"image": image}],
    }
    got, reply = _post(standalone, body)
    assert got == status, reply
    assert reply["error"]["code"] == code and reply["error"]["param"] == "input"
    assert "input[2]" in reply["error"]["message"] and words in reply["error"]["message"]


def test_malformed_items_and_text_only_models(standalone, siglip) -> None:
    status, reply = _post(standalone, {"model": siglip.name, "input": [{"text": "a"}, {"img": 1}]})
    assert status == 400 and "input[1]" in reply["error"]["message"]
    status, reply = _post(
        standalone, {"model": siglip.name, "input": [{"image": _uri(_png(4))}, {"text": " "}]}
    )
    assert status == 400 and "input[1]" in reply["error"]["message"]
    status, reply = _post(standalone, {"input": [{"image": _uri(_png(4))}]})  # the default: MiniLM
    assert status == 400 and reply["error"]["code"] == "unsupported_model"
    assert "embeds text only" in reply["error"]["message"]


def test_one_hostile_request_among_good_ones(server, siglip) -> None:
    good = {"model": siglip.name, "input": [{"image": _uri(_png(5))}, {"text": "a dog"}]}
    hostile = {"model": siglip.name, "input": [{"image": _uri(_bomb())}] * 50}
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(_post, server, hostile if i == 3 else good) for i in range(12)]
        results = [f.result() for f in futures]
    assert results[3][0] == 400
    good_ones = [body for i, (status, body) in enumerate(results) if i != 3 and status == 200]
    assert len(good_ones) == 11
    first = _vectors(good_ones[0])
    for body in good_ones[1:]:
        np.testing.assert_allclose(_vectors(body), first, atol=1e-6)


def test_the_model_card_says_what_it_embeds(server, siglip) -> None:
    request = urllib.request.Request(
        server + f"v1/models/{siglip.name}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        card = json.loads(response.read())
    assert card["modalities"] == ["text", "image"] and card["image_size"] == [224, 224]
    assert card["dimensions"] == 768 and card["max_input_tokens"] == 64


def test_embed_images_in_a_kernel_goes_through_the_servers_worker(server, siglip, tmp_path) -> None:
    path = tmp_path / "picture.png"
    path.write_bytes(_png(6))
    code = (
        "import sys, json, numpy as np, jupyter_mlx_embed as jme\n"
        f"path, model = {str(path)!r}, {siglip.name!r}\n"
        "v = jme.embed_images([path, open(path, 'rb').read()], model=model)\n"
        "one = jme.embed_images(path, model=model)\n"
        "t = jme.embed(['a picture'], model=model)\n"
        "print(json.dumps({'shape': list(v.shape), 'one': list(one.shape),"
        " 'same': float(v[0] @ v[1]), 'text': list(t.shape),"
        " 'transport': jme.get_transport().kind, 'mlx': 'mlx.core' in sys.modules}))\n"
    )
    out = asyncio.run(run_in_kernel(server, TOKEN, code))
    assert out["status"] == "ok", out
    reply = json.loads(out["stdout"].strip().splitlines()[-1])
    assert reply["transport"] == "server" and reply["mlx"] is False
    assert reply["shape"] == [2, 768] and reply["one"] == [768] and reply["text"] == [1, 768]
    assert reply["same"] == pytest.approx(1.0, abs=1e-5)
