"""How a length-sorted batch is cut into parts that run side by side (pure, no MLX).

The CPU fast path runs each part on its own MLX stream and pads it to its own longest row
(rounded up to :data:`LENGTH_BUCKET`, which bounds the number of compiled shapes). Parts of
equal row counts would give the part with the longest rows the most work while the others
wait for it; :func:`balanced_bounds` evens out the work instead. With the native kernels each
part is packed (no padding, rows in any order), and :func:`packed_bounds` cuts it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Padded lengths are multiples of this.
LENGTH_BUCKET = 8
#: Tokens per packed part below which a batch is cut into fewer parts than there are streams.
#: Every part reads all the weights, and a small part's matrix products stream them from
#: memory; a single part instead splits each product over the cores. Measured with the native
#: kernels on all-MiniLM-L6-v2 (2 cores): 4 sentences (90 tokens) took 7.1 ms as one part
#: against 9.4 ms as four, 32 sentences (748 tokens) 41 ms as two against 51 ms as one.
MIN_PART_TOKENS = 300
#: Attention's work per token (scores, softmax) grows with the padded length; :func:`part_cost`
#: counts a token at this length as twice one at length 0. A rough weight, not a measured one.
ATTENTION_LENGTH = 384


def padded_length(length: int) -> int:
    """``length`` rounded up to a multiple of :data:`LENGTH_BUCKET`."""
    return -(-length // LENGTH_BUCKET) * LENGTH_BUCKET


def packed_parts(tokens: int, streams: int) -> int:
    """How many packed parts a batch of ``tokens`` tokens is cut into, with ``streams``
    streams to run them (see :data:`MIN_PART_TOKENS`)."""
    return max(1, min(streams, tokens // MIN_PART_TOKENS))


def part_cost(rows: int, width: int) -> float:
    """Relative work of ``rows`` rows padded to ``width`` tokens."""
    return rows * width * (1.0 + width / ATTENTION_LENGTH)


def balanced_bounds(lengths: Sequence[int] | np.ndarray, parts: int) -> list[int]:
    """Cut rows sorted by ascending length into at most ``parts`` contiguous parts of about
    equal work, as bounds ``[0, b1, ..., len(lengths)]``.

    The largest part's :func:`part_cost` is minimised: a bisection over the cost limit, with
    a greedy fill from the longest rows down as the feasibility test (exact for contiguous
    parts, since a part's cost only grows as it takes more rows).
    """
    rows = len(lengths)
    if rows == 0:
        return [0]
    parts = max(1, min(parts, rows))
    widths = [padded_length(int(n)) for n in lengths]

    def cut(limit: float) -> list[int] | None:
        bounds = [rows]
        while bounds[-1] > 0:
            if len(bounds) > parts:
                return None
            width = widths[bounds[-1] - 1]
            fit = int(limit / part_cost(1, width) + 1e-9)
            if fit < 1:
                return None
            bounds.append(max(0, bounds[-1] - fit))
        return bounds[::-1]

    low, high = part_cost(1, widths[-1]), part_cost(rows, widths[-1])
    best = cut(high)
    while best is not None and high - low > 1.0:
        middle = (low + high) / 2
        found = cut(middle)
        if found is None:
            low = middle
        else:
            high, best = middle, found
    assert best is not None
    return best


def packed_bounds(lengths: Sequence[int] | np.ndarray, parts: int) -> list[int]:
    """Cut rows, in their given order, into at most ``parts`` contiguous parts of about equal
    work when each part is packed (its tokens only, no padding), as bounds
    ``[0, b1, ..., len(lengths)]``.

    A row's work is :func:`part_cost` of the row alone; each cut goes where the running total
    comes nearest to an equal share.
    """
    rows = len(lengths)
    if rows == 0:
        return [0]
    totals = np.cumsum([part_cost(1, int(n)) for n in lengths])
    cuts = {0, rows}
    for share in totals[-1] * np.arange(1, parts) / parts:
        after = int(np.searchsorted(totals, share))  # first row whose running total >= share
        before = totals[after - 1] if after else 0.0
        cuts.add(after + 1 if totals[after] - share < share - before else after)
    return sorted(cuts)
