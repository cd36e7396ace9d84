"""The explorer written to files: ``to_parquet`` (the table, the map, the labels and the
vectors, as embedding-atlas and Latent Scope read them) and ``to_html`` (one page opened
offline in Chromium: the map draws, hover shows a text, the legend and the keyword box
filter, and nothing is fetched from a network). Screenshot: test-artifacts/export-*.png."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import comm
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from jupyter_mlx_embed.embeddings import Embeddings
from jupyter_mlx_embed.explorer.widget import SimilarityExplorer

from .browser import requires_chromium, screenshot
from .test_widget import RecordingComm

pytest_plugins = ("tests.browser",)
# The explorer asks the default transport about its model: this module's worker, closed after.
pytestmark = pytest.mark.usefixtures("default_worker")

WORDS = [
    "apple",
    "river",
    "engine",
    "violin",
    "glacier",
    "pepper",
    "comet",
    "harbor",
    "falcon",
    "marble",
    "tulip",
    "lantern",
]


def grouped(n: int, seed: int = 0) -> tuple[Embeddings, pd.DataFrame]:
    """``n`` random points in 12 groups, texts naming their group; a table with a category
    and a number per point."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, 32)) * 4
    group = rng.integers(0, 12, n)
    vectors = (centres[group] + rng.normal(size=(n, 32))).astype(np.float32)
    texts = [f"{WORDS[g]} {WORDS[(g + 5) % 12]} note {i}" for i, g in enumerate(group)]
    table = pd.DataFrame({"kind": [f"kind {g % 3}" for g in group], "size": rng.random(n)})
    return Embeddings(texts, vectors, "all-MiniLM-L6-v2"), table


def exported(page_text: str) -> dict[str, Any]:
    """What an exported page carries for its front end (the JSON of its jme-export script)."""
    found = re.search(r'id="jme-export"[^>]*>(.*?)</script>', page_text, re.S)
    assert found is not None
    return json.loads(found[1])


def open_offline(browser: Browser, path: Path) -> tuple[BrowserContext, Page, list[str], list[str]]:
    """An exported page opened in an offline Chromium context: the context, the page, the
    errors it reports (thrown or logged) and every URL it fetched."""
    context = browser.new_context(viewport={"width": 1200, "height": 800}, offline=True)
    page = context.new_page()
    errors: list[str] = []
    fetched: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("request", lambda request: fetched.append(request.url))
    page.goto(path.as_uri())
    return context, page, errors, fetched


@pytest.fixture
def explorer(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimilarityExplorer]:
    monkeypatch.setattr(comm, "create_comm", RecordingComm)
    embeddings, table = grouped(20_000)
    widget = SimilarityExplorer(
        embeddings, data=table, color="kind", tooltip=["size"], projection="pca"
    )
    assert widget.wait(300)
    yield widget
    widget.close()


def test_parquet_holds_the_table_map_labels_and_vectors(explorer, tmp_path: Path) -> None:
    path = explorer.to_parquet(tmp_path / "map.parquet")
    table = pq.read_table(path)
    assert table.column_names == [
        "kind",
        "size",
        "text",
        "projection_x",
        "projection_y",
        "cluster",
        "cluster_label",
        "region_label",
        "vector",
    ]
    frame = table.to_pandas()
    assert frame["text"].tolist() == explorer.embeddings.texts
    np.testing.assert_array_equal(frame[["projection_x", "projection_y"]], explorer.coordinates)
    np.testing.assert_array_equal(np.stack(frame["vector"]), explorer.embeddings.vectors)
    codes = explorer.cluster_codes
    assert codes is not None and (codes >= 0).any()
    np.testing.assert_array_equal(frame["cluster"], codes)
    found = explorer._cluster_result
    assert found is not None
    labels = {c.label for c in found.clusters}
    assert set(frame.loc[codes >= 0, "cluster_label"]) <= labels
    assert (frame.loc[codes < 0, "cluster_label"] == "").all()
    if found.regions:
        assert set(frame.loc[codes >= 0, "region_label"]) <= {r.label for r in found.regions}
    # Without vectors: the same table less its widest column.
    slim = pq.read_table(explorer.to_parquet(tmp_path / "slim.parquet", vectors=False))
    assert "vector" not in slim.column_names and slim.num_rows == 20_000


def test_html_page_is_self_contained(explorer, tmp_path: Path) -> None:
    explorer.size_by = "size"  # every binary trait set, the sizes' too
    explorer.density = True
    path = explorer.to_html(tmp_path / "map.html", title="Notes </script> & more")
    text = path.read_text()
    assert "<title>Notes &lt;/script&gt; &amp; more</title>" in text
    assert not re.search(r"(src|href)=\"https?://", text)  # nothing fetched from elsewhere
    data = exported(text)
    assert data["state"]["interactive"] is False and len(data["texts"]) == 20_000
    assert data["fields"]["size"][0] == str(explorer._columns["size"].iloc[0])
    assert data["state"]["scores"] == "" and data["state"]["keyword"] == ""
    assert "scale_codes" in data["binary"] and data["state"]["contours"]
    # A sensible size: the front end once, then each point's text and values (stated in
    # BENCHMARKS.md as bytes per point).
    per_point = (path.stat().st_size - 400_000) / 20_000
    average_text = np.mean([len(t) for t in explorer.embeddings.texts])
    assert per_point < average_text + 60, per_point


