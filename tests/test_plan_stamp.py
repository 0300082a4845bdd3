"""Which plan hash a decision is stamped with (foundry.domain.plan_stamp): pure rules."""

from __future__ import annotations

import pytest

from foundry.domain.plan_stamp import StampRefused, current_hash, current_revision, split_ref, stamp

A = "sha256:" + "ab" * 32
B = "sha256:" + "cd" * 32


def test_a_plan_decision_takes_the_current_hash_and_the_others_none():
    assert stamp("approve", A) == A
    assert stamp("replan", A) == A
    assert stamp("reject", A) is None and stamp("stop", A) is None
    assert stamp("approve", None) is None  # no plan hash yet: left unstamped


@pytest.mark.parametrize("named", [A, A.removeprefix("sha256:"), A[:7 + 12], A.removeprefix("sha256:")[:12].upper()])
def test_a_named_hash_must_be_the_current_one_full_or_short(named):
    assert stamp("approve", A, named) == A


@pytest.mark.parametrize("named", [B, B[:7 + 12], A[:-1] + "0"])
def test_a_named_hash_of_another_plan_is_refused(named):
    with pytest.raises(StampRefused, match="not the run's current plan"):
        stamp("approve", A, named)


def test_a_named_hash_needs_a_plan_and_a_plan_decision_and_a_hash():
    with pytest.raises(StampRefused, match="no plan hash yet"):
        stamp("approve", None, A)
    with pytest.raises(StampRefused, match="not about a plan"):
        stamp("stop", A, A)
    with pytest.raises(StampRefused, match="is not a plan hash"):
        stamp("approve", A, "abc")


def test_split_ref_takes_a_leading_hash_only():
    assert split_ref(f"{A} looks right") == (A, "looks right")
    assert split_ref("ABABABABABAB ok") == ("abababababab", "ok")
    assert split_ref("looks right") == (None, "looks right")
    assert split_ref("cafe is fine") == (None, "cafe is fine")  # too short to be a hash
    assert split_ref("") == (None, "")
    assert split_ref("0123456789ab\nthanks") == ("0123456789ab", "thanks")


def test_current_hash_and_revision_read_status_plan():
    run = {"status": {"plan": {"hash": A, "revision": 2}}}
    assert current_hash(run) == A and current_revision(run) == 2
    assert current_hash({"status": {"plan": {"hash": "sha256:nothex"}}}) is None
    assert current_hash({}) is None and current_revision({"status": {"plan": {"revision": True}}}) is None
