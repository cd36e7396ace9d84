"""Cutting a length-sorted batch into parts of about equal work."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from jupyter_mlx_embed.engine.partition import (
    MIN_PART_TOKENS,
    balanced_bounds,
    packed_parts,
    padded_length,
    part_cost,
)


def _costs(lengths: list[int], bounds: list[int]) -> list[float]:
    return [
        part_cost(hi - lo, padded_length(lengths[hi - 1])) for lo, hi in itertools.pairwise(bounds)
    ]


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("parts", [1, 2, 3, 4, 8])
def test_bounds_cover_all_rows_and_beat_equal_row_counts(seed: int, parts: int) -> None:
    rng = np.random.default_rng(seed)
    lengths = sorted(rng.integers(3, rng.choice([40, 256]), size=rng.integers(1, 130)).tolist())
    bounds = balanced_bounds(lengths, parts)
    assert bounds[0] == 0 and bounds[-1] == len(lengths)
    assert all(lo < hi for lo, hi in itertools.pairwise(bounds))
    assert len(bounds) - 1 <= parts
    equal = sorted({int(b) for b in np.linspace(0, len(lengths), min(parts, len(lengths)) + 1)})
    assert max(_costs(lengths, bounds)) <= max(_costs(lengths, equal))


def test_long_rows_get_smaller_parts() -> None:
    lengths = [10] * 48 + [200] * 16
    bounds = balanced_bounds(lengths, 4)
    sizes = [hi - lo for lo, hi in itertools.pairwise(bounds)]
    assert sizes[0] > sizes[-1]
    costs = _costs(lengths, bounds)
    assert max(costs) / min(costs) < 2.5


def test_small_inputs() -> None:
    assert balanced_bounds([], 4) == [0]
    assert balanced_bounds([7], 4) == [0, 1]
    assert balanced_bounds([7, 9], 4) == [0, 1, 2]
    assert padded_length(1) == 8 and padded_length(8) == 8 and padded_length(9) == 16


def test_small_batches_get_fewer_packed_parts() -> None:
    assert packed_parts(1, 4) == 1  # one short text: one part, spread over the cores
    assert packed_parts(MIN_PART_TOKENS * 2 + 1, 4) == 2
    assert packed_parts(MIN_PART_TOKENS * 100, 4) == 4  # never more parts than streams
    assert packed_parts(MIN_PART_TOKENS * 100, 1) == 1
