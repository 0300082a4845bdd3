"""The operator's in-memory maps hold what is in flight or alive, not every run ever seen."""

from __future__ import annotations

import threading
import time

from foundry.operator.locks import RunLocks
from foundry.operator.metrics import OperatorMetrics


def test_run_locks_exist_only_while_held_or_awaited():
    locks = RunLocks()
    for n in range(2000):
        with locks.hold("ns", f"run-{n}"):
            assert len(locks._locks) == 1
    assert len(locks._locks) == 0


def test_run_locks_still_exclude_and_then_empty():
    locks = RunLocks()
    inside, most, errors = [0], [0], []
    guard = threading.Lock()
    start = threading.Barrier(8)

    def worker() -> None:
        try:
            start.wait(10)
            for _ in range(50):
                with locks.hold("ns", "same"):
                    with guard:
                        inside[0] += 1
                        most[0] = max(most[0], inside[0])
                    time.sleep(0.0005)
                    with guard:
                        inside[0] -= 1
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and most[0] == 1  # one holder at a time, even while entries come and go
    assert len(locks._locks) == 0


def test_phase_map_forgets_deleted_runs():
    metrics = OperatorMetrics()
    for n in range(2000):
        metrics.observe_phase("ns-a" if n % 2 else "ns-b", f"run-{n}", "Complete")
    assert metrics.seen_namespaces() == {"ns-a", "ns-b"}
    for n in range(2000):  # what the finalizer reports when the run GC deletes them
        metrics.observe_phase("ns-a" if n % 2 else "ns-b", f"run-{n}", None)
    assert metrics.seen_namespaces() == set()
    assert metrics.runs_by_phase.labels(phase="Complete")._value.get() == 0


def test_the_phase_gauge_is_kept_as_it_goes_and_matches_a_recount():
    import random
    from collections import Counter

    from foundry.domain.phases import Phase

    rnd = random.Random(3)
    metrics = OperatorMetrics()
    phases = [p.value for p in Phase]
    truth: dict[str, str] = {}
    for _ in range(20_000):
        name = f"run-{rnd.randrange(300)}"
        phase = None if rnd.random() < 0.1 else rnd.choice(phases)
        metrics.observe_phase("ns", name, phase)
        if phase is None:
            truth.pop(name, None)
        else:
            truth[name] = phase
    counts = Counter(truth.values())
    for p in phases:
        assert metrics.runs_by_phase.labels(phase=p)._value.get() == counts.get(p, 0), p
