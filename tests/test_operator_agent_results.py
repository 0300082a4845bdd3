"""The operator reads what each agent attempt reported and acts on it (real kopf,
real API server, real PostgreSQL, the Linear and GitHub stand-ins).

No kubelet runs here: the attempt's pod is made from its Job's template and
ended with the termination messages its steps write (tests.support.agent_pods),
and the Job is finished by writing its status, as the controllers would.
"""

from __future__ import annotations

import json
import logging
import time

import pytest
from kubernetes import client

from foundry.connectors.marked_comments import find_markers
from tests.support.operator_kit import operator_thread, wait_for, wait_phase
from tests.support.agent_pods import play_pod, refuse_pods
from tests.support.jobs import finish_job
from tests.support.operator_stack import REPO, OperatorStack, stack_config

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]

OK = ('{"outcome": "pushed", "step": "prepare"}', 0, "Completed")


def _pushed(head: str, number: int, tokens: tuple[int, int], cost: float) -> dict:
    return {"prepare": OK, "agent": ('{"outcome": "pushed", "step": "agent"}', 0, "Completed"),
            "publish": (json.dumps({"version": 1, "step": "publish", "outcome": "pushed", "headSha": head,
                                    "pr": {"number": number, "url": f"https://github.com/{REPO}/pull/{number}"},
                                    "filesChanged": 1, "linesAdded": 2, "linesRemoved": 0,
                                    "tokens": {"input": tokens[0], "output": tokens[1]}, "costUsd": cost,
                                    "summary": "Added the endpoint."}), 0, "Completed")}


def _input(stack: OperatorStack, run: str, attempt: int) -> dict:
    # The Job is created first and its input ConfigMap right after (it is owned by the Job,
    # so it needs the Job's uid): a test that has just seen the Job may be early for it.
    core, name = client.CoreV1Api(stack.api), f"{run}-a{attempt}-input"
    wait_for(lambda: bool(core.list_namespaced_config_map(stack.namespace, field_selector=f"metadata.name={name}").items),
             timeout=30, what=f"ConfigMap {name}")
    cm = core.read_namespaced_config_map(name, stack.namespace)
    return json.loads(cm.data["input.json"])


def _comments(stack: OperatorStack, issue_id: str, purpose: str) -> list[str]:
    return [c["body"] for c in stack.linear.comments_json(issue_id)
            if any(p == purpose for _, p in find_markers(c["body"]))]


def _job(stack: OperatorStack, run: str, attempt: int) -> dict:
    jobs = (stack.run(run).get("status") or {}).get("agent", {}).get("jobs") or []
    return next((j for j in jobs if j.get("attempt") == attempt), {})


