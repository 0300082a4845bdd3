"""Leader election's decisions (foundry.operator.lease_rules): pure, on a made-up clock."""

from __future__ import annotations

from datetime import datetime, timezone

from hypothesis import given, strategies as st

from foundry.operator.lease_rules import (LeaseRecord, Move, Observation, decide, next_look, next_record, released,
                                          still_leading)

T0 = datetime(2026, 12, 2, 5, 0, tzinfo=timezone.utc)


def _held(by: str | None, duration: int = 15, renewed: int = 0, transitions: int = 3) -> LeaseRecord:
    return LeaseRecord(holder=by, lease_duration_seconds=duration, acquire_time=T0,
                       renew_time=T0.replace(second=renewed), transitions=transitions)


def test_no_lease_is_created():
    assert decide(Observation(None, 0.0), "a", 5.0).move is Move.CREATE


def test_my_lease_is_renewed_even_if_my_deadline_passed():
    # Nobody else wrote it (it still names me): renewing is safe, and is how a leader
    # that lost its API server for a while gets back.
    assert decide(Observation(_held("a"), 0.0), "a", 1000.0).move is Move.RENEW


def test_someone_elses_valid_lease_is_waited_for_until_it_runs_out_on_my_clock():
    seen = Observation(_held("b", duration=15), 100.0)
    d = decide(seen, "a", 110.0)
    assert d.move is Move.WAIT and d.until == 115.0
    # The standby looks again exactly when the claim runs out, not up to a retry period later.
    assert next_look(d, 114.5, 2.0) == 0.5
    assert next_look(d, 110.0, 2.0) == 2.0
    assert decide(seen, "a", 115.0).move is Move.ACQUIRE


def test_the_clock_restarts_only_when_the_record_changes():
    seen = Observation(_held("b", renewed=1), 100.0)
    same = seen.after_read(_held("b", renewed=1), 112.0)
    assert same is seen and decide(same, "a", 116.0).move is Move.ACQUIRE
    renewed = seen.after_read(_held("b", renewed=3), 112.0)
    assert renewed.seen_at == 112.0 and decide(renewed, "a", 116.0).move is Move.WAIT


def test_the_holders_renew_time_is_not_trusted():
    # A holder whose clock runs an hour behind still gets its full lease on the standby's clock.
    old = LeaseRecord(holder="b", lease_duration_seconds=15, renew_time=T0.replace(hour=1))
    assert decide(Observation(old, 50.0), "a", 60.0).move is Move.WAIT


def test_a_released_lease_is_taken_at_once():
    free = released(_held("b"), T0)
    assert free.holder is None and free.lease_duration_seconds == 1 and free.transitions == 3
    assert decide(Observation(free, 100.0), "a", 100.0).move is Move.ACQUIRE


def test_taking_over_counts_a_transition_and_renewing_does_not():
    taken = next_record(_held("b", transitions=3), Move.ACQUIRE, "a", 15.0, T0)
    assert (taken.holder, taken.transitions, taken.acquire_time) == ("a", 4, T0)
    later = T0.replace(minute=1)
    renewed = next_record(taken, Move.RENEW, "a", 15.0, later)
    assert (renewed.transitions, renewed.acquire_time, renewed.renew_time) == (4, T0, later)
    assert next_record(None, Move.CREATE, "a", 15.0, T0).transitions == 0


def test_leading_ends_at_the_renew_deadline_counted_from_the_send():
    assert still_leading(100.0, 109.99, 10.0)
    assert not still_leading(100.0, 110.0, 10.0)
    assert not still_leading(None, 100.0, 10.0)


@given(renews=st.lists(st.floats(0.0, 2.0), min_size=1, max_size=20),
       sent_to_applied=st.floats(0.0, 4.0), applied_to_seen=st.floats(0.0, 2.0),
       looks=st.lists(st.floats(0.0, 40.0), max_size=30))
def test_a_standby_never_takes_over_while_the_holder_may_still_act(renews, sent_to_applied, applied_to_seen, looks):
    """Whatever the delays, a standby's ACQUIRE comes after the holder's own deadline.

    The holder sends its last successful renewal at `sent`; the API server applies it
    later; the standby sees it later still. The holder acts until sent + 10; a look
    that finds the record unchanged decides from the time it was first seen."""
    lease_duration, renew_deadline = 15, 10.0
    sent = sum(renews)
    seen_at = sent + sent_to_applied + applied_to_seen
    record = _held("b", duration=lease_duration)
    observed = Observation(record, seen_at)
    for look in sorted(seen_at + t for t in looks):
        observed = observed.after_read(record, look)
        if decide(observed, "a", look).move is Move.ACQUIRE:
            assert not still_leading(sent, look, renew_deadline)
            assert look - sent >= lease_duration - 1e-9
