"""The similarity explorer in a real browser: JupyterLab started by the test, a notebook cell
builds the explorer; the map draws (WebGL), pans, lassoes, recolours by a column, shows
cluster labels, and a typed query updates the top-k table with the expected nearest text;
maps give their WebGL context back when disposed, and draw a sample of 100k points while the
view moves. Screenshots go to test-artifacts/ (explorer-*.png)."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Locator, Page, expect

from .browser import (
    LabServer,
    check_explorer_queries,
    execute_command,
    open_notebook,
    page_errors,
    requires_chromium,
    run_cell,
    screenshot,
)

pytest_plugins = ("tests.browser",)
pytestmark = [requires_chromium, pytest.mark.slow]

CELL = """\
import jupyter_mlx_embed as jme
import pandas as pd
texts = [
    "How do I reset my password?",
    "The quarterly revenue grew by twelve percent.",
    "Our cat likes to sleep on the warm laptop.",
    "Preheat the oven before baking the bread.",
    "The train to the airport leaves every twenty minutes.",
    "Sales figures improved compared with last year.",
    "My dog chased the ball into the lake.",
    "Knead the dough for ten minutes until it is smooth.",
]
table = pd.DataFrame({
    "text": texts,
    "topic": ["account", "money", "pets", "baking", "travel", "money", "pets", "baking"],
    "length": [len(t) / 10 for t in texts],
})
explorer = jme.explore(table, "text", color="topic", tooltip=["topic"], projection="pca")
explorer
"""

# 100,000 points in 12 clusters (random vectors: the map, not the meaning, is under test).
BIG_CELL = """\
import numpy as np
from jupyter_mlx_embed.embeddings import Embeddings
rng = np.random.default_rng(0)
centres = rng.normal(size=(12, 384))
topic = rng.integers(0, 12, 100_000)
vectors = (centres[topic] + 0.35 * rng.normal(size=(100_000, 384))).astype(np.float32)
words = "apple river engine violin glacier pepper comet harbor falcon marble tulip lantern".split()
big = Embeddings([f"{words[t]} {words[(t + 1) % 12]} note {i}" for i, t in enumerate(topic)],
                 vectors, "all-MiniLM-L6-v2")
big_explorer = big.explore(data={"topic": [f"topic {t}" for t in topic]}, color="topic",
                           projection="pca")
big_explorer
"""

# Two explorers of 300 random points; `older` is shown (`newer` is shown by the test).
SMALL_CELL = """\
import numpy as np
from jupyter_mlx_embed.embeddings import Embeddings
rng = np.random.default_rng(1)
notes = Embeddings([f"note {i}" for i in range(300)],
                   rng.normal(size=(300, 8)).astype(np.float32), "all-MiniLM-L6-v2")
