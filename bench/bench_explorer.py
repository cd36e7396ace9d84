"""Scale benchmark of the similarity explorer in a real browser: 20k, 200k and 1M points.

Run with ``python bench/bench_explorer.py [--sizes 20000,200000,1000000] [--json OUT]``. It
starts JupyterLab with this package's extensions (the default model preloaded), opens one
notebook per size in headless Chromium and, in its kernel, builds ``n`` synthetic unit
vectors of the model's width in 40 topics (texts are short synthetic strings: the map, not the
model, is measured) and shows them with ``Embeddings.explore(color=topic)``. Per size it
reports:

- ``build``: seconds from "the vectors exist" to the constructor's return (the kernel);
- ``first map``: seconds from the vectors existing to the first drawn map (the front end's
  ``jme-first-draw`` performance mark), and from the cell's end to that mark;
- ``pan``: a 6-second drag across the finished (UMAP) map; the main thread's long tasks
  (PerformanceObserver ``longtask``: the longest, how many exceed 100 ms and 50 ms) and the frame
  intervals (``requestAnimationFrame``; software WebGL here, so a floor far below a real
  GPU's);
- ``query``: seconds from the last typed key of a query to the recoloured map
  (``jme-recolor``), through the server's worker;
- ``umap``: seconds from the vectors existing until the UMAP map and its clusters are done
  (``explorer.wait()`` in the kernel; the map swaps itself in meanwhile);
- the binary state sent to the page and the page's JS heap;
- ``kernel``: the kernel's resident memory once the explorer is built, and its peak (the
  synthetic vectors' making included; the UMAP fit runs in a helper process, not counted
  here), and the explorer's share: what building it added to the memory of the vectors.

The browser renders WebGL in software (SwiftShader), so frame times are far above a real GPU's;
long tasks and data sizes are the figures that transfer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import Page, sync_playwright  # noqa: E402

from tests.browser import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    execute_command,
    open_lab,
    open_notebook,
    run_cell,
    screenshot,
    start_lab,
)

SIZES = (20_000, 200_000, 1_000_000)
PAN_SECONDS = 6.0
UMAP_WAIT_S = 600.0
QUERY = "an error while reading a file"

# Runs once per kernel: synthetic vectors in topics, as unit rows of the model's width.
SETUP = """
import time
import numpy as np
import traitlets
import jupyter_mlx_embed as jme
from jupyter_mlx_embed.config import DEFAULT_MODEL

