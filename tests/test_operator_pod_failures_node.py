"""Agent pods that fail on the real node, as the operator reports them.

The operator (real kopf in this process, real JobProvider, PostgreSQL, the
Linear and GitHub stand-ins) plans a ticket, is given an approval and starts
the attempt's Job; the node's Job controller, kubelet and PodSecurity
admission decide what becomes of its pod. Each failure must reach the run's
status with a reason that names the cause, a Warning Event on the run, and
exactly one comment on the ticket. Nothing patches a Job's or a pod's status.
"""

from __future__ import annotations

import time

import pytest
from kubernetes import client

from foundry.agents.job_manifest import attempt_selector
from foundry.connectors.marked_comments import find_markers
from foundry.kube.crds import install_crds
from tests.support.operator_kit import get_run, wait_for, wait_phase
from tests.support.agent_node import REPO, AgentPodBed, agent_image
from tests.support.operator_node import operator_config, operator_on_node
from tests.support.sidecar_injector import INIT_NAME, SidecarInjector

pytestmark = [pytest.mark.node, pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(1800)]

HOG = ["python3", "-c", "blob = b'x' * (1 << 30); print('allocated', len(blob))"]
SMALL = {"requests": {"cpu": "100m", "memory": "96Mi"}, "limits": {"memory": "160Mi"}}


@pytest.fixture(scope="module")
def bed(real_node):
    install_crds(real_node.api_client(), timeout=60)
    ref, tar = agent_image()
    real_node.import_image(tar, ref)
    with AgentPodBed(real_node, ref) as bed:
        yield bed


def _comments(stack, issue_id: str) -> list[tuple[str, str]]:
    """(purpose, body) of every comment Foundry posted on the issue."""
    return [(purpose, c["body"]) for c in stack.linear.comments_json(issue_id) for _, purpose in find_markers(c["body"])]


def _run_events(api, namespace: str, run: str) -> list[client.CoreV1Event]:
    return [e for e in client.CoreV1Api(api).list_namespaced_event(namespace).items if e.involved_object.name == run]


def _ended(stack, run: str, reason: str, timeout: float) -> tuple[dict, client.CoreV1Event]:
    """The run once ExecutionFailed, and the Warning Event that said so (it follows the status write)."""
    failed = wait_phase(stack.api, stack.namespace, run, "ExecutionFailed", timeout=timeout)
    event = wait_for(lambda: next((e for e in _run_events(stack.api, stack.namespace, run)
                                   if e.reason == failed["status"]["reason"]), None),
                     timeout=15, what=f"the {reason} Event")
    time.sleep(3)  # several resync periods: nothing more may happen
    return failed, event


def _assert_told_once(stack, issue_id: str, run: str, reason: str, failed: dict, event, *needles: str) -> None:
    status = failed["status"]
    assert status["reason"] == reason, status
    for needle in needles:
        assert needle in status["message"], (needle, status["message"])
    cond = next(c for c in status["conditions"] if c["type"] == "AgentRunning")
    assert (cond["status"], cond["reason"]) == ("False", reason), cond
    assert event.type == "Warning" and "AgentRunning → ExecutionFailed" in event.message, event
    assert all(n in event.message for n in needles), event.message
    assert [e.reason for e in _run_events(stack.api, stack.namespace, run)].count(reason) == 1
    told = _comments(stack, issue_id)
    assert [p for p, _ in told] == ["approval_request", "blocked"], told
    blocked = told[1][1]
    assert all(n in blocked for n in needles), blocked
    after = get_run(stack.api, stack.namespace, run)["status"]
    assert (after["phase"], after["reason"]) == ("ExecutionFailed", reason)
    assert after.get("comments") == status.get("comments")
    assert stack.github.ref_updates_for(REPO, f"foundry/{run}") == []


def _pods(bed: AgentPodBed, namespace: str, run: dict, attempt: int) -> list[client.V1Pod]:
    return bed.core.list_namespaced_pod(namespace, label_selector=attempt_selector(run, attempt)).items


