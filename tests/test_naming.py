"""Run and approval names: stable across versions, always valid, never colliding."""

from __future__ import annotations

import re
import string
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foundry.domain.naming import (
    RUN_NAME_MAX,
    InvalidNameInput,
    approval_name,
    label_value,
    run_name,
)

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LINEAR_ID = "9cfb482a-81e3-4154-b5b9-2c805e70a726"
RUN = "lin-9cfb482a-0855de3a1df4-1"

# Golden outputs. If one of these changes, an upgraded bridge would compute a
# different name for an issue an older bridge already started, and create a
# second run. Never update them to make a test pass.
GOLDEN_RUNS = [
    (("linear", LINEAR_ID, 1), "lin-9cfb482a-0855de3a1df4-1"),
    (("linear", LINEAR_ID, 2), "lin-9cfb482a-0855de3a1df4-2"),
    (("linear", LINEAR_ID.upper(), 1), "lin-9cfb482a-fc5b16ed99c1-1"),
    (("linear", "ABC", 12), "lin-abc-16a73aa9cf94-12"),
    (("jira", "10042", 9999), "jira-10042-e98cb81478ce-9999"),
    (("linear", "???", 1), "lin-0e3e7923bedf-1"),
    (("github", "I_kwDOAbc123", 3), "github-i-kwdoabc123-c88b91bc0ab9-3"),
]
GOLDEN_APPROVALS = [
    ((RUN, "approve", "system:serviceaccount:foundry:approver-bot"),
     "lin-9cfb482a-0855de3a1df4-1-approve-foundry-approver-bot-8ad896a3bb"),
    ((RUN, "reject", "alice@example.com"), "lin-9cfb482a-0855de3a1df4-1-reject-alice-example-com-2c447b3973"),
    ((RUN, "stop", "5b2c7e1a-0000-4000-8000-000000000001"),
     "lin-9cfb482a-0855de3a1df4-1-stop-4000-8000-000000000001-23615ee454"),
]
PLAN_A, PLAN_B = "sha256:" + "a" * 64, "sha256:" + "b" * 64
# A decision about a plan names it: golden too, for the same reason.
GOLDEN_PLAN_APPROVALS = [
    ((RUN, "approve", "alice", None, PLAN_A), "lin-9cfb482a-0855de3a1df4-1-approve-alice-38a5b2f365"),
    ((RUN, "approve", "alice", None, PLAN_B), "lin-9cfb482a-0855de3a1df4-1-approve-alice-0c60436beb"),
    ((RUN, "replan", "alice@example.com", "c-1", PLAN_A),
     "lin-9cfb482a-0855de3a1df4-1-replan-alice-example-com-235072a807"),
]
GOLDEN_LABELS = [
    ("ACME-42", "ACME-42"),
    (LINEAR_ID, LINEAR_ID),
    ("a/b", "a-b-c14cddc033"),
    ("-x-", "x-c6cf95e52d"),
    ("x" * 70, "x" * 52 + "-c71bd10922"),
]


@pytest.mark.parametrize(("args", "expected"), GOLDEN_RUNS)
def test_run_name_golden(args, expected):
    assert run_name(*args) == expected


@pytest.mark.parametrize(("args", "expected"), GOLDEN_APPROVALS)
def test_approval_name_golden(args, expected):
    assert approval_name(*args) == expected


@pytest.mark.parametrize(("args", "expected"), GOLDEN_PLAN_APPROVALS)
def test_approval_name_with_a_plan_golden(args, expected):
    assert approval_name(*args) == expected


def test_the_plan_joins_the_name_and_nothing_else_moves():
    unstamped = approval_name(RUN, "approve", "alice")
    on_a, on_b = approval_name(RUN, "approve", "alice", plan_hash=PLAN_A), approval_name(RUN, "approve", "alice", plan_hash=PLAN_B)
    # Approving plan B after plan A is a new object; approving A twice is the same name (a 409).
    assert len({unstamped, on_a, on_b}) == 3
    assert on_a == approval_name(RUN, "approve", "alice", plan_hash=PLAN_A)
    # A comment id and a plan hash of the same text never hash alike.
    assert approval_name(RUN, "approve", "alice", comment_id=PLAN_A) != on_a
    assert approval_name(RUN, "approve", "alice", "c-1", PLAN_A) != approval_name(RUN, "approve", "alice", "c-1")


@pytest.mark.parametrize("bad", ["sha256:" + "A" * 64, "a" * 64, "sha256:abc", "", "sha256:" + "a" * 64 + "\x00"])
def test_a_malformed_plan_hash_is_refused(bad):
    with pytest.raises(InvalidNameInput, match="plan_hash"):
        approval_name(RUN, "approve", "alice", plan_hash=bad)


@pytest.mark.parametrize(("text", "expected"), GOLDEN_LABELS)
def test_label_value_golden(text, expected):
    assert label_value(text) == expected


