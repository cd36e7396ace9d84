"""The explorer's map as the user sees it: the projection it reports, its status line and the
caption of the static PNG kept in saved notebooks, for maps too small for UMAP (PCA from start
to end) and for maps whose UMAP is still being computed (the PNG describes the PCA map shown).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import comm
import numpy as np
import pytest

from jupyter_mlx_embed.embeddings import Embeddings
from jupyter_mlx_embed.explorer.projection import UMAP_MIN_POINTS, project
from jupyter_mlx_embed.explorer.widget import SimilarityExplorer

from .test_widget import HAVE_UMAP, RecordingComm, sent, updates, with_buffers

pytestmark = [
    pytest.mark.skipif(not HAVE_UMAP, reason="umap-learn is not installed"),
    pytest.mark.usefixtures("default_worker"),  # the explorers' worker, closed after the module
]

SMALL = UMAP_MIN_POINTS // 3  # 15 texts: too few for UMAP
CREDIT = " (jupyter-mlx-embed similarity explorer)"


def notes(n: int) -> Embeddings:
    # Seed 1: test_widget's maps (seed 0) may be stored already, and found instead of made.
    vectors = np.random.default_rng(1).standard_normal((n, 16)).astype(np.float32)
    return Embeddings([f"note {i}" for i in range(n)], vectors, "all-MiniLM-L6-v2")


def caption(widget: SimilarityExplorer) -> str:
    """The caption of the widget's static PNG."""
    return widget._picture().caption


def states(widget: SimilarityExplorer) -> list[dict[str, Any]]:
    """Every state the front end was sent: the opening one, then each update."""
    _, opened, buffers = sent(widget)[0]
    return [with_buffers(opened, buffers)] + [state for state, _ in updates(widget)]


@pytest.fixture
def explorers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[SimilarityExplorer]]:
    """Explorers made by the test on recording comms (closed after it)."""
    monkeypatch.setattr(comm, "create_comm", RecordingComm)
    made: list[SimilarityExplorer] = []
    yield made
    for widget in made:
        widget.close()


@pytest.mark.parametrize("projection", ["auto", "umap"])
def test_a_map_too_small_for_umap_says_pca_everywhere(
    explorers: list[SimilarityExplorer], projection: str
) -> None:
    async def cell() -> tuple[str, str]:
        # In a cell the background work's results wait for the loop: this is the first PNG.
        widget = SimilarityExplorer(notes(SMALL), projection=projection)
        explorers.append(widget)
        first = caption(widget)
        assert widget.wait(120)
        return first, caption(widget)

    first, last = asyncio.run(cell())
    [widget] = explorers
    assert first == f"PCA map of {SMALL} texts.{CREDIT}"
    assert last.startswith(f"PCA map of {SMALL} texts. ") and "UMAP" not in last
    assert widget.projection == "pca" and widget.cluster_codes is not None  # looked for
    assert widget.map_status == last.removesuffix(CREDIT)  # once done, the PNG says the same
    np.testing.assert_array_equal(widget.coordinates, project(widget.embeddings.vectors, "pca"))
    said = states(widget)
    assert {state["projection"] for state in said if "projection" in state} == {"pca"}
    assert not any("UMAP" in state.get("map_status", "") for state in said)


def test_a_stored_map_of_a_small_collection_is_not_taken_for_umap(
    explorers: list[SimilarityExplorer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_MLX_EMBED_CACHE", "true")
    monkeypatch.setenv("JUPYTER_MLX_EMBED_CACHE_DIR", str(tmp_path))
    small = notes(SMALL)
    project(small.vectors, "pca")  # stored: what a second explorer of these texts finds
    widget = SimilarityExplorer(small)
    explorers.append(widget)
    assert widget.projection == "pca"
    assert widget.map_status.startswith(f"PCA map of {SMALL} texts.")
    assert "UMAP" not in widget.map_status


@pytest.mark.parametrize(("projection", "notes_logged"), [("auto", 0), ("umap", 1)])
def test_only_asking_for_umap_by_name_on_a_small_map_is_noted(
    explorers: list[SimilarityExplorer],
    caplog: pytest.LogCaptureFixture,
    projection: str,
    notes_logged: int,
) -> None:
    with caplog.at_level(logging.INFO, logger="jupyter_mlx_embed.explorer"):
        explorers.append(SimilarityExplorer(notes(SMALL), projection=projection))
        assert explorers[0].wait(120)
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len([m for m in said if "too few for UMAP" in m]) == notes_logged


@pytest.mark.slow
def test_the_png_shows_the_pca_map_while_umap_is_computed(
    explorers: list[SimilarityExplorer],
) -> None:
    async def cell() -> str:
        widget = SimilarityExplorer(notes(UMAP_MIN_POINTS), projection="umap")
        explorers.append(widget)
        # The live widget says UMAP is coming; a saved notebook's PNG, which no reader
        # without a kernel will see change, says what it shows.
        assert widget.projection == "pca" and "Computing UMAP" in widget.map_status
        assert caption(widget) == f"PCA map of {UMAP_MIN_POINTS} texts.{CREDIT}"
        assert widget.wait(300)
        return caption(widget)

    done = asyncio.run(cell())
    assert done.startswith(f"UMAP map of {UMAP_MIN_POINTS} texts. ") and done.endswith(CREDIT)
    assert explorers[0].projection == "umap"
