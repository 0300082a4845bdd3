"""The pure checks behind confirmed decisions and adopted PRs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from foundry.connectors.marked_comments import find_markers, keyed_purpose, marker
from foundry.domain import adoption
from foundry.domain.confirmation import LinearCommentFacts, check_linear_comment, check_made_after, command_in, parse_command

PLAN = datetime(2026, 3, 1, 10, 0, 0, tzinfo=timezone.utc)
SPEC = {"run": "r-1", "decision": "approve", "approver": "alice@example.com", "source": "linear", "commentId": "c-1"}


def facts(**kw) -> LinearCommentFacts:
    base = dict(id="c-1", issue_id="issue-1", user_id="u-alice", user_email="alice@example.com",
                body="/foundry approve ship it", created_at=PLAN + timedelta(seconds=5))
    return LinearCommentFacts(**{**base, **kw})


def test_a_matching_comment_confirms_by_email_or_user_id():
    assert check_linear_comment(SPEC, facts(), "issue-1", PLAN) is None
    assert check_linear_comment({**SPEC, "approver": "U-ALICE"}, facts(), "issue-1", PLAN) is None


@pytest.mark.parametrize("spec, seen, why", [
    ({**SPEC, "commentId": None}, facts(), "names no Linear comment"),
    (SPEC, None, "Linear has no comment c-1"),
    (SPEC, facts(issue_id="issue-2"), "is not on this issue"),
    (SPEC, facts(user_id="u-bob", user_email="bob@example.com"), "was not written by 'alice@example.com'"),
    (SPEC, facts(body="/foundry reject no"), "does not say `/foundry approve` (it says `/foundry reject`)"),
    (SPEC, facts(body="please /foundry approve"), "does not say `/foundry approve`"),
    (SPEC, facts(created_at=PLAN - timedelta(seconds=1)), "before the plan it approves"),
])
def test_a_comment_that_does_not_match_refuses(spec, seen, why):
    assert why in check_linear_comment(spec, seen, "issue-1", PLAN)


def test_the_time_bound_is_at_whole_seconds():
    assert check_made_after("approve", PLAN + timedelta(milliseconds=10), PLAN) is None
    assert "before the plan it approves existed" in check_made_after("approve", PLAN - timedelta(seconds=1), PLAN)
    assert "before the run it decides on" in check_made_after("stop", PLAN - timedelta(seconds=2), PLAN)
    assert check_made_after("approve", PLAN, None) is None


PLAN_HASH = "sha256:" + "0123456789abcdef" * 4


def test_a_comment_naming_a_plan_confirms_only_the_decision_stamped_with_it():
    stamped = {**SPEC, "planHash": PLAN_HASH}
    assert check_linear_comment(stamped, facts(body="/foundry approve 0123456789ab ok"), "issue-1", PLAN) is None
    assert check_linear_comment(stamped, facts(body=f"/foundry approve {PLAN_HASH}"), "issue-1", PLAN) is None
    other = {**SPEC, "planHash": "sha256:" + "f" * 64}
    assert "names plan 0123456789ab, and this decision is recorded for plan ffffffffffff" in check_linear_comment(
        other, facts(body="/foundry approve 0123456789ab"), "issue-1", PLAN)
    assert "recorded for no plan" in check_linear_comment(SPEC, facts(body="/foundry approve 0123456789ab"), "issue-1", PLAN)
    # A note that is no hash names no plan: the stamp stands.
    assert check_linear_comment(stamped, facts(body="/foundry approve ship it"), "issue-1", PLAN) is None


def test_replan_is_confirmed_like_the_other_decisions():
    spec = {**SPEC, "decision": "replan", "planHash": PLAN_HASH}
    assert check_linear_comment(spec, facts(body="/foundry replan the ticket is clearer now"), "issue-1", PLAN) is None
    assert "does not say `/foundry replan` (it says `/foundry approve`)" in check_linear_comment(
        spec, facts(), "issue-1", PLAN)
    assert "before the plan it asks to replace" in check_linear_comment(
        spec, facts(body="/foundry replan", created_at=PLAN - timedelta(seconds=1)), "issue-1", PLAN)


def test_commands_are_parsed_like_the_bridge_does():
    assert command_in("/foundry replan please") == "replan"
    assert parse_command("/foundry approve 0123456789AB looks good") == ("approve", "0123456789ab", "looks good")
    assert parse_command("/foundry stop 0123456789ab") == ("stop", None, "0123456789ab")

    assert command_in("  /foundry APPROVE looks good") == "approve"
    assert command_in("/foundry stop") == "stop"
    assert command_in("/foundry approved") is None and command_in("LGTM /foundry approve") is None


def test_keyed_purposes_round_trip_through_markers():
    purpose = keyed_purpose("refused", "r-1-approve-alice-abc123")
    assert find_markers(f"text\n\n{marker('r-1', purpose)}") == [("r-1", purpose)]
    with pytest.raises(ValueError):
        keyed_purpose("done", "x")
    with pytest.raises(ValueError):
        marker("r-1", "refused.Not_A_Name")


def test_a_pr_is_adopted_only_from_foundry_and_the_runner():
    msg = "ACME-1: work\n\nsummary\n\nFoundry-Run: r-1\nFoundry-Attempt: 1\nFoundry-Issue: ACME-1\n"
    assert adoption.check_opener(3, "foundry[bot]", "foundry[bot]") is None
    assert "opened by mallory, not by Foundry (foundry[bot])" in adoption.check_opener(3, "mallory", "foundry[bot]")
    assert adoption.check_head(3, "a" * 40, "Foundry agent", msg, "r-1", 1) is None
    assert adoption.check_head(3, "a" * 40, "Mallory", msg, "r-1", 1) is not None
    assert adoption.check_head(3, "a" * 40, "Foundry agent", msg.replace("r-1", "r-2"), "r-1", 1) is not None
    # An attempt the run has not started yet is not the runner's.
    assert adoption.check_head(3, "a" * 40, "Foundry agent", msg.replace("Attempt: 1", "Attempt: 2"), "r-1", 1)
    # Trailers only count in the last paragraph, as git reads them.
    assert adoption.check_head(3, "a" * 40, "Foundry agent", "x\n\nFoundry-Run: r-1\nFoundry-Attempt: 1\n\nbye",
                               "r-1", 1)
