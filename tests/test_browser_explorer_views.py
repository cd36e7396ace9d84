"""The explorer's views in a real browser, as issue #27's walkthrough used them: a saved
notebook reopened after a server restart shows the static map (JupyterLab and Notebook 7);
the view is fitted again when the UMAP map replaces the PCA one and when the output is
resized (not after the user moved it); at 960 px the side panel goes under the map; cluster
labels by zoom, kept over query hits and selections, and gone with the points a legend
filter hides; the filter greys out what does not match (Python's pandas query, the keyword
box, a numeric range) and can limit the ranking. Screenshots: test-artifacts/views-*.png."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Locator, Page, expect

from .browser import (
    LabServer,
    execute_command,
    open_app,
    open_lab,
    open_notebook,
    open_notebook7,
    page_errors,
    requires_chromium,
    run_cell,
    screenshot,
    screenshot_path,
    start_lab,
    start_notebook7,
)

pytest_plugins = ("tests.browser",)
pytestmark = [requires_chromium, pytest.mark.slow]

# 3,000 random points in 24 groups, texts naming their group: the map has dense regions
# (clusters) joined into coarse regions; `size` is a numeric column.
GROUPS_CELL = """\
import numpy as np, pandas as pd
import jupyter_mlx_embed as jme
from jupyter_mlx_embed.embeddings import Embeddings
rng = np.random.default_rng(0)
words = ("apple river engine violin glacier pepper comet harbor falcon marble tulip "
         "lantern cactus ember meadow quartz saddle tundra velvet walnut yacht zephyr "
         "anchor bramble").split()
centres = rng.normal(size=(24, 64)) * 3
group = rng.integers(0, 24, 3000)
vectors = (centres[group] + rng.normal(size=(3000, 64))).astype(np.float32)
texts = [f"{words[g]} {words[(g * 7) % 24]} sample {i}" for i, g in enumerate(group)]
table = pd.DataFrame({"text": texts, "kind": [f"kind {g % 4}" for g in group],
                      "size": rng.gamma(2.0, 3.0, 3000)})
notes = Embeddings(texts, vectors, "all-MiniLM-L6-v2")
explorer = jme.SimilarityExplorer(notes, data=table, color="kind", tooltip=["size"],
                                  projection={projection!r})
explorer.wait(600)
explorer
"""


def groups_cell(projection: str = "pca") -> str:
    return GROUPS_CELL.replace("{projection!r}", repr(projection))


def drawn_pixels(map_box: Locator) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Where the points are drawn in the map box: the pixels' x and y (CSS px) and the box's
    width and height, with the overlay (labels, marks) hidden."""
    png = map_box.screenshot(style=".jme-overlay, .jme-wheel-hint, .jme-tip { display: none; }")
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    colours, counts = np.unique(pixels.reshape(-1, 3), axis=0, return_counts=True)
    background = colours[counts.argmax()]
    ys, xs = np.nonzero(np.abs(pixels - background).max(axis=2) > 40)
    assert len(xs) > 100, "no points drawn"
    return xs, ys, pixels.shape[1], pixels.shape[0]


def drawn_box(map_box: Locator) -> tuple[float, float, float, float]:
    """The share of the map box the drawn points span: (left, top, right, bottom), 0..1; the
    1st and 99th percentiles of the drawn pixels."""
    xs, ys, w, h = drawn_pixels(map_box)
    left, right = np.percentile(xs, [1, 99]) / w
    top, bottom = np.percentile(ys, [1, 99]) / h
    return float(left), float(top), float(right), float(bottom)


def assert_fitted(map_box: Locator) -> None:
    """The points fill most of the map's width or height (a fitted view)."""
    left, top, right, bottom = drawn_box(map_box)
    assert max(right - left, bottom - top) > 0.7, (left, top, right, bottom)