def test_results_become_status_and_the_remediation_is_told_what_failed(control_plane, kube_client, crds, namespace,
                                                                       engine, caplog):
    caplog.set_level(logging.DEBUG)
    api = control_plane.api_client()
    with OperatorStack.open(api, engine, namespace) as stack, operator_thread(stack.deps, namespace):
        issue_id, run = stack.agent_running()
        first_input = _input(stack, run, 1)
        # What the approver saw is what the agent is told.
        (request,) = _comments(stack, issue_id, "approval_request")
        assert first_input["planText"] and first_input["planText"] in request
        assert first_input["version"] == 2 and "pr" not in first_input and "feedback" not in first_input
        assert first_input["git"] == {"url": f"{stack.github.url}/{REPO}.git", "apiUrl": stack.github.url}

        # The runner pushes and opens the PR, then its pod ends with its result.
        head = stack.push(run, {"app/health.py": "def healthz():\n    return 'ok'\n"})
        number = stack.open_pr(run)
        play_pod(kube_client, namespace, f"{run}-a1", steps=_pushed(head, number, (1000, 200), 0.05))
        stack.finish_job(f"{run}-a1")
        wait_for(lambda: _job(stack, run, 1).get("outcome") == "pushed", timeout=30, what="attempt 1's result")
        wait_phase(kube_client, namespace, run, "PROpen")
        first = _job(stack, run, 1)
        assert (first["state"], first["headSha"], first["pr"]["number"]) == ("succeeded", head, number)
        assert first["tokens"] == {"input": 1000, "output": 200} and first["costUsd"] == 0.05
        assert first["summary"] == "Added the endpoint."
        assert stack.run(run)["status"]["agent"]["budgetUsed"] == {"costUsd": 0.05,
                                                                   "tokens": {"input": 1000, "output": 200}}

        # CI fails with annotations and a reviewer asks for changes, both while a reconcile of
        # the run holds its lock, so the next one sees them together.
        with stack.deps.locks.hold(namespace, run):
            stack.github.set_check(REPO, head, "failure", output={
                "title": "1 test failed", "summary": "pytest: 1 failed, 3 passed",
                "text": "FAILED tests/test_health.py::test_body - assert 'ok' == {'status': 'ok'}"},
                annotations=[{"path": "app/health.py", "start_line": 2, "end_line": 2,
                              "annotation_level": "failure", "title": "test_body",
                              "message": "expected a JSON body {'status': 'ok'}"}])
            stack.github.submit_review(REPO, number, "octocat", "CHANGES_REQUESTED", "Please return JSON.",
                                       comments=[{"path": "app/health.py", "line": 2,
                                                  "body": "return {'status': 'ok'}"}])
        wait_for(lambda: stack.jobs(run) == [f"{run}-a1", f"{run}-a2"], timeout=30, what="attempt 2")
        second_input = _input(stack, run, 2)
        assert second_input["pr"] == {"number": number}
        fb = second_input["feedback"]
        assert fb["reason"] == "CI failed" and fb["headSha"] == head
        (check,) = fb["checks"]
        assert check["name"] == "ci" and check["title"] == "1 test failed"
        assert "assert 'ok' == {'status': 'ok'}" in check["text"]
        assert check["annotations"] == [{"path": "app/health.py", "startLine": 2, "endLine": 2, "level": "failure",
                                         "title": "test_body", "message": "expected a JSON body {'status': 'ok'}"}]
        (review,) = fb["reviews"]
        assert (review["user"], review["body"]) == ("octocat", "Please return JSON.")
        assert review["comments"] == [{"path": "app/health.py", "line": 2, "body": "return {'status': 'ok'}"}]

        second = stack.push(run, {"app/health.py": "def healthz():\n    return {'status': 'ok'}\n"})
        play_pod(kube_client, namespace, f"{run}-a2", steps=_pushed(second, number, (500, 100), 0.02))
        stack.finish_job(f"{run}-a2")
        stack.ci(second, "success")
        stack.github.submit_review(REPO, number, "octocat", "APPROVED", "Thanks.")
        wait_for(lambda: _job(stack, run, 2).get("outcome") == "pushed", timeout=30, what="attempt 2's result")
        stack.merge(number)
        done = wait_phase(kube_client, namespace, run, "Complete", timeout=30)

    assert done["status"]["agent"]["budgetUsed"] == {"costUsd": 0.07, "tokens": {"input": 1500, "output": 300}}
    assert [(j["attempt"], j["outcome"]) for j in done["status"]["agent"]["jobs"]] == [(1, "pushed"), (2, "pushed")]
    # The push token went into the attempts' Secrets only: not the input, the Jobs, the Events or the logs.
    token = stack.github.token
    core = client.CoreV1Api(kube_client)
    seen = json.dumps([first_input, second_input,
                       [kube_client.sanitize_for_serialization(j)
                        for j in client.BatchV1Api(kube_client).list_namespaced_job(namespace).items],
                       [kube_client.sanitize_for_serialization(e) for e in core.list_namespaced_event(namespace).items]])
    assert token not in seen
    assert not [r for r in caplog.records if token in r.getMessage()]


