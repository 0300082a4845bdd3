"""The whole product driven through its real webhook wiring: the Linear and
GitHub stand-ins send signed webhooks to the real bridge, the bridge turns
them into FoundryRuns, FoundryApprovals and pr-hints, the real kopf operator
moves the runs (real API server, real PostgreSQL). After the ticket, nothing
is driven through the API except what no process plays here: the coding
agent's pushes, CI, the merge, a Job finishing, and the `foundry approve`
(a FoundryApproval) in the two-of-two test.

The resync timer is set far beyond any wait below, so every step a test sees
was caused by a webhook (or a watched Kubernetes object), never by the timer.
"""

from __future__ import annotations

import subprocess
import time
from contextlib import contextmanager
from typing import Any, Iterator

import pytest
from kubernetes import client

from foundry.cli.runs import summary_fields
from foundry.db import audit, claims
from foundry.domain.naming import run_name
from foundry.kube.crds import GROUP, VERSION
from tests.support.operator_kit import operator_thread, wait_for, wait_phase
from tests.support.bridge_thread import BridgeThread, bridge_settings
from tests.support.operator_stack import READY_DESCRIPTION, TEAM, OperatorStack, stack_config

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]

# Far longer than any test here takes: only webhooks (and watched objects) move a run.
NO_RESYNC = 300
# How long one webhook-driven step may take; a tenth of the resync period at most.
STEP = 15.0
# Mentions login: risk area `auth`, which policy.roles_required gives to role `security` (Alice, not Bob).
LOGIN_DESCRIPTION = (
    "The service's login endpoint must rate-limit failed attempts.\n\n"
    "## Acceptance criteria\n"
    "- a sixth failed login within a minute answers 429\n"
    "- a test covers the limit\n"
)


@contextmanager
def _stand(control_plane, engine, pg_url: str, namespace: str, **policy: Any) -> Iterator[OperatorStack]:
    """Stand-ins → bridge → API server ← operator, with both stand-ins sending to the bridge."""
    cfg = stack_config(**policy)
    cfg["timeouts"] = {**cfg["timeouts"], "resync_seconds": NO_RESYNC}
    with OperatorStack.open(control_plane.api_client(), engine, namespace, cfg) as stack:
        settings = bridge_settings(namespace, pg_url, control_plane.kubeconfig,
                                   github_secret=stack.github.webhook_secret,
                                   linear_secret=stack.linear.webhook_secret)
        with BridgeThread(settings) as bridge:
            stack.linear.set_webhook_url(f"{bridge.url}/webhooks/linear")
            stack.github.set_webhook_url(bridge.github_webhook_url)
            with operator_thread(stack.deps, namespace):
                yield stack


# ---------------------------------------------------------------- helpers


def _labelled_ticket(stack: OperatorStack, title: str, description: str) -> tuple[str, str]:
    """A person files an issue, then labels it `foundry` in Linear; returns (issue id, the run's name)."""
    issue_id = stack.linear.create_issue(TEAM, title, description, actor_id=stack.alice_id)
    stack.linear.update_issue(issue_id, labels=["foundry"], actor_id=stack.alice_id)
    run = run_name("linear", issue_id, 1)
    wait_for(lambda: _exists(stack, run), timeout=STEP, what=f"the bridge to create {run}")
    return issue_id, run


def _exists(stack: OperatorStack, run: str) -> bool:
    try:
        stack.run(run)
    except client.ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def _comment(stack: OperatorStack, issue_id: str, body: str, user_id: str) -> str:
    """A human comment in Linear; returns the id of the `Comment` delivery once the bridge answered it."""
    comment_id = stack.linear.add_comment(issue_id, body, user_id=user_id)
    delivery = next(d for d in stack.linear.deliveries
                    if d.event == "Comment" and d.payload["data"]["id"] == comment_id)
    wait_for(lambda: delivery.finished, timeout=STEP, what=f"the bridge's answer to {body!r}")
    return delivery.id


