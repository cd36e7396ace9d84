"""Real-browser test scaffolding: JupyterLab (or Notebook 7) in a subprocess, driven with
Playwright's sync API in Debian's Chromium. A browser test module starts with::

    from .browser import requires_chromium, open_notebook, run_cell, screenshot

    pytest_plugins = ("tests.browser",)
    pytestmark = requires_chromium

and gets the module-scoped fixtures ``lab`` (a running :class:`LabServer` with this package's
server and lab extensions), ``browser`` and ``lab_page`` (a page with JupyterLab loaded), and
helpers: :func:`open_notebook` and :func:`run_cell` to run code in a notebook,
:func:`execute_command`, :func:`run_from_palette`, :func:`screenshot` (to ``test-artifacts/``),
:func:`page_errors`, and :func:`start_lab` for a Lab with other options. For Notebook 7,
:func:`start_notebook7` runs the server and :func:`open_notebook7` opens a notebook's own page
(Notebook 7 shows one document per page); :func:`run_cell` works there too.

PYTEST_DONT_REWRITE: test modules import these helpers before ``pytest_plugins`` registers
this module, and it has no asserts to rewrite (the marker silences pytest's warning).
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
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Locator,
    Page,
    ViewportSize,
    expect,
    sync_playwright,
)

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
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}

requires_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"browser tests need Chromium at {CHROMIUM} (`make install` installs it)",
)

# Keep JupyterLab from asking questions: about news and updates (no network here, and the
# toast would cover screenshots), and which kernel to start for a notebook.
_USER_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
        "autoStartDefaultKernel": True,
    },
}


@dataclass(frozen=True)
class LabServer:
    """A running JupyterLab or Notebook 7: its URL (ending in ``/``), token and folders."""

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
    never_check = "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"
    with _start_app(tmp, "jupyterlab", "LabApp", never_check, *extra, token=token) as server:
        yield server


@contextmanager
def start_notebook7(tmp: Path, *extra: str, token: str = TOKEN) -> Iterator[LabServer]:
    """Run Notebook 7 (``python -m notebook``) as :func:`start_lab` runs JupyterLab."""
    with _start_app(tmp, "notebook", "JupyterNotebookApp", *extra, token=token) as server:
        yield server


@contextmanager
def _start_app(
    tmp: Path, module: str, app: str, *extra: str, token: str = TOKEN
) -> Iterator[LabServer]:
    """Run ``python -m <module>``, a JupyterLab-based app whose class is ``app``, isolated
    under ``tmp`` (notebooks, user settings, workspaces and log)."""
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
        module,
        "--no-browser",
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.allow_root=True",
        f"--{app}.user_settings_dir={settings}",
        f"--{app}.workspaces_dir={workspaces}",
        # `window.jupyterapp`, for `execute_command` (as JupyterLab's own UI tests do).
        f"--{app}.expose_app_in_browser=True",
        *extra,
    ]
    log = tmp / f"{module}.log"
    with running(argv, url + "api/status", {"Authorization": f"token {token}"}, log):
        yield LabServer(url=url, token=token, root=root, log=log)


_ERRORS: weakref.WeakKeyDictionary[Page, list[str]] = weakref.WeakKeyDictionary()


def page_errors(page: Page) -> list[str]:
    """Uncaught exceptions (with `` [at SCRIPT]`` when known) and console errors of a page
    opened by :func:`open_lab` or :func:`open_app`."""
    return _ERRORS[page]


def _record_errors(page: Page) -> None:
    errors = _ERRORS.setdefault(page, [])

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(f"console: {message.text}")

    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}{_thrown_in(exc.stack)}"))
    page.on("console", console)


def _thrown_in(stack: str | None) -> str:
    """`` [at PATH]``: the server path of the script an error was thrown in, to tell whose
    code failed (this package's, JupyterLab's or Notebook's), or ``[at widget module: FRAME]``
    for the explorer's ES module (anywidget loads it from a blob URL); empty if the stack has
    neither."""
    frame = re.search(r"(blob:)?https?://[^/\s]+/([^?#\s:]+)", stack or "")
    if frame is None:
        return ""
    if frame.group(1):
        caller = re.search(r"^\s+at (.*?) \(?blob:", stack or "", re.MULTILINE)
        return f" [at widget module: {caller.group(1) if caller else '?'}]"
    return f" [at {frame.group(2)}]"


def open_lab(browser: Browser, lab: LabServer, path: str = "lab") -> Page:
    """A new browser context and page with JupyterLab loaded and its status bar shown (its
    errors are recorded: :func:`page_errors`)."""
    page = open_app(browser, lab, path)
    page.wait_for_selector("#jp-main-statusbar", state="visible")
    return page


def open_app(browser: Browser, server: LabServer, path: str) -> Page:
    """A new browser context and page with the app at ``path`` (``lab``; ``tree`` or
    ``notebooks/NAME`` in Notebook 7) started; its errors are recorded (:func:`page_errors`)."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(30_000)
    _record_errors(page)
    page.goto(server.page_url(path))
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.started", timeout=60_000)
    return page


def execute_command(page: Page, command: str, args: dict[str, Any] | None = None) -> None:
    """Run a JupyterLab command by id (through ``window.jupyterapp``) and wait until its
    promise settles."""
    page.evaluate(
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
    kernel to be idle; returns the notebook panel (for :func:`run_cell`)."""
    _create_notebook(lab, name)
    widget_id = page.evaluate(
        "path => window.jupyterapp.commands.execute('docmanager:open', {path}).then(w => w.id)",
        name,
    )
    page.wait_for_function(_KERNEL_READY, arg=widget_id, timeout=60_000)
    return page.locator(f'[id="{widget_id}"]')


def open_notebook7(browser: Browser, server: LabServer, name: str = "Untitled.ipynb") -> Locator:
    """Create an empty Python notebook ``name`` on a Notebook 7 server, open its page in a new
    browser context and wait for its kernel to be idle; returns the notebook panel (for
    :func:`run_cell`; its page is ``panel.page``)."""
    _create_notebook(server, name)
    page = open_app(browser, server, f"notebooks/{name}")
    widget_id = page.wait_for_function(
        "() => window.jupyterapp.shell.currentWidget?.sessionContext?.session && "
        "window.jupyterapp.shell.currentWidget.id"
    ).json_value()
    page.wait_for_function(_KERNEL_READY, arg=widget_id, timeout=60_000)
    return page.locator(f'[id="{widget_id}"]')


def _create_notebook(server: LabServer, name: str) -> None:
    """Put an empty Python notebook (one empty code cell) at ``name`` on the server."""
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
    server.request("PUT", f"api/contents/{name}", {"type": "notebook", "content": notebook})


_KERNEL_READY = """id => {
  const panel = Array.from(window.jupyterapp.shell.widgets('main')).find(w => w.id === id);
  const kernel = panel?.sessionContext?.session?.kernel;
  return kernel?.connectionStatus === 'connected' && kernel.status === 'idle';
}"""

_PUT_IN_LAST_CELL = """([id, code]) => {
  const app = window.jupyterapp;
  const panel = Array.from(app.shell.widgets('main')).find(w => w.id === id);
  app.shell.activateById(id);
  const notebook = panel.content;
  notebook.activeCellIndex = notebook.widgets.length - 1;
  const last = notebook.activeCell.model;
  if (last.type !== 'code' || last.sharedModel.getSource() !== '') {
    app.commands.execute('notebook:insert-cell-below');
  }
  notebook.activeCell.model.sharedModel.setSource(code);
  return notebook.activeCellIndex;
}"""


def run_cell(panel: Locator, code: str, timeout: float = 120_000) -> Locator:
    """Put ``code`` in the last cell of the notebook ``panel`` (from :func:`open_notebook`; a
    new cell if the last is not empty), run it and wait until it has run; returns that cell
    (its outputs are under ``.jp-OutputArea-output``).

    The source goes into the cell's model rather than being typed: CodeMirror reads typed
    text asynchronously, so a Shift+Enter right after typing can run the old source."""
    page = panel.page
    index = page.evaluate(_PUT_IN_LAST_CELL, [panel.get_attribute("id"), code])
    cell = panel.locator(".jp-Cell").nth(index)
    expect(cell.locator(".cm-content")).to_contain_text(code.strip().split("\n", 1)[0])
    # Not awaited: the command's promise settles only when the cell has run (or never, if a
    # dialog asks something); the prompt below says more on failure.
    page.evaluate("() => { void window.jupyterapp.commands.execute('notebook:run-cell'); }")
    expect(cell.locator(".jp-InputArea-prompt")).to_have_text(
        re.compile(r"\[\d+\]:"), timeout=timeout
    )
    return cell


def check_explorer_queries(page: Page, widget: Locator, prefix: str = "") -> None:
    """In a rendered similarity explorer (the notes of the explorer tests), two typed queries
    each put the expected text first in the top-k table; screenshots as
    ``{prefix}explorer-query.png`` (the page) and ``{prefix}explorer-widget.png``."""
    expect(widget.locator("canvas.jme-map")).to_be_visible(timeout=60_000)
    query = widget.locator("input.jme-query")
    query.click()
    query.type("I forgot my login and cannot sign in", delay=20)
    first_hit = widget.locator("table.jme-topk tr.jme-hit").first
    expect(first_hit.locator("td").first).to_have_text(
        "How do I reset my password?", timeout=60_000
    )
    screenshot(page, f"{prefix}explorer-query.png")
    # A second, different query replaces the first one's answer.
    query.fill("")
    query.type("profits and financial results", delay=20)
    expect(first_hit.locator("td").first).to_have_text(
        re.compile("quarterly revenue|Sales figures"), timeout=60_000
    )
    screenshot(widget, f"{prefix}explorer-widget.png")


def screenshot_path(name: str) -> Path:
    """Where a screenshot called ``name`` goes (``test-artifacts/``, made if need be)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name


def screenshot(target: Page | Locator, name: str) -> Path:
    """Save a PNG of a page (full page) or an element under ``test-artifacts/``."""
    path = screenshot_path(name)
    if isinstance(target, Locator):
        target.screenshot(path=path)
    else:
        target.screenshot(path=path, full_page=True)
    return path


# pytest-jupyter's autouse fixtures apply to every test collected after a module loads that
# plugin; they take the thread's running event loop and close it, but in browser tests that
# loop is Playwright's (its sync API runs one in the test thread).
_FOREIGN_LOOP_FIXTURES = ("jp_asyncio_loop", "jp_server_cleanup")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Keep pytest-jupyter's event-loop fixtures away from tests that use the browser."""
    for item in items:
        names: list[str] = getattr(item, "fixturenames", [])
        if "browser" in names:
            names[:] = [name for name in names if name not in _FOREIGN_LOOP_FIXTURES]


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
