"""The similarity explorer in a real browser: JupyterLab started by the test, a notebook cell
builds the explorer, a typed query updates the top-k table with the expected nearest text."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from .browser import (
    LabServer,
    check_explorer_queries,
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
from jupyter_mlx_embed.embeddings import Embeddings
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
topics = ["account", "money", "pets", "baking", "travel", "money", "pets", "baking"]
notes = Embeddings(texts, jme.embed(texts), "all-MiniLM-L6-v2")
explorer = notes.explore(labels=topics)
explorer
"""


def test_typed_query_updates_the_top_k_table(lab: LabServer, lab_page: Page) -> None:
    panel = open_notebook(lab_page, lab, "explorer.ipynb")
    cell = run_cell(panel, CELL)
    check_explorer_queries(lab_page, cell.locator(".jp-OutputArea-output"))


def test_status_bar_shows_the_loaded_model(lab_page: Page) -> None:
    item = lab_page.locator(".jme-status-item")
    expect(item).to_contain_text("all-MiniLM-L6-v2", timeout=30_000)
    screenshot(lab_page, "explorer-lab.png")


def test_no_errors_in_the_page(lab_page: Page) -> None:
    errors = [e for e in page_errors(lab_page) if "jme" in e or "explorer" in e.lower()]
    assert errors == []