def shoot(widget: Locator, name: str) -> None:
    """A screenshot of the explorer's header, filter bar, map and legend (not its tables and
    heatmap, which make it taller than the page)."""
    top = widget.locator(".jme-header")
    top.evaluate("header => header.scrollIntoView({ block: 'start' })")
    first, last = top.bounding_box(), widget.locator(".jme-left").bounding_box()
    assert first and last
    clip = {
        "x": last["x"] - 8,
        "y": first["y"] - 8,
        "width": widget.bounding_box()["width"],  # type: ignore[index]
        "height": last["y"] + last["height"] - first["y"] + 16,
    }
    widget.page.screenshot(path=screenshot_path(name), clip=clip)  # type: ignore[arg-type]


def fitted_labels(widget: Locator) -> list[str]:
    """The cluster labels drawn once the view is reset (fitted)."""
    widget.locator(".jme-reset").click()
    widget.page.wait_for_timeout(500)
    return labels(widget.locator(".jme-map-box"))


def labels(map_box: Locator) -> list[str]:
    """The cluster labels drawn on the map (its data-labels hook)."""
    text = map_box.get_attribute("data-labels") or ""
    return [line for line in text.split("\n") if line]


def zoom_in(page: Page, map_box: Locator, zoom: float) -> None:
    """Ctrl + wheel over the drawn point nearest the middle of the map, until the view is
    zoomed ``zoom`` times (the map box's data-zoom)."""
    box = map_box.bounding_box()
    assert box is not None
    xs, ys, w, h = drawn_pixels(map_box)
    nearest = int(np.argmin((xs - w / 2) ** 2 + (ys - h / 2) ** 2))
    page.mouse.move(box["x"] + float(xs[nearest]), box["y"] + float(ys[nearest]))
    page.keyboard.down("Control")
    for _ in range(40):
        if float(map_box.get_attribute("data-zoom") or 1) >= zoom:
            break
        page.mouse.wheel(0, -40)
        page.wait_for_timeout(100)
    page.keyboard.up("Control")
    page.wait_for_timeout(400)
    assert float(map_box.get_attribute("data-zoom") or 1) >= zoom


def kernel_value(panel: Locator, expression: str) -> object:
    """The JSON value of ``expression`` in the notebook's kernel (a cell prints it)."""
    cell = run_cell(panel, f"import json as _json; print(_json.dumps({expression}))")
    text = cell.locator(".jp-OutputArea-output").last.inner_text()
    return json.loads(text)


# Saved and reopened ---------------------------------------------------------------------


SAVED_CELL = """\
import jupyter_mlx_embed as jme
import pandas as pd
texts = ["How do I reset my password?", "The quarterly revenue grew by twelve percent.",
         "Our cat likes to sleep on the warm laptop.", "Preheat the oven before baking bread.",
         "My dog chased the ball into the lake.", "Sales figures improved on last year."]
explorer = jme.explore(pd.DataFrame({"text": texts}), "text", projection="pca")
explorer.wait(120)
explorer
"""


def save_explorer_notebook(panel: Locator) -> None:
    """Run SAVED_CELL in ``panel``'s notebook, wait for the map, and save the notebook."""
    cell = run_cell(panel, SAVED_CELL)
    expect(cell.locator(".jme-explorer[data-drawn]")).to_be_visible(timeout=60_000)
    panel.page.evaluate(
        "() => window.jupyterapp.commands.execute('docmanager:save').then(() => null)"
    )


def saved_outputs(root: Path, name: str) -> list[dict[str, object]]:
    notebook = json.loads((root / name).read_text())
    return [output for cell in notebook["cells"] for output in cell.get("outputs", [])]


def check_static_map(page: Page, name: str) -> None:
    """The reopened notebook shows the saved PNG, not ipywidgets' error."""
    snapshot = page.locator(".jme-snapshot img")
    expect(snapshot).to_be_visible(timeout=60_000)
    expect(page.locator(".jp-OutputArea-output", has_text="model not found")).to_have_count(0)
    size = snapshot.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert size[0] > 200 and size[1] > 100
    screenshot(page, name)