older, newer = notes.explore(projection="pca"), notes.explore(projection="pca")
older
"""

# Long tasks (over 50 ms) on the page's main thread, recorded from now on.
WATCH_LONG_TASKS = """() => {
  window.jmeLongTasks = [];
  new PerformanceObserver(list => {
    for (const entry of list.getEntries()) window.jmeLongTasks.push(entry.duration);
  }).observe({ type: 'longtask', buffered: false });
}"""


# Counts the points each map's WebGL canvas draws: the most drawn in one call
# (`canvas.jmePointsDrawn`) since the test last set it to 0. It wraps WebGL itself, below the
# map's own point cap, so it sees what the browser is asked to draw; maps made before it ran
# are not counted (a map's renderer keeps the drawArrays it found when it was made).
COUNT_DRAWN_POINTS = """() => {
  if (window.jmeCountingPoints) return;
  window.jmeCountingPoints = true;
  for (const type of [WebGLRenderingContext, WebGL2RenderingContext]) {
    const drawArrays = type.prototype.drawArrays;
    type.prototype.drawArrays = function (mode, first, count) {
      if (mode === this.POINTS) {
        this.canvas.jmePointsDrawn = Math.max(this.canvas.jmePointsDrawn || 0, count);
      }
      return drawArrays.call(this, mode, first, count);
    };
  }
}"""

# Keeps every canvas given a WebGL context from now on in `window.jmeGlCanvases` (until the
# test sets it to null): a context that is only let go is freed whenever the page's garbage is
# collected, which may be too late; a map must give its context back itself.
KEEP_GL_CANVASES = """() => {
  window.jmeGlCanvases = [];
  if (window.jmeKeepingCanvases) return;
  window.jmeKeepingCanvases = true;
  const getContext = HTMLCanvasElement.prototype.getContext;
  HTMLCanvasElement.prototype.getContext = function (type, options) {
    const context = getContext.call(this, type, options);
    const kept = window.jmeGlCanvases;
    if (kept && context && type.includes('webgl') && !kept.includes(this)) kept.push(this);
    return context;
  };
}"""

# Runs cell `index` of the notebook whose panel has this id again (it stays the active cell).
RERUN_CELL = """([id, index]) => {
  const app = window.jupyterapp;
  const panel = Array.from(app.shell.widgets('main')).find(w => w.id === id);
  app.shell.activateById(id);
  panel.content.activeCellIndex = index;
  void app.commands.execute('notebook:run-cell');
}"""

# The points of a map in the sampling tests (BIG_CELL), and how many it draws while moving:
# MOVING_POINTS at most, MIN_MOVING_POINTS at least (labextension/src/explorer/renderer.ts).
BIG_POINTS = 100_000
MOVING_POINTS = 50_000
MIN_MOVING_POINTS = 10_000


def activate_notebook(page: Page, name: str) -> Locator:
    """Bring the open notebook ``name`` to the front; returns its panel (for :func:`run_cell`).

    Notebook commands act on the notebook that has the focus, which moves a moment after the
    activation: this waits for it."""
    widget_id = page.evaluate(
        "path => window.jupyterapp.commands.execute('docmanager:open', {path}).then(w => w.id)",
        name,
    )
    page.wait_for_function("id => window.jupyterapp.shell.currentWidget?.id === id", arg=widget_id)
    return page.locator(f'[id="{widget_id}"]')


def rerun_cell(panel: Locator, cell: Locator, index: int) -> None:
    """Run cell ``index`` of ``panel`` (``cell``) again and wait until it has run."""
    prompt = cell.locator(".jp-InputArea-prompt")
    count = int(re.findall(r"\d+", prompt.inner_text())[0])
    panel.page.evaluate(RERUN_CELL, [panel.get_attribute("id"), index])
    expect(prompt).to_have_text(f"[{count + 1}]:")


def show_and_rerun(lab_page: Page, shown: str, reruns: int = 20) -> tuple[Locator, Locator]:
    """Run SMALL_CELL (showing `older`), then a cell showing ``shown`` and run that one again
    ``reruns`` times, keeping every WebGL canvas made meanwhile (KEEP_GL_CANVASES): returns
    the two cells."""
    panel = activate_notebook(lab_page, "explorer.ipynb")
    first = run_cell(panel, SMALL_CELL)
    expect(first.locator(".jme-explorer[data-drawn]")).to_be_visible(timeout=60_000)
    cell = run_cell(panel, shown)
    index = panel.locator(".jp-Cell").count() - 1
    lab_page.evaluate(KEEP_GL_CANVASES)
    for _ in range(reruns):
        rerun_cell(panel, cell, index)
        expect(cell.locator(".jme-explorer[data-drawn]")).to_be_visible()
    return first, cell


def drawn_pixels(map_box: Locator) -> int:
    """How many pixels of the map's box the points (WebGL) cover: those far from the box's
    most common colour, with the marks and labels drawn over the points hidden."""
    png = map_box.screenshot(style=".jme-overlay, .jme-wheel-hint, .jme-tip { display: none; }")
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3).astype(int)
    colours, counts = np.unique(pixels, axis=0, return_counts=True)
    background = colours[counts.argmax()]
    return int((np.abs(pixels - background).max(axis=1) > 40).sum())


def drag(
    page: Page,
    canvas: Locator,
    start: tuple[float, float],
    moves: list[tuple[float, float]],
    modifier: str | None = None,
) -> None:
    """Press at ``start`` (fractions of the canvas box), move through ``moves``, release."""
    box = canvas.bounding_box()
    assert box is not None
    at = lambda fx, fy: (box["x"] + fx * box["width"], box["y"] + fy * box["height"])  # noqa: E731
    if modifier:
        page.keyboard.down(modifier)
    page.mouse.move(*at(*start))
    page.mouse.down()
    x, y = start
    for fx, fy in moves:
        # Small steps with pauses, as a hand moves: the lasso samples the pointer over time.
        for step in range(1, 9):
            page.mouse.move(*at(x + (fx - x) * step / 8, y + (fy - y) * step / 8))
            page.wait_for_timeout(15)
        x, y = fx, fy
    page.mouse.up()
    if modifier:
        page.keyboard.up(modifier)


def test_typed_query_updates_the_top_k_table(lab: LabServer, lab_page: Page) -> None:
    panel = open_notebook(lab_page, lab, "explorer.ipynb")
    cell = run_cell(panel, CELL)
    widget = cell.locator(".jp-OutputArea-output")
    expect(widget.locator(".jme-explorer[data-drawn]")).to_be_visible(timeout=60_000)
    screenshot(widget, "explorer-2k-initial.png")
    check_explorer_queries(lab_page, widget)
    # The query's hits are ranked in the table and on the map (a key explains the marks).
    expect(widget.locator("table.jme-topk .jme-rank").first).to_have_text("1")
    expect(widget.locator(".jme-keys")).to_contain_text("query match")
    # The marks and colours follow the theme (JupyterLab's CSS variables).
    execute_command(lab_page, "apputils:change-theme", {"theme": "JupyterLab Dark"})
    expect(lab_page.locator("body[data-jp-theme-light='false']")).to_have_count(1)
    lab_page.wait_for_timeout(1500)
    screenshot(widget, "explorer-2k-dark.png")
    execute_command(lab_page, "apputils:change-theme", {"theme": "JupyterLab Light"})
    expect(lab_page.locator("body[data-jp-theme-light='true']")).to_have_count(1)


def test_map_pans_lassoes_and_recolours(lab_page: Page) -> None:
    widget = lab_page.locator(".jp-OutputArea-output", has=lab_page.locator(".jme-explorer")).first
    canvas = widget.locator("canvas.jme-map")
    # Without a query the points show their column's colours again...
    query = widget.locator("input.jme-query")
    query.fill("")
    query.press("Enter")
    # ...categories, with a legend sorted by count.
    legend = widget.locator(".jme-legend-item")
    expect(legend).to_have_count(5)
    expect(legend.first).to_contain_text(re.compile("money|pets|baking"))
    # Pan (a plain drag), then lasso with the shift key: the selection reaches Python.
    drag(lab_page, canvas, (0.5, 0.5), [(0.6, 0.55)])
    drag(
        lab_page,
        canvas,
        (0.02, 0.02),
        [(0.98, 0.02), (0.98, 0.98), (0.02, 0.98), (0.02, 0.03)],
        "Shift",
    )
    expect(widget.locator(".jme-selection-count")).to_contain_text("selected", timeout=30_000)
    expect(widget.locator(".jme-status")).to_contain_text("selected")
    # The shift-drag selected points, not the page's text.
    assert lab_page.evaluate("() => String(window.getSelection())") == ""
    screenshot(widget, "explorer-2k-lasso.png")
    # Colour by a numeric column: a colour bar instead of the category buttons.
    widget.locator("select.jme-color").select_option("length")
    expect(widget.locator(".jme-legend .jme-ramp")).to_be_visible(timeout=30_000)
    expect(legend).to_have_count(0)
    # Clusters are looked for in the kernel's background thread (8 points make none).
    expect(widget.locator(".jme-map-status")).to_contain_text("No clusters found", timeout=120_000)
    screenshot(widget, "explorer-2k-numeric.png")


def test_wheel_scrolls_the_page_unless_ctrl_is_held(lab_page: Page) -> None:
    widget = lab_page.locator(".jme-explorer").first
    canvas = widget.locator("canvas.jme-map")
    lab_page.mouse.move(0, 0)  # leaving the map forgets an earlier click into it
    canvas.hover()
    lab_page.mouse.wheel(0, 200)
    # The map did not take the wheel: its hint says how to zoom.
    expect(widget.locator(".jme-wheel-hint.jme-visible")).to_be_visible()


def test_100k_points_draw_and_pan_without_long_tasks(lab: LabServer, lab_page: Page) -> None:
    panel = open_notebook(lab_page, lab, "explorer-100k.ipynb")
    cell = run_cell(panel, BIG_CELL, timeout=300_000)
    widget = cell.locator(".jp-OutputArea-output")
    expect(widget.locator(".jme-explorer[data-drawn]")).to_be_visible(timeout=120_000)
    screenshot(widget, "explorer-100k.png")
    lab_page.evaluate(WATCH_LONG_TASKS)
    canvas = widget.locator("canvas.jme-map")
    for _ in range(3):
        drag(lab_page, canvas, (0.4, 0.5), [(0.6, 0.5)])
    lab_page.wait_for_timeout(1000)
    long_tasks = lab_page.evaluate("() => window.jmeLongTasks")
    print(f"long tasks while panning 100k points (ms): {long_tasks}")
    # Cluster labels (found in the kernel's background thread) are drawn on the map.
    expect(widget.locator(".jme-cluster-toggle")).to_be_visible(timeout=300_000)
    lab_page.wait_for_timeout(3000)
    screenshot(widget, "explorer-100k-clusters.png")
    # The static PNG was updated with the clusters (update_display): the re-rendered output
    # shows one explorer, not the old one beside the new one.
    expect(widget.locator(".jme-explorer:visible")).to_have_count(1)


def test_disposed_maps_give_their_webgl_context_back(lab_page: Page) -> None:
    # Chromium keeps 16 WebGL contexts a page and takes the oldest back beyond that: maps
    # that kept theirs after a re-run would cost the maps still shown (here `older`) theirs.
    older, cell = show_and_rerun(lab_page, "newer")
    # The maps of the re-runs that are gone again (all but the last) let their context go...
    gone = lab_page.evaluate(
        "() => window.jmeGlCanvases.filter(c => !c.isConnected)"
        ".map(c => c.getContext('webgl').isContextLost())"
    )
    lab_page.evaluate("() => { window.jmeGlCanvases = null; }")
    assert len(gone) >= 19
    assert all(gone)
    # ...and no map shown lost its own.
    expect(lab_page.get_by_text("Too many maps are open")).to_have_count(0)
    maps = lab_page.locator("canvas.jme-points")
    lost = maps.evaluate_all("cs => cs.filter(c => c.getContext('webgl').isContextLost()).length")
    assert lost == 0
    # The newest map and `older` draw their points (300 points of 6 px).
    assert drawn_pixels(cell.locator(".jme-map-box")) > 1000
    assert drawn_pixels(older.locator(".jme-map-box")) > 1000


def test_a_model_shown_again_keeps_one_live_map_per_output(lab_page: Page) -> None:
    # The same explorer in two cells shares one display id: showing it again renders the
    # first cell's output anew, in the same output node, and the view taken out of it must be
    # retired (its WebGL context given back), not left listening on a detached canvas.
    first, cell = show_and_rerun(lab_page, "older")
    live = lab_page.evaluate(
        "() => window.jmeGlCanvases.filter(c => !c.getContext('webgl').isContextLost()).length"
    )
    lab_page.evaluate("() => { window.jmeGlCanvases = null; }")
    assert live <= 2  # the maps now in the two outputs
    expect(lab_page.get_by_text("Too many maps are open")).to_have_count(0)
    assert drawn_pixels(first.locator(".jme-map-box:visible")) > 1000
    assert drawn_pixels(cell.locator(".jme-map-box:visible")) > 1000


def test_map_draws_a_sample_while_moving(lab_page: Page) -> None:
    # The 100k-point explorer shown again, with a selection, after the counter is in place.
    lab_page.evaluate(COUNT_DRAWN_POINTS)
    panel = activate_notebook(lab_page, "explorer-100k.ipynb")
    cell = run_cell(panel, "big_explorer.selection = list(range(0, 100_000, 50))\nbig_explorer")
    widget = cell.locator(".jp-OutputArea-output")
    expect(widget.locator(".jme-explorer[data-drawn]")).to_be_visible(timeout=60_000)
    selection = widget.locator(".jme-selection-count")
    expect(selection).to_contain_text("2,000 selected")
    points = widget.locator("canvas.jme-points").element_handle()
    drawn = lambda: points.evaluate("c => c.jmePointsDrawn || 0")  # noqa: E731
    reset = lambda: points.evaluate("c => { c.jmePointsDrawn = 0; }")  # noqa: E731
    all_drawn = "([c, n]) => c.jmePointsDrawn === n"
    lab_page.wait_for_function(all_drawn, arg=[points, BIG_POINTS])
    # Press on the map, keep it pressed and pan: each frame draws the sample.
    canvas = widget.locator("canvas.jme-map")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    lab_page.mouse.move(x, y)
    lab_page.mouse.down()
    for step in range(1, 6):
        reset()
        lab_page.mouse.move(x + 10 * step, y)
        lab_page.wait_for_function("c => c.jmePointsDrawn > 0", arg=points)
        assert MIN_MOVING_POINTS <= drawn() <= MOVING_POINTS  # fewer on a slow machine
    # Still pressed, for longer than the map waits to settle, then moving on: still the sample.
    reset()
    lab_page.wait_for_timeout(400)
    lab_page.mouse.move(x + 60, y)
    lab_page.wait_for_function("c => c.jmePointsDrawn > 0", arg=points)
    assert MIN_MOVING_POINTS <= drawn() <= MOVING_POINTS
    # Released: all points once the view rests, the selection as it was.
    reset()
    lab_page.mouse.up()
    lab_page.wait_for_function(all_drawn, arg=[points, BIG_POINTS], timeout=5_000)
    expect(selection).to_contain_text("2,000 selected")
    screenshot(widget, "explorer-100k-settled.png")


def test_status_bar_shows_the_loaded_model(lab_page: Page) -> None:
    item = lab_page.locator(".jme-status-item")
    expect(item).to_contain_text("all-MiniLM-L6-v2", timeout=30_000)
    screenshot(lab_page, "explorer-lab.png")


def test_no_errors_in_the_page(lab_page: Page) -> None:
    errors = [e for e in page_errors(lab_page) if "jme" in e or "explorer" in e.lower()]
    assert errors == []
