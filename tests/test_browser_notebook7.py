"""Notebook 7 in a real browser: the magics run in a kernel of a real Notebook 7 server (and use
its worker), the similarity explorer renders and answers typed queries, and the lab extension
(built for JupyterLab; Notebook 7 loads it too) activates without JupyterLab's status bar."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from .browser import (
    LabServer,
    check_explorer_queries,
    open_app,
    open_notebook7,
    page_errors,
    requires_chromium,
    run_cell,
    run_from_palette,
    screenshot,
    start_notebook7,
)

pytest_plugins = ("tests.browser",)
pytestmark = [requires_chromium, pytest.mark.slow]

# Notebook 7.6 throws this on every page, also without this package (its server and lab
# extensions disabled): JupyterLab's shortcuts plugin reads the settings schema of plugins that
# Notebook does not ship (the JupyterLab it requires installs their schemas, e.g. logconsole's,
# into the application folder both share). Known upstream error; any other one fails the tests.
UPSTREAM_ERROR = re.compile(
    r"pageerror: Cannot read properties of undefined \(reading 'schema'\) "
    r"\[at static/notebook/notebook_core\.\w+\.js\]"
)
PLUGIN = "jupyter-mlx-embed:plugin"

EXPLORER = """\
%%embed notes
How do I reset my password?
The quarterly revenue grew by twelve percent.
Our cat likes to sleep on the warm laptop.
Preheat the oven before baking the bread.
The train to the airport leaves every twenty minutes.
Sales figures improved compared with last year.
My dog chased the ball into the lake.
Knead the dough for ten minutes until it is smooth.
"""
SHOW_EXPLORER = """\
topics = ["account", "money", "pets", "baking", "travel", "money", "pets", "baking"]
explorer = notes.explore(labels=topics)
explorer
"""


@pytest.fixture(scope="module")
def notebook7(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """A Notebook 7 server with this package's server and lab extensions."""
    with start_notebook7(tmp_path_factory.mktemp("notebook7")) as server:
        yield server


@pytest.fixture(scope="module")
def panel(browser: Browser, notebook7: LabServer) -> Iterator[Locator]:
    """A notebook open on its own Notebook 7 page, with a running kernel, shared by the
    module's tests (its page is ``panel.page``)."""
    panel = open_notebook7(browser, notebook7, "notebook7.ipynb")
    try:
        yield panel
    finally:
        panel.page.context.close()


def test_magics_use_the_notebook_servers_worker(panel: Locator) -> None:
    run_cell(panel, "%load_ext jupyter_mlx_embed")
    cell = run_cell(
        panel,
        "import jupyter_mlx_embed as jme\n"
        "vector = %embed Notebooks are great for exploring text.\n"
        "print(jme.get_transport().kind, vector.shape, round(float((vector**2).sum()), 3))",
    )
    expect(cell.locator(".jp-OutputArea-output")).to_have_text("server (384,) 1.0")
    screenshot(panel.page, "notebook7-magics.png")


def test_explorer_query_updates_the_top_k_table(panel: Locator) -> None:
    run_cell(panel, EXPLORER)
    cell = run_cell(panel, SHOW_EXPLORER)
    check_explorer_queries(panel.page, cell.locator(".jp-OutputArea-output"), "notebook7-")


def _check_plugin_without_status_bar(page: Page, server: LabServer, name: str) -> None:
    """The lab extension activated on this Notebook 7 page without its status-bar item (it
    needs JupyterLab's status bar, which Notebook 7 lacks), and its endpoint command runs from
    the command palette."""
    assert page.evaluate("id => window.jupyterapp.isPluginActivated(id)", PLUGIN)
    expect(page.locator(".jme-status-item")).to_have_count(0)
    run_from_palette(page, "Embeddings: Show OpenAI Endpoint")
    dialog = page.locator(".jp-Dialog.jme-endpoint-dialog")
    expect(dialog.locator(".jme-endpoint-url pre")).to_have_text(f"{server.url}v1")
    assert server.token not in dialog.inner_html()
    screenshot(page, f"{name}.png")
    dialog.get_by_role("button", name="Close", exact=True).click()
    expect(dialog).to_be_hidden()


def test_lab_extension_works_on_the_notebook_page(panel: Locator, notebook7: LabServer) -> None:
    _check_plugin_without_status_bar(panel.page, notebook7, "notebook7-endpoint-dialog")


def test_lab_extension_works_on_the_tree_page(browser: Browser, notebook7: LabServer) -> None:
    page = open_app(browser, notebook7, "tree")
    try:
        expect(page.locator(".jp-DirListing-item", has_text="notebook7.ipynb")).to_be_visible()
        _check_plugin_without_status_bar(page, notebook7, "notebook7-tree-endpoint-dialog")
        assert _errors(page) == []
    finally:
        page.context.close()


def test_no_errors_in_the_notebook_page(panel: Locator) -> None:
    assert _errors(panel.page) == []


def _errors(page: Page) -> list[str]:
    """The page's errors but the known upstream one."""
    return [error for error in page_errors(page) if not UPSTREAM_ERROR.fullmatch(error)]


def test_server_log_has_no_extension_errors(notebook7: LabServer) -> None:
    log = notebook7.log.read_text()
    assert "jupyter_mlx_embed | extension was successfully loaded" in log
    assert not re.search(r"Traceback|\[E ", log), log