def test_reopened_notebook_shows_the_static_map_in_jupyterlab(
    browser: Browser, tmp_path: Path
) -> None:
    with start_lab(tmp_path) as lab:
        page = open_lab(browser, lab)
        save_explorer_notebook(open_notebook(page, lab, "saved.ipynb"))
        page.context.close()
    outputs = saved_outputs(tmp_path / "notebooks", "saved.ipynb")
    explorer = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o["data"]]
    assert explorer and "image/png" in explorer[0]["data"]
    assert explorer[0]["metadata"]["jupyter_mlx_embed"] == {"explorer": 1}
    # The server restarted: the widget's model is gone with the old kernel.
    with start_lab(tmp_path) as lab:
        page = open_lab(browser, lab)
        execute_command(page, "docmanager:open", {"path": "saved.ipynb"})
        check_static_map(page, "views-reopened-lab.png")
        # Running the cell again brings the live explorer back in place of the picture.
        page.locator(".jp-Cell").first.click()
        execute_command(page, "notebook:run-cell")
        expect(page.locator(".jme-explorer[data-drawn]")).to_be_visible(timeout=120_000)
        expect(page.locator(".jme-snapshot")).to_have_count(0)
        assert not [e for e in page_errors(page) if "jupyter-mlx-embed" in e]
        page.context.close()


def test_reopened_notebook_shows_the_static_map_in_notebook7(
    browser: Browser, tmp_path: Path
) -> None:
    with start_notebook7(tmp_path) as server:
        panel = open_notebook7(browser, server, "saved7.ipynb")
        save_explorer_notebook(panel)
        panel.page.context.close()
    with start_notebook7(tmp_path) as server:
        page = open_app(browser, server, "notebooks/saved7.ipynb")
        check_static_map(page, "views-reopened-notebook7.png")
        page.context.close()


# Fitting and layout -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def groups_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    with start_lab(tmp_path_factory.mktemp("views")) as server:
        yield server


@pytest.fixture(scope="module")
def groups(browser: Browser, groups_lab: LabServer) -> Iterator[tuple[Locator, Locator]]:
    """JupyterLab at 1280 px with GROUPS_CELL run (a UMAP map): its notebook panel and the
    explorer's output."""
    page = open_lab(browser, groups_lab)
    page.set_viewport_size({"width": 1280, "height": 1000})  # the map and legend in view
    panel = open_notebook(page, groups_lab, "groups.ipynb")
    cell = run_cell(panel, groups_cell("umap"), timeout=600_000)
    widget = cell.locator(".jme-explorer")
    expect(widget.locator(".jme-meta")).to_contain_text("UMAP", timeout=60_000)
    yield panel, widget
    page.context.close()


def test_the_umap_map_is_fitted_to_the_view(groups: tuple[Locator, Locator]) -> None:
    _, widget = groups
    map_box = widget.locator(".jme-map-box")
    widget.page.wait_for_timeout(500)
    assert_fitted(map_box)
    shoot(widget, "views-umap-fitted.png")


# Runs a new last cell of the notebook whose panel has this id, its outputs not displayed.
RUN_COLLAPSED = """([id, code]) => {
  const app = window.jupyterapp;
  const panel = Array.from(app.shell.widgets('main')).find(w => w.id === id);
  app.shell.activateById(id);
  const notebook = panel.content;
  notebook.activeCellIndex = notebook.widgets.length - 1;
  app.commands.execute('notebook:insert-cell-below');
  const cell = notebook.activeCell;
  cell.model.sharedModel.setSource(code);
  cell.outputArea.node.style.display = 'none';
  void app.commands.execute('notebook:run-cell');
  return notebook.widgets.indexOf(cell);
}"""


