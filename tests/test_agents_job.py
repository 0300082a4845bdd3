"""The job provider: manifests (pure) and the Job lifecycle against the real API server."""

from __future__ import annotations

import json
import threading

import pytest
import yaml
from kubernetes import client

from foundry.agents import AgentError, AgentUnavailable, make_provider
from foundry.agents.job_provider import JobProvider, job_state
from foundry.agents.credentials import StaticTokenSource
from foundry.agents.job_manifest import ManifestError, build_input_configmap, build_job, build_token_secret
from foundry.config import parse_config
from tests.support.jobs import create_owner_run, finish_job, rival_wins_first_read

CFG = parse_config(yaml.safe_load("""
repositories: [{name: web, github: acme/web}]
agent:
  image: registry.example/agent:1
  command: [/agent/run]
  args: [--fast]
  env: {MODE: test}
  secret_refs:
    - secret: gh-token
    - {secret: llm, key: api-key, env: LLM_API_KEY}
  service_account: agent-sa
  resources: {limits: {memory: 1Gi}}
  runner: {name: codex, model: gpt-5-codex}
timeouts: {agent_seconds: 900}
"""))

INPUT = {"run": "lin-abc-1", "repo": "acme/web", "baseBranch": "main", "branch": "foundry/lin-abc-1",
         "plan": {"goal": "g", "steps": ["s"]}, "instructions": "do it", "constraints": {"maxChangedFiles": 50}}


TOKENS = StaticTokenSource("ghs_test-token-0123456789")


def fake_run(name="lin-abc-1", namespace="ns", uid="0c5d6a1e-0000-4000-8000-000000000001"):
    return {"apiVersion": "foundry.dev/v1alpha1", "kind": "FoundryRun",
            "metadata": {"name": name, "namespace": namespace, "uid": uid,
                         "labels": {"foundry.dev/issue-key": "ACME-1", "foundry.dev/tracker": "linear"}}}


# ---------------------------------------------------------------- pure manifests


def test_job_manifest():
    job = build_job(fake_run(), 2, INPUT, CFG.agent, CFG.timeouts)
    meta, spec = job["metadata"], job["spec"]
    assert meta["name"] == "lin-abc-1-a2" and meta["namespace"] == "ns"
    assert meta["labels"]["foundry.dev/run"] == "lin-abc-1" and meta["labels"]["foundry.dev/attempt"] == "2"
    assert meta["labels"]["foundry.dev/run-namespace"] == "ns"
    assert meta["labels"]["foundry.dev/issue-key"] == "ACME-1"
    assert meta["annotations"]["foundry.dev/repo"] == "acme/web"
    assert meta["ownerReferences"][0]["kind"] == "FoundryRun" and meta["ownerReferences"][0]["controller"] is True
    assert spec["backoffLimit"] == 0 and spec["activeDeadlineSeconds"] == 900
    assert spec["ttlSecondsAfterFinished"] == 86400
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == "agent-sa"
    assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
    assert pod["terminationGracePeriodSeconds"] <= 10
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                      "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["input"] == {"name": "input", "configMap": {"name": "lin-abc-1-a2-input"}}
    assert volumes["credentials"]["secret"]["secretName"] == "lin-abc-1-a2-github"
    assert all("emptyDir" in volumes[n] for n in ("work", "publish", "tmp-prepare", "tmp-agent", "tmp-publish"))

    assert [c["name"] for c in pod["initContainers"]] == ["prepare", "agent"]
    assert [c["name"] for c in pod["containers"]] == ["publish"]
    steps = {c["name"]: c for c in pod["initContainers"] + pod["containers"]}
    for step, c in steps.items():
        assert c["image"] == "registry.example/agent:1"
        assert c["command"] == ["/agent/run"] and c["args"] == ["--fast", "--step", step]
        assert c["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                        "readOnlyRootFilesystem": True, "runAsNonRoot": True}
        assert c["terminationMessagePolicy"] == "File" and c["terminationMessagePath"] == "/dev/termination-log"
        assert c["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"},
                                  "limits": {"memory": "1Gi", "ephemeral-storage": "4Gi"}}
        env = {e["name"]: e for e in c["env"]}
        assert env["FOUNDRY_JOB_INPUT"]["value"] == "/foundry/input/input.json"
        assert env["FOUNDRY_BRANCH"]["value"] == "foundry/lin-abc-1" and env["FOUNDRY_STEP"]["value"] == step
        assert env["MODE"]["value"] == "test"
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        assert mounts[f"tmp-{step}"]["mountPath"] == "/tmp"  # each step its own /tmp
        # The credential only where git pushes; the model key only where the CLI runs.
        holds_token = step in ("prepare", "publish")
        assert ("credentials" in mounts) is holds_token and ("publish" in mounts) is holds_token
        assert ("FOUNDRY_GITHUB_TOKEN_FILE" in env) is holds_token
        assert ("LLM_API_KEY" in env) is (step == "agent") and ("envFrom" in c) is (step == "agent")
    assert steps["publish"]["volumeMounts"][2] == {"name": "work", "mountPath": "/foundry/work", "readOnly": True}
    agent = steps["agent"]
    assert {e["name"]: e for e in agent["env"]}["LLM_API_KEY"] == {
        "name": "LLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": "llm", "key": "api-key"}}}
    assert agent["envFrom"] == [{"secretRef": {"name": "gh-token"}}]