def test_an_agent_pod_over_its_memory_limit_fails_the_run_as_oomkilled(bed, engine, node_namespace):
    agents = bed.namespace()
    doc = operator_config(bed, agents, runner=bed.command_runner(HOG), resources=SMALL, retry_cap=1)
    with operator_on_node(bed, engine, node_namespace, doc) as stack:
        issue_id, run = stack.agent_running()
        failed, event = _ended(stack, run, "AgentOOMKilled", timeout=240)
        body = stack.run(run)
        # Both attempts ran as pods and the kernel killed the agent step of each.
        for attempt in (1, 2):
            (pod,) = _pods(bed, agents, body, attempt)
            agent = next(s for s in pod.status.init_container_statuses if s.name == "agent")
            assert agent.state.terminated.reason == "OOMKilled", (attempt, agent.state)
    print(f"\n[pod-failures] OOM: {failed['status']['message']}")
    jobs = failed["status"]["agent"]["jobs"]
    assert [(j["attempt"], j["state"], j.get("step")) for j in jobs] == [(1, "failed", "agent"), (2, "failed", "agent")]
    assert all("OOMKilled" in j["reason"] for j in jobs), jobs
    _assert_told_once(stack, issue_id, run, "AgentOOMKilled", failed, event, "attempt 2", "OOMKilled",
                      "memory limit")


def test_an_agent_pod_past_its_deadline_fails_the_run_as_deadline_exceeded(bed, engine, node_namespace):
    agents = bed.namespace()
    deadline = 15
    doc = operator_config(bed, agents, runner=bed.command_runner(["sleep", "300"]), agent_seconds=deadline,
                          retry_cap=0)
    with operator_on_node(bed, engine, node_namespace, doc) as stack:
        issue_id, run = stack.agent_running()
        started = time.monotonic()
        failed, event = _ended(stack, run, "AgentDeadlineExceeded", timeout=deadline + 90)
        took = time.monotonic() - started
        job = bed.batch.read_namespaced_job(f"{run}-a1", agents)
    print(f"\n[pod-failures] deadline: ExecutionFailed {took:.1f} s after dispatch: {failed['status']['message']}")
    assert [c.reason for c in job.status.conditions if c.type == "Failed" and c.status == "True"] == \
        ["DeadlineExceeded"]
    assert took < deadline + 30  # the deadline, a resync and the grace period; not the command's 300 s
    (attempt,) = failed["status"]["agent"]["jobs"]
    assert attempt["state"] == "failed" and "DeadlineExceeded" in attempt["reason"], attempt
    _assert_told_once(stack, issue_id, run, "AgentDeadlineExceeded", failed, event, "attempt 1",
                      f"deadline of {deadline} s")


def test_an_agent_pod_refused_by_pod_security_fails_the_run_at_once(bed, engine, node_namespace):
    agents = bed.namespace()
    doc = operator_config(bed, agents, runner=bed.command_runner())
    # Something else in the cluster (a mesh's sidecar injector) adds a privileged init container
    # to every pod of the namespace; PodSecurity `restricted` then refuses the agent's pod.
    with SidecarInjector(bed.api, host=bed.cluster.node_ip, namespace=agents) as injector, \
            operator_on_node(bed, engine, node_namespace, doc) as stack:
        issue_id, run = stack.agent_running()
        started = time.monotonic()
        failed, event = _ended(stack, run, "AgentPodRefused", timeout=60)
        took = time.monotonic() - started
        refusals = [e for e in bed.core.list_namespaced_event(agents).items
                    if e.reason == "FailedCreate" and e.involved_object.name == f"{run}-a1"]
        assert injector.reviews >= 1
        jobs_left = bed.batch.list_namespaced_job(agents).items
    print(f"\n[pod-failures] refused: ExecutionFailed {took:.1f} s after dispatch: {failed['status']['message']}")
    assert refusals and 'violates PodSecurity "restricted:latest"' in refusals[0].message  # the Job controller's
    assert took < 15  # a resync or two, not the Job's 600 s deadline
    assert jobs_left == []  # the Job was deleted: the controller stops trying
    assert bed.core.list_namespaced_pod(agents).items == []
    (attempt,) = failed["status"]["agent"]["jobs"]
    assert attempt["reason"] == "PodRefused"
    _assert_told_once(stack, issue_id, run, "AgentPodRefused", failed, event, "refused by the cluster",
                      'violates PodSecurity "restricted:latest"', INIT_NAME)