def synthetic(n, topics=40, seed=0):
    rng = np.random.default_rng(seed)
    width = jme.embed(["probe"]).shape[1]
    centres = rng.standard_normal((topics, width), dtype=np.float32)
    topic = rng.integers(0, topics, n)
    vectors = centres[topic] + 0.8 * rng.standard_normal((n, width), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    words = [f"subject{chr(97 + t // 26)}{chr(97 + t % 26)}" for t in range(topics)]
    texts = [f"note {i} about {words[t]}" for i, t in enumerate(topic)]
    return jme.Embeddings(texts, vectors, DEFAULT_MODEL), [words[t] for t in topic]

def rss_mb(field="VmRSS"):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024

def sent_bytes(widget):
    return sum(
        len(getattr(widget, name))
        for name, trait in widget.traits(sync=True).items()
        if isinstance(trait, traitlets.Bytes)
    )
"""

SHOW = """
embeddings, topic = synthetic({n})
import gc; gc.collect()
before_mb = rss_mb()
started = time.time()
explorer = embeddings.explore(color=topic)
built = time.time()
display(explorer)
state = sent_bytes(explorer)
print(json.dumps({{"started": started, "built": built, "bytes": state, "ended": time.time(),
                  "rss_mb": rss_mb(), "before_mb": before_mb}}))
"""

WAIT = """
done = explorer.wait(timeout={timeout})
print(json.dumps({{"umap_s": time.time() - started if done else None,
                  "peak_mb": rss_mb("VmHWM")}}))
"""

# The page side: count marks, watch long tasks and frames.
_MARKS = "name => performance.getEntriesByName(name).length"
_LAST_MARK_EPOCH = """name => {
  const entries = performance.getEntriesByName(name);
  return (performance.timeOrigin + entries[entries.length - 1].startTime) / 1000;
}"""
_WATCH = """() => {
  window.__jmeLong = [];
  window.__jmeFrames = [];
  window.__jmeObserver?.disconnect();
  window.__jmeObserver = new PerformanceObserver(list => {
    for (const entry of list.getEntries()) window.__jmeLong.push(entry.duration);
  });
  window.__jmeObserver.observe({type: 'longtask'});
  window.__jmeWatching = true;
  let last = performance.now();
  const frame = now => {
    window.__jmeFrames.push(now - last);
    last = now;
    if (window.__jmeWatching) requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
}"""
_STOP = """() => {
  window.__jmeWatching = false;
  window.__jmeObserver.disconnect();
  return {long: window.__jmeLong, frames: window.__jmeFrames,
          heap: performance.memory ? performance.memory.usedJSHeapSize : null};
}"""


def _wait_mark(page: Page, name: str, before: int, timeout_s: float) -> float | None:
    """Epoch seconds of the newest ``name`` mark once there are more than ``before``."""
    try:
        page.wait_for_function(
            f"n => ({_MARKS})('{name}') > n", arg=before, timeout=timeout_s * 1000
        )
    except Exception:  # noqa: BLE001 - a timeout is reported as a missing figure
        return None
    return float(page.evaluate(_LAST_MARK_EPOCH, name))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def pan(page: Page, box: dict[str, float]) -> dict[str, Any]:
    """Drag across the map for PAN_SECONDS; the main thread's long tasks and frames."""
    page.evaluate(_WATCH)
    x, y = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5
    page.mouse.move(x, y)
    page.mouse.down()
    steps = 60
    for i in range(1, steps + 1):
        page.mouse.move(x + box["width"] * 0.4 * i / steps, y + 20 * (i % 2))
        page.wait_for_timeout(PAN_SECONDS * 1000 / steps)
    page.mouse.up()
    page.wait_for_timeout(500)
    watched = page.evaluate(_STOP)
    return {
        "pan_longest_task_ms": max(watched["long"], default=0.0),
        "pan_tasks_over_100ms": sum(1 for d in watched["long"] if d > 100),
        "pan_tasks_over_50ms": len(watched["long"]),
        "pan_frames": len(watched["frames"]),
        "pan_frame_p50_ms": _percentile(watched["frames"], 0.5),
        "pan_frame_p95_ms": _percentile(watched["frames"], 0.95),
        "js_heap_mb": None if watched["heap"] is None else watched["heap"] / 1e6,
    }


def _map_box(widget: Any) -> dict[str, float]:
    """The map's box on the page, scrolled into view (the widget is taller than the page)."""
    canvas = widget.locator("canvas.jme-map")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    assert box is not None, "the map is not on the page"
    return dict(box)


def measure(page: Page, panel: Any, n: int) -> dict[str, Any]:
    """One size in its own notebook ``panel``; returns the figures."""
    first = page.evaluate(_MARKS, "jme-first-draw")
    cell = run_cell(panel, SHOW.format(n=n), timeout=900_000)
    line = cell.locator(".jp-OutputArea-output", has_text='"started"').inner_text()
    kernel = json.loads(line.strip().splitlines()[-1])
    drawn = _wait_mark(page, "jme-first-draw", first, 120)
    widget = cell.locator(".jme-explorer")
    result: dict[str, Any] = {
        "n": n,
        "build_s": kernel["built"] - kernel["started"],
        "first_map_s": None if drawn is None else drawn - kernel["started"],
        "cell_end_to_map_s": None if drawn is None else drawn - kernel["ended"],
        "state_mb": kernel["bytes"] / 1e6,
        "kernel_mb": kernel["rss_mb"],
        "explorer_mb": kernel["rss_mb"] - kernel["before_mb"],
    }
    _map_box(widget)
    page.wait_for_timeout(1000)
    screenshot(page, f"bench-explorer-{n}.png")

    query = widget.locator("input.jme-query")
    recolours = page.evaluate(_MARKS, "jme-recolor")
    query.click()
    query.type(QUERY, delay=10)
    typed = page.evaluate("() => (performance.timeOrigin + performance.now()) / 1000")
    recoloured = _wait_mark(page, "jme-recolor", recolours, 120)
    result["query_to_recolour_s"] = None if recoloured is None else recoloured - typed
    page.wait_for_timeout(1000)
    screenshot(page, f"bench-explorer-{n}-query.png")
    waited = run_cell(panel, WAIT.format(timeout=UMAP_WAIT_S), timeout=UMAP_WAIT_S * 1000 + 60_000)
    line = waited.locator(".jp-OutputArea-output", has_text="umap_s").inner_text()
    waited_figures = json.loads(line.strip().splitlines()[-1])
    result["umap_s"] = waited_figures["umap_s"]
    result["kernel_peak_mb"] = waited_figures["peak_mb"]
    page.wait_for_timeout(2000)
    screenshot(page, f"bench-explorer-{n}-umap.png")
    # Panning is measured on the finished map, the CPU no longer busy with UMAP.
    result.update(pan(page, _map_box(widget)))
    screenshot(page, f"bench-explorer-{n}-panned.png")
    return result


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report(rows: list[dict[str, Any]]) -> str:
    header = (
        "| points | build, s | first map, s (cell end to map) | pan: longest task, ms "
        "(tasks > 100 ms, > 50 ms) | pan frame p50 / p95, ms | query to recolour, s | UMAP map, s "
        "| state sent, MB | JS heap, MB | kernel RSS / peak, MB | explorer's share, MB |"
    )
    lines = [header, "|" + "---|" * 11]
    for r in rows:
        lines.append(
            f"| {r['n']:,} | {_fmt(r['build_s'], '.2f')} | {_fmt(r['first_map_s'], '.2f')} "
            f"({_fmt(r['cell_end_to_map_s'], '.2f')}) | {_fmt(r['pan_longest_task_ms'], '.0f')} "
            f"({r['pan_tasks_over_100ms']}, {r['pan_tasks_over_50ms']}) "
            f"| {_fmt(r['pan_frame_p50_ms'], '.0f')} / "
            f"{_fmt(r['pan_frame_p95_ms'], '.0f')} | {_fmt(r['query_to_recolour_s'], '.2f')} "
            f"| {_fmt(r['umap_s'], '.0f')} | {_fmt(r['state_mb'], '.1f')} "
            f"| {_fmt(r['js_heap_mb'], '.0f')} "
            f"| {_fmt(r['kernel_mb'], '.0f')} / {_fmt(r['kernel_peak_mb'], '.0f')} "
            f"| {_fmt(r['explorer_mb'], '.0f')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    # Maps stored by an earlier run would make the UMAP figure a file read.
    os.environ["JUPYTER_MLX_EMBED_CACHE"] = "false"
    rows = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        start_lab(Path(tmp), "--MLXEmbed.preload=True") as lab,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = open_lab(browser, lab)
        for n in sizes:
            panel = open_notebook(page, lab, f"bench-{n}.ipynb")
            run_cell(panel, SETUP + "\nimport json", timeout=300_000)
            rows.append(measure(page, panel, n))
            print(report(rows[-1:]), flush=True)
            # Free the kernel's vectors before the next size.
            execute_command(page, "docmanager:save")
            execute_command(page, "application:close")
            for session in lab.request("GET", "api/sessions"):
                lab.request("DELETE", f"api/sessions/{session['id']}")
        browser.close()
    print(report(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