def test_default_command_is_the_runner_and_a_dedicated_namespace_drops_the_owner():
    cfg = parse_config(yaml.safe_load("agent: {namespace: foundry-agents, ttl_seconds_after_finished: null}"))
    job = build_job(fake_run(), 1, INPUT, cfg.agent, cfg.timeouts)
    assert job["metadata"]["namespace"] == "foundry-agents"
    assert "ownerReferences" not in job["metadata"]  # an owner must share the namespace
    assert "ttlSecondsAfterFinished" not in job["spec"]
    pod = job["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["command"] == ["foundry", "agent", "run"]
    assert pod["initContainers"][0]["args"] == ["--step", "prepare"]
    assert "serviceAccountName" not in pod


def test_input_configmap_and_token_secret_are_owned_by_the_job():
    job = {"metadata": {"name": "lin-abc-1-a1", "namespace": "ns", "uid": "job-uid-1"}}
    cm = build_input_configmap(fake_run(), 1, INPUT, job)
    assert cm["metadata"]["name"] == "lin-abc-1-a1-input" and cm["metadata"]["namespace"] == "ns"
    assert cm["metadata"]["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "Job", "name": "lin-abc-1-a1",
                                                  "uid": "job-uid-1", "controller": True}]
    assert json.loads(cm["data"]["input.json"]) == INPUT
    secret = build_token_secret(fake_run(), 1, "tok-123", job, "2026-01-01T01:00:00Z")
    assert secret["metadata"]["name"] == "lin-abc-1-a1-github"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "job-uid-1"
    assert secret["stringData"] == {"token": "tok-123"}
    assert secret["metadata"]["annotations"] == {"foundry.dev/token-expires-at": "2026-01-01T01:00:00Z"}


def test_manifest_errors_are_clear():
    job = {"metadata": {"name": "lin-abc-1-a1", "namespace": "ns", "uid": "u"}}
    with pytest.raises(ManifestError, match="no metadata.uid"):
        build_job(fake_run(uid=""), 1, INPUT, CFG.agent, CFG.timeouts)
    with pytest.raises(ManifestError, match="the Job has no metadata.uid"):
        build_input_configmap(fake_run(), 1, INPUT, {"metadata": {"name": "x"}})
    with pytest.raises(ManifestError, match="not JSON-serialisable"):
        build_input_configmap(fake_run(), 1, {"x": object()}, job)
    with pytest.raises(ManifestError, match="a ConfigMap holds at most"):
        build_input_configmap(fake_run(), 1, {"x": "y" * 1_000_000}, job)
    bad = parse_config(yaml.safe_load("agent: {env: {FOUNDRY_RUN: x}}"))
    with pytest.raises(ManifestError, match="reserved"):
        build_job(fake_run(), 1, INPUT, bad.agent, bad.timeouts)
    with pytest.raises(ValueError, match="metadata.name"):
        build_job({"metadata": {}}, 1, INPUT, CFG.agent, CFG.timeouts)


