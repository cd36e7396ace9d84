"""Real-browser test scaffolding: JupyterLab in a subprocess and Debian's Chromium driven by
Playwright's sync API.

Use it from a test module with::

    pytest_plugins = ("tests.browser",)
    pytestmark = requires_chromium

which provides the module-scoped fixtures ``lab`` (a running :class:`LabServer`), ``browser``
and ``lab_page`` (a page with JupyterLab loaded), plus helpers to run commands, open a notebook
and run a cell (:func:`open_notebook`, :func:`run_cell`). Screenshots go to ``test-artifacts/``.

PYTEST_DONT_REWRITE: test modules import these helpers before ``pytest_plugins`` registers
the module, and it has no asserts to rewrite (this marker silences pytest's warning).
"""

from __future__ import annotations

import json
import re
import sys
import urllib.request
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Locator, Page, expect, sync_playwright

from .servers import free_port, running

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
TOKEN = "browser-test-token"
VIEWPORT = {"width": 1280, "height": 800}

requires_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"browser tests need Chromium at {CHROMIUM} (`make install` installs it)",
)

# Keep JupyterLab from asking about news or checking for updates (no network here, and the
# toast would cover screenshots).
_USER_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


@dataclass(frozen=True)
class LabServer:
    """A running JupyterLab: its URL (ending in ``/``), token and folders."""

    url: str
    token: str
    root: Path
    log: Path

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def page_url(self, path: str = "lab") -> str:
        """URL of a Lab page that logs the browser in with the token."""
        return f"{self.url}{path}?token={self.token}"

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Call the server's REST API with the token; returns the decoded JSON answer."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={**self.headers, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            raw = response.read()
        return json.loads(raw) if raw else None


@contextmanager
def start_lab(tmp: Path, *extra: str, token: str = TOKEN) -> Iterator[LabServer]:
    """Run ``python -m jupyterlab`` on a free port with its notebooks, settings and
    workspaces under ``tmp``; ``extra`` are more command-line options."""
    root, settings, workspaces = tmp / "notebooks", tmp / "settings", tmp / "workspaces"
    for folder in (root, settings, workspaces):
        folder.mkdir(parents=True, exist_ok=True)
    for name, values in _USER_SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    argv = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.allow_root=True",
        f"--LabApp.user_settings_dir={settings}",
        f"--LabApp.workspaces_dir={workspaces}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        # `window.jupyterapp`, for `execute_command` (as JupyterLab's own UI tests do).
        "--LabApp.expose_app_in_browser=True",
        *extra,
    ]
    log = tmp / "lab.log"
    with running(argv, url + "api/status", {"Authorization": f"token {token}"}, log):
        yield LabServer(url=url, token=token, root=root, log=log)


_ERRORS: weakref.WeakKeyDictionary[Page, list[str]] = weakref.WeakKeyDictionary()


def page_errors(page: Page) -> list[str]:
    """Uncaught exceptions and console errors of a page opened by :func:`open_lab`."""
    return _ERRORS[page]


def _record_errors(page: Page) -> None:
    errors = _ERRORS.setdefault(page, [])

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(f"console: {message.text}")

    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("console", console)


def open_lab(browser: Browser, lab: LabServer, path: str = "lab") -> Page:
    """A new browser context and page with JupyterLab loaded and its status bar shown (its
    errors are recorded: :func:`page_errors`)."""
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    page = context.new_page()
    page.set_default_timeout(30_000)
    _record_errors(page)
    page.goto(lab.page_url(path))
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.started", timeout=60_000)
    page.wait_for_selector("#jp-main-statusbar", state="visible")
    return page


def execute_command(page: Page, command: str, args: dict[str, Any] | None = None) -> Any:
    """Run a JupyterLab command by id (through ``window.jupyterapp``)."""
    return page.evaluate(
        "([id, args]) => window.jupyterapp.commands.execute(id, args).then(() => null)",
        [command, args or {}],
    )


def run_from_palette(page: Page, label: str) -> None:
    """Open the command palette, search for ``label`` and run the first match."""
    page.keyboard.press("Control+Shift+C")
    search = page.locator("#command-palette .lm-CommandPalette-input")
    expect(search).to_be_visible()
    search.fill(label)
    item = page.locator("#command-palette .lm-CommandPalette-item", has_text=label).first
    expect(item).to_be_visible()
    item.click()


def open_notebook(page: Page, lab: LabServer, name: str = "Untitled.ipynb") -> Locator:
    """Create an empty Python notebook ``name`` on the server, open it and wait for its
    kernel to be idle; returns the notebook panel."""
    notebook = {
        "cells": [
            {
                "cell_type": "code",
                "source": "",
                "metadata": {},
                "outputs": [],
                "execution_count": None,
            }
        ],
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    lab.request("PUT", f"api/contents/{name}", {"type": "notebook", "content": notebook})
    execute_command(page, "docmanager:open", {"path": name})
    panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    expect(panel.locator(".jp-Notebook-ExecutionIndicator")).to_have_attribute(
        "data-status", "idle", timeout=60_000
    )
    return panel


def run_cell(panel: Locator, code: str, timeout: float = 120_000) -> Locator:
    """Type ``code`` into the notebook's last cell, run it (Shift+Enter) and wait until it has
    run; returns that cell (its outputs are under ``.jp-OutputArea-output``)."""
    cells = panel.locator(".jp-CodeCell")
    cell = cells.nth(cells.count() - 1)
    cell.locator(".cm-content").click()
    page = panel.page
    page.keyboard.insert_text(code)
    page.keyboard.press("Shift+Enter")
    expect(cell.locator(".jp-InputArea-prompt")).to_have_text(
        re.compile(r"\[\d+\]:"), timeout=timeout
    )
    return cell


def screenshot(target: Page | Locator, name: str) -> Path:
    """Save a PNG of a page (full page) or an element under ``test-artifacts/``."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    if isinstance(target, Locator):
        target.screenshot(path=path)
    else:
        target.screenshot(path=path, full_page=True)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium (Playwright cannot download its own browsers here)."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """A JupyterLab server with this package's server and lab extensions."""
    with start_lab(tmp_path_factory.mktemp("lab")) as server:
        yield server


@pytest.fixture(scope="module")
def lab_page(browser: Browser, lab: LabServer) -> Iterator[Page]:
    """A page with JupyterLab loaded, shared by a module's tests."""
    page = open_lab(browser, lab)
    try:
        yield page
    finally:
        page.context.close()