def test_a_map_drawn_while_hidden_is_fitted_when_shown(groups: tuple[Locator, Locator]) -> None:
    # As after Run All: the output is drawn while it cannot be seen (here: display: none).
    panel, _ = groups
    code = "hidden = notes.explore(projection='pca'); hidden"
    index = panel.page.evaluate(RUN_COLLAPSED, [panel.get_attribute("id"), code])
    cell = panel.locator(".jp-Cell").nth(index)
    widget = cell.locator(".jme-explorer")
    expect(widget).to_have_attribute("data-drawn", re.compile(r"\d"), timeout=60_000)
    panel.page.wait_for_timeout(1000)
    assert not widget.is_visible()
    panel.page.evaluate(
        "([id, i]) => { const app = window.jupyterapp;"
        " const panel = Array.from(app.shell.widgets('main')).find(w => w.id === id);"
        " panel.content.widgets[i].outputArea.node.style.display = ''; }",
        [panel.get_attribute("id"), index],
    )
    expect(widget.locator("canvas.jme-map")).to_be_visible()
    panel.page.wait_for_timeout(800)
    assert_fitted(widget.locator(".jme-map-box"))
    run_cell(panel, "hidden.close()")


def test_narrow_outputs_put_the_side_panel_under_a_fitted_map(
    groups: tuple[Locator, Locator],
) -> None:
    panel, widget = groups
    page = panel.page
    map_box = widget.locator(".jme-map-box")
    try:
        page.set_viewport_size({"width": 960, "height": 1000})
        expect(widget).to_have_class(re.compile(r"\bjme-narrow\b"))
        page.wait_for_timeout(600)
        left = widget.locator(".jme-left").bounding_box()
        side = widget.locator(".jme-side").bounding_box()
        assert left and side and side["y"] >= left["y"] + left["height"] - 1
        box, whole = map_box.bounding_box(), widget.bounding_box()
        assert box and whole and box["width"] > whole["width"] - 40  # the map spans the output
        assert_fitted(map_box)
        screenshot(page, "views-960px.png")
    finally:
        page.set_viewport_size({"width": 1280, "height": 1000})
    page.wait_for_timeout(600)
    assert_fitted(map_box)


def test_labels_coarse_at_full_view_finer_when_zoomed(groups: tuple[Locator, Locator]) -> None:
    panel, widget = groups
    page = panel.page
    map_box = widget.locator(".jme-map-box")
    clusters = kernel_value(panel, "[[c['label'], c['level']] for c in explorer.clusters]")
    assert isinstance(clusters, list)
    coarse = {label for label, level in clusters if level == 0}
    fine = {label for label, level in clusters if level == 1}
    assert 2 <= len(coarse) <= 8 and len(fine) > len(coarse)
    shown = fitted_labels(widget)
    assert shown and set(shown) <= coarse
    zoom_in(page, map_box, 3)
    zoomed = labels(map_box)
    shoot(widget, "views-labels-zoomed-debug.png")
    assert zoomed and set(zoomed) & fine, zoomed
    shoot(widget, "views-labels-zoomed.png")
    widget.locator(".jme-reset").click()
    page.wait_for_timeout(500)
    assert set(labels(map_box)) == set(shown)


def test_labels_stay_over_query_hits_and_selections(groups: tuple[Locator, Locator]) -> None:
    panel, widget = groups
    page = panel.page
    map_box = widget.locator(".jme-map-box")
    before = fitted_labels(widget)
    # Query hits sit in the clusters' middles (the texts name their group's words).
    query = widget.locator("input.jme-query")
    query.fill(before[0].split(" · ")[0])
    query.press("Enter")
    expect(widget.locator("table.jme-topk tr.jme-hit")).to_have_count(5, timeout=60_000)
    page.wait_for_timeout(500)
    assert labels(map_box) == before
    # A selection of every point: the labels stay drawn over it.
    run_cell(panel, "explorer.selection = list(range(3000))")
    expect(widget.locator(".jme-selection-count")).to_contain_text("3,000 selected")
    page.wait_for_timeout(500)
    assert labels(map_box) == before
    shoot(widget, "views-labels-over-hits-and-selection.png")
    run_cell(panel, "explorer.selection = []; explorer.query = ''")