def _answer(caplog, delivery_id: str) -> dict[str, Any]:
    """What the bridge answered a delivery (its one `delivery` log line's fields)."""
    lines = [r.fields for r in caplog.records
             if r.name == "foundry.bridge" and getattr(r, "fields", {}).get("delivery_id") == delivery_id]
    assert len(lines) == 1, lines
    return lines[0]


def _approvals(stack: OperatorStack, run: str) -> list[dict[str, Any]]:
    """The specs of the FoundryApprovals on `run`, by approver, source and decision."""
    items = client.CustomObjectsApi(stack.api).list_namespaced_custom_object(
        GROUP, VERSION, stack.namespace, "foundryapprovals", label_selector=f"foundry.dev/run={run}")["items"]
    return sorted((i["spec"] for i in items), key=lambda s: (s["approver"], s["source"], s["decision"]))


def _says(body: dict[str, Any], *words: str) -> dict[str, Any] | None:
    """`body` when its status message names every one of `words`."""
    message = body["status"].get("message") or ""
    return body if all(w in message for w in words) else None


def _foundry_moved(stack: OperatorStack, delivery, state: str) -> bool:
    """Whether `delivery` is Foundry's own move of an issue to workflow state `state`."""
    payload = delivery.payload
    return (delivery.event == "Issue" and payload["actor"]["id"] == stack.linear.bot
            and payload["data"]["state"]["name"] == state)


def _run_names(kube_client, namespace: str) -> list[str]:
    items = client.CustomObjectsApi(kube_client).list_namespaced_custom_object(GROUP, VERSION, namespace,
                                                                               "foundryruns")["items"]
    return sorted(r["metadata"]["name"] for r in items)


def _condition(body: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in body["status"]["conditions"] if c["type"] == type_)


def _phases(engine, namespace: str, run: str) -> list[str]:
    row = claims.get_run(engine, namespace, run)
    return [e.payload["to"] for e in audit.audit_events(engine, row.id) if e.kind == "phase"]


def _kubectl_approvals(control_plane, namespace: str, run: str) -> str:
    """The APPROVALS column of `kubectl get foundryruns`."""
    out = subprocess.run([str(control_plane.kubectl), f"--kubeconfig={control_plane.kubeconfig}", "get",
                          "foundryruns", run, "-n", namespace], capture_output=True, text=True, check=True,
                         timeout=30).stdout
    header, row = out.splitlines()
    return row.split()[header.split().index("APPROVALS")]


def _agent_running(stack: OperatorStack, kube_client, namespace: str, *, user_id: str) -> tuple[str, str]:
    """A ticket labelled in Linear and approved by a Linear comment: its run's Job is running."""
    issue_id, run = _labelled_ticket(stack, "Add a health endpoint to the service", READY_DESCRIPTION)
    wait_phase(kube_client, namespace, run, "WaitingApproval", timeout=STEP)
    _comment(stack, issue_id, "/foundry approve", user_id)
    wait_phase(kube_client, namespace, run, "AgentRunning", timeout=STEP)
    assert stack.jobs(run) == [f"{run}-a1"]
    return issue_id, run


# ---------------------------------------------------------------- 1. the full story


