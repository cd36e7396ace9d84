"""SigLIP's other forwards and layouts (#26), each test with a worker of its own: the stock MLX
forward (``cpu_fast_path`` off) and siglip-so400m-patch14-384 (1152 wide, 384 pixels in
14-pixel patches) as Google publishes it and as an mlx-community conversion stores it, all
against transformers loading the same folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jupyter_mlx_embed import EngineConfig, InvalidRequestError, Worker
from jupyter_mlx_embed.options import EmbedOptions

from .test_siglip import TEXTS, _pictures, _reference

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


def _mlx_community_copy(folder: Path, into: Path) -> Path:
    """``folder`` as an mlx-community conversion stores it: mlx-embeddings' parameter names
    (``text_model.text_model.``, ``in_proj.weight``) and the patch kernel as (out, kh, kw, in)."""
    import shutil

    from safetensors.numpy import load_file, save_file

    target = into / f"mlx-{folder.name}"
    shutil.copytree(folder, target)
    converted = {}
    for key, value in load_file(str(folder / "model.safetensors")).items():
        if key.startswith(("text_model.", "vision_model.")):
            tower = key.split(".", 1)[0]
            key = f"{tower}.{key}"
        if key.endswith("patch_embedding.weight"):
            value = value.transpose(0, 2, 3, 1)
        key = key.replace("in_proj_weight", "in_proj.weight").replace(
            "in_proj_bias", "in_proj.bias"
        )
        converted[key] = np.ascontiguousarray(value)
    save_file(converted, str(target / "model.safetensors"))
    return target


def test_so400m_and_an_mlx_community_conversion(siglip_so400m: Path, tmp_path: Path) -> None:
    pictures = _pictures()
    expected = _reference(siglip_so400m, pictures)
    converted = _mlx_community_copy(siglip_so400m, tmp_path)
    config = EngineConfig(model_roots=(str(siglip_so400m.parent), str(tmp_path)), cache=False)
    with Worker(config) as worker:
        for name in (siglip_so400m.name, converted.name):
            options = EmbedOptions(model=name)
            texts = worker.submit(TEXTS, options).result(timeout=300).vectors
            images = worker.submit_images(pictures, options).result(timeout=300)
            assert texts.shape == (len(TEXTS), 1152)
            assert np.min(np.sum(texts * expected["text"], axis=1)) >= 0.9999
            assert np.min(np.sum(images.vectors * expected["image"], axis=1)) >= 0.999
            assert images.token_counts == (729,) * len(pictures)  # 27 x 27 patches
        card = worker.model_card(siglip_so400m.name)
        assert card["image_size"] == [384, 384] and card["modalities"] == ["text", "image"]


def test_the_stock_forward_gives_the_same_vectors(
    siglip: Path,
) -> None:
    """The MLX forward the native path replaces (cpu_fast_path off, or no kernels)."""
    reference = _reference(siglip, _pictures())
    config = EngineConfig(model_roots=(str(siglip.parent),), cache=False, cpu_fast_path=False)
    with Worker(config) as worker:
        options = EmbedOptions(model=siglip.name)
        texts = worker.submit(TEXTS, options).result(timeout=120).vectors
        pictures = worker.submit_images(_pictures(), options).result(timeout=120).vectors
    assert np.min(np.sum(texts * reference["text"], axis=1)) >= 0.9999
    assert np.min(np.sum(pictures * reference["image"], axis=1)) >= 0.999


def test_picture_requests_are_bounded_and_do_not_hold_up_texts(siglip: Path) -> None:
    """A picture costs its patches against ``max_request_tokens`` (refused before decoding
    the rest), and a text sent after a large picture request is answered before it."""
    config = EngineConfig(
        model_roots=(str(siglip.parent),), cache=False, max_request_tokens=196 * 40
    )
    pictures = _pictures()[:1] * 41
    with Worker(config) as worker:
        options = EmbedOptions(model=siglip.name)
        with pytest.raises(InvalidRequestError, match="tokens per request") as caught:
            worker.submit_images(pictures, options).result(timeout=120)
        assert caught.value.code == "max_tokens_per_request"
        worker.submit(["warm up"], options).result(timeout=120)
        many = worker.submit_images(_many_pictures(40), options)
        text = worker.submit(["a question typed meanwhile"], options)
        text.result(timeout=120)
        assert not many.done()  # the text's row went in the next pass, not after the pictures
        assert many.result(timeout=300).vectors.shape == (40, 768)


def _many_pictures(count: int) -> list:
    rng = np.random.default_rng(5)
    return [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(count)]
