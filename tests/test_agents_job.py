"""The job provider: manifests (pure) and the Job lifecycle against the real API server."""

from __future__ import annotations

import json
import threading

import pytest
import yaml
from kubernetes import client

from foundry.agents import AgentError, AgentUnavailable, make_provider
from foundry.agents.job import JobProvider, job_state
from foundry.agents.job_manifest import ManifestError, build_input_configmap, build_job
from foundry.config import parse_config
from foundry.testing.jobs import finish_job

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
timeouts: {agent_seconds: 900}
"""))

INPUT = {"run": "lin-abc-1", "repo": "acme/web", "baseBranch": "main", "branch": "foundry/lin-abc-1",
         "plan": {"goal": "g", "steps": ["s"]}, "instructions": "do it", "constraints": {"maxChangedFiles": 50}}


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
    assert meta["labels"]["foundry.dev/issue-key"] == "ACME-1"
    assert meta["ownerReferences"][0]["kind"] == "FoundryRun" and meta["ownerReferences"][0]["controller"] is True
    assert spec["backoffLimit"] == 0 and spec["activeDeadlineSeconds"] == 900
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == "agent-sa"
    assert pod["volumes"] == [{"name": "input", "configMap": {"name": "lin-abc-1-a2-input"}}]
    (c,) = pod["containers"]
    assert c["image"] == "registry.example/agent:1" and c["command"] == ["/agent/run"] and c["args"] == ["--fast"]
    env = {e["name"]: e for e in c["env"]}
    assert env["FOUNDRY_JOB_INPUT"]["value"] == "/foundry/input/input.json"
    assert env["FOUNDRY_BRANCH"]["value"] == "foundry/lin-abc-1"
    assert env["MODE"]["value"] == "test"
    assert env["LLM_API_KEY"] == {"name": "LLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": "llm", "key": "api-key"}}}
    assert c["envFrom"] == [{"secretRef": {"name": "gh-token"}}]
    assert c["resources"] == {"limits": {"memory": "1Gi"}}


def test_input_configmap_holds_the_input_and_no_secret_values():
    cm = build_input_configmap(fake_run(), 1, INPUT)
    assert cm["metadata"]["name"] == "lin-abc-1-a1-input"
    assert cm["metadata"]["ownerReferences"][0]["uid"] == fake_run()["metadata"]["uid"]
    assert json.loads(cm["data"]["input.json"]) == INPUT


def test_manifest_errors_are_clear():
    with pytest.raises(ManifestError, match="no metadata.uid"):
        build_input_configmap(fake_run(uid=""), 1, INPUT)
    with pytest.raises(ManifestError, match="not JSON-serialisable"):
        build_input_configmap(fake_run(), 1, {"x": object()})
    with pytest.raises(ManifestError, match="a ConfigMap holds at most"):
        build_input_configmap(fake_run(), 1, {"x": "y" * 1_000_000})
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


def _make_run(kube_client, namespace, name="lin-abc-1"):
    body = {"apiVersion": "foundry.dev/v1alpha1", "kind": "FoundryRun",
            "metadata": {"name": name, "namespace": namespace, "labels": {"foundry.dev/issue-key": "ACME-1"}},
            "spec": {"tracker": "linear", "issueId": f"id-{name}", "issueKey": "ACME-1", "attempt": 1,
                     "ticket": {"title": "t", "description": "d", "labels": [], "updatedAt": "2026-01-01T00:00:00Z"},
                     "trigger": {"source": "manual"}}}
    return client.CustomObjectsApi(kube_client).create_namespaced_custom_object(
        "foundry.dev", "v1alpha1", namespace, "foundryruns", body)


def _jobs(kube_client, namespace):
    return client.BatchV1Api(kube_client).list_namespaced_job(namespace).items


def _finish(kube_client, namespace, name, *, succeeded: bool):
    finish_job(kube_client, namespace, name, succeeded=succeeded)


@pytest.mark.kube
def test_dispatch_creates_job_and_owned_input_then_reads_states(kube_client, namespace, crds):
    run = _make_run(kube_client, namespace)
    provider = make_provider(CFG, kube_client)
    assert isinstance(provider, JobProvider)
    assert provider.state(run, 1) == {"state": "missing"}

    rec = provider.dispatch(run, 1, INPUT)
    assert rec["name"] == "lin-abc-1-a1" and rec["attempt"] == 1 and rec["state"] == "running" and rec["startedAt"]

    job = client.BatchV1Api(kube_client).read_namespaced_job("lin-abc-1-a1", namespace)
    assert job.metadata.owner_references[0].uid == run["metadata"]["uid"]
    container = job.spec.template.spec.containers[0]
    assert container.env_from[0].secret_ref.name == "gh-token"
    cm = client.CoreV1Api(kube_client).read_namespaced_config_map("lin-abc-1-a1-input", namespace)
    assert cm.metadata.owner_references[0].name == "lin-abc-1"
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
    run = _make_run(kube_client, namespace)
    provider = make_provider(CFG, kube_client)
    first = provider.dispatch(run, 1, INPUT)
    again = provider.dispatch(run, 1, {**INPUT, "instructions": "changed"})
    assert again["name"] == first["name"] and again["startedAt"] == first["startedAt"]
    assert len(_jobs(kube_client, namespace)) == 1
    cm = client.CoreV1Api(kube_client).read_namespaced_config_map("lin-abc-1-a1-input", namespace)
    assert json.loads(cm.data["input.json"])["instructions"] == "do it"


@pytest.mark.kube
def test_concurrent_dispatches_make_one_job(kube_client, namespace, crds):
    """Eight threads, each with its own provider (as if separate operators), race on one attempt."""
    run = _make_run(kube_client, namespace)
    barrier = threading.Barrier(8)
    results, errors = [], []

    def go():
        provider = JobProvider(CFG, kube_client)
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
    run = _make_run(kube_client, namespace)
    provider = JobProvider(CFG, kube_client)
    other = JobProvider(CFG, kube_client)
    real_read = provider._read_job
    calls = {"n": 0}

    def stale_first_read(name, ns):
        calls["n"] += 1
        if calls["n"] == 1:
            other.dispatch(run, 1, INPUT)  # the rival wins between our read and our create
            return None
        return real_read(name, ns)

    monkeypatch.setattr(provider, "_read_job", stale_first_read)
    rec = provider.dispatch(run, 1, INPUT)
    assert rec["name"] == "lin-abc-1-a1" and calls["n"] == 2
    assert len(_jobs(kube_client, namespace)) == 1


@pytest.mark.kube
def test_cancel_deletes_the_job_and_is_idempotent(kube_client, namespace, crds):
    run = _make_run(kube_client, namespace)
    provider = JobProvider(CFG, kube_client)
    provider.dispatch(run, 1, INPUT)
    provider.cancel(run, 1)
    # Background propagation: the Job object goes at once (no garbage collector needed for it)
    assert provider.state(run, 1) == {"state": "missing"}
    provider.cancel(run, 1)  # gone already: no error
    provider.cancel(run, 7)  # never existed: no error


@pytest.mark.kube
def test_invalid_manifest_is_a_clear_agent_error(kube_client, namespace, crds):
    bad = parse_config(yaml.safe_load("agent: {resources: {limits: {memory: lots}}}"))
    run = _make_run(kube_client, namespace)
    with pytest.raises(AgentError, match=r"creating Job .*: 400 Bad Request: .*quantities must match"):
        JobProvider(bad, kube_client).dispatch(run, 1, INPUT)
    assert _jobs(kube_client, namespace) == []
