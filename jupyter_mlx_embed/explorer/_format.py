"""How the explorer words texts, counts and errors for its tables and status lines (notebook
layer; plain Python)."""

from __future__ import annotations

from ..errors import EmbedError

#: Characters of each text sent to the front end (hover, tables); the rest stays in Python.
TEXT_LIMIT = 1000


def clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, the last one an ellipsis when cut."""
    return text if len(text) <= width else text[: width - 1] + "…"


def quote(text: str, width: int = 60) -> str:
    """``text`` on one line, clipped and quoted, for a status line."""
    return repr(clip(" ".join(text.split()), width))


def count(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless ``n`` is 1 (``"1 text"``, ``"1,000 texts"``)."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def describe(exc: BaseException) -> str:
    """What a status line says of ``exc``: an :class:`EmbedError`'s message, else its type
    and text."""
    return exc.message if isinstance(exc, EmbedError) else f"{type(exc).__name__}: {exc}"
