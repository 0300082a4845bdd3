"""Playing the Job controller: no kubelet or controller-manager runs on the
test control plane, so tests finish Jobs by writing the status a finished Job
has in Kubernetes 1.3x (SuccessCriteriaMet/FailureTarget before Complete/Failed,
which the API server's validation insists on)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from kubernetes import client


def finished_job_status(succeeded: bool, *, ran_for: float = 30.0) -> dict:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    start = (now - timedelta(seconds=ran_for)).strftime("%Y-%m-%dT%H:%M:%SZ")
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    if succeeded:
        return {"startTime": start, "completionTime": stamp, "succeeded": 1, "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": stamp},
            {"type": "Complete", "status": "True", "lastTransitionTime": stamp}]}
    return {"startTime": start, "failed": 1, "conditions": [
        {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded", "lastTransitionTime": stamp},
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "lastTransitionTime": stamp}]}


def finish_job(api: client.ApiClient, namespace: str, name: str, *, succeeded: bool = True,
               ran_for: float = 30.0) -> None:
    client.BatchV1Api(api).patch_namespaced_job_status(
        name, namespace, {"status": finished_job_status(succeeded, ran_for=ran_for)})
