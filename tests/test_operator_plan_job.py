"""The real operator plans with the agent (plan.mode agent): plan Job → plan in status and on the ticket → an
approval of that hash → the apply attempt told that plan (real kopf, real API server, real PostgreSQL, the
Linear and GitHub stand-ins).

No kubelet runs here: the plan's pod is made from its Job's template and ended with the termination messages
its steps write, the verify step's being what `foundry agent run --step verify` writes (foundry.runner.result),
and the Job is finished by writing its status, as the controllers would. The real CLIs in a real pod are
tests/test_plan_node.py's.
"""

from __future__ import annotations

import json

import pytest
from kubernetes import client

from foundry.connectors.marked_comments import find_markers
from foundry.domain import plans
from foundry.kube.approvals import build_approval_manifest, create_or_attach_approval
from foundry.runner import result as runner_result
from tests.support.agent_pods import play_pod
from tests.support.operator_kit import operator_thread, wait_for, wait_phase
from tests.support.operator_stack import OperatorStack, stack_config

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]

# No risk word anywhere in it: whatever needs a role comes from the plan.
PLAIN_TICKET = ("The service has no health endpoint, so monitoring cannot tell whether it is up.\n\n"
                "## Acceptance criteria\n- GET /healthz answers 200 with body `ok`\n- a test covers the endpoint\n")
PLAN = {
    "summary": "PLAN-4471: add GET /healthz, and record probes in a new table.",
    "files": [{"path": "app/health.py", "why": "the endpoint"},
              {"path": "migrations/0003.sql", "why": "a probes table"}],
    "approach": "A handler next to main(); one CREATE TABLE in a new migration.",
    "tests": ["tests/test_health.py: GET /healthz is 200"],
    "risks": ["the migration must run before the deploy"],
    "openQuestions": [],
}
OK = ('{"version": 1, "step": "prepare", "outcome": "ok"}', 0, "Completed")


def agent_config(**policy) -> dict:
    doc = stack_config(roles_required={"migrations": ["lead"]}, **policy)
    doc["plan"] = {"mode": "agent", "timeout_seconds": 120}
    doc["agent"] = {**doc["agent"], "runner": {"name": "claude-code", "model": "claude-sonnet-4-5"}}
    return doc


def verify_message(plan: dict) -> str:
    """The verify step's termination message for a valid plan, encoded by the runner's own encoder."""
    made = plans.validate(plan)
    record = {**plans.summary_fields(made), "bytes": len(plans.canonical_json(made).encode())}
    return runner_result.encode(runner_result.Result(step="verify", outcome=runner_result.PLANNED, plan=record,
                                                     summary=made.summary[:200]))


def comments(stack: OperatorStack, issue_id: str, purpose: str) -> list[str]:
    return [c["body"] for c in stack.linear.comments_json(issue_id)
            if any(p == purpose for _, p in find_markers(c["body"]))]


def plan_job(stack: OperatorStack, run: str, number: int = 1) -> dict:
    name = f"{run}-p{number}"
    wait_for(lambda: name in stack.jobs(run), timeout=30, what=f"plan Job {name}")
    return stack.api.sanitize_for_serialization(client.BatchV1Api(stack.api).read_namespaced_job(name,
                                                                                               stack.namespace))


def approve(stack: OperatorStack, run: str, approver: str, plan_hash: str | None) -> None:
    create_or_attach_approval(stack.api, stack.namespace, build_approval_manifest(
        run, "approve", approver, "kubernetes", namespace=stack.namespace, plan_hash=plan_hash))


