"""`linear.team` limits which tickets start a run, for webhooks as for the sweep (one TriggerRule)."""

from __future__ import annotations

from foundry.bridge.mapping import Ignore, Intake, map_linear
from foundry.bridge.settings import settings_from_env
from foundry.config import parse_config
from foundry.linear_sweep.decide import issue_command
from tests.support.bridge_kit import linear_issue

ENV = {"FOUNDRY_LINEAR_WEBHOOK_SECRET": "s3cret"}
ISSUE_ID = "9cfb482a-81e3-4d5e-9f3a-3f6c2d0a41b7"


def _rule(config: dict):
    return settings_from_env(ENV, parse_config(config)).trigger


def test_the_config_trigger_carries_linear_team() -> None:
    cfg = parse_config({"trigger": {"label": "foundry"}, "linear": {"team": "ACME"}})
    assert (cfg.trigger.label, cfg.trigger.team) == ("foundry", "ACME")
    assert parse_config({"trigger": {"label": "foundry"}}).trigger.team is None


def test_a_webhook_for_another_team_starts_nothing() -> None:
    rule = _rule({"linear": {"team": "ACME"}})
    ours = linear_issue(ISSUE_ID, "ACME-42")
    theirs = linear_issue(ISSUE_ID, "OPS-7")
    assert isinstance(map_linear("Issue", ours, rule), Intake)
    ignored = map_linear("Issue", theirs, rule)
    assert isinstance(ignored, Ignore)
    # Without a team every team's labelled ticket counts, as before.
    assert isinstance(map_linear("Issue", theirs, _rule({})), Intake)


def test_team_keys_compare_case_insensitively() -> None:
    rule = _rule({"linear": {"team": "acme"}})
    assert isinstance(map_linear("Issue", linear_issue(ISSUE_ID, "ACME-42"), rule), Intake)


def test_the_sweep_applies_the_same_rule() -> None:
    rule = _rule({"linear": {"team": "ACME"}})
    node = {
        "id": ISSUE_ID, "identifier": "OPS-7", "title": "t", "description": "", "url": "https://linear.app/x",
        "priority": 2, "createdAt": "2025-01-01T10:00:00.000Z", "updatedAt": "2025-01-01T10:00:00.000Z",
        "labels": {"nodes": [{"name": "foundry"}]}, "state": {"name": "Todo", "type": "unstarted"},
        "team": {"id": "t-1", "key": "OPS"},
    }
    assert isinstance(issue_command(node, rule, None), Ignore)
    node = {**node, "identifier": "ACME-9", "team": {"id": "t-2", "key": "ACME"}}
    assert isinstance(issue_command(node, rule, None), Intake)
