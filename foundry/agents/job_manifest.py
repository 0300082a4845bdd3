"""The Kubernetes objects of one agent attempt, as plain dicts (no API calls).

docs/agent-contract.md is the contract these objects implement:

- Job `<run>-a<attempt>`: a pod of three steps, init `prepare`, init `agent`
  and main `publish`, each running `foundry agent run --step <step>` (or
  agent.command). Only `prepare` and `publish` mount the GitHub credential;
  only `agent` gets the model API's secrets (agent.secret_refs). The pod is
  restricted-compliant (non-root, no privilege escalation, all capabilities
  dropped, RuntimeDefault seccomp, read-only root filesystem with emptyDir
  workspaces) and mounts no ServiceAccount token.
- ConfigMap `<run>-a<attempt>-input` holding `input.json`, and Secret
  `<run>-a<attempt>-github` holding the push token: both owned by the Job
  (created right after it, so they go when it goes, by TTL or by delete).
- The Job is owned by the FoundryRun when it runs in the run's namespace;
  with agent.namespace set it cannot be (an owner must share the namespace),
  and it goes by the run's finalizer (cancel) or ttlSecondsAfterFinished.

backoffLimit is 0 because retries are Foundry's decision (attempt n+1 with
its own name, counted against the caps), not the Job controller's.

A plan (docs/decisions/0021-plan-job.md) is a Job `<run>-p<n>` of the same
lockdown whose steps are init `prepare`, init `plan` and main `verify`
(input.json mode "plan"). Only `prepare` mounts a credential, and that is
Secret `<run>-p<n>-github` holding a read-only token under the key
`read-token` (so it appears at /foundry/credentials/read-token); the push
token's path never exists in a plan's pod. Without a read token the plan
clones anonymously. Its deadline is plan.timeout_seconds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from foundry.agents.provider import attempt_name, plan_job_name, run_identity
from foundry.config import Agent, PlanSettings, Timeouts
from foundry.kube.crds import GROUP, VERSION

GROUP_VERSION = f"{GROUP}/{VERSION}"
KIND = "FoundryRun"
INPUT_KEY = "input.json"
INPUT_DIR = "/foundry/input"
INPUT_PATH = f"{INPUT_DIR}/{INPUT_KEY}"
TOKEN_KEY = "token"
CREDENTIALS_DIR = "/foundry/credentials"
TOKEN_PATH = f"{CREDENTIALS_DIR}/{TOKEN_KEY}"
WORK_DIR = "/foundry/work"
PUBLISH_DIR = "/foundry/publish"
RESULT_PATH = "/dev/termination-log"
STEPS = ("prepare", "agent", "publish")
CONTAINER = "agent"  # the step that runs the coding agent
DEFAULT_COMMAND = ("foundry", "agent", "run")
RUNNER_UID = 10001  # the agent image's user (operator/Dockerfile.agent)
# Kept short: the Job is marked Failed only after its pod's grace period ends.
TERMINATION_GRACE_SECONDS = 10
MANAGED_BY = "foundry"
# A ConfigMap holds at most 1 MiB; leave room for the object around the data.
MAX_INPUT_BYTES = 900 * 1024

LABEL_RUN = "foundry.dev/run"
LABEL_RUN_NAMESPACE = "foundry.dev/run-namespace"
LABEL_ATTEMPT = "foundry.dev/attempt"
LABEL_PLAN = "foundry.dev/plan"  # a plan Job's number (never with LABEL_ATTEMPT: selectors stay apart)
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
ANNOTATION_REPO = "foundry.dev/repo"
ANNOTATION_TOKEN_EXPIRES = "foundry.dev/token-expires-at"
# Labels copied from the FoundryRun so Jobs can be found by issue.
_COPIED_LABELS = ("foundry.dev/tracker", "foundry.dev/issue-id", "foundry.dev/issue-key")


class ManifestError(ValueError):
    """The attempt's objects cannot be built from this input (the message says why)."""


def input_configmap_name(run_name: str, attempt: int) -> str:
    return f"{attempt_name(run_name, attempt)}-input"


def token_secret_name(run_name: str, attempt: int) -> str:
    return f"{attempt_name(run_name, attempt)}-github"