def test_the_agents_plan_is_approved_by_hash_and_the_apply_attempt_is_told_it(control_plane, kube_client, crds,
                                                                               namespace, engine):
    api = control_plane.api_client()
    with OperatorStack.open(api, engine, namespace, config=agent_config()) as stack, \
            operator_thread(stack.deps, namespace):
        issue_id, run = stack.ticket(description=PLAIN_TICKET)
        job = plan_job(stack, run)
        pod = job["spec"]["template"]["spec"]
        assert [c["name"] for c in pod["initContainers"]] + [c["name"] for c in pod["containers"]] == \
            ["prepare", "plan", "verify"]
        secrets = [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v]
        assert f"{run}-a1-github" not in secrets  # never the push token
        # Recorded by the status write right after the create.
        wait_for(lambda: (stack.run(run)["status"].get("planJob") or {}).get("name") == f"{run}-p1",
                 timeout=30, what="status.planJob")
        assert stack.phase(run) == "Analysing" and stack.jobs(run) == [f"{run}-p1"]  # no apply attempt

        play_pod(kube_client, namespace, f"{run}-p1",
                 steps={"prepare": OK, "plan": ('{"version": 1, "step": "plan", "outcome": "ok"}', 0, "Completed"),
                        "verify": (verify_message(PLAN), 0, "Completed")})
        stack.finish_job(f"{run}-p1")
        wait_phase(kube_client, namespace, run, "WaitingApproval")
        status = stack.run(run)["status"]
        want = plans.plan_hash(plans.validate(PLAN))
        assert status["plan"]["hash"] == want and status["plan"]["source"] == "agent"
        assert status["plan"]["agent"] == plans.validate(PLAN).as_dict()
        assert status["riskAreas"] == ["migrations"]  # from the plan's files; the ticket has no risk word
        (request,) = comments(stack, issue_id, "approval_request")
        assert want in request and "PLAN-4471" in request and "migrations/0003.sql" in request

        # Bob approves this very plan, but lacks the role the migration needs; an approval of another
        # plan hash does not count either; Alice's of this hash does.
        approve(stack, run, "bob", want)
        approve(stack, run, "alice", "sha256:" + "0" * 64)
        wait_for(lambda: len([c for c in stack.linear.comments_json(issue_id)
                              if any(p.startswith("refused.") for _, p in find_markers(c["body"]))]) == 2,
                 timeout=30, what="both refusals told")
        assert stack.phase(run) == "WaitingApproval" and stack.jobs(run) == [f"{run}-p1"]
        approve(stack, run, "alice", want)
        wait_for(lambda: f"{run}-a1" in stack.jobs(run), timeout=30, what="attempt 1")
        core = client.CoreV1Api(api)  # the input ConfigMap follows its Job (it needs the Job's uid)
        wait_for(lambda: core.list_namespaced_config_map(namespace, field_selector=f"metadata.name={run}-a1-input")
                 .items, timeout=30, what="attempt 1's input")
        given = json.loads(core.read_namespaced_config_map(f"{run}-a1-input", namespace).data["input.json"])
        assert given["planHash"] == want and given.get("mode", "apply") == "apply"
        assert plans.render_markdown(plans.validate(PLAN)).strip() in given["planText"]
        assert stack.run(run)["status"]["approvals"]["planHash"] == want


def test_a_plan_job_that_fails_ends_the_run_with_its_reason_and_nothing_is_applied(control_plane, kube_client,
                                                                                    crds, namespace, engine):
    api = control_plane.api_client()
    with OperatorStack.open(api, engine, namespace, config=agent_config()) as stack, \
            operator_thread(stack.deps, namespace):
        issue_id, run = stack.ticket(description=PLAIN_TICKET)
        plan_job(stack, run)
        refused = json.dumps({"version": 1, "step": "verify", "outcome": "failed",
                              "reason": "the CLI changed the work tree in plan mode (app/main.py)"})
        play_pod(kube_client, namespace, f"{run}-p1", phase="Failed",
                 steps={"prepare": OK, "plan": ('{"version": 1, "step": "plan", "outcome": "ok"}', 0, "Completed"),
                        "verify": (refused, 1, "Error")})
        stack.finish_job(f"{run}-p1", succeeded=False)
        wait_phase(kube_client, namespace, run, "ExecutionFailed")
        status = stack.run(run)["status"]
        assert status["reason"] == "PlanFailed" and "changed the work tree" in status["message"]
        (blocked,) = comments(stack, issue_id, "blocked")
        assert "changed the work tree" in blocked
        assert stack.jobs(run) == [f"{run}-p1"]  # no apply attempt, ever


