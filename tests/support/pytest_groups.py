"""How `make test` spreads the suite over pytest-xdist workers (`-n 2 --dist loadgroup`).

Loaded with `-p tests.support.pytest_groups` (the Makefile does). Each test
module is one group: its tests run in order on one worker, and its
module-scoped fixtures (servers, installs, built images) start once. Each
worker starts its own session fixtures when it first needs them: a control
plane, a PostgreSQL and, once it takes a module with real-node tests, a real
node of its own (node.py gives each a slot; about 0.7 GiB each).

Workers take groups in collection order (`--no-loadscope-reorder`), and this
plugin puts the long modules first: those on the real node alternating with
those with `slow` tests, then the rest, each kind in its usual order (see
module_order). Longest first keeps the two workers busy to the end instead of
one finishing a long module alone.

Two workers on a 2-core machine (shared, at times, with other work) make
each test slower, never wrong: Hypothesis's "input generation is slow" health
check and its per-example deadline measure the machine, not the code, so the
profile loaded here turns those two off. Every example still runs and every
property is still checked.

Without xdist, or with another --dist, the grouping and order change nothing.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("make-test", suppress_health_check=[HealthCheck.too_slow], deadline=None)
settings.load_profile("make-test")

NODE_FIXTURES = frozenset({"real_node", "node_namespace"})


def _module(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]


def _on_node(item: pytest.Item) -> bool:
    return bool(NODE_FIXTURES & set(getattr(item, "fixturenames", ()))) or item.get_closest_marker("node") is not None


def module_ranks(items: list[pytest.Item]) -> dict[str, int]:
    """0 for modules with a real-node test, 1 for those with a slow test, 2 for the rest."""
    ranks: dict[str, int] = {}
    for item in items:
        rank = 0 if _on_node(item) else 1 if item.get_closest_marker("slow") is not None else 2
        ranks[_module(item)] = min(rank, ranks.get(_module(item), 2))
    return ranks


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Items are collected on the workers, where xdist has set `dist` to "no" and kept the choice in
    # `loadgroup` (the controller only schedules). Checking `dist` alone, as this once did, marked
    # nothing: every test was its own group, and module fixtures started once per worker.
    loadgroup = getattr(config.option, "dist", "no") == "loadgroup" or getattr(config.option, "loadgroup", False)
    if not loadgroup or not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(_module(item)))
    position = {module: i for i, module in enumerate(module_order(module_ranks(items)))}
    items.sort(key=lambda item: position[_module(item)])  # stable: a module's tests keep their order


def module_order(ranks: dict[str, int]) -> list[str]:
    """Real-node modules alternating with slow ones, then the other slow ones, then the rest:
    the long modules first, and the two workers' first modules unlike (the real-node ones
    wait for the images to be built, the others do not)."""
    kinds = [[m for m, r in ranks.items() if r == rank] for rank in (0, 1, 2)]
    node, slow, rest = kinds
    paired = [m for pair in itertools.zip_longest(node, slow) for m in pair if m is not None]
    return paired + rest
