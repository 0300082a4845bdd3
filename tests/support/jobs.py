"""Playing the Job controller: no kubelet or controller-manager runs on the
test control plane, so tests finish Jobs by writing the status a finished Job
has in Kubernetes 1.3x (SuccessCriteriaMet/FailureTarget before Complete/Failed,
which the API server's validation insists on)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from kubernetes import client


def finished_job_status(succeeded: bool, *, ran_for: float = 30.0, reason: str = "BackoffLimitExceeded") -> dict:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    start = (now - timedelta(seconds=ran_for)).strftime("%Y-%m-%dT%H:%M:%SZ")
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    if succeeded:
        return {"startTime": start, "completionTime": stamp, "succeeded": 1, "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": stamp},
            {"type": "Complete", "status": "True", "lastTransitionTime": stamp}]}
    return {"startTime": start, "failed": 1, "conditions": [
        {"type": "FailureTarget", "status": "True", "reason": reason, "lastTransitionTime": stamp},
        {"type": "Failed", "status": "True", "reason": reason, "lastTransitionTime": stamp}]}


def finish_job(api: client.ApiClient, namespace: str, name: str, *, succeeded: bool = True,
               ran_for: float = 30.0, reason: str = "BackoffLimitExceeded") -> None:
    """`reason`: why a failed Job failed (DeadlineExceeded: the controller ended it at its deadline)."""
    client.BatchV1Api(api).patch_namespaced_job_status(
        name, namespace, {"status": finished_job_status(succeeded, ran_for=ran_for, reason=reason)})


def create_owner_run(api: client.ApiClient, namespace: str, name: str = "lin-abc-1") -> dict:
    """A minimal FoundryRun for Job tests to hang attempts from (its uid owns the Job)."""
    body = {"apiVersion": "foundry.dev/v1alpha1", "kind": "FoundryRun",
            "metadata": {"name": name, "namespace": namespace, "labels": {"foundry.dev/issue-key": "ACME-1"}},
            "spec": {"tracker": "linear", "issueId": f"id-{name}", "issueKey": "ACME-1", "attempt": 1,
                     "ticket": {"title": "t", "description": "d", "labels": [], "updatedAt": "2026-01-01T00:00:00Z"},
                     "trigger": {"source": "manual"}}}
    return client.CustomObjectsApi(api).create_namespaced_custom_object(
        "foundry.dev", "v1alpha1", namespace, "foundryruns", body)


def rival_wins_first_read(monkeypatch, provider, rival) -> dict:
    """Make `provider`'s first Job read answer 'absent' after `rival()` created the Job: the race a 409
    on create settles. Returns the read counter ({'n': reads so far})."""
    real_read = provider._read_job
    calls = {"n": 0}

    def stale_first_read(name, ns):
        calls["n"] += 1
        if calls["n"] == 1:
            rival()  # the rival wins between our read and our create
            return None
        return real_read(name, ns)

    monkeypatch.setattr(provider, "_read_job", stale_first_read)
    return calls
