"""The order in which `make test`'s two xdist workers take the test modules (tests/support/pytest_groups.py)."""

from __future__ import annotations

from tests.support.pytest_groups import module_order


def test_real_node_modules_alternate_with_slow_ones_and_the_rest_come_last_in_their_order():
    ranks = {"a_node": 0, "b": 2, "c_slow": 1, "d_node": 0, "e_slow": 1, "f_slow": 1, "g": 2, "h_node": 0}
    assert module_order(ranks) == ["a_node", "c_slow", "d_node", "e_slow", "h_node", "f_slow", "b", "g"]


def test_every_module_is_taken_once_whatever_the_mix():
    for ranks in ({}, {"x": 0}, {"x": 1, "y": 1}, {"x": 2, "y": 0, "z": 0, "w": 0}):
        order = module_order(ranks)
        assert sorted(order) == sorted(ranks)
        assert [ranks[m] for m in order if ranks[m] == 2] == [r for r in (ranks[m] for m in order) if r == 2]
        assert all(ranks[m] < 2 for m in order[: sum(1 for r in ranks.values() if r < 2)])
