"""Playing the kubelet and the Job controller for agent pods on the test control
plane (no kubelet runs there): a pod made from the Job's template and ended with
the termination messages its steps would write, and the FailedCreate Event the
Job controller posts when admission refuses the pod."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any

from kubernetes import client

from foundry.agents.job_manifest import pod_from_template

IMAGE = "registry.example/agent:1"


def restricted_namespace(api: client.ApiClient, name: str, *, service_account: str | None = None) -> str:
    """A namespace enforcing the restricted Pod Security Standard (optionally with a ServiceAccount)."""
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
        name=name, labels={"pod-security.kubernetes.io/enforce": "restricted",
                           "pod-security.kubernetes.io/enforce-version": "latest", "foundry.dev/test": "true"})))
    if service_account:
        ensure_service_account(api, name, service_account)
    return name


def ensure_service_account(api: client.ApiClient, namespace: str, name: str) -> None:
    """No controller-manager runs here to make `default`; the ServiceAccount admission wants it."""
    try:
        client.CoreV1Api(api).create_namespaced_service_account(
            namespace, {"metadata": {"name": name}, "automountServiceAccountToken": False})
    except client.ApiException as err:
        if err.status != 409:
            raise


def secret_or_none(api: client.ApiClient, namespace: str, name: str) -> client.V1Secret | None:
    """The Secret, or None when there is none (a token Secret that was dropped, or never made)."""
    try:
        return client.CoreV1Api(api).read_namespaced_secret(name, namespace)
    except client.ApiException as err:
        if err.status == 404:
            return None
        raise


def _terminated(name: str, message: str | None, exit_code: int = 0, reason: str = "Completed") -> dict[str, Any]:
    term = {"exitCode": exit_code, "reason": reason, "startedAt": "2026-01-01T00:00:00Z",
            "finishedAt": "2026-01-01T00:00:05Z"}
    if message is not None:
        term["message"] = message
    return {"name": name, "image": IMAGE, "imageID": "", "ready": False, "restartCount": 0,
            "state": {"terminated": term}}


def play_pod(kube_client: client.ApiClient, namespace: str, job_name: str, *,
             steps: dict[str, tuple[str | None, int, str]], phase: str = "Succeeded") -> str:
    """The pod the Job controller would have made, ended as the kubelet would report it.
    `steps`: {step: (message or None, exit code, reason)} for the steps that ran."""
    job = kube_client.sanitize_for_serialization(client.BatchV1Api(kube_client).read_namespaced_job(job_name, namespace))
    ensure_service_account(kube_client, namespace, job["spec"]["template"]["spec"].get("serviceAccountName") or "default")
    core = client.CoreV1Api(kube_client)
    pod = core.create_namespaced_pod(namespace, pod_from_template(job, f"{job_name}-{uuid.uuid4().hex[:5]}"))
    spec = job["spec"]["template"]["spec"]  # an attempt's steps, or a plan's (prepare, plan, verify)
    last = spec["containers"][0]["name"]
    init = [_terminated(s, *steps[s]) for s in (c["name"] for c in spec["initContainers"]) if s in steps]
    main = [_terminated(last, *steps[last])] if last in steps else [
        {"name": last, "image": IMAGE, "imageID": "", "ready": False, "restartCount": 0,
         "state": {"waiting": {"reason": "PodInitializing"}}}]
    core.patch_namespaced_pod_status(pod.metadata.name, namespace, {"status": {
        "phase": phase, "initContainerStatuses": init, "containerStatuses": main}})
    return pod.metadata.name


def refuse_pods(kube_client: client.ApiClient, namespace: str, job_name: str) -> str:
    """What the Job controller does when admission refuses its pod: a FailedCreate
    Warning on the Job, carrying the API server's own refusal (produced here by
    really creating the pod in a restricted namespace)."""
    core = client.CoreV1Api(kube_client)
    job = client.BatchV1Api(kube_client).read_namespaced_job(job_name, namespace)
    sa = job.spec.template.spec.service_account_name or "default"
    probe_ns = restricted_namespace(kube_client, f"probe-{uuid.uuid4().hex[:8]}", service_account=sa)
    pod = pod_from_template(kube_client.sanitize_for_serialization(job), f"{job_name}-x7k2p")
    pod["metadata"]["namespace"] = probe_ns
    pod["spec"]["securityContext"]["runAsUser"] = 0  # a pod template the admission refuses
    try:
        core.create_namespaced_pod(probe_ns, pod)
        raise AssertionError("the probe pod was accepted")
    except client.ApiException as err:
        refusal = json.loads(err.body)["message"]
    finally:
        core.delete_namespace(probe_ns)
    now = datetime.now(timezone.utc)
    core.create_namespaced_event(namespace, {
        "metadata": {"name": f"{job_name}.{uuid.uuid4().hex[:12]}", "namespace": namespace},
        "involvedObject": {"kind": "Job", "apiVersion": "batch/v1", "name": job_name, "namespace": namespace,
                           "uid": job.metadata.uid},
        "reason": "FailedCreate", "type": "Warning", "message": f"Error creating: {refusal}",
        "source": {"component": "job-controller"}, "count": 1, "firstTimestamp": now, "lastTimestamp": now})
    return refusal


