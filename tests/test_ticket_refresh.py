"""When the bridge writes a changed ticket into a run (foundry.domain.ticket_refresh), and what the patch's answer means."""

from __future__ import annotations

import pytest

from foundry.bridge.backend import ticket_update_outcome
from foundry.bridge.commands import Unavailable
from foundry.domain.ticket_refresh import ticket_patch
from foundry.kube.attach import Answer

HELD = {"title": "Fix login", "description": "old", "labels": ["foundry"], "updatedAt": "2025-01-01T10:00:00Z"}
NEW = {"title": "Fix login for SSO", "labels": ["foundry"], "updatedAt": "2025-01-01T11:00:00Z"}


def run(phase: str | None = "WaitingApproval", ticket=HELD) -> dict:
    return {"metadata": {"resourceVersion": "42"}, "spec": {"ticket": ticket},
            "status": {"phase": phase} if phase else {}}


@pytest.mark.parametrize("phase", [None, "Pending", "Analysing", "WaitingApproval"])
def test_a_changed_text_is_patched_before_approval(phase):
    assert ticket_patch(run(phase), NEW) == {
        "metadata": {"resourceVersion": "42"},
        "spec": {"ticket": {"title": "Fix login for SSO", "description": None, "updatedAt": "2025-01-01T11:00:00Z"}},
    }


@pytest.mark.parametrize("phase", ["Approved", "AgentRunning", "PROpen", "Complete"])
def test_after_approval_the_ticket_is_left_alone(phase):
    assert ticket_patch(run(phase), NEW) is None


def test_the_same_text_an_older_text_or_an_undated_one_changes_nothing():
    assert ticket_patch(run(), {**HELD, "labels": ["other"], "updatedAt": "2025-01-02T00:00:00Z"}) is None
    assert ticket_patch(run(), {**NEW, "updatedAt": "2025-01-01T09:00:00Z"}) is None
    assert ticket_patch(run(), {**NEW, "updatedAt": HELD["updatedAt"]}) is None
    assert ticket_patch(run(), {k: v for k, v in NEW.items() if k != "updatedAt"}) is None
    # A run holding no date takes the dated text.
    assert ticket_patch(run(ticket={"title": "Fix login"}), NEW) is not None


def test_the_patch_answer():
    assert ticket_update_outcome(Answer(200, None, {}), "run r") == "updated"
    assert ticket_update_outcome(Answer(404, "Not Found", ""), "run r") == "attached"
    for status in (409, 0):
        with pytest.raises(Unavailable):
            ticket_update_outcome(Answer(status, "Conflict", "{}"), "run r")
