"""The explorer of pictures in a real browser (#26): JupyterLab whose model root holds a SigLIP
stand-in, an explorer of 20,000 synthetic pictures (files written by the cell; vectors drawn
around 12 centres, loosely, so that the map's middle is full of points: the map, not the
meaning, is under test). Hovering a point shows its
thumbnail, fetched on demand; a typed query is embedded by the model's text tower and
recolours the map, its best matches listed with thumbnails; zooming in turns the points in
view into their pictures, never more than ``PICTURES_IN_VIEW``. The times (first map, query to
recolour, hover to thumbnail) and long tasks are printed for BENCHMARKS.md. Screenshots:
test-artifacts/explorer-pictures-*.png."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from playwright.sync_api import Error as PlaywrightError

from .browser import (
    LabServer,
    open_lab,
    open_notebook,
    page_errors,
    requires_chromium,
    run_cell,
    screenshot,
)
from .browser import start_lab as start_lab_server
from .test_browser_explorer import WATCH_LONG_TASKS

pytest_plugins = ("tests.browser",)
pytestmark = [requires_chromium, pytest.mark.slow]

COUNT = 20_000

FILES = """\
import tempfile
from pathlib import Path
import numpy as np
from PIL import Image, ImageDraw

folder = Path(tempfile.mkdtemp(prefix="jme-pictures-", dir=FOLDER))
colours = ["red", "orange", "gold", "green", "teal", "blue", "purple", "black", "pink",
           "brown", "grey", "navy"]
rng = np.random.default_rng(0)
group = rng.integers(0, 12, COUNT)
paths = []
for i, g in enumerate(group):
    picture = Image.new("RGB", (64, 48), "white")
    shape = ImageDraw.Draw(picture)
    (shape.ellipse if i % 2 else shape.rectangle)((8, 6, 56, 42), fill=colours[g])
    paths.append(str(folder / f"{i:05d}.jpg"))
    picture.save(paths[-1], quality=80)
centres = rng.normal(size=(12, 768))
vectors = (centres[group] + 1.5 * rng.normal(size=(COUNT, 768))).astype(np.float32)
"""

CELL = """\
from jupyter_mlx_embed.embeddings import Embeddings
pictures = Embeddings(paths, vectors, MODEL, images=paths)
explorer = pictures.explore(data={"colour": [colours[g] for g in group]}, color="colour",
                            projection="pca")
