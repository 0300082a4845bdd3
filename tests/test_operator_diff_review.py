"""The diff is judged again on every new head: a change larger than policy
allows, or one that reaches a risk area nobody approved, waits in
ReviewRequired with the reason, and a later head that fixes it moves the run
back to PROpen (real kopf, real API server, real PostgreSQL, local GitHub)."""

from __future__ import annotations

import pytest
from kubernetes import client

from tests.support.operator_kit import operator_thread, wait_for, wait_phase
from tests.support.operator_stack import OperatorStack, stack_config

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]


def _review(body: dict) -> dict:
    return next(c for c in body["status"]["conditions"] if c["type"] == "ReviewRequired")


def _warnings(kube_client, namespace: str, run: str) -> list[str]:
    return [e.reason for e in client.CoreV1Api(kube_client).list_namespaced_event(namespace).items
            if e.involved_object.name == run and e.type == "Warning"]


def test_too_many_files_wait_for_review_until_a_smaller_head(control_plane, kube_client, crds, namespace, engine):
    with OperatorStack.open(kube_client, engine, namespace, stack_config(max_changed_files=2)) as stack, \
            operator_thread(stack.deps, namespace):
        issue_id, run = stack.agent_running()
        files = {f"app/part_{i}.py": f"PART = {i}\n" for i in range(4)}
        stack.push(run, files)
        number = stack.open_pr(run)
        held = wait_phase(kube_client, namespace, run, "ReviewRequired")
        cond = _review(held)
        assert cond["status"] == "True" and cond["reason"] == "DiffNeedsReview"
        assert "4 files changed, more than the limit of 2" in cond["message"], cond
        assert held["status"]["pr"]["number"] == number
        # The Event follows the status write (decision 0004): wait for it.
        wait_for(lambda: "DiffNeedsReview" in _warnings(kube_client, namespace, run), timeout=15, what="the DiffNeedsReview Event")

        # The agent trims its change: the new head is judged afresh.
        head = stack.push(run, {"app/part_2.py": None, "app/part_3.py": None}, "foundry: smaller change")
        opened = wait_phase(kube_client, namespace, run, "PROpen", timeout=30)
        assert opened["status"]["pr"]["headSha"] == head
        assert _review(opened)["status"] == "False"

    assert stack.comment_purposes(issue_id).count("pr_opened") == 1


def test_a_risk_area_nobody_approved_waits_for_review(control_plane, kube_client, crds, namespace, engine):
    with OperatorStack.open(kube_client, engine, namespace) as stack, operator_thread(stack.deps, namespace):
        _, run = stack.agent_running()
        assert "migrations" not in (stack.run(run)["status"].get("riskAreas") or [])
        stack.push(run, {"app/health.py": "def healthz():\n    return 'ok'\n",
                         "app/migrations/0002_add_health.sql": "ALTER TABLE service ADD COLUMN healthy bool;\n"})
        stack.open_pr(run)
        held = wait_phase(kube_client, namespace, run, "ReviewRequired")
        cond = _review(held)
        assert cond["reason"] == "DiffNeedsReview"
        assert "migrations, which the approval did not cover" in cond["message"], cond
        # Nothing merges it on Foundry's behalf, and no new attempt starts.
        assert stack.jobs(run) == [f"{run}-a1"]


# ---- plan drift: the plan names app/health.py (the ticket says so; the deterministic planner lists it)

PLANNED_DESCRIPTION = (
    "The service needs a health endpoint for the load balancer. Put it in app/health.py.\n\n"
    "## Acceptance criteria\n"
    "- GET /healthz answers 200 with body `ok`\n"
)


def _planned_config() -> dict:
    # The deterministic planner: its plan names exactly the paths the ticket wrote.
    return {**stack_config(), "plan": {"mode": "heuristic"}}


def _planned_run(stack: OperatorStack) -> tuple[str, str]:
    """A ticket whose plan names app/health.py, planned, approved and dispatched (attempt 1)."""
    issue_id, run = stack.ticket(description=PLANNED_DESCRIPTION)
    waiting = wait_phase(stack.api, stack.namespace, run, "WaitingApproval")
    assert waiting["status"]["plan"]["files"] == ["app/health.py"], waiting["status"]["plan"]
    stack.decide(run, "approve", "alice")
    wait_for(lambda: ((stack.run(run).get("status") or {}).get("agent") or {}).get("jobs"),
             timeout=30, what=f"{run} to dispatch attempt 1")
    return issue_id, run


def _drift(body: dict) -> dict:
    return next(c for c in body["status"]["conditions"] if c["type"] == "PlanDrift")


def _drift_sections(stack: OperatorStack, number: int) -> int:
    from tests.support.operator_stack import REPO

    return (stack.github.pull_json(REPO, number)["body"] or "").count("<!-- foundry:plan-drift -->")


