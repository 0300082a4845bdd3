"""The Kubernetes objects of one agent attempt, as plain dicts (no API calls).

- ConfigMap `<run>-a<attempt>-input` holding `input.json` (repo, branches,
  plan, instructions, constraints), owned by the FoundryRun so it goes when
  the run goes.
- Job `<run>-a<attempt>` running the configured image with the input mounted
  read-only at /foundry/input/input.json. Secrets reach the pod only by
  reference (envFrom secretRef, env valueFrom secretKeyRef), never in the input.

backoffLimit is 0 because retries are Foundry's decision (attempt n+1 with
its own name, counted against the caps), not the Job controller's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from foundry.agents.base import attempt_name, run_identity
from foundry.config import Agent, Timeouts

GROUP_VERSION = "foundry.dev/v1alpha1"
KIND = "FoundryRun"
INPUT_KEY = "input.json"
INPUT_DIR = "/foundry/input"
INPUT_PATH = f"{INPUT_DIR}/{INPUT_KEY}"
CONTAINER = "agent"
MANAGED_BY = "foundry"
# A ConfigMap holds at most 1 MiB; leave room for the object around the data.
MAX_INPUT_BYTES = 900 * 1024

LABEL_RUN = "foundry.dev/run"
LABEL_ATTEMPT = "foundry.dev/attempt"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
# Labels copied from the FoundryRun so Jobs can be found by issue.
_COPIED_LABELS = ("foundry.dev/tracker", "foundry.dev/issue-id", "foundry.dev/issue-key")


class ManifestError(ValueError):
    """The attempt's objects cannot be built from this input (the message says why)."""


def input_configmap_name(run_name: str, attempt: int) -> str:
    return f"{attempt_name(run_name, attempt)}-input"


def labels(run: Mapping[str, Any], attempt: int) -> dict[str, str]:
    """Labels on the Job, its pods and the input ConfigMap."""
    name, _, _ = run_identity(run)
    run_labels = (run.get("metadata") or {}).get("labels") or {}
    out = {k: str(run_labels[k]) for k in _COPIED_LABELS if k in run_labels}
    out.update({
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_COMPONENT: "agent",
        LABEL_RUN: name,
        LABEL_ATTEMPT: str(attempt),
    })
    return out


def owner_reference(run: Mapping[str, Any]) -> dict[str, Any]:
    name, _, uid = run_identity(run)
    if not uid:
        raise ManifestError(f"FoundryRun {name} has no metadata.uid; read it from the API server before dispatching")
    return {"apiVersion": GROUP_VERSION, "kind": KIND, "name": name, "uid": uid,
            "controller": True, "blockOwnerDeletion": True}


def encode_input(job_input: Mapping[str, Any]) -> str:
    """The job input as stable JSON (sorted keys), refusing what cannot be mounted."""
    try:
        text = json.dumps(job_input, sort_keys=True, indent=2, ensure_ascii=False)
    except (TypeError, ValueError) as err:
        raise ManifestError(f"job input is not JSON-serialisable: {err}") from None
    if len(text.encode("utf-8")) > MAX_INPUT_BYTES:
        raise ManifestError(f"job input is {len(text.encode('utf-8'))} bytes; a ConfigMap holds at most {MAX_INPUT_BYTES}")
    return text


def build_input_configmap(run: Mapping[str, Any], attempt: int, job_input: Mapping[str, Any]) -> dict[str, Any]:
    """The ConfigMap holding the attempt's input, owned by the run."""
    name, namespace, _ = run_identity(run)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": input_configmap_name(name, attempt),
            "namespace": namespace,
            "labels": labels(run, attempt),
            "ownerReferences": [owner_reference(run)],
        },
        "data": {INPUT_KEY: encode_input(job_input)},
    }


def _env(agent: Agent, run_name: str, attempt: int, job_input: Mapping[str, Any]) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "FOUNDRY_JOB_INPUT", "value": INPUT_PATH},
        {"name": "FOUNDRY_RUN", "value": run_name},
        {"name": "FOUNDRY_ATTEMPT", "value": str(attempt)},
    ]
    if job_input.get("branch"):
        env.append({"name": "FOUNDRY_BRANCH", "value": str(job_input["branch"])})
    reserved = {e["name"] for e in env}
    for key, value in agent.env.items():
        if key in reserved:
            raise ManifestError(f"agent.env.{key}: reserved for Foundry's own variables")
        env.append({"name": key, "value": value})
    for ref in agent.secret_refs:
        if ref.env is not None:
            if ref.env in reserved or ref.env in agent.env:
                raise ManifestError(f"agent.secret_refs: {ref.env} is already set elsewhere")
            env.append({"name": ref.env, "valueFrom": {"secretKeyRef": {"name": ref.secret, "key": ref.key}}})
    return env


def build_job(
    run: Mapping[str, Any],
    attempt: int,
    job_input: Mapping[str, Any],
    agent: Agent,
    timeouts: Timeouts,
) -> dict[str, Any]:
    """The batch/v1 Job for one attempt, from the config's pod template (agent.*)."""
    name, namespace, _ = run_identity(run)
    job_labels = labels(run, attempt)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": agent.image,
        "env": _env(agent, name, attempt, job_input),
        "volumeMounts": [{"name": "input", "mountPath": INPUT_DIR, "readOnly": True}],
        "securityContext": {"allowPrivilegeEscalation": False},
    }
    if agent.command:
        container["command"] = list(agent.command)
    if agent.args:
        container["args"] = list(agent.args)
    env_from = [{"secretRef": {"name": ref.secret}} for ref in agent.secret_refs if ref.env is None]
    if env_from:
        container["envFrom"] = env_from
    if agent.resources:
        container["resources"] = _plain(agent.resources)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": [{"name": "input", "configMap": {"name": input_configmap_name(name, attempt)}}],
    }
    if agent.service_account:
        pod_spec["serviceAccountName"] = agent.service_account
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": attempt_name(name, attempt),
            "namespace": namespace,
            "labels": job_labels,
            "ownerReferences": [owner_reference(run)],
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": timeouts.agent_seconds,
            "template": {"metadata": {"labels": job_labels}, "spec": pod_spec},
        },
    }


def _plain(value: Any) -> Any:
    """MappingProxy/tuple from the frozen config → dict/list the API client serialises."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
