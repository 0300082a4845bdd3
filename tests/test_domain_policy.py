"""Policy: approvals (distinct, role-covering, N-of-M, default deny), the gate, the diff check, remediation."""

from __future__ import annotations

import pytest
import yaml

from foundry.config import parse_config
from foundry.domain import policy

CFG = parse_config(yaml.safe_load("""
repositories: [{name: web, github: acme/web}]
approvers:
  - {name: alice, kubernetes: alice, linear: alice@acme.dev, roles: [lead, security]}
  - {name: bob, kubernetes: bob, linear: bob-id, roles: [lead, payments]}
  - {name: carol, kubernetes: carol, roles: [lead]}
policy:
  approvals_required: 2
  roles_required: {auth: [security], payments: [payments]}
  forbidden_paths: [".github/workflows/**", "*.pem"]
  forbidden_risks: [infra]
  max_changed_files: 3
  retry_cap: 2
  budget_cap: 3
"""))


def approve(who, source="kubernetes"):
    return {"decision": "approve", "approver": who, "source": source}


def test_two_distinct_approvers_satisfy_two_of_three():
    t = policy.tally_approvals(CFG, [approve("alice"), approve("carol")], [])
    assert t.satisfied and (t.received, t.required) == (2, 2)
    assert [a["name"] for a in t.approvers] == ["alice", "carol"] and t.refused == []


def test_same_person_twice_counts_once_across_sources():
    t = policy.tally_approvals(CFG, [approve("alice"), approve("ALICE@acme.dev", "linear"), approve("alice")], [])
    assert (t.received, t.satisfied) == (1, False)


def test_unknown_approver_is_refused_with_reason():
    t = policy.tally_approvals(CFG, [approve("mallory"), approve("alice"), approve("carol")], [])
    assert t.received == 2
    assert t.refused == [("mallory", "'mallory' (kubernetes) is not a configured approver")]


def test_kubernetes_name_does_not_match_as_linear_identity():
    # carol has no linear identity: a Linear comment claiming "carol" is nobody
    t = policy.tally_approvals(CFG, [approve("carol", "linear")], [])
    assert t.received == 0 and "not a configured approver" in t.refused[0][1]


def test_risky_area_needs_the_role():
    t = policy.tally_approvals(CFG, [approve("alice"), approve("carol"), approve("bob")], ["auth"])
    assert t.received == 1 and not t.satisfied
    reasons = dict(t.refused)
    assert reasons["carol"] == "carol lacks a required role: auth needs one of the roles security"
    assert "bob lacks a required role" in reasons["bob"]
    assert t.eligible == ("alice",)


def test_each_approver_must_cover_every_area():
    assert policy.who_may_approve(CFG, ["auth", "payments"]) == ()
    assert [a.name for a in policy.who_may_approve(CFG, ["payments"])] == ["bob"]
    assert [a.name for a in policy.who_may_approve(CFG, ["pii"])] == ["alice", "bob", "carol"]  # no role rule


def test_default_deny_without_approvers():
    empty = parse_config(None)
    t = policy.tally_approvals(empty, [approve("anyone")], [])
    assert not t.satisfied and t.received == 0 and t.required == 1


def test_reject_and_other_decisions_are_not_counted():
    t = policy.tally_approvals(CFG, [{"decision": "reject", "approver": "alice", "source": "kubernetes"}], [])
    assert t.received == 0 and t.refused == []


@pytest.mark.parametrize("who, source, decision, allowed", [
    ("carol", "kubernetes", "stop", True),
    ("bob-id", "linear", "reject", True),
    ("mallory", "kubernetes", "stop", False),
    ("alice", "email", "reject", False),
    ("alice", "kubernetes", "merge", False),
])
def test_may_decide(who, source, decision, allowed):
    assert policy.may_decide(CFG, who, source, decision).allowed is allowed


GATE = dict(approved=True, ready=True, repo="web", risk_areas=[], attempt=1, budget_used=0)


@pytest.mark.parametrize("change, reason", [
    ({}, None),
    ({"approved": False}, "no sufficient approval"),
    ({"ready": False}, "not ready"),
    ({"repo": None}, "no repository"),
    ({"repo": "mobile"}, "'mobile' is not configured"),
    ({"risk_areas": ["infra"]}, "infra are forbidden"),
    ({"attempt": 3, "budget_used": 2}, None),
    ({"attempt": 4, "budget_used": 3}, "retry cap reached"),
    ({"attempt": 2, "budget_used": 3}, "budget cap reached"),
])
def test_gate(change, reason):
    verdict = policy.gate(CFG, **{**GATE, **change})
    assert verdict.allowed is (reason is None)
    if reason:
        assert reason in verdict.reason


def test_budget_cap_below_retry_cap():
    tight = parse_config(yaml.safe_load("policy: {retry_cap: 5, budget_cap: 2}"))
    assert policy.attempt_allowed(tight, 2).allowed
    assert "budget cap" in policy.attempt_allowed(tight, 3).reason


def test_diff_forbidden_path_blocks():
    v = policy.check_diff(CFG, ["src/a.py", ".github/workflows/ci.yml"], approved_areas=[])
    assert v.outcome == policy.BLOCKED
    assert v.reasons[0] == ".github/workflows/ci.yml matches forbidden path .github/workflows/** (modified)"
    # infra is also forbidden as a risk area; both reasons are kept
    assert any("forbidden risk area(s) infra" in r for r in v.reasons)


def test_diff_key_file_anywhere_blocks():
    assert policy.check_diff(CFG, ["deploy/certs/server.pem"], approved_areas=[]).outcome == policy.BLOCKED


def test_diff_unapproved_risk_area_needs_review():
    v = policy.check_diff(CFG, ["app/billing/charge.py"], {"files": []}, ["auth"])
    assert v.outcome == policy.REVIEW_REQUIRED and v.areas == ("payments",)
    assert "payments, which the approval did not cover" in v.reason
    assert policy.check_diff(CFG, ["app/billing/charge.py"], approved_areas=["payments"]).outcome == policy.OK


def test_diff_too_many_files_needs_review():
    v = policy.check_diff(CFG, [f"src/f{i}.py" for i in range(4)], approved_areas=[])
    assert v.outcome == policy.REVIEW_REQUIRED and "4 files changed, more than the limit of 3" in v.reason


def test_diff_outside_plan_needs_review_but_tests_and_neighbours_are_fine():
    planned = ["src/cart/total.py", "src/cart/coupons/"]
    inside = ["src/cart/total.py", "src/cart/helpers.py", "tests/test_total.py"]
    assert policy.check_diff(CFG, inside, planned, []).outcome == policy.OK
    assert policy.check_diff(CFG, ["src/cart/coupons/x/y.py"], planned, []).outcome == policy.OK
    as_status = policy.check_diff(CFG, ["src/other/z.py"], {"goal": "g", "files": planned}, [])
    assert (as_status.outcome, as_status.kind) == (policy.REVIEW_REQUIRED, "review")
    v = policy.check_diff(CFG, ["src/other/z.py"], planned, [])
    assert v.outcome == policy.REVIEW_REQUIRED and "files outside the plan: src/other/z.py" in v.reason


def test_diff_without_planned_files_does_not_judge_scope():
    assert policy.check_diff(CFG, ["anything/at/all.py"], approved_areas=[]).outcome == policy.OK