@pytest.mark.slow
def test_a_page_exported_while_the_map_is_made_promises_no_background_work(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(comm, "create_comm", RecordingComm)
    embeddings, _ = grouped(20_000)
    widget = SimilarityExplorer(embeddings)  # PCA at once, UMAP in the background
    try:
        assert "in the background" in widget.map_status
        text = widget.to_html(tmp_path / "early.html").read_text()
        assert not widget._done.is_set()  # exported while UMAP was still being computed
        data = exported(text)
        assert data["state"]["map_status"] == "PCA map of 20,000 texts."
        assert "in the background" in widget.map_status  # the live widget still says so
        assert widget.wait(300)  # once the map is made, a page shows it as it is
        text = widget.to_html(tmp_path / "late.html").read_text()
        data = exported(text)
        assert data["state"]["map_status"] == widget.map_status
        assert data["state"]["map_status"].startswith("UMAP map of 20,000 texts.")
    finally:
        widget.close()


@requires_chromium
def test_html_page_works_offline_in_chromium(explorer, tmp_path: Path, browser: Browser) -> None:
    path = explorer.to_html(tmp_path / "map.html")
    context, page, errors, fetched = open_offline(browser, path)
    widget = page.locator(".jme-explorer")
    expect(widget).to_have_attribute("data-drawn", re.compile(r"\d"), timeout=60_000)
    expect(widget.locator(".jme-meta")).to_contain_text("20,000 texts")
    expect(widget.locator(".jme-side")).to_be_hidden()  # queries need a kernel
    # Hover: the tooltip shows the text under the pointer (answered from the page).
    canvas = widget.locator("canvas.jme-map")
    box = canvas.bounding_box()
    assert box is not None
    shown = ""
    for fx in np.linspace(0.3, 0.7, 9):
        for fy in np.linspace(0.3, 0.7, 9):
            page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
            page.wait_for_timeout(40)
            tip = widget.locator(".jme-map-box .jme-tip")
            if tip.is_visible() and "note" in tip.inner_text():
                shown = tip.inner_text()
                break
        if shown:
            break
    assert re.search(r"\w+ \w+ note \d+", shown), shown
    # The legend shows one kind alone; the keyword box greys out the rest.
    widget.locator(".jme-legend-item", has_text="kind 1").click()
    expect(widget.locator('.jme-legend-item[aria-pressed="true"]')).to_have_count(1)
    keyword = widget.locator("input.jme-keyword")
    keyword.fill("comet")
    keyword.press("Enter")
    expected = sum("comet" in t for t in explorer.embeddings.texts)
    expect(widget.locator(".jme-filter-count")).to_have_text(f"{expected:,} match")
    keyword.fill("/note 1\\d{3}$/")
    keyword.press("Enter")
    expect(widget.locator(".jme-filter-count")).to_have_text("1,000 match")
    screenshot(page, "export-offline.png")
    assert all(url.startswith(("file:", "blob:", "data:")) for url in fetched), fetched
    assert not errors, errors
    context.close()


@requires_chromium
def test_pictures_page_carries_their_thumbnails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, browser: Browser
) -> None:
    """An explorer of pictures exported: each picture's thumbnail is in the page (about 2 KB
    each, stated in the docstring), shown on hover offline; ``thumbnails=False`` leaves them
    out, and the page is an explorer of points then."""
    from PIL import Image

    monkeypatch.setattr(comm, "create_comm", RecordingComm)
    rng = np.random.default_rng(5)
    n, paths = 400, []
    for i in range(n):
        path = tmp_path / f"picture-{i:03d}.jpg"
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        Image.new("RGB", (160, 120), colour).save(path, quality=90)
        paths.append(str(path))
    embeddings, _ = grouped(n, seed=5)
    pictures = Embeddings(paths, embeddings.vectors, "siglip", images=paths)
    widget = SimilarityExplorer(pictures, projection="pca")
    assert widget.wait(300)
    try:
        with_thumbnails = widget.to_html(tmp_path / "pictures.html")
        without = widget.to_html(tmp_path / "points.html", thumbnails=False)
    finally:
        widget.close()
    extra = with_thumbnails.stat().st_size - without.stat().st_size
    assert 400 * n < extra < 4_000 * n, extra  # JPEGs of a few hundred bytes to 3 KB each
    data = exported(without.read_text())
    assert "thumbnails" not in data and data["state"]["pictures"] is False

    context, page, errors, fetched = open_offline(browser, with_thumbnails)
    root = page.locator(".jme-explorer")
    expect(root).to_have_attribute("data-drawn", re.compile(r"\d"), timeout=60_000)
    expect(root.locator(".jme-meta")).to_contain_text("400 pictures")
    expect(root).to_contain_text("hover for pictures")
    canvas = root.locator("canvas.jme-map")
    box = canvas.bounding_box()
    assert box is not None
    picture = root.locator(".jme-tip img.jme-tip-picture")
    for fx in np.linspace(0.2, 0.8, 13):
        for fy in np.linspace(0.2, 0.8, 13):
            page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
            page.wait_for_timeout(30)
            if picture.count() and picture.is_visible():
                break
        else:
            continue
        break
    expect(picture).to_have_attribute("src", re.compile("^blob:"))
    width = picture.evaluate("img => img.decode().then(() => img.naturalWidth)")
    assert width == 96  # the thumbnail's longest side (explorer.thumbnails.SIDE)
    screenshot(page, "export-pictures-hover.png")
    assert all(url.startswith(("file:", "blob:", "data:")) for url in fetched), fetched
    assert not errors, errors
    context.close()
