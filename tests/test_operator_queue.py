"""The work queue and scheduler as pure bookkeeping (foundry.operator.queue), and which
watch events are worth a reconcile (foundry.operator.runview), with made-up times."""

from __future__ import annotations

import random

import pytest

from foundry.operator.queue import WorkQueue, backoff
from foundry.operator.runview import PAUSED_LABEL, keep_if_new, new_run_body, seen, worth_reconciling

A, B, C = ("ns", "a"), ("ns", "b"), ("ns", "c")


def test_a_burst_of_asks_for_one_key_hands_it_out_once():
    q = WorkQueue()
    for at in (5.0, 3.0, 4.0, 3.0):
        q.add(A, at)
    assert q.waiting() == 1 and q.due_at(A) == 3.0  # the earliest wins
    assert q.pop(2.9) is None
    assert q.pop(3.0) == A
    assert q.pop(100.0) is None


def test_keys_come_out_by_due_time_then_in_the_order_asked():
    q = WorkQueue()
    q.add(B, 2.0)
    q.add(C, 1.0)
    q.add(A, 1.0)
    assert [q.pop(10.0), q.pop(10.0), q.pop(10.0)] == [C, A, B]


def test_a_key_is_never_on_two_workers_and_an_ask_meanwhile_is_kept():
    q = WorkQueue()
    q.add(A, 0.0)
    assert q.pop(0.0) == A
    q.add(A, 1.0)  # an event while a worker holds it
    assert q.pop(5.0) is None  # not handed to a second worker
    q.done(A, next_at=60.0)
    assert q.due_at(A) == 1.0  # the ask made meanwhile, not the later wake
    assert q.pop(1.0) == A
    q.done(A, next_at=60.0)
    assert q.due_at(A) == 60.0 and q.pop(59.0) is None and q.pop(60.0) == A


def test_a_failed_key_is_held_until_its_retry_even_when_asked_again():
    q = WorkQueue()
    q.add(A, 0.0)
    assert q.pop(0.0) == A
    q.add(A, 0.5)  # asked meanwhile
    assert q.failed(A, retry_at=30.0) == 1
    q.add(A, 1.0)  # an event does not release the hold (the service said Retry-After)
    assert q.pop(29.0) is None and q.due_at(A) == 30.0
    assert q.pop(30.0) == A
    assert q.failed(A, retry_at=40.0) == 2
    assert q.pop(40.0) == A
    q.done(A, next_at=None)
    assert q.failures(A) == 0 and q.due_at(A) is None
    q.add(A, 41.0)  # the hold went with the success
    assert q.pop(41.0) == A


def test_a_forgotten_key_is_not_handed_out_and_the_next_due_skips_it():
    q = WorkQueue()
    q.add(A, 1.0)
    q.add(B, 2.0)
    q.forget(A)
    assert q.next_due() == 2.0
    assert q.pop(10.0) == B and q.pop(10.0) is None


def test_a_key_forgotten_while_worked_on_does_not_come_back():
    q = WorkQueue()
    q.add(A, 0.0)
    assert q.pop(0.0) == A
    q.add(A, 1.0)
    q.forget(A)  # deleted meanwhile
    q.done(A, next_at=None)
    assert q.waiting() == 0


def test_asking_often_does_not_grow_the_heap_without_bound():
    q = WorkQueue()
    for i in range(10_000):
        q.add(("ns", f"r{i % 100}"), 1_000_000.0 - i)
    assert q.waiting() == 100
    assert len(q._heap) <= 2 * 100 + 64


def test_many_keys_random_operations_keep_the_invariants():
    rnd = random.Random(7)
    q = WorkQueue()
    keys = [("ns", f"r{i}") for i in range(50)]
    held: set = set()
    now = 0.0
    for _ in range(5_000):
        now += rnd.random()
        op = rnd.random()
        if op < 0.5:
            q.add(rnd.choice(keys), now + rnd.random() * 10)
        elif op < 0.8:
            key = q.pop(now)
            if key is not None:
                assert key not in held, "handed out twice"
                held.add(key)
        elif held:
            key = rnd.choice(sorted(held))
            held.discard(key)
            if rnd.random() < 0.3:
                q.failed(key, now + 5)
            else:
                q.done(key, now + rnd.random() * 60)
        assert q.working() == len(held)
        due = q.next_due()
        assert due is None or due == min(q._due.values())