def test_a_labelled_ticket_reaches_a_merged_pr_on_webhooks_alone(control_plane, kube_client, crds, namespace,
                                                                 engine, pg_url, caplog):
    caplog.set_level("INFO", logger="foundry.bridge")
    with _stand(control_plane, engine, pg_url, namespace) as stack:
        started = time.monotonic()
        issue_id, run = _labelled_ticket(stack, "Add a health endpoint to the service", READY_DESCRIPTION)
        waiting = wait_phase(kube_client, namespace, run, "WaitingApproval", timeout=STEP)
        assert waiting["spec"]["trigger"]["source"] == "webhook"
        assert waiting["status"]["approvals"]["summary"] == "0/1"
        assert stack.comment_purposes(issue_id) == ["approval_request"]
        assert stack.jobs() == []

        approve = _comment(stack, issue_id, "/foundry approve", stack.alice_id)
        assert _answer(caplog, approve)["outcome"] == "applied"
        running = wait_phase(kube_client, namespace, run, "AgentRunning", timeout=STEP)
        assert running["status"]["approvals"]["approvers"][0]["name"] == "Alice"
        assert running["status"]["approvals"]["approvers"][0]["source"] == "linear"
        assert stack.jobs(run) == [f"{run}-a1"]

        # The agent pushes and opens the PR: the `opened` webhook is what moves the run.
        head = stack.push(run, {"app/health.py": "def healthz():\n    return 'ok'\n"})
        number = stack.open_pr(run)
        wait_phase(kube_client, namespace, run, "PROpen", timeout=STEP)
        stack.finish_job(f"{run}-a1")
        stack.ci(head, "success")
        wait_for(lambda: stack.run(run)["status"]["pr"].get("checks") == "success", timeout=STEP,
                 what="the check_run webhook's hint read")
        stack.merge(number)
        done = wait_phase(kube_client, namespace, run, "Complete", timeout=STEP)
        took = time.monotonic() - started
        assert stack.linear.wait_webhooks(STEP) and stack.github.wait_webhooks(STEP)

    assert took < NO_RESYNC / 5, f"the story took {took:.1f}s: something waited for the resync timer"
    # The issue's own deliveries: its creation (no label) starts nothing, the label starts the run.
    issue_events = [d for d in stack.linear.deliveries
                    if d.event == "Issue" and d.payload["actor"]["id"] == stack.alice_id]
    assert [_answer(caplog, d.id)["outcome"] for d in issue_events] == ["ignored", "created"]
    # Every delivery either stand-in sent was accepted (Foundry's own comments and state changes included).
    assert {d.attempts[-1].status for d in stack.linear.deliveries + stack.github.deliveries} == {200}
    assert {"pull_request", "check_run", "check_suite"} <= {d.event for d in stack.github.deliveries}

    status = done["status"]
    assert status["pr"]["number"] == number and status["pr"]["merged"] is True
    assert status["approvals"]["summary"] == "1/1"
    assert [(j["attempt"], j["state"]) for j in status["agent"]["jobs"]] == [(1, "succeeded")]
    assert _condition(done, "Complete")["status"] == "True"
    assert stack.comment_purposes(issue_id) == ["approval_request", "done", "pr_opened"]
    assert stack.linear.issue_json(issue_id)["state"]["name"] == "Done"
    assert _phases(engine, namespace, run) == ["Analysing", "WaitingApproval", "Approved", "AgentRunning",
                                               "PROpen", "Complete"]
    # One run for the issue, however many Issue webhooks Foundry's own state changes caused.
    assert claims.get_run(engine, namespace, run).attempt == 1
    assert _run_names(kube_client, namespace) == [run]


# ---------------------------------------------------------------- 2. N of M


def test_two_of_two_counts_a_person_once_across_linear_and_kubernetes(control_plane, kube_client, crds, namespace,
                                                                      engine, pg_url):
    with _stand(control_plane, engine, pg_url, namespace, approvals_required=2) as stack:
        bob_id = stack.linear.add_user("Bob", "bob@example.com")
        issue_id, run = _labelled_ticket(stack, "Add a health endpoint to the service", READY_DESCRIPTION)
        wait_phase(kube_client, namespace, run, "WaitingApproval", timeout=STEP)
        assert _kubectl_approvals(control_plane, namespace, run) == "0/2"

        # Alice twice: a Linear comment, and `foundry approve` as her Kubernetes user.
        _comment(stack, issue_id, "/foundry approve", stack.alice_id)
        stack.decide(run, "approve", "alice", source="kubernetes")
        assert [(a["approver"], a["source"]) for a in _approvals(stack, run)] == [
            ("alice", "kubernetes"), ("alice@example.com", "linear")]
        half = wait_for(lambda: (b := stack.run(run))["status"]["approvals"]["received"] == 1 and b,
                        timeout=STEP, what="Alice's approval counted")
        assert half["status"]["phase"] == "WaitingApproval"
        assert half["status"]["approvals"]["summary"] == "1/2"
        assert [a["name"] for a in half["status"]["approvals"]["approvers"]] == ["Alice"]
        assert _kubectl_approvals(control_plane, namespace, run) == "1/2"
        assert stack.jobs(run) == []

        _comment(stack, issue_id, "/foundry approve", bob_id)
        approved = wait_phase(kube_client, namespace, run, "AgentRunning", timeout=STEP)
        assert _kubectl_approvals(control_plane, namespace, run) == "2/2"

    approvals = approved["status"]["approvals"]
    assert (approvals["received"], approvals["required"], approvals["summary"]) == (2, 2, "2/2")
    assert [a["name"] for a in approvals["approvers"]] == ["Alice", "Bob"]
    # Had Alice counted twice, the run would have been approved by her alone, before Bob spoke.
    assert _condition(approved, "Approved")["message"].startswith("approved by Alice, Bob (plan ")
    assert stack.jobs(run) == [f"{run}-a1"]