def test_a_stop_while_the_agent_plans_deletes_the_plan_job(control_plane, kube_client, crds, namespace, engine):
    api = control_plane.api_client()
    with OperatorStack.open(api, engine, namespace, config=agent_config()) as stack, \
            operator_thread(stack.deps, namespace):
        _, run = stack.ticket(description=PLAIN_TICKET)
        plan_job(stack, run)
        stack.decide(run, "stop", "alice")
        wait_phase(kube_client, namespace, run, "Stopped")
        wait_for(lambda: f"{run}-p1" not in stack.jobs(run), timeout=30, what="the plan Job deleted")
        assert stack.run(run)["status"]["planJob"]["state"] == "cancelled"


def test_a_changed_ticket_replaces_plan_a_and_its_approval_does_not_count_for_plan_b(control_plane, kube_client,
                                                                                     crds, namespace, engine):
    api = control_plane.api_client()
    with OperatorStack.open(api, engine, namespace, config=agent_config(approvals_required=2)) as stack, \
            operator_thread(stack.deps, namespace):
        issue_id, run = stack.ticket(description=PLAIN_TICKET)
        plan_job(stack, run)
        ok_plan = ('{"version": 1, "step": "plan", "outcome": "ok"}', 0, "Completed")
        play_pod(kube_client, namespace, f"{run}-p1", steps={"prepare": OK, "plan": ok_plan,
                                                              "verify": (verify_message(PLAN), 0, "Completed")})
        stack.finish_job(f"{run}-p1")
        wait_phase(kube_client, namespace, run, "WaitingApproval")
        plan_a = stack.run(run)["status"]["plan"]["hash"]
        approve(stack, run, "alice", plan_a)
        wait_for(lambda: stack.run(run)["status"]["approvals"]["received"] == 1, timeout=30, what="A approved once")

        # The ticket changes (the bridge writes the new text to spec.ticket): plan B replaces A.
        ticket = stack.run(run)["spec"]["ticket"]
        client.CustomObjectsApi(api).patch_namespaced_custom_object(
            "foundry.dev", "v1alpha1", namespace, "foundryruns", run,
            {"spec": {"ticket": {**ticket, "description": PLAIN_TICKET + "- HEAD /healthz answers 200 too\n"}}})
        job_b = plan_job(stack, run, 2)
        assert job_b["metadata"]["name"] == f"{run}-p2"
        wait_for(lambda: any("re-planning" in c.lower() for c in comments(stack, issue_id, "replanned.r2")),
                 timeout=30, what="the approvers told")
        plan_b_json = {**PLAN, "tests": [*PLAN["tests"], "HEAD /healthz is 200"]}
        play_pod(kube_client, namespace, f"{run}-p2", steps={"prepare": OK, "plan": ok_plan,
                                                              "verify": (verify_message(plan_b_json), 0, "Completed")})
        stack.finish_job(f"{run}-p2")
        plan_b = plans.plan_hash(plans.validate(plan_b_json))
        wait_for(lambda: stack.run(run)["status"].get("plan", {}).get("hash") == plan_b
                 and stack.phase(run) == "WaitingApproval", timeout=30, what="plan B posted")
        assert comments(stack, issue_id, "plan.r2") and plan_b in comments(stack, issue_id, "plan.r2")[0]
        status = stack.run(run)["status"]
        assert status["plan"]["revision"] == 2 and status["approvals"]["received"] == 0
        # Alice's approval of A stays A's; her approval of B (a new object: the hash is in its name) and
        # Bob's... Bob lacks lead for migrations, so a second lead is needed: only Alice has it, and N-of-M
        # counts people, so B waits for a second approver; what matters here is that A's does not count.
        approve(stack, run, "alice", plan_b)
        wait_for(lambda: stack.run(run)["status"]["approvals"]["received"] == 1, timeout=30, what="B approved once")
        assert stack.phase(run) == "WaitingApproval" and f"{run}-a1" not in stack.jobs(run)