explorer
"""

# The time from `window.jmeT0` to the first performance mark `name` after it (ms), or null.
SINCE = """name => {
  const marks = performance.getEntriesByName(name).filter(m => m.startTime >= window.jmeT0);
  return marks.length ? marks[0].startTime - window.jmeT0 : null;
}"""


@pytest.fixture(scope="module")
def pictures_lab(tmp_path_factory: pytest.TempPathFactory, siglip: Path) -> Iterator[LabServer]:
    extra = f"--MLXEmbed.model_roots={siglip.parent}"
    with start_lab_server(tmp_path_factory.mktemp("lab"), extra) as server:
        yield server


@pytest.fixture(scope="module")
def page(browser: Browser, pictures_lab: LabServer) -> Iterator[Page]:
    page = open_lab(browser, pictures_lab)
    try:
        yield page
    finally:
        page.context.close()


def _start_clock(page: Page) -> None:
    page.evaluate("() => { window.jmeT0 = performance.now(); }")


def _wait_for_mark(page: Page, name: str, timeout_ms: int = 60_000) -> float:
    page.wait_for_function(f"() => ({SINCE})({name!r}) !== null", timeout=timeout_ms)
    return float(page.evaluate(SINCE, name))


def test_20k_pictures_hover_query_and_zoom(
    page: Page, pictures_lab: LabServer, siglip, tmp_path: Path
) -> None:
    panel = open_notebook(page, pictures_lab, "pictures.ipynb")
    # The pictures go under the test's own folder, which pytest prunes (not /tmp's root).
    setup = f"MODEL = {siglip.name!r}\nCOUNT = {COUNT}\nFOLDER = {str(tmp_path)!r}\n"
    run_cell(panel, setup + FILES, timeout=300_000)
    _start_clock(page)
    cell = run_cell(panel, CELL, timeout=300_000)
    widget = cell.locator(".jp-OutputArea-output")
    expect(widget.locator(".jme-explorer[data-drawn]")).to_be_visible(timeout=120_000)
    expect(widget.locator(".jme-meta")).to_contain_text("20,000 pictures")
    first_map = _wait_for_mark(page, "jme-first-draw")
    screenshot(widget, "explorer-pictures-map.png")
    page.evaluate(WATCH_LONG_TASKS)

    # Hover: somewhere near the middle of the map lies a point; its tooltip shows its picture.
    canvas = widget.locator("canvas.jme-map")
    box = canvas.bounding_box()
    assert box is not None
    tip = widget.locator(".jme-tip")
    hover_ms = None
    src: str | None = None
    spots = [(0.5 + 0.04 * i, 0.5 + 0.04 * j) for i in range(-3, 4) for j in range(-3, 4)]
    for dx, dy in sorted(spots, key=lambda s: abs(s[0] - 0.5) + abs(s[1] - 0.5)):
        page.mouse.move(box["x"] + 5, box["y"] + 5)
        _start_clock(page)
        page.mouse.move(box["x"] + box["width"] * dx, box["y"] + box["height"] * dy)
        try:
            expect(tip.locator("img.jme-tip-picture")).to_be_visible(timeout=2_000)
            # Read at once: the UMAP map may replace the PCA one meanwhile, and a tooltip
            # leaves with the view it was shown in.
            src = tip.locator("img.jme-tip-picture").get_attribute("src", timeout=1_000)
        except (AssertionError, PlaywrightError):
            continue
        hover_ms, spot = _wait_for_mark(page, "jme-thumbnail"), (dx, dy)
        break
    assert hover_ms is not None, "no point under the pointer showed its picture"
    assert src and src.startswith("blob:")
    screenshot(widget, "explorer-pictures-hover.png")

    # A typed query: embedded by the text tower, the map recoloured, matches with pictures.
    query = widget.locator("input.jme-query")
    query.click()
    query.type("a red circle", delay=10)
    _start_clock(page)
    rows = widget.locator("table.jme-topk tr.jme-hit")
    try:
        expect(rows).to_have_count(5, timeout=60_000)
    finally:
        screenshot(widget, "explorer-pictures-query.png")
    recolour_ms = _wait_for_mark(page, "jme-recolor")
    expect(rows.first.locator("img.jme-hit-picture")).to_have_attribute(
        "src", re.compile("^blob:"), timeout=30_000
    )
    screenshot(widget, "explorer-pictures-query.png")

    # Zoom in where a point was hovered until the points in view become their pictures.
    layer = widget.locator(".jme-pictures")
    page.mouse.move(box["x"] + box["width"] * spot[0], box["y"] + box["height"] * spot[1])
    page.keyboard.down("Control")
    try:
        for _ in range(60):
            page.mouse.wheel(0, -300)
            page.wait_for_timeout(200)
            if int(layer.get_attribute("data-count") or 0) >= 10:
                break
    finally:
        page.keyboard.up("Control")
    page.wait_for_timeout(1500)  # the view rests, the thumbnails in view arrive
    count = int(layer.get_attribute("data-count") or 0)
    assert 0 < count <= 120, count
    assert widget.locator("img.jme-picture").count() == count
    screenshot(widget, "explorer-pictures-zoomed.png")
    long_tasks = page.evaluate("() => window.jmeLongTasks")
    print(
        f"20k pictures: run to first map {first_map:.0f} ms; hover to "
        f"thumbnail {hover_ms:.0f} ms; query to recolour {recolour_ms:.0f} ms; pictures in "
        f"view when zoomed {count}; long tasks (ms) {long_tasks}"
    )
    assert not page_errors(page)
