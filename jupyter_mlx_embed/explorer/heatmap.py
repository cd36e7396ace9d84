"""The explorer's similarity heatmap (notebook layer): the matrix of the selection, else of
the first items, with rows seriated so that similar items sit together (``heatmap.ts`` draws
it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ._format import clip, count
from .data import seriate

if TYPE_CHECKING:
    from ..embeddings import Embeddings

#: Most items the heatmap shows (a 200 x 200 matrix is 160 KB and still readable).
HEATMAP_LIMIT = 200
#: Characters of a heatmap row label.
LABEL_LIMIT = 60


def heatmap_state(embeddings: Embeddings, selection: list[int], limit: int) -> dict[str, Any]:
    """The heatmap traits (``heatmap``, ``heatmap_indices``, ``heatmap_labels``,
    ``heatmap_note``) for the selection, else the first items, at most ``limit`` of them."""
    n = len(embeddings)
    pool = selection if selection else range(n)
    first = [int(i) for i in pool[:limit]]
    if selection:
        note = (
            f"the first {limit} of {len(selection):,} selected items"
            if len(selection) > limit
            else f"the {count(len(selection), 'selected item')}"
        )
    elif n > limit:
        note = f"the first {limit} of {n:,} items; select points on the map to compare others"
    else:
        note = f"all {count(n, 'item')}"
    matrix = embeddings[first].similarity() if first else np.zeros((0, 0))
    order = seriate(matrix)
    indices = [first[i] for i in order]
    matrix = matrix[np.ix_(order, order)]
    texts = embeddings.texts
    return {
        "heatmap": np.ascontiguousarray(matrix, dtype="<f4").tobytes(),
        "heatmap_indices": indices,
        "heatmap_labels": [clip(" ".join(texts[i].split()), LABEL_LIMIT) for i in indices],
        "heatmap_note": f"Cosine similarity of {note}, similar rows together",
    }
