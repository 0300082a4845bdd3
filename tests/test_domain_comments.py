"""Comment bodies: the approval request shows the plan and who may approve."""

from __future__ import annotations

import yaml

from foundry.config import parse_config
from foundry.connectors.marked_comments import find_markers
from foundry.domain import comment_text, policy
from foundry.domain.planning import make_plan

CFG = parse_config(yaml.safe_load("""
approvers:
  - {name: alice, kubernetes: alice, roles: [security]}
  - {name: carol, kubernetes: carol, roles: [lead]}
policy: {roles_required: {auth: [security]}, approvals_required: 2}
"""))
TICKET = {"title": "Login | broken", "description": "Users cannot log in since the change to `src/auth/login.py`.\n\n"
          "## Acceptance criteria\n- Login works again\n"}


def test_approval_request_shows_plan_and_approvers():
    plan = make_plan(TICKET, "web", ["auth"])
    body = comment_text.approval_request("ACME-42", plan, ["auth"], policy.who_may_approve(CFG, ["auth"]), 2)
    assert body.startswith("### Foundry plan for ACME-42")
    assert "Login \\| broken" in body  # a pipe in user text is escaped
    assert "1. " in body and "Make it so that: Login works again" in body
    assert "- `src/auth/login.py`" in body
    assert "**Risk areas:** auth" in body
    assert "**Needs 2 approvals from**\n- alice (security)" in body
    assert "carol" not in body
    assert "`/foundry approve`" in body
    assert find_markers(body) == []  # the marker is the connector's job


def test_approval_request_with_nobody_eligible_says_so():
    body = comment_text.approval_request("ACME-1", {"goal": "g"}, ["payments"], (), 1)
    assert "nobody configured may approve" in body and "**Needs 1 approval from**" in body


def test_other_bodies():
    assert "1. What?\n2. Why?" in comment_text.clarification("ACME-1", ["What?", "Why?"])
    assert "**Reason:** no repo" in comment_text.blocked("ACME-1", "no\nrepo")
    opened = comment_text.pr_opened("ACME-1", 7, "https://gh/pr/7", "foundry/run-1", attempt=2)
    assert "[#7](https://gh/pr/7)" in opened and "`foundry/run-1`" in opened and "attempt 2" in opened
    assert "was merged" in comment_text.done("ACME-1", 7, "https://gh/pr/7")
    assert "closed without merging" in comment_text.done("ACME-1", 7, "https://gh/pr/7", merged=False)
