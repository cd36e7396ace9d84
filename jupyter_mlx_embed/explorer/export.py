"""The explorer written to files (notebook layer): one self-contained HTML page (the map, pan
and zoom, hover, legend filter and keyword box; no kernel, no network) and a Parquet table
of what the map shows, for embedding-atlas, Latent Scope or pandas.

The page carries the front end's bundle (``static/explorer.js``, base64, imported from a
blob URL) and the explorer's synced state; ``labextension/src/explorer/static.ts`` stands in
for the kernel there. Each point costs its text (clipped to ``TEXT_LIMIT``) and tooltip
values as JSON, plus about 12 bytes of base64 for its position and colour; a picture also its
thumbnail (a 96-pixel JPEG of about 2 KB, 4/3 of that in base64).
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._format import TEXT_LIMIT, clip

#: The columns ``to_parquet`` writes beside the table's own.
PARQUET_COLUMNS = {
    "text": "the text (for pictures: the picture's path, or empty)",
    "projection_x": "the point's x on the map",
    "projection_y": "the point's y on the map",
    "cluster": "its dense region's number (-1: none)",
    "cluster_label": "that region's label (empty: none)",
    "region_label": "the coarse region's label (empty: none, or no coarse regions)",
    "vector": "the embedding (float32 list)",
}

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body {{ margin: 16px; background: #fff; }}</style>
</head>
<body>
<div id="explorer"></div>
<script id="jme-bundle" type="application/octet-stream">{bundle}</script>
<script id="jme-export" type="application/json">{data}</script>
<script type="module">
const bytes = Uint8Array.from(atob(document.getElementById("jme-bundle").textContent),
  c => c.charCodeAt(0));
const url = URL.createObjectURL(new Blob([bytes], {{ type: "text/javascript" }}));
const explorer = await import(url);
const data = JSON.parse(document.getElementById("jme-export").textContent);
explorer.renderStatic(document.getElementById("explorer"), data);
</script>
</body>
</html>
"""


def page(
    bundle: bytes,
    state: Mapping[str, Any],
    texts: Sequence[str],
    fields: Mapping[str, Sequence[str]],
    title: str,
    thumbnails: Sequence[bytes] | None = None,
) -> str:
    """The HTML page of an exported explorer.

    Args:
        bundle: The front end (``static/explorer.js``).
        state: Synced traits (binary ones as bytes: written as base64).
        texts: Each point's text (clipped here to ``TEXT_LIMIT``).
        fields: Each tooltip column's values, as strings.
        title: The page's title.
        thumbnails: Each point's thumbnail (JPEG bytes, b"" for none), or None (texts).
    """
    binary = [name for name, value in state.items() if isinstance(value, bytes)]
    encoded = {
        name: base64.b64encode(value).decode() if name in binary else value
        for name, value in state.items()
    }
    data = {
        "state": encoded,
        "binary": binary,
        "texts": [clip(text, TEXT_LIMIT) for text in texts],
        "fields": {name: list(values) for name, values in fields.items()},
    }
    if thumbnails is not None:
        data["thumbnails"] = {
            "sizes": [len(jpeg) for jpeg in thumbnails],
            "data": base64.b64encode(b"".join(thumbnails)).decode(),
        }
    # "</" cannot end the script element early once escaped (JSON reads "<\\/" as "</").
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    return _PAGE.format(
        title=html.escape(title),
        bundle=base64.b64encode(bundle).decode(),
        data=payload,
    )


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path``; returns the path."""
    target = Path(path)
    target.write_text(text, encoding="utf-8")
    return target


def parquet_table(
    texts: Sequence[str],
    columns: Mapping[str, Any],
    coords: np.ndarray,
    vectors: np.ndarray | None,
    clusters: Any,
) -> Any:
    """The map as a pyarrow Table: the table's columns, then :data:`PARQUET_COLUMNS` (a
    table column of the same name is replaced). ``clusters`` is the map's
    :class:`~.clusters.Clusters` or ``None``.

    Raises:
        ImportError: pyarrow is not installed.
    """
    try:
        import pyarrow as pa
    except ImportError as exc:  # pragma: no cover - pandas' parquet needs it too
        raise ImportError("to_parquet needs pyarrow: pip install pyarrow") from exc
    n = len(texts)
    codes = np.full(n, -1, dtype=np.int32) if clusters is None else clusters.codes
    names = [] if clusters is None else [c.label for c in clusters.clusters]
    region_of = [-1] * n if clusters is None else clusters.point_regions().tolist()
    region_names = [] if clusters is None else [r.label for r in clusters.regions]
    ours: dict[str, Any] = {
        "text": pa.array(list(texts), pa.string()),
        "projection_x": pa.array(coords[:, 0].astype(np.float32)),
        "projection_y": pa.array(coords[:, 1].astype(np.float32)),
        "cluster": pa.array(codes.astype(np.int32)),
        "cluster_label": pa.array([names[c] if c >= 0 else "" for c in codes.tolist()]),
        "region_label": pa.array([region_names[r] if r >= 0 else "" for r in region_of]),
    }
    if vectors is not None:
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
        ours["vector"] = pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])
    theirs = {name: _column(values) for name, values in columns.items() if name not in ours}
    return pa.table({**theirs, **ours})


def _column(values: Any) -> Any:
    """A table column as a pyarrow array (pandas and numpy columns keep their types)."""
    import pyarrow as pa

    if hasattr(values, "to_numpy") and hasattr(values, "dtype"):  # a pandas Series
        return pa.Array.from_pandas(values)
    return pa.array(list(values) if not isinstance(values, np.ndarray) else values)