def test_backoff_doubles_up_to_its_cap():
    assert [backoff(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff(3, base=5.0, cap=60.0) == 20.0


def _body(phase="WaitingApproval", rv="10", labels=None, annotations=None, deleting=False,
          conditions=None, finalizers=("foundry.dev/finalizer",)):
    meta = {"name": "a", "namespace": "ns", "resourceVersion": rv, "generation": 1,
            "labels": labels or {}, "annotations": annotations or {}, "finalizers": list(finalizers)}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-02T05:00:00Z"
    return {"metadata": meta, "status": {"phase": phase, "conditions": conditions or []}}


def test_our_own_status_writes_are_not_worth_a_reconcile_but_a_hint_or_someone_elses_move_is():
    first = seen(_body(rv="10"), settled_rv=10)
    assert worth_reconciling(None, first, working=False, paused_all=False)  # new to us
    # Our own write (its resourceVersion is up to the read the wake came from): no.
    own = seen(_body(phase="WaitingApproval", rv="10"), settled_rv=10)
    assert not worth_reconciling(first, own, working=False, paused_all=False)
    lagging = seen(_body(phase="Analysing", rv="9"), settled_rv=10)
    assert not worth_reconciling(first, lagging, working=False, paused_all=False)
    # A phase moved by someone else after that read: yes, unless a worker here holds the run.
    moved = seen(_body(phase="AgentRunning", rv="12"), settled_rv=10)
    assert worth_reconciling(first, moved, working=False, paused_all=False)
    assert not worth_reconciling(first, moved, working=True, paused_all=False)
    # The bridge's pr-hint is an annotation: yes, even while worked on (it is asked again after).
    hinted = seen(_body(rv="13", annotations={"foundry.dev/pr-hint": "pull_request/1"}), settled_rv=10)
    assert worth_reconciling(first, hinted, working=True, paused_all=False)
    # kopf's old bookkeeping annotations are no reason.
    kopfed = seen(_body(rv="14", annotations={"kopf.foundry.dev/last-handled-configuration": "{}"}), settled_rv=10)
    assert not worth_reconciling(first, kopfed, working=False, paused_all=False)


def test_ended_runs_are_left_alone_until_deleted():
    done = seen(_body(phase="Complete", rv="20"))
    assert not worth_reconciling(None, done, working=False, paused_all=False)
    hinted = seen(_body(phase="Complete", rv="21", annotations={"foundry.dev/pr-hint": "x"}))
    assert not worth_reconciling(done, hinted, working=False, paused_all=False)
    deleting = seen(_body(phase="Complete", rv="22", deleting=True))
    assert worth_reconciling(done, deleting, working=False, paused_all=False)
    assert not worth_reconciling(deleting, seen(_body(phase="Complete", rv="23", deleting=True)),
                                 working=False, paused_all=False)


@pytest.mark.parametrize("label, paused_all", [("true", False), (None, True)])
def test_a_pause_without_its_condition_asks_for_the_worker_and_then_not_again(label, paused_all):
    labels = {PAUSED_LABEL: label} if label else {}
    before = seen(_body(rv="30"), settled_rv=30)
    paused = seen(_body(rv="31", labels=labels), settled_rv=30)
    assert worth_reconciling(before, paused, working=False, paused_all=paused_all)
    marked = seen(_body(rv="32", labels=labels, conditions=[{"type": "Paused", "status": "True"}]), settled_rv=30)
    assert not worth_reconciling(paused, marked, working=False, paused_all=paused_all)
    # Lifted: the condition must go, so the worker is asked for (and reconciles).
    lifted = seen(_body(rv="33", conditions=[{"type": "Paused", "status": "True"}]), settled_rv=30)
    assert worth_reconciling(marked, lifted, working=False, paused_all=False)


def test_a_paused_finished_run_is_not_collected_by_retention():
    from datetime import datetime, timedelta, timezone

    from foundry.operator.retention import due

    now = datetime(2026, 12, 2, tzinfo=timezone.utc)
    body = _body(phase="Complete")
    body["metadata"]["creationTimestamp"] = "2026-11-01T00:00:00Z"
    rows = {"a": now - timedelta(days=30)}
    assert due(body, rows, now - timedelta(days=7))
    body["metadata"]["labels"] = {PAUSED_LABEL: "true"}
    assert not due(body, rows, now - timedelta(days=7))


def test_only_a_new_runs_watch_object_is_kept_and_only_once_and_only_at_its_version():
    new = _body(phase=None, rv="7")
    new["status"] = {}
    known = seen(new)
    keep_if_new(known, new)
    assert new_run_body(known) is new
    assert new_run_body(known) is None  # used once
    keep_if_new(known, new)
    known.rv = "8"  # the watch has since shown a newer version: the kept one is stale
    assert new_run_body(known) is None and known.fresh is None
    for other in (_body(phase="WaitingApproval"), _body(phase=None, deleting=True)):
        known = seen(other)
        keep_if_new(known, other)
        assert known.fresh is None