def test_legend_filter_hides_the_labels_of_hidden_clusters(groups: tuple[Locator, Locator]) -> None:
    panel, widget = groups
    page = panel.page
    map_box = widget.locator(".jme-map-box")
    everything = fitted_labels(widget)
    widget.locator(".jme-legend-item", has_text="kind 0").click()
    page.wait_for_timeout(500)
    alone = labels(map_box)
    assert len(alone) < len(everything)
    # The labels left are those of clusters mostly of "kind 0" (a group's kind is group % 4).
    share = kernel_value(
        panel,
        "{c['label']: float((table['kind'].iloc[c['members']] == 'kind 0').mean())"
        " for c in explorer.clusters}",
    )
    assert isinstance(share, dict)
    assert all(share[label] >= 0.5 for label in alone), (alone, share)
    widget.locator(".jme-legend-item", has_text="kind 0").click()
    page.wait_for_timeout(500)
    assert labels(map_box) == everything


def test_filter_greys_out_and_limits_the_ranking(groups: tuple[Locator, Locator]) -> None:
    panel, widget = groups
    bar = widget.locator(".jme-filter-bar")
    run_cell(panel, "explorer.filter = \"kind == 'kind 1' and size > 2\"")
    expected = kernel_value(panel, "int(((table.kind == 'kind 1') & (table['size'] > 2)).sum())")
    expect(bar.locator(".jme-filter-expr")).to_have_text("kind == 'kind 1' and size > 2")
    expect(bar.locator(".jme-filter-count")).to_have_text(f"{expected:,} match")
    shoot(widget, "views-filter-python.png")
    # The keyword narrows it further; the ranking limited to the matches finds only them.
    bar.locator("input.jme-keyword").fill("sample 1")
    bar.locator("input.jme-keyword").press("Enter")
    narrowed = kernel_value(
        panel,
        "[int(i) for i in explorer.filtered]",
    )
    assert isinstance(narrowed, list) and 0 < len(narrowed) < expected
    expect(bar.locator(".jme-filter-count")).to_have_text(f"{len(narrowed):,} match")
    bar.locator("input.jme-search-filtered").check()
    query = widget.locator("input.jme-query")
    query.fill("comet harbor")
    query.press("Enter")
    expect(widget.locator("table.jme-topk tr.jme-hit")).to_have_count(5, timeout=60_000)
    hits = kernel_value(panel, "[h['index'] for h in explorer.top_k]")
    assert isinstance(hits, list) and set(hits) <= set(narrowed)
    shoot(widget, "views-filter-keyword.png")
    # Clearing: the chip's button clears the Python filter, an empty box the keyword.
    bar.locator(".jme-filter-clear").click()
    bar.locator("input.jme-keyword").fill("")
    bar.locator("input.jme-keyword").press("Enter")
    expect(bar.locator(".jme-filter-count")).to_have_text("")
    assert kernel_value(panel, "explorer.filter is None and len(explorer.filtered)") == 3000
    run_cell(panel, "explorer.query = ''; explorer.search_filtered = False")


def test_numeric_range_greys_out_the_rest(groups: tuple[Locator, Locator]) -> None:
    panel, widget = groups
    run_cell(panel, "explorer.color_by = 'size'")
    low = widget.locator("input.jme-range-lo")
    expect(low).to_be_visible()
    low.evaluate(
        "(input, value) => { input.value = value; input.dispatchEvent(new Event('change')); }",
        "40",  # of 254 steps from the lowest value to the highest
    )
    bar = widget.locator(".jme-filter-bar")
    expected = kernel_value(
        panel,
        "int((table['size'] >= explorer.value_range[0]).sum())"
        " if explorer.value_range[1] == table['size'].max() else -1",
    )
    expect(bar.locator(".jme-filter-count")).to_have_text(f"{expected:,} match")
    shoot(widget, "views-filter-range.png")
    run_cell(panel, "explorer.color_by = 'kind'")
    expect(bar.locator(".jme-filter-count")).to_have_text("")


