"""The worker's batching policy, pure: which rows the next forward pass takes (no MLX).

Every forward pass is chosen afresh, so a request that arrives while a large one is being
served joins the very next pass instead of waiting for a round of the large one. Requests
("lanes") are offered the pass in the order of the tokens already computed for them, fewest
first (new requests first, and two large ones take turns), each up to an equal share of the
token budget; what the shares leave is filled in the same order. New requests that arrive
while others are being served get a pass of their own (short when they are), but never two
passes in a row, so a stream of new requests cannot starve the ones being served.
"""

from __future__ import annotations

from collections.abc import Sequence


def pick_rows(lanes: Sequence[tuple[Sequence[int], int]], budget: int, max_rows: int) -> list[int]:
    """How many rows the next forward pass takes from each lane.

    Args:
        lanes: Per request, in priority order: the lengths of its rows in the order they are
            taken (shortest first), and how many it has already handed out.
        budget: Padded tokens per pass (rows x longest row); a row longer than the budget
            goes alone.
        max_rows: Rows per pass.

    Returns:
        The number of rows to take from each lane, after those already handed out; the
        first lane with rows left always gets at least one.
    """
    taken = [0] * len(lanes)
    rows = longest = 0
    share = budget // max(1, len(lanes))

    def fits(length: int) -> bool:
        return rows < max_rows and (rows + 1) * max(longest, length) <= budget

    for fill in (False, True):
        for k, (lengths, start) in enumerate(lanes):
            spent = sum(lengths[start : start + taken[k]])
            while start + taken[k] < len(lengths):
                length = lengths[start + taken[k]]
                if rows and not fits(length):
                    break
                if not fill and taken[k] and spent + length > share:
                    break
                taken[k] += 1
                rows += 1
                longest = max(longest, length)
                spent += length
    return taken


def fresh_lanes(started: Sequence[bool], after_fresh: bool) -> list[int] | None:
    """The lanes of new requests when the next pass should be theirs alone, else None.

    Args:
        started: Per lane, whether any of its rows were handed out already.
        after_fresh: Whether the previous pass was one of new requests alone.
    """
    fresh = [k for k, began in enumerate(started) if not began]
    return fresh if fresh and len(fresh) < len(started) and not after_fresh else None
