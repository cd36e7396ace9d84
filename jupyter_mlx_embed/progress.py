"""Progress bars whose saved notebook output shows where they ended (notebook layer).

tqdm's notebook widget keeps the ``text/plain`` it had when first displayed (``0%``), which
is what a notebook saved by ``nbconvert --execute`` shows without a kernel (GitHub, nbviewer).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def progress_bar(total: int, *, desc: str, unit: str, disable: bool = False) -> Iterator[Any]:
    """A tqdm bar for ``total`` items, closed on leaving the block.

    In a notebook, the widget is displayed under a display id, and on closing that output is
    replaced by the bar's final state (widget and text), so a saved notebook reads
    ``embedding: 100% ... 15/15`` (or where an interrupted run stopped). Elsewhere, tqdm's
    text bar.

    Args:
        total: Items to do.
        desc: The bar's label.
        unit: What an item is (``text``, ``picture``).
        disable: Show nothing (the bar still counts).

    Yields:
        The bar (``update(n)``, ``set_postfix_str``, ``n``).
    """
    from tqdm.auto import tqdm

    notebook = sys.modules.get("tqdm.notebook")
    if disable or notebook is None or not issubclass(tqdm, notebook.tqdm_notebook):
        with tqdm(total=total, desc=desc, unit=unit, disable=disable) as bar:
            yield bar
        return
    from IPython.display import display

    bar = tqdm(total=total, desc=desc, unit=unit, display=False)
    handle = display(bar.container, display_id=True)
    try:
        yield bar
    finally:
        bar.close()  # the widget's final style: success, or danger when stopped early
        handle.update(bar.container)  # its text/plain is the bar's text now