def test_a_change_refused_before_push_blocks_the_run_and_tells_the_ticket_once(control_plane, kube_client, crds,
                                                                               namespace, engine):
    reason = ".github/workflows/ci.yml is a workflow file (.github/workflows/**, modified) and workflows are not allowed"
    with OperatorStack.open(control_plane.api_client(), engine, namespace) as stack, \
            operator_thread(stack.deps, namespace):
        issue_id, run = stack.agent_running()
        play_pod(kube_client, namespace, f"{run}-a1", phase="Failed", steps={
            "prepare": OK, "agent": ('{"outcome": "pushed", "step": "agent"}', 0, "Completed"),
            "publish": (json.dumps({"outcome": "refused", "step": "publish", "reason": reason,
                                    "tokens": {"input": 10, "output": 5}}), 3, "Error")})
        stack.finish_job(f"{run}-a1", succeeded=False)
        blocked = wait_phase(kube_client, namespace, run, "Blocked")
        time.sleep(3)  # several resync periods: nothing more happens
        after = stack.run(run)

    status = blocked["status"]
    assert status["reason"] == "ChangeRefused"
    assert status["message"] == f"attempt 1 was refused before push: {reason}"
    assert status["agent"]["jobs"][0]["outcome"] == "refused"
    assert status["agent"]["budgetUsed"] == {"costUsd": 0.0, "tokens": {"input": 10, "output": 5}}
    (comment,) = _comments(stack, issue_id, "blocked")
    assert "workflow file" in comment
    assert after["status"]["phase"] == "Blocked" and stack.jobs(run) == [f"{run}-a1"]
    assert stack.comment_purposes(issue_id) == ["approval_request", "blocked"]


def test_failed_and_no_change_attempts_are_retried_then_fail_with_the_reason(control_plane, kube_client, crds,
                                                                             namespace, engine):
    config = stack_config(budget_cap=2)
    with OperatorStack.open(control_plane.api_client(), engine, namespace, config) as stack, \
            operator_thread(stack.deps, namespace):
        issue_id, run = stack.agent_running()
        play_pod(kube_client, namespace, f"{run}-a1", phase="Failed", steps={
            "prepare": OK,
            "agent": ('{"outcome": "failed", "step": "agent", "reason": "model API unreachable: connection refused"}',
                      1, "Error")})
        stack.finish_job(f"{run}-a1", succeeded=False)
        retrying = wait_for(lambda: (b := stack.run(run))["status"]["agent"]["attempt"] == 2 and b, timeout=30,
                            what="attempt 2")
        assert "attempt 1 failed: model API unreachable: connection refused; retrying as attempt 2" \
            == retrying["status"]["message"]
        assert "pr" not in _input(stack, run, 2) and "feedback" not in _input(stack, run, 2)  # no PR yet

        play_pod(kube_client, namespace, f"{run}-a2", phase="Failed", steps={
            "prepare": OK, "agent": ('{"outcome": "no-changes", "step": "agent", "reason": "the agent changed '
                                     'nothing"}', 2, "Error")})
        stack.finish_job(f"{run}-a2", succeeded=False)
        failed = wait_phase(kube_client, namespace, run, "ExecutionFailed")

    message = failed["status"]["message"]
    assert failed["status"]["reason"] == "AgentFailed"
    assert message.startswith("attempt 2 made no changes: the agent changed nothing; budget cap reached"), message
    (comment,) = _comments(stack, issue_id, "blocked")
    assert "the agent changed nothing" in comment
    assert [(j["attempt"], j.get("outcome")) for j in failed["status"]["agent"]["jobs"]] == [(1, "failed"),
                                                                                         (2, "no-changes")]