# ---------------------------------------------------------------- 3. approvals that do not count


def test_approvals_from_a_stranger_and_an_uncovered_role_do_not_count_and_say_why(control_plane, kube_client, crds,
                                                                                  namespace, engine, pg_url, caplog):
    caplog.set_level("INFO", logger="foundry.bridge")
    with _stand(control_plane, engine, pg_url, namespace) as stack:
        bob_id = stack.linear.add_user("Bob", "bob@example.com")  # configured, roles [dev]
        mallory_id = stack.linear.add_user("Mallory", "mallory@example.com")  # not in the config
        issue_id, run = _labelled_ticket(stack, "Rate-limit the service login endpoint", LOGIN_DESCRIPTION)
        waiting = wait_phase(kube_client, namespace, run, "WaitingApproval", timeout=STEP)
        assert waiting["status"]["riskAreas"] == ["auth"]

        for user_id in (mallory_id, bob_id):
            # The bridge records the decision; whether it counts is the operator's call.
            assert _answer(caplog, _comment(stack, issue_id, "/foundry approve", user_id))["outcome"] == "applied"
        refused = wait_for(lambda: _says(stack.run(run), "mallory@example.com", "Bob lacks"), timeout=STEP,
                           what="both refusals recorded")
        status = refused["status"]
        assert status["phase"] == "WaitingApproval" and status["approvals"]["summary"] == "0/1"
        assert "'mallory@example.com' (linear) is not a configured approver" in status["message"]
        assert "Bob lacks a required role: auth needs one of the roles security" in status["message"]
        assert _condition(refused, "Approved")["status"] == "False"
        # The refusals are what `foundry runs show` prints as the run's message.
        assert dict(summary_fields(refused))["Message"] == status["message"]
        assert stack.jobs(run) == []

        # Alice holds `security`: her approval counts, and the refused ones still do not.
        _comment(stack, issue_id, "/foundry approve", stack.alice_id)
        running = wait_phase(kube_client, namespace, run, "AgentRunning", timeout=STEP)

    assert running["status"]["approvals"]["summary"] == "1/1"
    assert [a["name"] for a in running["status"]["approvals"]["approvers"]] == ["Alice"]
    row = claims.get_run(engine, namespace, run)
    seen = [e.payload for e in audit.audit_events(engine, row.id) if e.kind == "approvals-seen"]
    assert seen and {who for who, _ in seen[-1]["refused"]} == {"mallory@example.com", "bob@example.com"}


# ---------------------------------------------------------------- 4. stop, then a late approve


