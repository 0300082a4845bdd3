"""Webhooks are hints, GitHub is the truth: duplicated, lost and reordered
GitHub deliveries through the real bridge never make the operator act twice
or strand a run (real kopf, real API server, real PostgreSQL, the local
Linear and GitHub servers; the GitHub stand-in signs its deliveries the way
GitHub does and the bridge turns them into `foundry.dev/pr-hint` bumps)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator

import pytest

from foundry.db import audit, claims
from foundry.operator.controller import controller_for
from tests.support.operator_kit import operator_thread, wait_for, wait_phase
from tests.support.bridge_thread import BridgeThread, bridge_settings
from tests.support.operator_stack import OperatorStack, stack_config

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]

PR_HINT = "foundry.dev/pr-hint"
# With this resync period the timer cannot be what moves a run within a test:
# only the hints can.
NO_RESYNC = 300


def _config(resync_seconds: int) -> dict[str, Any]:
    cfg = stack_config()
    cfg["timeouts"] = {**cfg["timeouts"], "resync_seconds": resync_seconds}
    return cfg


@contextmanager
def _stand(control_plane, engine, pg_url: str, namespace: str, *, resync_seconds: int,
           bridge_secret: str | None = None) -> Iterator[OperatorStack]:
    """The stack, the bridge between GitHub and the API server, and the operator.
    `bridge_secret` other than GitHub's makes the bridge refuse every delivery."""
    with OperatorStack.open(control_plane.api_client(), engine, namespace, _config(resync_seconds)) as stack:
        secret = bridge_secret or stack.github.webhook_secret
        with BridgeThread(bridge_settings(namespace, pg_url, control_plane.kubeconfig, github_secret=secret)) as bridge:
            stack.github.set_webhook_url(bridge.github_webhook_url)
            with operator_thread(stack.deps, namespace):
                yield stack


def _annotations(stack: OperatorStack, run: str) -> dict[str, str]:
    return stack.run(run)["metadata"].get("annotations") or {}


def _handled(stack: OperatorStack, run: str) -> dict[str, Any] | None:
    """The run as it is now, once the operator has seen this version and has nothing due or in flight for it."""
    body = stack.run(run)
    controller = controller_for(stack.deps)
    assert controller is not None, "no operator is running with these Deps"
    return body if controller.idle(stack.namespace, run, seen_rv=body["metadata"]["resourceVersion"]) else None


def _hint_handled(stack: OperatorStack, run: str) -> str | None:
    """The current pr-hint, once the operator has acted on the object carrying it."""
    body = _handled(stack, run)
    return None if body is None else (body["metadata"].get("annotations") or {}).get(PR_HINT)


def _statuses(deliveries) -> list[int | None]:
    return [d.attempts[-1].status if d.attempts else None for d in deliveries]


def _to_agent_running(stack: OperatorStack, kube_client, namespace: str) -> tuple[str, str]:
    """A run in AgentRunning with no reconcile of it in flight or queued, so
    whatever moves it next is what the test does (a hint, the timer)."""
    issue_id, run = stack.ticket()
    wait_phase(kube_client, namespace, run, "WaitingApproval")
    wait_for(lambda: _handled(stack, run), timeout=10, what="the intake's reconcile done")
    stack.decide(run, "approve", "alice")
    wait_phase(kube_client, namespace, run, "AgentRunning")
    # The approval's reconcile continues past AgentRunning (it reads GitHub
    # once more); the per-run lock is free once it has returned.
    with stack.deps.locks.hold(namespace, run):
        pass
    assert stack.jobs(run) == [f"{run}-a1"]
    return issue_id, run


def test_the_same_ci_failure_delivered_three_times_makes_one_retry(control_plane, kube_client, crds, namespace,
                                                                    engine, pg_url):
    with _stand(control_plane, engine, pg_url, namespace, resync_seconds=NO_RESYNC) as stack:
        _, run = _to_agent_running(stack, kube_client, namespace)
        head = stack.push(run, {"app/health.py": "def healthz():\n    return 'ok'\n"})
        stack.open_pr(run)
        wait_phase(kube_client, namespace, run, "PROpen", timeout=10)  # the `opened` hint, not the timer
        stack.finish_job(f"{run}-a1")

        # CI fails on the head; GitHub's check_run delivery arrives three times
        # at once (the original and two copies under new delivery ids), and a
        # byte-for-byte redelivery of the original follows.
        stack.ci(head, "failure")
        original = next(d for d in stack.github.deliveries
                        if d.event == "check_run" and d.payload["check_run"]["head_sha"] == head)
        copies = [stack.github.duplicate(original.id), stack.github.duplicate(original.id)]
        assert stack.github.wait_webhooks(10)
        replay = stack.github.redeliver(original.id)
        assert stack.github.wait_webhooks(10)

        by_id = {d.id: d for d in stack.github.deliveries if not d.redelivery}
        # Three distinct deliveries, each applied as a hint; the replay of a seen id is not applied again.
        assert _statuses([by_id[original.id], *(by_id[c] for c in copies)]) == [200, 200, 200]
        assert _statuses([d for d in stack.github.deliveries if d.redelivery and d.id == replay]) == [200]
        # Wait until the operator has handled the last hint: every copy has been seen.
        wait_for(lambda: _hint_handled(stack, run), timeout=10, what="the last hint handled")
        body = wait_for(lambda: (b := stack.run(run))["status"].get("agent", {}).get("attempt") == 2 and b,
                        timeout=10, what="attempt 2")

    assert body["status"]["phase"] == "AgentRunning"
    assert body["status"]["remediations"] == {head: 2}
    assert stack.jobs(run) == [f"{run}-a1", f"{run}-a2"]
    row = claims.get_run(engine, namespace, run)
    # PROpen → AgentRunning is a phase event; a remediation while the agent runs would be a decision.
    remediations = [e for e in audit.audit_events(engine, row.id)
                    if e.kind == "Remediating" or (e.kind == "phase" and e.payload["reason"] == "Remediating")]
    assert len(remediations) == 1, remediations