def job_namespace(run: Mapping[str, Any], agent: Agent) -> str:
    """agent.namespace, else the run's own namespace."""
    return agent.namespace or run_identity(run)[1]


def labels(run: Mapping[str, Any], attempt: int) -> dict[str, str]:
    """Labels on the Job, its pods, the input ConfigMap and the token Secret."""
    name, namespace, _ = run_identity(run)
    run_labels = (run.get("metadata") or {}).get("labels") or {}
    out = {k: str(run_labels[k]) for k in _COPIED_LABELS if k in run_labels}
    out.update({
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_COMPONENT: "agent",
        LABEL_RUN: name,
        LABEL_RUN_NAMESPACE: namespace,
        LABEL_ATTEMPT: str(attempt),
    })
    return out


def attempt_selector(run: Mapping[str, Any], attempt: int) -> str:
    """The label selector of one attempt's objects (its pods among them)."""
    name, namespace, _ = run_identity(run)
    return f"{LABEL_RUN}={name},{LABEL_RUN_NAMESPACE}={namespace},{LABEL_ATTEMPT}={attempt}"


def owner_reference(run: Mapping[str, Any]) -> dict[str, Any]:
    name, _, uid = run_identity(run)
    if not uid:
        raise ManifestError(f"FoundryRun {name} has no metadata.uid; read it from the API server before dispatching")
    return {"apiVersion": GROUP_VERSION, "kind": KIND, "name": name, "uid": uid,
            "controller": True, "blockOwnerDeletion": True}


def job_owner_reference(job: Mapping[str, Any]) -> dict[str, Any]:
    """The Job as owner of its input and token (garbage-collected with it). No
    blockOwnerDeletion: that would need update on jobs/finalizers for nothing."""
    meta = job.get("metadata") or {}
    if not meta.get("uid") or not meta.get("name"):
        raise ManifestError("the Job has no metadata.uid; read it from the API server first")
    return {"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "uid": meta["uid"], "controller": True}


def encode_input(job_input: Mapping[str, Any]) -> str:
    """The job input as stable JSON (sorted keys), refusing what cannot be mounted."""
    try:
        text = json.dumps(job_input, sort_keys=True, indent=2, ensure_ascii=False)
    except (TypeError, ValueError) as err:
        raise ManifestError(f"job input is not JSON-serialisable: {err}") from None
    if len(text.encode("utf-8")) > MAX_INPUT_BYTES:
        raise ManifestError(f"job input is {len(text.encode('utf-8'))} bytes; a ConfigMap holds at most {MAX_INPUT_BYTES}")
    return text


def build_input_configmap(run: Mapping[str, Any], attempt: int, job_input: Mapping[str, Any],
                          job: Mapping[str, Any]) -> dict[str, Any]:
    """The ConfigMap holding the attempt's input, in the Job's namespace and owned by it."""
    name, _, _ = run_identity(run)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": input_configmap_name(name, attempt),
            "namespace": (job.get("metadata") or {}).get("namespace"),
            "labels": labels(run, attempt),
            "ownerReferences": [job_owner_reference(job)],
        },
        "data": {INPUT_KEY: encode_input(job_input)},
    }


def build_token_secret(run: Mapping[str, Any], attempt: int, token: str, job: Mapping[str, Any],
                       expires_at: str | None) -> dict[str, Any]:
    """Secret `<run>-a<n>-github`: the push token, owned by the Job. The expiry
    (not the token) is an annotation, so a refresh needs no guess."""
    name, _, _ = run_identity(run)
    meta: dict[str, Any] = {
        "name": token_secret_name(name, attempt),
        "namespace": (job.get("metadata") or {}).get("namespace"),
        "labels": labels(run, attempt),
        "ownerReferences": [job_owner_reference(job)],
    }
    if expires_at:
        meta["annotations"] = {ANNOTATION_TOKEN_EXPIRES: expires_at}
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": meta,
            "stringData": {TOKEN_KEY: token}}


