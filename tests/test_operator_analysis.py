"""Analysis outcomes other than a plan: a thin ticket gets one clarification
comment, a ticket no repository claims is Blocked (real kopf, API server, PostgreSQL)."""

from __future__ import annotations

import pytest

from foundry.db import claims
from foundry.db.engine import make_engine
from tests.support.operator_kit import operator_thread, wait_phase
from tests.support.operator_stack import OperatorStack

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]


def test_thin_ticket_asks_once_and_unroutable_ticket_is_blocked(control_plane, kube_client, crds, namespace,
                                                                pg_url):
    engine = make_engine(pg_url)
    try:
        with OperatorStack.open(control_plane.api_client(), engine, namespace) as stack, \
                operator_thread(stack.deps, namespace):
            thin_issue, thin = stack.ticket("Make it better", description="")
            lost_issue, lost = stack.ticket(
                "Refresh the marketing tagline",
                description="The landing page shows the tagline 'Built for 2025'; marketing wants 'Built for "
                            "teams' instead, on the landing page only.\n\n## Acceptance criteria\n"
                            "- the landing page shows 'Built for teams'\n"
                            "- the old tagline appears nowhere on the page\n")
            asked = wait_phase(kube_client, namespace, thin, "NeedsClarification")
            blocked = wait_phase(kube_client, namespace, lost, "Blocked")

        assert asked["status"]["questions"], asked["status"]
        assert stack.comment_purposes(thin_issue) == ["clarification"]
        [comment] = stack.linear.comments_json(thin_issue)
        for question in asked["status"]["questions"]:
            assert question in comment["body"]

        assert blocked["status"]["reason"] == "NoRepository"
        assert "repo:<name>" in blocked["status"]["message"]  # it tells the human how to fix it
        assert stack.comment_purposes(lost_issue) == ["blocked"]
        assert {c["type"]: c["status"] for c in blocked["status"]["conditions"]}["Blocked"] == "True"

        assert stack.jobs() == []
        # Both runs are over, so neither holds its issue's slot.
        for name in (thin, lost):
            assert claims.get_run(engine, namespace, name).finished_at is not None
    finally:
        engine.dispose()
