"""The batching policy, without MLX: every forward pass is chosen afresh and fairly."""

from __future__ import annotations

from jupyter_mlx_embed.scheduling import fresh_lanes, pick_rows


def test_one_lane_fills_the_budget() -> None:
    assert pick_rows([([10] * 100, 0)], budget=200, max_rows=64) == [20]


def test_a_new_request_joins_the_next_pass_beside_a_large_one() -> None:
    new, large = ([12], 0), ([100] * 500, 40)
    assert pick_rows([new, large], budget=1000, max_rows=64) == [1, 9]


def test_lanes_share_the_budget_then_fill_what_is_left() -> None:
    assert pick_rows([([10] * 50, 0), ([10] * 50, 0)], budget=400, max_rows=64) == [20, 20]
    assert pick_rows([([10] * 3, 0), ([10] * 50, 0)], budget=400, max_rows=64) == [3, 37]


def test_rows_per_pass_are_capped() -> None:
    assert sum(pick_rows([([1] * 500, 0), ([1] * 500, 0)], budget=10_000, max_rows=64)) == 64


def test_a_row_longer_than_the_budget_goes_alone() -> None:
    assert pick_rows([([5000, 5000], 0), ([3] * 10, 0)], budget=1000, max_rows=64) == [1, 0]


def test_the_first_lane_always_gets_a_row_and_taken_rows_are_skipped() -> None:
    assert pick_rows([([1, 2, 900], 2), ([1] * 5, 0)], budget=800, max_rows=64) == [1, 0]
    assert pick_rows([([1] * 5, 5), ([2] * 5, 1)], budget=100, max_rows=64) == [0, 4]


def test_new_requests_get_a_pass_of_their_own_but_never_two_in_a_row() -> None:
    assert fresh_lanes([True, False, True, False], after_fresh=False) == [1, 3]
    assert fresh_lanes([True, False], after_fresh=True) is None
    assert fresh_lanes([False, False], after_fresh=False) is None  # nothing is being served
    assert fresh_lanes([True, True], after_fresh=False) is None