def _env(agent: Agent, step: str, run_name: str, attempt: int, job_input: Mapping[str, Any]) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "FOUNDRY_JOB_INPUT", "value": INPUT_PATH},
        {"name": "FOUNDRY_RUN", "value": run_name},
        {"name": "FOUNDRY_ATTEMPT", "value": str(attempt)},
        {"name": "FOUNDRY_STEP", "value": step},
        {"name": "HOME", "value": "/tmp"},
    ]
    if job_input.get("branch"):
        env.append({"name": "FOUNDRY_BRANCH", "value": str(job_input["branch"])})
    if step != CONTAINER:
        env.append({"name": "FOUNDRY_GITHUB_TOKEN_FILE", "value": TOKEN_PATH})
    reserved = {"FOUNDRY_JOB_INPUT", "FOUNDRY_RUN", "FOUNDRY_ATTEMPT", "FOUNDRY_STEP", "HOME", "FOUNDRY_BRANCH",
                "FOUNDRY_GITHUB_TOKEN_FILE", "FOUNDRY_RESULT_PATH"}
    for key, value in agent.env.items():
        if key in reserved:
            raise ManifestError(f"agent.env.{key}: reserved for Foundry's own variables")
        env.append({"name": key, "value": value})
    if step == CONTAINER:  # the model API's key reaches the agent step only
        for ref in agent.secret_refs:
            if ref.env is not None:
                if ref.env in reserved or ref.env in agent.env:
                    raise ManifestError(f"agent.secret_refs: {ref.env} is already set elsewhere")
                env.append({"name": ref.env, "valueFrom": {"secretKeyRef": {"name": ref.secret, "key": ref.key}}})
    return env


def _mounts(step: str) -> list[dict[str, Any]]:
    """docs/agent-contract.md's table: the credential in prepare and publish only,
    the pristine git directory never in the agent step, the work tree read-only
    for publish. Each step has its own /tmp, so nothing the agent leaves there
    (a git config, a credential helper) is seen by a step that holds the token."""
    mounts = [{"name": "input", "mountPath": INPUT_DIR, "readOnly": True}]
    if step != CONTAINER:
        mounts.append({"name": "credentials", "mountPath": CREDENTIALS_DIR, "readOnly": True})
    mounts.append({"name": "work", "mountPath": WORK_DIR, **({"readOnly": True} if step == "publish" else {})})
    if step != CONTAINER:
        mounts.append({"name": "publish", "mountPath": PUBLISH_DIR})
    mounts.append({"name": f"tmp-{step}", "mountPath": "/tmp"})
    return mounts


CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
}
POD_SECURITY: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": RUNNER_UID,
    "runAsGroup": RUNNER_UID,
    "fsGroup": RUNNER_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _container(step: str, agent: Agent, run_name: str, attempt: int, job_input: Mapping[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": step,
        "image": agent.image,
        "command": list(agent.command or DEFAULT_COMMAND),
        "args": [*agent.args, "--step", step],
        "env": _env(agent, step, run_name, attempt, job_input),
        "volumeMounts": _mounts(step),
        "securityContext": _plain(CONTAINER_SECURITY),
        "terminationMessagePath": RESULT_PATH,
        "terminationMessagePolicy": "File",
    }
    if step == CONTAINER:
        env_from = [{"secretRef": {"name": ref.secret}} for ref in agent.secret_refs if ref.env is None]
        if env_from:
            container["envFrom"] = env_from
    if agent.resources:
        container["resources"] = _plain(agent.resources)
    return container


def build_job(
    run: Mapping[str, Any],
    attempt: int,
    job_input: Mapping[str, Any],
    agent: Agent,
    timeouts: Timeouts,
) -> dict[str, Any]:
    """The batch/v1 Job for one attempt (see the module doc)."""
    name, _, _ = run_identity(run)
    job_labels = labels(run, attempt)
    target = job_namespace(run, agent)
    prepare, agent_step, publish = (_container(step, agent, name, attempt, job_input) for step in STEPS)
    volumes = [
        {"name": "input", "configMap": {"name": input_configmap_name(name, attempt)}},
        {"name": "credentials", "secret": {"secretName": token_secret_name(name, attempt), "defaultMode": 0o440}},
        {"name": "work", "emptyDir": {}},
        {"name": "publish", "emptyDir": {}},
        *({"name": f"tmp-{step}", "emptyDir": {}} for step in STEPS),
    ]
    return _locked_job(run, attempt_name(name, attempt), target, job_labels, [prepare, agent_step], publish,
                       volumes, agent, timeouts.agent_seconds, job_input)


def _locked_job(run: Mapping[str, Any], job_name: str, target: str, job_labels: dict[str, str],
                init: list[dict[str, Any]], main: dict[str, Any], volumes: list[dict[str, Any]], agent: Agent,
                deadline: int, job_input: Mapping[str, Any]) -> dict[str, Any]:
    """The Job around an attempt's or a plan's steps: the one locked-down pod both run in."""
    _, namespace, _ = run_identity(run)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,  # no Service addresses of the namespace in the environment
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "securityContext": _plain(POD_SECURITY),
        "initContainers": init,
        "containers": [main],
        "volumes": volumes,
    }
    if agent.service_account:
        pod_spec["serviceAccountName"] = agent.service_account
    meta: dict[str, Any] = {"name": job_name, "namespace": target, "labels": job_labels}
    if job_input.get("repo"):
        meta["annotations"] = {ANNOTATION_REPO: str(job_input["repo"])}
    if target == namespace:  # an owner must live in the same namespace
        meta["ownerReferences"] = [owner_reference(run)]
    spec: dict[str, Any] = {
        "backoffLimit": 0,
        "activeDeadlineSeconds": deadline,
        "template": {"metadata": {"labels": job_labels}, "spec": pod_spec},
    }
    if agent.ttl_seconds_after_finished is not None:
        spec["ttlSecondsAfterFinished"] = agent.ttl_seconds_after_finished
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": spec}


