"""The explorer's rerank switch in a real browser (#25): JupyterLab whose model root holds a
reranker, an explorer opened with ``reranker=``; a typed query's best matches are reranked
(each showing its cosine beside the reranker's score) while the map stays coloured by
similarity, and switching the reranker off shows the similarity ranking again. Screenshot:
test-artifacts/explorer-rerank.png."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from .browser import LabServer, open_lab, open_notebook, requires_chromium, run_cell, screenshot
from .browser import start_lab as start_lab_server
from .test_browser_explorer import CELL as CELL_NOTES

pytest_plugins = ("tests.browser",)
pytestmark = [requires_chromium, pytest.mark.slow]

# The notes of the explorer tests, with the reranker named by the test (RERANKER).
CELL = CELL_NOTES.replace(
    'tooltip=["topic"], projection="pca")', 'projection="pca", reranker=RERANKER)'
)


@pytest.fixture(scope="module")
def rerank_lab(tmp_path_factory: pytest.TempPathFactory, ms_marco: Path) -> Iterator[LabServer]:
    """JupyterLab whose model root holds the reranker."""
    extra = f"--MLXEmbed.model_roots={ms_marco.parent}"
    with start_lab_server(tmp_path_factory.mktemp("lab"), extra) as server:
        yield server


@pytest.fixture(scope="module")
def page(browser: Browser, rerank_lab: LabServer) -> Iterator[Page]:
    page = open_lab(browser, rerank_lab)
    try:
        yield page
    finally:
        page.context.close()


def test_query_box_reranks_its_best_matches(page: Page, rerank_lab: LabServer, ms_marco) -> None:
    panel = open_notebook(page, rerank_lab, "rerank.ipynb")
    cell = run_cell(panel, f"RERANKER = {ms_marco.name!r}\n" + CELL)
    widget = cell.locator(".jp-OutputArea-output")
    expect(widget.locator(".jme-explorer[data-drawn]")).to_be_visible(timeout=60_000)
    toggle = widget.locator("input.jme-rerank")
    expect(toggle).to_be_visible()
    expect(toggle).to_be_checked()

    query = widget.locator("input.jme-query")
    query.click()
    query.type("I forgot my login and cannot sign in", delay=20)
    status = widget.locator(".jme-status")
    expect(status).to_contain_text("reranked by", timeout=60_000)
    rows = widget.locator("table.jme-topk tr.jme-hit")
    expect(rows.first.locator(".jme-cosine")).to_be_visible()
    expect(rows).to_have_count(5)
    screenshot(widget, "explorer-rerank.png")
    reranked = [rows.nth(i).get_attribute("data-index") for i in range(5)]

    # Off: the same query, ranked by similarity (no cosine column: the score is the cosine).
    toggle.click()
    expect(status).not_to_contain_text("reranked", timeout=60_000)
    expect(widget.locator("table.jme-topk .jme-cosine")).to_have_count(0)
    expect(rows.first.locator("td").first).to_have_text("How do I reset my password?")
    # Back on: the reranker's order again.
    toggle.click()
    expect(status).to_contain_text("reranked by", timeout=60_000)
    expect(rows.first).to_have_attribute("data-index", str(reranked[0]))