def test_a_linear_stop_ends_the_agent_and_a_late_approve_changes_nothing(control_plane, kube_client, crds,
                                                                         namespace, engine, pg_url, caplog):
    caplog.set_level("INFO", logger="foundry.bridge")
    with _stand(control_plane, engine, pg_url, namespace) as stack:
        bob_id = stack.linear.add_user("Bob", "bob@example.com")
        issue_id, run = _agent_running(stack, kube_client, namespace, user_id=stack.alice_id)

        stop = _comment(stack, issue_id, "/foundry stop", bob_id)  # stopping needs no particular role
        assert _answer(caplog, stop)["outcome"] == "applied"
        stopped = wait_phase(kube_client, namespace, run, "Stopped", timeout=STEP)
        wait_for(lambda: stack.jobs(run) == [], timeout=STEP, what="the agent's Job deleted")
        approvals_before = _approvals(stack, run)

        late = _comment(stack, issue_id, "/foundry approve", stack.alice_id)
        answer = _answer(caplog, late)
        after = stack.run(run)
        assert stack.linear.wait_webhooks(STEP)

    assert (answer["http_status"], answer["outcome"], answer["run"]) == (200, "ignored", None)
    assert answer["reason"] == "the issue has no active run"
    assert stopped["status"]["reason"] == "StoppedByHuman"
    assert stopped["status"]["message"] == "stop by bob@example.com (linear)"
    # What `foundry runs show` lists: the attempt was cancelled, it is not running on forever.
    assert [(j["attempt"], j["state"]) for j in stopped["status"]["agent"]["jobs"]] == [(1, "cancelled")]
    assert after["status"] == stopped["status"]
    assert _approvals(stack, run) == approvals_before  # no FoundryApproval was made for the late comment
    assert stack.jobs(run) == []
    assert stack.comment_purposes(issue_id) == ["approval_request"]
    assert _phases(engine, namespace, run)[-2:] == ["AgentRunning", "Stopped"]
    assert claims.get_run(engine, namespace, run).finished_at is not None


def test_a_linear_stop_after_the_agent_finished_keeps_its_job(control_plane, kube_client, crds, namespace, engine,
                                                              pg_url):
    # A run that ends cancels an agent still at work; a finished Job is kept, with its record and logs.
    with _stand(control_plane, engine, pg_url, namespace) as stack:
        issue_id, run = _agent_running(stack, kube_client, namespace, user_id=stack.alice_id)
        stack.push(run, {"app/health.py": "def healthz():\n    return 'ok'\n"})
        stack.open_pr(run)
        wait_phase(kube_client, namespace, run, "PROpen", timeout=STEP)
        stack.finish_job(f"{run}-a1")
        wait_for(lambda: stack.run(run)["status"]["agent"]["jobs"][0]["state"] == "succeeded", timeout=STEP,
                 what="the finished Job recorded")

        _comment(stack, issue_id, "/foundry stop", stack.alice_id)
        stopped = wait_phase(kube_client, namespace, run, "Stopped", timeout=STEP)

    assert stack.jobs(run) == [f"{run}-a1"]
    assert [(j["attempt"], j["state"]) for j in stopped["status"]["agent"]["jobs"]] == [(1, "succeeded")]


def test_foundrys_own_state_change_arriving_again_after_a_stop_starts_nothing(control_plane, kube_client, crds,
                                                                              namespace, engine, pg_url, caplog):
    # Moving the issue bumps its updatedAt; were the move taken for a ticket
    # change, a copy arriving once no run is active would start attempt 2 of
    # work a human just stopped.
    caplog.set_level("INFO", logger="foundry.bridge")
    with _stand(control_plane, engine, pg_url, namespace) as stack:
        issue_id, run = _agent_running(stack, kube_client, namespace, user_id=stack.alice_id)
        # AgentRunning moved the issue to "In Progress": Linear sent that as an Issue update.
        moved = wait_for(lambda: next((d for d in stack.linear.deliveries
                                       if _foundry_moved(stack, d, "In Progress") and d.finished), None),
                         timeout=STEP, what="Foundry's state change delivered")
        _comment(stack, issue_id, "/foundry stop", stack.alice_id)
        stopped = wait_phase(kube_client, namespace, run, "Stopped", timeout=STEP)

        # Linear sends it again (its retry after an answer that got lost, or "Redeliver").
        stack.linear.redeliver(moved.id)
        assert stack.linear.wait_webhooks(STEP)
        answers = [r.fields for r in caplog.records
                   if r.name == "foundry.bridge" and getattr(r, "fields", {}).get("delivery_id") == moved.id]
        after = stack.run(run)

    assert [(a["outcome"], a.get("reason")) for a in answers] == [("ignored", "only the workflow state changed")] * 2
    assert _run_names(kube_client, namespace) == [run]
    assert [r.attempt for r in claims.runs_of_issue(engine, "linear", issue_id)] == [1]
    assert after["status"] == stopped["status"]
    assert stack.comment_purposes(issue_id) == ["approval_request"]  # no second plan posted