def pod_from_template(job: Mapping[str, Any], name: str | None = None) -> dict[str, Any]:
    """The Pod the Job controller would create from `job` (for admission checks in tests and `foundry` tools)."""
    template = job["spec"]["template"]
    meta = job.get("metadata") or {}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name or f"{meta.get('name')}-probe", "namespace": meta.get("namespace"),
                         "labels": dict(template.get("metadata", {}).get("labels") or {})},
            "spec": _plain(template["spec"])}


def _plain(value: Any) -> Any:
    """MappingProxy/tuple from the frozen config → dict/list the API client serialises."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------- plan Jobs

PLAN_STEPS = ("prepare", "plan", "verify")
PLAN_CLI_STEP = "plan"  # the step that runs the coding agent, read-only
READ_TOKEN_KEY = "read-token"
READ_TOKEN_PATH = f"{CREDENTIALS_DIR}/{READ_TOKEN_KEY}"
# _env's rules for the CLI's step (the model API's secrets, no token path) apply to the plan step.
PLAN_CLI_STEP_AS_AGENT = CONTAINER


def plan_input_configmap_name(run_name: str, number: int) -> str:
    return f"{plan_job_name(run_name, number)}-input"


def plan_token_secret_name(run_name: str, number: int) -> str:
    return f"{plan_job_name(run_name, number)}-github"


def plan_labels(run: Mapping[str, Any], number: int) -> dict[str, str]:
    """Labels on a plan Job, its pods, input and read token: the run's (so watch_jobs wakes the run when
    the Job finishes) and the plan's number in place of an attempt's."""
    out = labels(run, number)
    out.pop(LABEL_ATTEMPT)
    out.update({LABEL_COMPONENT: "plan", LABEL_PLAN: str(number)})
    return out


def plan_selector(run: Mapping[str, Any], number: int) -> str:
    name, namespace, _ = run_identity(run)
    return f"{LABEL_RUN}={name},{LABEL_RUN_NAMESPACE}={namespace},{LABEL_PLAN}={number}"


def build_plan_input_configmap(run: Mapping[str, Any], number: int, job_input: Mapping[str, Any],
                               job: Mapping[str, Any]) -> dict[str, Any]:
    cm = build_input_configmap(run, number, job_input, job)
    cm["metadata"].update(name=plan_input_configmap_name(run_identity(run)[0], number),
                          labels=plan_labels(run, number))
    return cm


def build_read_token_secret(run: Mapping[str, Any], number: int, token: str, job: Mapping[str, Any],
                            expires_at: str | None) -> dict[str, Any]:
    """Secret `<run>-p<n>-github`: the plan's read-only token under `read-token`, owned by the Job."""
    secret = build_token_secret(run, number, token, job, expires_at)
    secret["metadata"].update(name=plan_token_secret_name(run_identity(run)[0], number),
                              labels=plan_labels(run, number))
    secret["stringData"] = {READ_TOKEN_KEY: token}
    return secret