def test_files_outside_the_plan_set_the_drift_condition_warn_once_and_wait_for_review(
        control_plane, kube_client, crds, namespace, engine):
    from tests.support.operator_stack import REPO

    with OperatorStack.open(kube_client, engine, namespace, _planned_config()) as stack, \
            operator_thread(stack.deps, namespace):
        _, run = _planned_run(stack)
        stack.push(run, {"app/health.py": "def healthz():\n    return 'ok'\n",
                         "lib/util.py": "def helper():\n    return 1\n"})
        number = stack.open_pr(run)
        held = wait_phase(kube_client, namespace, run, "ReviewRequired")
        assert _review(held)["reason"] == "DiffNeedsReview"
        assert "files outside the plan: lib/util.py" in _review(held)["message"], _review(held)
        drift = _drift(held)
        assert (drift["status"], drift["reason"]) == ("True", "FilesOutsidePlan")
        assert drift["message"] == "1 changed file(s) outside the approved plan: lib/util.py"
        wait_for(lambda: "PlanDrift" in _warnings(kube_client, namespace, run), timeout=15, what="the PlanDrift Event")
        wait_for(lambda: _drift_sections(stack, number) == 1, timeout=15, what="the PR body's Plan drift section")
        body = stack.github.pull_json(REPO, number)["body"]
        assert "## Plan drift" in body and "- `lib/util.py`" in body and "`app/health.py`" not in body
        # Passes go on (a resync every second, the body edit's own webhook): nothing is said twice.
        passes = stack.run(run)["status"]["lastSyncedAt"]
        wait_for(lambda: stack.run(run)["status"]["lastSyncedAt"] != passes, timeout=15, what="another pass")
        assert _warnings(kube_client, namespace, run).count("PlanDrift") == 1
        assert _drift_sections(stack, number) == 1
        assert stack.phase(run) == "ReviewRequired" and stack.jobs(run) == [f"{run}-a1"]

        # The agent takes the stray file back: the head is within the plan, the flag goes from both.
        stack.push(run, {"lib/util.py": None}, "foundry: keep to the plan")
        opened = wait_phase(kube_client, namespace, run, "PROpen", timeout=30)
        assert (_drift(opened)["status"], _drift(opened)["reason"]) == ("False", "WithinPlan")
        wait_for(lambda: _drift_sections(stack, number) == 0, timeout=15, what="the drift section to go")


def test_out_of_plan_files_in_a_risk_area_nobody_approved_block_the_run(
        control_plane, kube_client, crds, namespace, engine):
    from tests.support.operator_stack import REPO

    with OperatorStack.open(kube_client, engine, namespace, _planned_config()) as stack, \
            operator_thread(stack.deps, namespace):
        issue_id, run = _planned_run(stack)
        assert "migrations" not in (stack.run(run)["status"].get("riskAreas") or [])
        stack.push(run, {"app/health.py": "def healthz():\n    return 'ok'\n",
                         "db/migrations/0003_add_health.sql": "ALTER TABLE service ADD COLUMN healthy bool;\n"})
        number = stack.open_pr(run)
        blocked = wait_phase(kube_client, namespace, run, "Blocked")
        why = "db/migrations/0003_add_health.sql is in risk area migrations, which the approvals did not cover"
        assert blocked["status"]["reason"] == "PlanDrift" and why in blocked["status"]["message"], blocked["status"]
        drift = _drift(blocked)
        assert (drift["status"], drift["reason"]) == ("True", "RiskyFilesOutsidePlan") and why in drift["message"]
        wait_for(lambda: stack.comment_purposes(issue_id).count("blocked") == 1, timeout=15, what="the blocked comment")
        wait_for(lambda: "PlanDrift" in _warnings(kube_client, namespace, run), timeout=15, what="the Blocked Event")
        blocked_comment = next(c["body"] for c in stack.linear.comments_json(issue_id)
                               if "db/migrations/0003_add_health.sql" in c["body"])
        assert "risk area migrations" in blocked_comment
        body = stack.github.pull_json(REPO, number)["body"]
        assert body.count("<!-- foundry:plan-drift -->") == 1
        assert "Foundry blocked this run: `db/migrations/0003_add_health.sql` (risk area migrations" in body
        # Blocked is an end: the agent still at work is stopped and no new attempt starts.
        agent = stack.run(run)["status"]["agent"]
        assert agent["attempt"] == 1 and [j["state"] for j in agent["jobs"]] == ["cancelled"], agent
    # One comment, one Warning (the transition's own), however many passes came after.
    assert stack.comment_purposes(issue_id).count("blocked") == 1
    assert _warnings(kube_client, namespace, run).count("PlanDrift") == 1


def test_a_forbidden_file_outside_the_plan_blocks_the_run(control_plane, kube_client, crds, namespace, engine):
    from tests.support.operator_stack import REPO

    with OperatorStack.open(kube_client, engine, namespace, _planned_config()) as stack, \
            operator_thread(stack.deps, namespace):
        issue_id, run = _planned_run(stack)
        stack.push(run, {"app/health.py": "def healthz():\n    return 'ok'\n",
                         ".github/workflows/ci.yml": "on: push\n"})
        number = stack.open_pr(run)
        blocked = wait_phase(kube_client, namespace, run, "Blocked")
        # A forbidden path blocks planned or not, so the reason stays ForbiddenPath; the drift is named too.
        assert blocked["status"]["reason"] == "ForbiddenPath", blocked["status"]
        drift = _drift(blocked)
        assert (drift["status"], drift["reason"]) == ("True", "RiskyFilesOutsidePlan")
        assert ".github/workflows/ci.yml matches forbidden path" in drift["message"]
        wait_for(lambda: stack.comment_purposes(issue_id).count("blocked") == 1, timeout=15, what="the blocked comment")
        assert "`.github/workflows/ci.yml` (forbidden path)" in stack.github.pull_json(REPO, number)["body"]