def test_linear_uuid_name_is_recognisable():
    # A person looking at `kubectl get fr` can match the run to the issue id.
    name = run_name("linear", LINEAR_ID, 1)
    assert name.startswith("lin-9cfb482a-") and name.endswith("-1")


def test_job_suffix_still_fits_in_a_label():
    longest = run_name("abcdefghijklmnopqrst", "x" * 128, 9999)
    assert len(longest) <= RUN_NAME_MAX
    assert len(f"{longest}-a9999") <= 63


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("Linear", LINEAR_ID, 1), "tracker"),
        (("", LINEAR_ID, 1), "tracker"),
        (("linear", "", 1), "issue_id"),
        (("linear", " abc", 1), "issue_id"),
        (("linear", "a b", 1), "issue_id"),
        (("linear", "x" * 129, 1), "issue_id"),
        (("linear", LINEAR_ID, 0), "attempt"),
        (("linear", LINEAR_ID, 10000), "attempt"),
        (("linear", LINEAR_ID, True), "attempt"),
        (("linear", LINEAR_ID, "1"), "attempt"),
        (("linear", 42, 1), "issue_id"),
    ],
)
def test_run_name_rejects_bad_input_clearly(args, fragment):
    with pytest.raises(InvalidNameInput, match=fragment):
        run_name(*args)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("Not_A_Name", "approve", "alice"), "run"),
        (("x" * 64, "approve", "alice"), "run"),
        ((RUN, "maybe", "alice"), "decision"),
        ((RUN, "approve", "  "), "approver"),
    ],
)
def test_approval_name_rejects_bad_input_clearly(args, fragment):
    with pytest.raises(InvalidNameInput, match=fragment):
        approval_name(*args)


# --- properties -------------------------------------------------------------

trackers = st.sampled_from(["linear", "jira", "github", "gitlab"])
printable_ids = st.text(alphabet=string.ascii_letters + string.digits + string.punctuation, min_size=1, max_size=128)
uuids = st.uuids().map(str)
linear_ids = st.one_of(uuids, uuids.map(str.upper), printable_ids)
attempts = st.integers(min_value=1, max_value=9999)


@given(trackers, linear_ids, attempts)
def test_run_name_is_always_a_short_dns_label(tracker, issue_id, attempt):
    name = run_name(tracker, issue_id, attempt)
    assert DNS1123_LABEL.match(name)
    assert len(name) <= RUN_NAME_MAX
    assert run_name(tracker, issue_id, attempt) == name  # pure


@given(st.sets(st.tuples(trackers, linear_ids), min_size=2, max_size=200), attempts)
def test_distinct_issues_never_share_a_name(issues, attempt):
    names = {run_name(t, i, attempt) for t, i in issues}
    assert len(names) == len(issues)


@given(trackers, linear_ids, st.sets(attempts, min_size=2, max_size=20))
def test_attempts_of_one_issue_never_share_a_name(tracker, issue_id, attempt_numbers):
    names = {run_name(tracker, issue_id, a) for a in attempt_numbers}
    assert len(names) == len(attempt_numbers)


def test_no_collisions_over_many_uuids():
    # Realistic scale: far more Linear issues than one installation will see.
    ids = [str(uuid.UUID(int=(i * 0x9E3779B97F4A7C15) % (1 << 128))) for i in range(1, 50_001)]
    names = {run_name("linear", i, 1) for i in ids}
    assert len(names) == len(ids)


@given(st.text(min_size=1, max_size=300).filter(str.strip), st.sampled_from(["approve", "reject", "stop", "replan"]),
       st.one_of(st.none(), st.text(alphabet="0123456789abcdef", min_size=64, max_size=64).map("sha256:".__add__)))
def test_approval_name_is_always_valid(approver, decision, plan_hash):
    name = approval_name("x" * 63, decision, approver, "c" * 128, plan_hash)
    assert DNS1123_LABEL.match(name) and len(name) <= 120
    name = approval_name(RUN, decision, approver)
    assert DNS1123_LABEL.match(name) and len(name) <= 253


@settings(max_examples=50)
@given(st.sets(st.one_of(st.emails(), uuids, st.text(min_size=1, max_size=60).filter(str.strip)), min_size=2, max_size=50))
def test_distinct_approvers_never_share_an_approval_name(approvers):
    names = {approval_name(RUN, "approve", a) for a in approvers}
    assert len(names) == len(approvers)


@given(st.text(max_size=200))
def test_label_value_is_always_valid_and_injective_on_changes(text):
    value = label_value(text)
    assert len(value) <= 63 and LABEL_VALUE.match(value)
    if value == text:
        return
    # A changed value carries a hash of the original, so a different input
    # that happens to sanitise alike still gets a different label.
    assert label_value(text + "!") != value