def _plan_env(agent: Agent, step: str, run_name: str, number: int, job_input: Mapping[str, Any],
              read_token: bool) -> list[dict[str, Any]]:
    env = _env(agent, PLAN_CLI_STEP_AS_AGENT if step == PLAN_CLI_STEP else step, run_name, number, job_input)
    env = [e for e in env if e["name"] not in ("FOUNDRY_GITHUB_TOKEN_FILE", "FOUNDRY_ATTEMPT")]
    for e in env:
        if e["name"] == "FOUNDRY_STEP":
            e["value"] = step
    env.insert(2, {"name": "FOUNDRY_PLAN", "value": str(number)})
    if step == "prepare" and read_token:
        env.append({"name": "FOUNDRY_GITHUB_READ_TOKEN_FILE", "value": READ_TOKEN_PATH})
    return env



def _plan_mounts(step: str, read_token: bool) -> list[dict[str, Any]]:
    """docs/agent-contract.md's plan table: the read token in prepare only, publish (the pristine git
    directory) never in the CLI's step, the work tree read-only for verify."""
    mounts = [{"name": "input", "mountPath": INPUT_DIR, "readOnly": True}]
    if step == "prepare" and read_token:
        mounts.append({"name": "credentials", "mountPath": CREDENTIALS_DIR, "readOnly": True})
    mounts.append({"name": "work", "mountPath": WORK_DIR, **({"readOnly": True} if step == "verify" else {})})
    if step != PLAN_CLI_STEP:
        mounts.append({"name": "publish", "mountPath": PUBLISH_DIR})
    mounts.append({"name": f"tmp-{step}", "mountPath": "/tmp"})
    return mounts


def _plan_container(step: str, agent: Agent, run_name: str, number: int, job_input: Mapping[str, Any],
                    read_token: bool) -> dict[str, Any]:
    container = _container(PLAN_CLI_STEP_AS_AGENT if step == PLAN_CLI_STEP else step, agent, run_name, number,
                           job_input)
    container.update(name=step, args=[*agent.args, "--step", step],
                     env=_plan_env(agent, step, run_name, number, job_input, read_token),
                     volumeMounts=_plan_mounts(step, read_token))
    return container


def build_plan_job(run: Mapping[str, Any], number: int, job_input: Mapping[str, Any], agent: Agent,
                   plan: PlanSettings, *, read_token: bool) -> dict[str, Any]:
    """The batch/v1 Job `<run>-p<number>` of a plan (see the module doc). `read_token`: mount
    Secret `<run>-p<n>-github` in prepare (False: the plan clones anonymously)."""
    if job_input.get("mode") != "plan":
        raise ManifestError("a plan Job runs input.json mode plan")
    name, _, _ = run_identity(run)
    job_labels = plan_labels(run, number)
    target = job_namespace(run, agent)
    prepare, cli, verify = (_plan_container(step, agent, name, number, job_input, read_token)
                            for step in PLAN_STEPS)
    volumes: list[dict[str, Any]] = [
        {"name": "input", "configMap": {"name": plan_input_configmap_name(name, number)}}]
    if read_token:
        volumes.append({"name": "credentials", "secret": {"secretName": plan_token_secret_name(name, number),
                                                          "defaultMode": 0o440}})
    volumes += [{"name": "work", "emptyDir": {}}, {"name": "publish", "emptyDir": {}},
                *({"name": f"tmp-{step}", "emptyDir": {}} for step in PLAN_STEPS)]
    return _locked_job(run, plan_job_name(name, number), target, job_labels, [prepare, cli], verify, volumes, agent,
                       plan.timeout_seconds, job_input)
