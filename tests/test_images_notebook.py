"""Pictures in a notebook (#26), in a real InteractiveShell: ``%embed_images`` over a folder, a
glob and expressions (paths, PIL images, a Series of paths), dirty items refused or skipped,
``Embeddings`` of pictures (sources, thumbnails, search by text, save and load, HTML)."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import jupyter_mlx_embed as jme
from jupyter_mlx_embed.embeddings import Embeddings

Image = pytest.importorskip("PIL.Image")
ImageDraw = pytest.importorskip("PIL.ImageDraw")

COLOURS = ["red", "green", "blue", "orange", "purple", "black"]


def _drawing(colour: str, circle: bool) -> Image.Image:
    picture = Image.new("RGB", (160, 120), "white")
    draw = ImageDraw.Draw(picture)
    (draw.ellipse if circle else draw.rectangle)((30, 20, 130, 100), fill=colour)
    return picture


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six drawings as PNG and JPEG, a text file, and a corrupt picture."""
    where = tmp_path_factory.mktemp("pictures")
    for i, colour in enumerate(COLOURS):
        _drawing(colour, i % 2 == 0).save(where / f"{i}-{colour}.{'png' if i < 3 else 'jpg'}")
    (where / "notes.txt").write_text("not a picture")
    (where / "z-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return where


@pytest.fixture(scope="module")
def shell(siglip: Path) -> Iterator[InteractiveShell]:
    ip = InteractiveShell.instance()
    jme.set_transport("local")
    ip.run_line_magic("load_ext", "jupyter_mlx_embed")
    ip.run_line_magic("config", f"MLXEmbed.model_roots = [{str(siglip.parent)!r}]")
    ip.user_ns["MODEL"] = siglip.name
    yield ip
    jme.get_worker().close()


def test_a_folder_of_pictures(shell, folder, siglip, capsys) -> None:
    shell.run_line_magic("embed_images", f"-i {folder} -o pics -m {siglip.name} --skip-invalid")
    pics = shell.user_ns.pop("pics")
    assert isinstance(pics, Embeddings) and pics.modality == "image"
    expected = sorted(str(p) for p in folder.iterdir() if p.suffix in (".png", ".jpg"))
    good = [p for p in expected if "broken" not in p]
    assert pics.images == good and pics.texts == good
    assert pics.skipped == [expected.index(str(folder / "z-broken.png"))]
    assert "Skipped 1" in capsys.readouterr().out
    np.testing.assert_allclose(pics.vectors, jme.embed_images(good, model=siglip.name), atol=1e-6)
    assert repr(pics).startswith("Embeddings(6 pictures")
    assert pics._repr_html_().count("<img") == 5  # the first rows, as thumbnails


def test_a_corrupt_picture_is_refused_naming_it(shell, folder, siglip) -> None:
    with pytest.raises(UsageError, match=r"input\[6\]: cannot read the image"):
        shell.run_line_magic("embed_images", f"-i {folder} -m {siglip.name}")


def test_a_glob_and_a_missing_folder(shell, folder, siglip) -> None:
    pics = shell.run_line_magic("embed_images", f"-i '{folder}/*.jpg' -m {siglip.name}")
    assert [Path(p).suffix for p in pics.images] == [".jpg"] * 3
    with pytest.raises(UsageError, match="no picture files match"):
        shell.run_line_magic("embed_images", f"-i {folder}/nothing-*.png -m {siglip.name}")


def test_expressions_keep_labels_and_thumbnail_in_memory_pictures(shell, folder, siglip) -> None:
    pandas = pytest.importorskip("pandas")
    drawings = [_drawing(c, True) for c in COLOURS[:3]]
    shell.user_ns["drawings"] = drawings
    pics = shell.run_line_magic("embed_images", "-i drawings -m $MODEL")
    assert all(isinstance(s, bytes) and s[:2] == b"\xff\xd8" for s in pics.images)
    assert pics.texts == ["<image 160x120>"] * 3
    files = sorted(str(p) for p in folder.glob("*.png") if "broken" not in p.name)
    shell.user_ns["table"] = pandas.DataFrame({"path": files}, index=["a", "b", "c"])
    pics = shell.run_line_magic("embed_images", "-i table.path -m $MODEL")
    assert pics.index == ["a", "b", "c"] and pics.images == files
    shell.user_ns["mixed"] = [files[0], None, 3.5]
    with pytest.raises(UsageError, match="item 1 is a NoneType"):
        shell.run_line_magic("embed_images", "-i mixed -m $MODEL")
    pics = shell.run_line_magic("embed_images", "-i mixed -m $MODEL --skip-invalid")
    assert len(pics) == 1 and pics.skipped == [1, 2]


def test_search_by_text_across_modalities(shell, folder, siglip) -> None:
    pics = shell.run_line_magic("embed_images", f"-i {folder} -m {siglip.name} --skip-invalid")
    hits = pics.search("a red circle", k=3)
    query = jme.embed("a red circle", model=siglip.name)
    order = np.argsort(-(pics.vectors @ query), kind="stable")[:3]
    assert [h.index for h in hits] == order.tolist()
    assert [h.text for h in hits] == [pics.images[i] for i in order]
    assert all(h.thumbnail and h.thumbnail[:2] == b"\xff\xd8" for h in hits)  # JPEGs
    assert hits._repr_html_().count("<img") == 3
    with pytest.raises(ValueError, match="pictures cannot be reranked"):
        pics.search("a red circle", rerank="any")


def test_save_and_load_keep_paths_and_thumbnails(shell, folder, siglip, tmp_path) -> None:
    line = f"-i '{folder}/*.png' -m {siglip.name} --skip-invalid"
    from_files = shell.run_line_magic("embed_images", line)
    shell.user_ns["teal"] = _drawing("teal", False)
    in_memory = shell.run_line_magic("embed_images", "-i [teal] -m $MODEL")
    both = Embeddings(
        from_files.texts + in_memory.texts,
        np.concatenate([from_files.vectors, in_memory.vectors]),
        siglip.name,
        images=from_files.images + in_memory.images,
    )
    loaded = Embeddings.load(both.save(tmp_path / "pics.npz"))
    assert loaded.images == both.images and loaded.modality == "image"
    np.testing.assert_array_equal(loaded.vectors, both.vectors)
    subset = loaded[[0, len(loaded) - 1]]
    assert subset.images == [both.images[0], both.images[-1]]
    paths_only = Embeddings.load(from_files.save(tmp_path / "files.npz"))
    assert paths_only.images == from_files.images


def test_explore_images_answers_thumbnails_and_stores_them_by_content(
    shell, folder, siglip, tmp_path, monkeypatch
) -> None:
    pandas = pytest.importorskip("pandas")
    # The thumbnails are stored beside the vector cache of the settings (the environment).
    # (the tests run with the cache off, conftest.py: on here, in a folder of this test's own)
    monkeypatch.setenv("JUPYTER_MLX_EMBED_CACHE", "true")
    monkeypatch.setenv("JUPYTER_MLX_EMBED_CACHE_DIR", str(tmp_path / "cache"))
    shell.run_line_magic("embed_info", "")  # the magics apply the settings to the worker
    files = sorted(str(p) for p in folder.iterdir() if p.suffix in (".png", ".jpg"))
    table = pandas.DataFrame({"path": files, "kind": ["drawing"] * len(files)})
    explorer = jme.explore_images(
        table, "path", model=siglip.name, color="kind", skip_invalid=True, projection="pca"
    )
    assert explorer.pictures and len(explorer.embeddings) == len(files) - 1
    assert explorer.embeddings.skipped == [files.index(str(folder / "z-broken.png"))]
    sent: list[tuple[dict, list[bytes]]] = []
    monkeypatch.setattr(
        explorer, "send", lambda content, buffers=None: sent.append((content, buffers))
    )
    explorer._on_message(explorer, {"type": "thumbnails", "id": 7, "indices": [0, 2, 999]}, [])
    for _ in range(100):
        if sent:
            break
        time.sleep(0.05)
    content, buffers = sent[0]
    assert content["id"] == 7 and content["indices"] == [0, 2, 999]
    sizes = content["sizes"]
    assert sizes[0] > 0 and sizes[1] > 0 and sizes[2] == 0 and len(buffers[0]) == sum(sizes)
    first = Image.open(io.BytesIO(buffers[0][: sizes[0]]))
    assert first.format == "JPEG" and max(first.size) <= 96
    stored = list((tmp_path / "cache" / "thumbnails").rglob("*.jpg"))
    assert len(stored) == 2  # kept by content hash: another explorer reads them back


def test_aembed_images_awaits_the_same_vectors(shell, folder, siglip) -> None:
    import asyncio

    files = sorted(str(p) for p in folder.glob("*.png") if "broken" not in p.name)
    vectors = asyncio.run(jme.aembed_images(files, model=siglip.name))
    np.testing.assert_allclose(vectors, jme.embed_images(files, model=siglip.name), atol=1e-6)
    one = asyncio.run(jme.aembed_images(files[0], model=siglip.name))
    assert one.shape == (768,)
