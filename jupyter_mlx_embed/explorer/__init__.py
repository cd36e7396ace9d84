"""The similarity explorer (notebook layer), in rooms that mirror its front end's
(``labextension/src/explorer/``):

- ``widget``: ``SimilarityExplorer`` (an anywidget), its synced traits and observers, and
  ``explore(df, "text")``;
- ``table``: table input: columns, tooltips, colourings by column, a text column embedded;
- ``query``: the query lifecycle (numbered, embedded, the newest answer wins), neighbours;
- ``heatmap``: the selection's similarity matrix, rows seriated;
- ``snapshot``: the static PNG kept in saved notebooks;
- ``background``: the map and clusters on a thread, results handed to the kernel's loop;
- ``data``: colours, compact scores, seriation (numpy and scipy only);
- ``projection``, ``clusters``, ``_umap_process``: 2-D maps (PCA; UMAP in a helper
  process) and their named clusters, usable on their own (``jupyter_mlx_embed.project``).

Nothing is imported here: ``import jupyter_mlx_embed`` brings in ``projection`` at once but
the widget (anywidget, ipywidgets) only on first use.
"""
