"""The rolling-update sampler's arithmetic (tests.support.operator_roll), on made-up samples: what the
chart story's handover figures and its lease-duration assertion rest on."""

from __future__ import annotations

from tests.support.operator_roll import Handover, RollSamples


def test_a_handover_runs_from_the_old_holders_termination_to_the_new_holders_acquiring():
    s = RollSamples()
    s.see_holder("op-a", 100.0)
    s.see_holder("op-a", 100.0)  # renewals: the same holder, no handover
    s.see_terminating("op-a", 130.4)  # first seen deleting
    s.see_terminating("op-a", 130.0)  # deletionTimestamp - grace: earlier, so it counts
    s.see_holder(None, 130.2)  # released: nobody holds it yet
    s.see_holder("", None)
    s.see_holder("op-b", 131.5)
    assert s.handovers() == [Handover("op-a", "op-b", 130.0, 131.5)]
    assert s.handovers()[0].gap == 1.5


def test_a_holder_that_never_terminated_has_no_gap_to_pass_for_fast():
    s = RollSamples()
    s.see_holder("op-a", 100.0)
    s.see_holder("op-b", 116.0)  # op-a lost the Lease without its pod being deleted
    s.see_terminating("op-b", 140.0)
    s.see_holder("op-c", 141.0)
    assert [h.gap for h in s.handovers()] == [None, 1.0]
