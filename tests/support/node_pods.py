"""Small helpers for tests that run real pods on a NodeCluster: pod specs on
the local test images and waits on what the kubelet and controllers report."""

from __future__ import annotations

import time
import uuid

from kubernetes import client

from foundry.dev.node_images import BUSYBOX_IMAGE

RESTRICTED_SECURITY = client.V1SecurityContext(
    run_as_non_root=True,
    run_as_user=65532,
    allow_privilege_escalation=False,
    capabilities=client.V1Capabilities(drop=["ALL"]),
    seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def shell_container(script: str, *, name: str = "main", image: str = BUSYBOX_IMAGE, memory: str | None = None,
                    security: client.V1SecurityContext | None = RESTRICTED_SECURITY, port: int | None = None) -> client.V1Container:
    """A busybox container running `script` with sh -c. By default it passes
    the `restricted` Pod Security level, so it runs in any namespace."""
    limits = {"memory": memory} if memory else None
    return client.V1Container(
        name=name,
        image=image,
        image_pull_policy="Never",  # local images only: a pull would go off the machine
        command=["/bin/sh", "-c", script],
        security_context=security,
        resources=client.V1ResourceRequirements(limits=limits, requests=limits) if limits else None,
        ports=[client.V1ContainerPort(container_port=port)] if port else None,
    )


def pod(name: str, container: client.V1Container, *, labels: dict | None = None, restart: str = "Never") -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1PodSpec(containers=[container], restart_policy=restart, termination_grace_period_seconds=1,
                              automount_service_account_token=False),
    )


def wait_pod(core: client.CoreV1Api, namespace: str, name: str, phases: tuple[str, ...], timeout: float = 60) -> client.V1Pod:
    """Wait until the pod reaches one of `phases` (Running means Ready too); fail with its status."""
    deadline = time.monotonic() + timeout
    p = None
    while time.monotonic() < deadline:
        p = core.read_namespaced_pod(name, namespace)
        phase = p.status.phase
        if phase in phases:
            ready = any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
            if phase != "Running" or ready:
                return p
        if phase in ("Succeeded", "Failed") and phase not in phases:
            break
        time.sleep(0.2)
    raise AssertionError(f"pod {namespace}/{name} not in {phases} after {timeout}s: {p.status if p else None}")


def wait_job(batch: client.BatchV1Api, namespace: str, name: str, condition: str, timeout: float = 60) -> client.V1Job:
    """Wait for a Job condition (Complete, Failed) set by the real Job controller."""
    deadline = time.monotonic() + timeout
    j = None
    while time.monotonic() < deadline:
        j = batch.read_namespaced_job(name, namespace)
        for c in j.status.conditions or []:
            if c.status == "True" and c.type in ("Complete", "Failed"):
                if c.type == condition:
                    return j
                raise AssertionError(f"job {namespace}/{name} ended {c.type} ({c.reason}), wanted {condition}")
        time.sleep(0.2)
    raise AssertionError(f"job {namespace}/{name} not {condition} after {timeout}s: {j.status if j else None}")


def wait_default_service_account(core: client.CoreV1Api, namespace: str, timeout: float = 30) -> None:
    """Pods are refused until the ServiceAccount controller has made `default`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            core.read_namespaced_service_account("default", namespace)
            return
        except client.ApiException as exc:
            if exc.status != 404:
                raise
        time.sleep(0.1)
    raise AssertionError(f"no default ServiceAccount in {namespace} after {timeout}s")