def test_points_sized_by_a_column(groups: tuple[Locator, Locator]) -> None:
    panel, widget = groups
    map_box = widget.locator(".jme-map-box")
    widget.locator(".jme-reset").click()
    expect(map_box).to_have_attribute("data-sized", "false")
    widget.locator("select.jme-size").select_option("size")
    assert kernel_value(panel, "explorer.size_by") == "size"
    expect(map_box).to_have_attribute("data-sized", "true")
    panel.page.wait_for_timeout(800)
    shoot(widget, "views-size-by.png")
    widget.locator("select.jme-size").select_option("")
    expect(map_box).to_have_attribute("data-sized", "false")
    assert kernel_value(panel, "explorer.scale_codes == b''") is True


def test_points_faded_by_a_column(groups: tuple[Locator, Locator]) -> None:
    """The opacity menu: points faded by a column (regl-scatterplot's opacity by value
    rather than by density), sizes by the same column as well, then off."""
    panel, widget = groups
    map_box = widget.locator(".jme-map-box")
    expect(map_box).to_have_attribute("data-faded", "false")
    widget.locator("select.jme-opacity").select_option("size")
    assert kernel_value(panel, "explorer.opacity_by") == "size"
    expect(map_box).to_have_attribute("data-faded", "true")
    expect(map_box).to_have_attribute("data-sized", "false")
    run_cell(panel, "explorer.size_by = 'size'")
    expect(map_box).to_have_attribute("data-sized", "true")
    expect(map_box).to_have_attribute("data-faded", "true")
    panel.page.wait_for_timeout(800)
    shoot(widget, "views-opacity-by.png")
    widget.locator("select.jme-opacity").select_option("")
    expect(map_box).to_have_attribute("data-faded", "false")
    run_cell(panel, "explorer.size_by = ''")
    expect(map_box).to_have_attribute("data-sized", "false")
    assert kernel_value(panel, "explorer.scale_codes == b''") is True


def test_density_contours_per_category(groups: tuple[Locator, Locator]) -> None:
    panel, widget = groups
    page = panel.page
    map_box = widget.locator(".jme-map-box")
    widget.locator(".jme-reset").click()
    page.wait_for_timeout(400)
    before = map_box.screenshot(style=".jme-points, .jme-map { visibility: hidden; }")
    widget.locator(".jme-density-toggle input").check()
    expect(widget.locator(".jme-density-toggle input")).to_be_checked()
    colors = kernel_value(panel, "sorted({c['color'] for c in explorer.contours})")
    assert colors == sorted(kernel_value(panel, "explorer.color_palette"))  # type: ignore[arg-type]
    page.wait_for_timeout(400)
    # The overlay alone (points hidden): the lines are drawn in the categories' colours.
    after = map_box.screenshot(style=".jme-points, .jme-map { visibility: hidden; }")
    lines = np.asarray(Image.open(io.BytesIO(after)).convert("RGB")).astype(int)
    plain = np.asarray(Image.open(io.BytesIO(before)).convert("RGB")).astype(int)
    assert (np.abs(lines - plain).max(axis=2) > 40).sum() > 500
    shoot(widget, "views-density.png")
    widget.locator(".jme-density-toggle input").uncheck()
    page.wait_for_timeout(400)
    assert kernel_value(panel, "explorer.contours") == []


def test_no_errors_from_this_package(groups: tuple[Locator, Locator]) -> None:
    panel, _ = groups
    errors = [e for e in page_errors(panel.page) if "jupyter-mlx-embed" in e or "explorer" in e]
    assert not errors, errors
