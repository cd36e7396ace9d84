"""The JupyterLab extension in a real browser: the status-bar item follows the server's
embedding worker, and the endpoint command shows this server's ``/v1`` URL without the token."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from .browser import (
    LabServer,
    open_lab,
    open_notebook,
    page_errors,
    requires_chromium,
    run_cell,
    run_from_palette,
    screenshot,
    start_lab,
)

pytest_plugins = ("tests.browser",)
pytestmark = [requires_chromium, pytest.mark.slow]

MODEL = "all-MiniLM-L6-v2"
ITEM = ".jme-status-item"


def test_status_item_follows_the_worker(lab: LabServer, lab_page: Page) -> None:
    item = lab_page.locator(ITEM)
    expect(
        item, "the lab extension did not load (built? `jupyter-builder develop`?)"
    ).to_have_count(1)
    expect(item).to_have_attribute("data-state", "idle")
    expect(item).to_have_text("Embeddings: not loaded yet")

    answer = lab.request("POST", "v1/embeddings", {"input": ["hello", "world"]})
    assert answer["model"] == MODEL

    expect(item).to_have_attribute("data-state", "ready", timeout=15_000)
    expect(item).to_have_text(f"Embeddings: {MODEL} · 1 req")
    title = item.get_attribute("title") or ""
    assert f"Loaded models: {MODEL}" in title
    assert re.search(r"BLAS: .+ \((fast|slow reference BLAS)\)", title), title
    assert "Device: " in title and "Device: not known" not in title
    assert "Tokens: " in title and "MLX " in title
    screenshot(lab_page, "lab-status-bar.png")
    screenshot(lab_page.locator("#jp-main-statusbar"), "status-bar.png")


def _check_dialog(page: Page, lab: LabServer, name: str) -> None:
    dialog = page.locator(".jp-Dialog.jme-endpoint-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator(".jme-endpoint-url pre")).to_have_text(f"{lab.url}v1")
    expect(dialog.locator(".jme-endpoint-snippet pre")).to_contain_text(f'base_url="{lab.url}v1"')
    assert lab.token not in dialog.inner_html()
    body = dialog.locator(".jp-Dialog-body")
    assert body.evaluate("e => e.scrollHeight <= e.clientHeight + 1"), "the dialog body scrolls"
    screenshot(page, f"{name}.png")
    screenshot(dialog.locator(".jp-Dialog-content"), f"{name}-content.png")
    dialog.get_by_role("button", name="Close", exact=True).click()
    expect(dialog).to_be_hidden()


def test_endpoint_dialog_from_the_item_and_the_palette(lab: LabServer, lab_page: Page) -> None:
    lab_page.locator(ITEM).click()
    _check_dialog(lab_page, lab, "endpoint-dialog")
    run_from_palette(lab_page, "Embeddings: Show OpenAI Endpoint")
    _check_dialog(lab_page, lab, "endpoint-dialog-palette")


def test_requests_from_a_notebook_show_up(lab_page: Page, lab: LabServer) -> None:
    panel = open_notebook(lab_page, lab, "status.ipynb")
    cell = run_cell(
        panel,
        "import jupyter_mlx_embed as jme\n"
        "print(jme.get_transport().kind, jme.embed(['a', 'b']).shape)",
    )
    expect(cell.locator(".jp-OutputArea-output")).to_have_text("server (2, 384)")
    expect(lab_page.locator(ITEM)).to_have_text(f"Embeddings: {MODEL} · 2 req", timeout=15_000)
    screenshot(lab_page, "lab-notebook.png")


def test_no_errors_in_the_page(lab_page: Page) -> None:
    assert page_errors(lab_page) == []


def test_busy_and_error_states(lab_page: Page) -> None:
    """Answers the route could give, faked in the browser: the item shows each one."""
    status = {
        "state": "ready",
        "default_model": MODEL,
        "loaded_models": [MODEL, "tiny-bert-cls"],
        "queue_depth": 3,
        "queue_size": 256,
        "requests": 12,
        "requests_failed": 0,
        "tokens": 345,
        "batches": 7,
        "device": "cpu",
        "blas": {"name": "openblas", "fast": True, "path": "/x.so", "detail": ""},
        "mlx_version": "0.0",
        "version": "0.0",
    }
    answer: dict[str, Any] = {"status": 200, "json": status}
    lab_page.route("**/mlx-embed/status*", lambda route: route.fulfill(**answer))
    item = lab_page.locator(ITEM)
    try:
        expect(item).to_have_attribute("data-state", "busy", timeout=10_000)
        expect(item).to_have_text(f"Embeddings: {MODEL} +1 · busy (3 queued)")
        screenshot(lab_page.locator("#jp-main-statusbar"), "status-bar-busy.png")

        # A long forward pass with nothing queued is busy too; the tooltip shows the cache.
        cache = {"enabled": True, "hits": 30, "misses": 10}
        card = {
            "id": MODEL,
            "dimensions": 384,
            "max_input_tokens": 256,
            "pooling": "mean",
            "prompts": {"query": "query: "},
            "default_prompt_name": None,
            "quantization": {"bits": 8, "group_size": 64},
            "loaded": True,
        }
        answer["json"] = {
            **status,
            "queue_depth": 0,
            "busy": True,
            "cache": cache,
            "models": [card],
        }
        expect(item).to_have_text(f"Embeddings: {MODEL} +1 · busy", timeout=10_000)
        hit_rate = re.compile(r"Cache: 30 hits, 10 misses \(75% hit rate\)")
        expect(item).to_have_attribute("title", hit_rate)
        model_line = f"{MODEL}: 384 dims · max 256 tokens · mean pooling · 8-bit · prompts: query"
        assert model_line in (item.get_attribute("title") or "")

        answer["json"] = {**status, "state": "failed", "error": "no MLX", "queue_depth": 0}
        expect(item).to_have_attribute("data-state", "error", timeout=10_000)
        expect(item).to_have_text("Embeddings: error")
        assert "failed to start: no MLX" in (item.get_attribute("title") or "")

        answer.update(status=403, json={"message": "Forbidden"})
        expect(item).to_have_attribute("title", re.compile("answered 403"), timeout=10_000)
        expect(item).to_have_attribute("data-state", "error")
    finally:
        lab_page.unroute("**/mlx-embed/status*")


def test_extension_missing_state(browser: Browser, tmp_path: Path) -> None:
    with start_lab(tmp_path, "--ServerApp.jpserver_extensions=jupyter_mlx_embed=False") as lab:
        page = open_lab(browser, lab)
        try:
            item = page.locator(ITEM)
            expect(item).to_have_attribute("data-state", "missing")
            expect(item).to_have_text("Embeddings: extension missing")
            assert "jupyter server extension list" in (item.get_attribute("title") or "")
            screenshot(page.locator("#jp-main-statusbar"), "status-bar-missing.png")
        finally:
            page.context.close()