def test_job_state_from_conditions():
    assert job_state(None) == {"state": "missing"}
    assert job_state({"status": {"startTime": "2026-01-01T00:00:00Z"}})["state"] == "running"
    done = job_state({"status": {"completionTime": "2026-01-01T00:05:00Z",
                                 "conditions": [{"type": "Complete", "status": "True"}]}})
    assert (done["state"], done["finishedAt"]) == ("succeeded", "2026-01-01T00:05:00Z")
    failed = job_state({"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                                                   "lastTransitionTime": "2026-01-01T00:09:00Z"}]}})
    assert (failed["state"], failed["reason"], failed["finishedAt"]) == ("failed", "DeadlineExceeded", "2026-01-01T00:09:00Z")
    assert job_state({"status": {"conditions": [{"type": "Complete", "status": "False"}]}})["state"] == "running"


def test_make_provider_needs_an_api_client_for_jobs():
    with pytest.raises(AgentError, match="needs a Kubernetes ApiClient"):
        make_provider(CFG, None)


def test_unreachable_api_server_is_unavailable_not_a_crash():
    cfg = client.Configuration()
    cfg.host = "http://127.0.0.1:9"
    cfg.retries = 0
    with client.ApiClient(cfg) as api:
        with pytest.raises(AgentUnavailable, match="reading Job ns/lin-abc-1-a1"):
            JobProvider(CFG, api).dispatch(fake_run(), 1, INPUT)


# ---------------------------------------------------------------- against the API server


def _jobs(kube_client, namespace):
    return client.BatchV1Api(kube_client).list_namespaced_job(namespace).items


def _finish(kube_client, namespace, name, *, succeeded: bool):
    finish_job(kube_client, namespace, name, succeeded=succeeded)


@pytest.mark.kube
def test_dispatch_creates_job_and_owned_input_then_reads_states(kube_client, namespace, crds):
    run = create_owner_run(kube_client, namespace)
    provider = make_provider(CFG, kube_client, TOKENS)
    assert isinstance(provider, JobProvider)
    assert provider.state(run, 1) == {"state": "missing"}

    rec = provider.dispatch(run, 1, INPUT)
    assert rec["name"] == "lin-abc-1-a1" and rec["attempt"] == 1 and rec["state"] == "running" and rec["startedAt"]

    job = client.BatchV1Api(kube_client).read_namespaced_job("lin-abc-1-a1", namespace)
    assert job.metadata.owner_references[0].uid == run["metadata"]["uid"]
    agent = job.spec.template.spec.init_containers[1]
    assert agent.name == "agent" and agent.env_from[0].secret_ref.name == "gh-token"
    cm = client.CoreV1Api(kube_client).read_namespaced_config_map("lin-abc-1-a1-input", namespace)
    assert [(o.kind, o.uid) for o in cm.metadata.owner_references] == [("Job", job.metadata.uid)]
    assert json.loads(cm.data["input.json"]) == INPUT
    assert provider.state(run, 1)["state"] == "running"

    _finish(kube_client, namespace, "lin-abc-1-a1", succeeded=True)
    st = provider.state(run, 1)
    assert st["state"] == "succeeded" and st["finishedAt"]

    provider.dispatch(run, 2, INPUT)
    _finish(kube_client, namespace, "lin-abc-1-a2", succeeded=False)
    st = provider.state(run, 2)
    assert (st["state"], st["reason"]) == ("failed", "BackoffLimitExceeded")
    # a finished attempt dispatched again is adopted as it is, not restarted
    assert provider.dispatch(run, 2, INPUT)["state"] == "failed"
    assert sorted(j.metadata.name for j in _jobs(kube_client, namespace)) == ["lin-abc-1-a1", "lin-abc-1-a2"]


@pytest.mark.kube
def test_existing_job_is_adopted_and_its_input_kept(kube_client, namespace, crds):
    run = create_owner_run(kube_client, namespace)
    provider = make_provider(CFG, kube_client, TOKENS)
    first = provider.dispatch(run, 1, INPUT)
    again = provider.dispatch(run, 1, {**INPUT, "instructions": "changed"})
    assert again["name"] == first["name"] and again["startedAt"] == first["startedAt"]
    assert len(_jobs(kube_client, namespace)) == 1
    cm = client.CoreV1Api(kube_client).read_namespaced_config_map("lin-abc-1-a1-input", namespace)
    assert json.loads(cm.data["input.json"])["instructions"] == "do it"


@pytest.mark.kube
def test_concurrent_dispatches_make_one_job(kube_client, namespace, crds):
    """Eight threads, each with its own provider (as if separate operators), race on one attempt."""
    run = create_owner_run(kube_client, namespace)
    barrier = threading.Barrier(8)
    results, errors = [], []

    def go():
        provider = JobProvider(CFG, kube_client, TOKENS)
        barrier.wait()
        try:
            results.append(provider.dispatch(run, 1, INPUT))
        except Exception as err:  # noqa: BLE001 - collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert {r["name"] for r in results} == {"lin-abc-1-a1"} and len(results) == 8
    assert [j.metadata.name for j in _jobs(kube_client, namespace)] == ["lin-abc-1-a1"]


@pytest.mark.kube
def test_409_on_create_is_adopted(kube_client, namespace, crds, monkeypatch):
    """The check says 'absent', then someone else creates it before our create: adopt, do not fail."""
    run = create_owner_run(kube_client, namespace)
    provider = JobProvider(CFG, kube_client, TOKENS)
    other = JobProvider(CFG, kube_client, TOKENS)
    calls = rival_wins_first_read(monkeypatch, provider, lambda: other.dispatch(run, 1, INPUT))
    rec = provider.dispatch(run, 1, INPUT)
    assert rec["name"] == "lin-abc-1-a1" and calls["n"] == 2
    assert len(_jobs(kube_client, namespace)) == 1


@pytest.mark.kube
def test_cancel_deletes_the_job_and_is_idempotent(kube_client, namespace, crds):
    run = create_owner_run(kube_client, namespace)
    provider = JobProvider(CFG, kube_client, TOKENS)
    provider.dispatch(run, 1, INPUT)
    provider.cancel(run, 1)
    # Background propagation: the Job object goes at once (no garbage collector needed for it)
    assert provider.state(run, 1) == {"state": "missing"}
    provider.cancel(run, 1)  # gone already: no error
    provider.cancel(run, 7)  # never existed: no error


@pytest.mark.kube
def test_invalid_manifest_is_a_clear_agent_error(kube_client, namespace, crds):
    bad = parse_config(yaml.safe_load("agent: {resources: {limits: {memory: lots}}}"))
    run = create_owner_run(kube_client, namespace)
    with pytest.raises(AgentError, match=r"creating Job .*: 400 Bad Request: .*quantities must match"):
        JobProvider(bad, kube_client, TOKENS).dispatch(run, 1, INPUT)
    assert _jobs(kube_client, namespace) == []
