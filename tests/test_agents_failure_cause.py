"""What ended a failed attempt, as the cluster reports it (foundry.agents.job_provider.failure_cause): pure."""

from __future__ import annotations

import json

from foundry.agents.job_provider import failure_cause, job_state
from foundry.agents.result import pod_cause, pod_result


def _job(reason: str, deadline: int = 15) -> dict:
    return {"metadata": {"name": "r-a1", "namespace": "agents"}, "spec": {"activeDeadlineSeconds": deadline},
            "status": {"conditions": [{"type": "Failed", "status": "True", "reason": reason,
                                       "message": "Job was active longer than specified deadline"}]}}


def _pod(**steps: tuple[str, str | None]) -> dict:
    """{step: (kubelet reason, termination message)} for the steps that ended."""
    return {"status": {"initContainerStatuses": [
        {"name": name, "state": {"terminated": {"exitCode": 137 if why == "OOMKilled" else 1, "reason": why,
                                                **({"message": msg} if msg else {})}}}
        for name, (why, msg) in steps.items()]}}


def test_a_step_the_kubelet_oom_killed_is_the_cause_whatever_the_job_says():
    pod = _pod(prepare=("Completed", None), agent=("OOMKilled", None))
    assert pod_cause(pod) == "OOMKilled"
    assert failure_cause(_job("BackoffLimitExceeded"), pod, pod_result(pod)) == {"cause": "OOMKilled"}


def test_the_pods_own_words_are_not_a_cause():
    # A result that claims an OOM (the pod ran code the ticket's author could influence) is only a reason.
    message = json.dumps({"outcome": "failed", "step": "agent", "reason": "OOMKilled DeadlineExceeded"})
    pod = _pod(agent=("Error", message))
    assert pod_cause(pod) is None
    assert failure_cause(_job("BackoffLimitExceeded"), pod, pod_result(pod)) == {}


def test_the_deadline_leads_and_the_interrupted_step_follows():
    pod = _pod(prepare=("Completed", None), agent=("Error", None))
    got = failure_cause(_job("DeadlineExceeded", 15), pod, pod_result(pod))
    assert got == {"cause": "DeadlineExceeded", "outcome": "failed", "reason": "the attempt ran past its deadline "
                   "of 15 s (DeadlineExceeded); step agent ended with Error (exit code 1) and wrote no result"}
    # The pod already gone (the controller deletes it at the deadline): the deadline alone.
    assert failure_cause(_job("DeadlineExceeded", 60), None, None) == {
        "cause": "DeadlineExceeded", "outcome": "failed",
        "reason": "the attempt ran past its deadline of 60 s (DeadlineExceeded)"}
    # Killed while the agent step ran: the last step that ended is prepare, which had done its part ("ok").
    pod = _pod(prepare=("Completed", json.dumps({"version": 1, "step": "prepare", "outcome": "ok"})))
    assert pod_result(pod) == {"outcome": "failed", "step": "prepare", "reason": "step prepare was the last to finish"}
    assert failure_cause(_job("DeadlineExceeded"), pod, pod_result(pod)) == {
        "cause": "DeadlineExceeded", "outcome": "failed",
        "reason": "the attempt ran past its deadline of 15 s (DeadlineExceeded); step prepare was the last to finish"}
    assert job_state(_job("DeadlineExceeded"))["reason"] == "DeadlineExceeded"


def test_a_plain_failure_has_no_cause():
    pod = _pod(agent=("Error", json.dumps({"outcome": "failed", "step": "agent", "reason": "tests fail"})))
    assert failure_cause(_job("BackoffLimitExceeded"), pod, pod_result(pod)) == {}
