"""SigLIP image-text models (#26) on the worker, checked against transformers loading the same
folder: Google's published layout (``spiece.model``, no ``tokenizer.json``) built with random
weights at the published shapes (tests/siglip_models.py), its tokenizer id for id, its text and
image vectors (pictures at the model's size, resized, with transparency, grey, from paths,
bytes and arrays), the errors a bad picture gets, and the vector cache keyed by content."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from jupyter_mlx_embed import EngineConfig, InvalidRequestError, ModelTypeError, Worker
from jupyter_mlx_embed.options import EmbedOptions

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
Image = pytest.importorskip("PIL.Image")

TEXTS = [
    "a photo of a cat",
    "Hello, World!  It's  me.",
    "東京の天気は晴れです",
    "UPPER case, with ▁ the marker and </s> a special token",
    "<unk> first",
    "word " * 100,  # cut to the 64-token context
]


def _pictures() -> list:
    rng = np.random.default_rng(7)
    return [
        Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)),  # the model's size
        Image.fromarray(rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)),  # resized
        Image.fromarray(rng.integers(0, 256, (90, 70, 4), dtype=np.uint8), mode="RGBA"),
        Image.fromarray(rng.integers(0, 256, (50, 60), dtype=np.uint8), mode="L"),
    ]


@pytest.fixture(scope="module")
def worker(siglip: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    cache = tmp_path_factory.mktemp("cache")
    config = EngineConfig(model_roots=(str(siglip.parent),), cache_dir=str(cache))
    with Worker(config) as w:
        yield w


def _reference(folder: Path, pictures: list) -> dict[str, np.ndarray]:
    from transformers import AutoImageProcessor, AutoTokenizer, SiglipModel

    tokenizer = AutoTokenizer.from_pretrained(folder)
    processor = AutoImageProcessor.from_pretrained(folder)
    model = SiglipModel.from_pretrained(folder).eval()
    texts = tokenizer(TEXTS, padding="max_length", truncation=True, return_tensors="pt")
    with torch.no_grad():
        text = model.get_text_features(**texts).pooler_output.numpy()
        image = model.get_image_features(**processor(pictures, return_tensors="pt"))
    image = image.pooler_output.numpy()
    return {
        "text": text / np.linalg.norm(text, axis=1, keepdims=True),
        "image": image / np.linalg.norm(image, axis=1, keepdims=True),
    }


@pytest.fixture(scope="module")
def reference(siglip: Path) -> dict[str, np.ndarray]:
    """transformers' normalised get_text_features / get_image_features, as its model card
    says to call them (texts padded to max_length, truncated)."""
    return _reference(siglip, _pictures())


def test_the_folder_is_googles_layout(siglip: Path) -> None:
    assert (siglip / "spiece.model").is_file() and not (siglip / "tokenizer.json").exists()
    assert (siglip / "preprocessor_config.json").is_file()


def test_tokenizer_gives_siglip_tokenizers_ids(siglip: Path) -> None:
    from transformers import AutoTokenizer

    from jupyter_mlx_embed.engine.tokenization import load_tokenizer

    from .real_models import training_lines

    reference = AutoTokenizer.from_pretrained(siglip)
    ours = load_tokenizer(siglip, max_length=64, vocab_size=32000, pad=True)
    texts = training_lines()[::5] + TEXTS + ["  lead", "tab\there", "x\u00a0y", "a</s>b", "①②"]
    expected = reference(texts, padding="max_length", truncation=True)["input_ids"]
    assert ours.encode_texts(texts) == expected


def test_text_and_image_vectors_equal_transformers(
    worker: Worker, siglip: Path, reference: dict[str, np.ndarray]
) -> None:
    options = EmbedOptions(model=siglip.name)
    texts = worker.submit(TEXTS, options).result(timeout=120)
    assert texts.vectors.shape == (len(TEXTS), 768)
    assert np.min(np.sum(texts.vectors * reference["text"], axis=1)) >= 0.9999
    pictures = worker.submit_images(_pictures(), options).result(timeout=120)
    cosines = np.sum(pictures.vectors * reference["image"], axis=1)
    assert cosines[0] >= 0.9999  # already at the model's size
    assert np.min(cosines) >= 0.999  # resized as the published processor does
    assert pictures.token_counts == (196,) * 4  # 14 x 14 patches each


def test_every_kind_of_picture_input_gives_the_same_vector(
    worker: Worker, siglip: Path, tmp_path: Path
) -> None:
    picture = _pictures()[1]
    path = tmp_path / "p.png"
    picture.save(path)
    array = np.asarray(picture)
    items = [picture, str(path), path, path.read_bytes(), array]
    vectors = worker.submit_images(items, EmbedOptions(model=siglip.name)).result(60).vectors
    np.testing.assert_allclose(vectors, np.repeat(vectors[:1], len(items), axis=0), atol=1e-6)


def _error(worker: Worker, model: str, items: list, **kw: object) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        worker.submit_images(items, EmbedOptions(model=model), **kw).result(60)
    return caught.value


def test_a_bad_picture_fails_its_request_naming_it(
    worker: Worker, siglip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = _pictures()[0]
    error = _error(worker, siglip.name, [good, b"not a picture"])
    assert error.code == "invalid_image" and "input[1]" in error.message
    error = _error(worker, siglip.name, [good, tmp_path / "missing.png"], first_index=10)
    assert "input[11]" in error.message and "missing.png" in error.message
    error = _error(worker, siglip.name, [np.zeros((8, 8, 3), dtype=np.float32)])
    assert "uint8" in error.message
    from jupyter_mlx_embed import preparation

    monkeypatch.setattr(preparation, "MAX_IMAGE_PIXELS", 100 * 100)
    fresh = np.random.default_rng(3).integers(0, 256, (120, 100, 3), dtype=np.uint8)
    error = _error(worker, siglip.name, [fresh])  # not in the cache: checked before decoding
    assert "100 x 120 pixels" in error.message
    # The worker goes on serving.
    assert worker.submit_images([good], EmbedOptions(model=siglip.name)).result(60).vectors.shape


def test_pictures_need_an_image_text_model(worker: Worker) -> None:
    with pytest.raises(ModelTypeError, match="embeds text only"):
        worker.submit_images(_pictures()[:1], EmbedOptions()).result(60)
    with pytest.raises(InvalidRequestError, match="prompt"):
        worker.submit_images(_pictures()[:1], EmbedOptions(prompt="query: "))
    with pytest.raises(InvalidRequestError, match="must be a file path"):
        worker.submit_images([3], EmbedOptions())


def test_the_cache_keys_pictures_by_content(worker: Worker, siglip: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    picture = Image.fromarray(rng.integers(0, 256, (120, 90, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    path = tmp_path / "same.png"
    path.write_bytes(buffer.getvalue())
    options = EmbedOptions(model=siglip.name)
    first = worker.submit_images([buffer.getvalue()], options).result(60).vectors
    worker._cache.flush()  # type: ignore[union-attr]
    hits = worker.stats.cache_hits
    again = worker.submit_images([path], options).result(60).vectors  # the same file's bytes
    assert worker.stats.cache_hits == hits + 1
    np.testing.assert_array_equal(first, again)
    # A text whose characters spell a picture's key is not that picture.
    text = worker.submit(["same.png"], options).result(60)
    assert worker.stats.cache_hits == hits + 1 and text.vectors.shape == (1, 768)