def test_lost_webhooks_the_resync_timer_still_drives_the_run_to_complete(control_plane, kube_client, crds,
                                                                         namespace, engine, pg_url):
    # GitHub signs with its secret, the bridge expects another: every delivery is refused.
    with _stand(control_plane, engine, pg_url, namespace, resync_seconds=1,
                bridge_secret="not-what-github-signs-with") as stack:
        issue_id, run = _to_agent_running(stack, kube_client, namespace)
        head = stack.push(run, {"app/health.py": "def healthz():\n    return 'ok'\n"})
        number = stack.open_pr(run)
        wait_phase(kube_client, namespace, run, "PROpen", timeout=10)
        stack.finish_job(f"{run}-a1")
        stack.ci(head, "success")
        wait_for(lambda: stack.run(run)["status"].get("pr", {}).get("checks") == "success", timeout=10,
                 what="CI success seen")
        stack.merge(number)
        done = wait_phase(kube_client, namespace, run, "Complete", timeout=10)
        assert stack.github.wait_webhooks(10)

        # Nothing reached the operator through the bridge.
        events = sorted({d.event for d in stack.github.deliveries})
        assert events == ["check_run", "check_suite", "pull_request"], events
        assert set(_statuses(stack.github.deliveries)) == {401}
        assert PR_HINT not in _annotations(stack, run)

    assert done["status"]["pr"]["merged"] is True and done["status"]["pr"]["number"] == number
    assert stack.jobs(run) == [f"{run}-a1"]
    assert stack.comment_purposes(issue_id) == ["approval_request", "done", "pr_opened"]


def test_closed_merged_delivered_before_opened_completes_the_run(control_plane, kube_client, crds, namespace,
                                                                 engine, pg_url):
    with _stand(control_plane, engine, pg_url, namespace, resync_seconds=NO_RESYNC) as stack:
        issue_id, run = _to_agent_running(stack, kube_client, namespace)
        bridge_url = stack.github.webhooks.url
        # GitHub's deliveries are held back (recorded, not sent) while the PR lives its whole life.
        stack.github.set_webhook_url(None)
        head = stack.push(run, {"app/health.py": "def healthz():\n    return 'ok'\n"})
        number = stack.open_pr(run)
        stack.ci(head, "success")
        stack.merge(number)
        held = {d.payload.get("action"): d for d in stack.github.deliveries if d.event == "pull_request"}
        assert set(held) == {"opened", "closed"} and not any(d.attempts for d in held.values())
        # The Job is left running on purpose: its finish would wake the run too.
        time.sleep(1.0)
        assert stack.phase(run) == "AgentRunning"  # nothing told the operator yet

        stack.github.set_webhook_url(bridge_url)
        started = time.monotonic()
        stack.github.redeliver(held["closed"].id)
        done = wait_phase(kube_client, namespace, run, "Complete", timeout=10)
        took = time.monotonic() - started
        assert took < 5, f"the closed(merged) hint took {took:.1f}s to complete the run"

        stack.github.redeliver(held["opened"].id)
        assert stack.github.wait_webhooks(10)
        resent = [d for d in stack.github.deliveries if d.redelivery]
        assert [d.payload["action"] for d in resent] == ["closed", "opened"]
        assert _statuses(resent) == [200, 200]
        wait_for(lambda: _hint_handled(stack, run) == f"pull_request/{held['opened'].id}", timeout=10,
                 what="the late `opened` hint handled")
        after = stack.run(run)

    # The late `opened` changed nothing: still Complete, one attempt, one closing comment.
    assert after["status"]["phase"] == "Complete"
    assert after["status"] == done["status"]
    assert after["status"]["agent"]["attempt"] == 1 and not after["status"].get("remediations")
    assert stack.jobs(run) == []  # the merge ended the agent's attempt; none was started after
    assert stack.comment_purposes(issue_id) == ["approval_request", "done"]
    row = claims.get_run(engine, namespace, run)
    phases = [e.payload["to"] for e in audit.audit_events(engine, row.id) if e.kind == "phase"]
    assert phases[-2:] == ["AgentRunning", "Complete"], phases