def test_a_pod_refused_by_admission_fails_the_run_at_once(control_plane, kube_client, crds, namespace, engine):
    with OperatorStack.open(control_plane.api_client(), engine, namespace) as stack, \
            operator_thread(stack.deps, namespace):
        issue_id, run = stack.agent_running()
        refuse_pods(kube_client, namespace, f"{run}-a1")
        started = time.monotonic()
        failed = wait_phase(kube_client, namespace, run, "ExecutionFailed", timeout=15)
        took = time.monotonic() - started
        print(f"admission refusal surfaced as ExecutionFailed in {took:.2f}s")
        jobs = stack.jobs(run)

    status = failed["status"]
    assert status["reason"] == "AgentPodRefused"
    assert 'violates PodSecurity "restricted:latest"' in status["message"] and "runAsUser=0" in status["message"]
    assert took < 15  # a resync period or so, not the Job's 600 s deadline
    assert jobs == []  # the Job was deleted: the controller stops trying
    (comment,) = _comments(stack, issue_id, "blocked")
    assert "refused by the cluster" in comment and "PodSecurity" in comment
    assert status["agent"]["jobs"][0]["reason"] == "PodRefused"


def test_what_the_attempts_spent_counts_against_the_budget(control_plane, kube_client, crds, namespace, engine):
    config = stack_config(budget_usd=1.0)
    with OperatorStack.open(control_plane.api_client(), engine, namespace, config) as stack, \
            operator_thread(stack.deps, namespace):
        issue_id, run = stack.agent_running()
        play_pod(kube_client, namespace, f"{run}-a1", phase="Failed", steps={
            "prepare": OK, "agent": ('{"outcome": "failed", "step": "agent", "reason": "tests still fail", '
                                     '"tokens": {"input": 90000, "output": 9000}, "costUsd": 1.5}', 1, "Error")})
        stack.finish_job(f"{run}-a1", succeeded=False)
        failed = wait_phase(kube_client, namespace, run, "ExecutionFailed")

    assert failed["status"]["message"] == ("attempt 1 failed: tests still fail; "
                                           "budget cap reached: $1.5000 spent of $1.00")
    assert failed["status"]["agent"]["budgetUsed"] == {"costUsd": 1.5, "tokens": {"input": 90000, "output": 9000}}
    assert stack.jobs(run) == [f"{run}-a1"]  # no second attempt


def test_agents_in_their_own_restricted_namespace(control_plane, kube_client, crds, namespace, engine):
    """agent.namespace: the Job runs there (no owner: it cannot be the run's), its pod passes the
    restricted admission, its result reaches the run, and a stop cancels it there."""
    import uuid

    from tests.support.agent_pods import restricted_namespace

    agents = restricted_namespace(kube_client, f"agents-{uuid.uuid4().hex[:8]}", service_account="foundry-agent")
    config = stack_config()
    config["agent"] = {**config["agent"], "namespace": agents, "service_account": "foundry-agent"}
    batch = client.BatchV1Api(kube_client)
    try:
        with OperatorStack.open(control_plane.api_client(), engine, namespace, config) as stack, \
                operator_thread(stack.deps, namespace):
            _, run = stack.agent_running()
            job = batch.read_namespaced_job(f"{run}-a1", agents)
            assert job.metadata.owner_references is None
            assert batch.list_namespaced_job(namespace).items == []
            head = stack.push(run, {"app/health.py": "def healthz():\n    return 'ok'\n"})
            number = stack.open_pr(run)
            play_pod(kube_client, agents, f"{run}-a1", steps=_pushed(head, number, (10, 1), 0.001))  # admitted
            finish_job(kube_client, agents, f"{run}-a1")
            wait_for(lambda: _job(stack, run, 1).get("outcome") == "pushed", timeout=30, what="the result")
            stack.ci(head, "failure")
            wait_for(lambda: _job_names(batch, agents, run) == [f"{run}-a1", f"{run}-a2"], timeout=30,
                     what="attempt 2 in the agent namespace")
            stack.decide(run, "stop", "bob")
            wait_phase(kube_client, namespace, run, "Stopped")
            assert _job_names(batch, agents, run) == [f"{run}-a1"]  # the running one cancelled, the finished kept
    finally:
        client.CoreV1Api(kube_client).delete_namespace(agents)


def _job_names(batch, namespace: str, run: str) -> list[str]:
    return sorted(j.metadata.name for j in batch.list_namespaced_job(namespace, label_selector=f"foundry.dev/run={run}")
                  .items if j.metadata.deletion_timestamp is None)
