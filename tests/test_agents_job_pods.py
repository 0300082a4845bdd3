"""The agent pod against the real API server: the PodSecurity `restricted`
admission accepts it (and refuses a weakened copy), the per-attempt token
Secret, and the job provider reading termination messages and the Job
controller's FailedCreate Events.

No kubelet runs on the test control plane, so Pods are created by the test
from the Job's template and their status is written through the status
subresource, the way the Job controller and kubelet would leave it.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import yaml
from kubernetes import client

from foundry.agents.credentials import PushToken, StaticTokenSource
from foundry.agents.job_provider import JobProvider
from foundry.agents.job_manifest import build_job, pod_from_template
from foundry.config import parse_config
from tests.support.agent_pods import play_pod, refuse_pods, restricted_namespace, secret_or_none
from tests.support.jobs import create_owner_run, finish_job

pytestmark = pytest.mark.kube

TOKEN = "ghs_secret-value-5f0c2b1e9a"
SA = "foundry-agent"
INPUT = {"version": 2, "run": "lin-abc-1", "repo": "acme/web", "baseBranch": "main", "branch": "foundry/lin-abc-1",
         "plan": {"goal": "g"}, "planText": "### plan", "constraints": {"maxChangedFiles": 5}}


def _config(**agent):
    return parse_config({"repositories": [{"name": "web", "github": "acme/web"}],
                         "agent": {"image": "registry.example/agent:1", "service_account": SA,
                                   "secret_refs": [{"secret": "llm", "key": "api-key", "env": "ANTHROPIC_API_KEY"}],
                                   **agent},
                         "timeouts": {"agent_seconds": 900}})


def _restricted(kube_client, name: str) -> str:
    return restricted_namespace(kube_client, name, service_account=SA)


@pytest.fixture
def agents_ns(kube_client):
    name = _restricted(kube_client, f"agents-{uuid.uuid4().hex[:8]}")
    yield name
    try:
        client.CoreV1Api(kube_client).delete_namespace(name)
    except client.ApiException:
        pass


def _fake_run(namespace):
    return {"metadata": {"name": "lin-abc-1", "namespace": namespace, "uid": str(uuid.uuid4()), "labels": {}}}


# ---------------------------------------------------------------- PodSecurity admission


def test_the_agent_pod_passes_the_restricted_admission(kube_client, agents_ns):
    job = build_job(_fake_run(agents_ns), 1, INPUT, _config().agent, _config().timeouts)
    pod = client.CoreV1Api(kube_client).create_namespaced_pod(agents_ns, pod_from_template(job))
    assert pod.spec.automount_service_account_token is False
    assert [c.name for c in pod.spec.init_containers] == ["prepare", "agent"]


def _weaken(kind: str, pod: dict) -> dict:
    pod = copy.deepcopy(pod)
    spec = pod["spec"]
    agent = spec["initContainers"][1]
    if kind == "privilege-escalation":
        agent["securityContext"]["allowPrivilegeEscalation"] = True
    elif kind == "capability":
        agent["securityContext"]["capabilities"] = {"add": ["NET_RAW"], "drop": ["ALL"]}
    elif kind == "root":
        spec["securityContext"]["runAsUser"] = 0
    elif kind == "no-seccomp":
        del spec["securityContext"]["seccompProfile"]
    elif kind == "host-path":
        spec["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    return pod


@pytest.mark.parametrize("kind, complaint", [
    ("privilege-escalation", "allowPrivilegeEscalation != false"),
    ("capability", "unrestricted capabilities"),
    ("root", "runAsUser=0"),
    ("no-seccomp", "seccompProfile"),
    ("host-path", "restricted volume types"),
])
def test_a_weakened_pod_is_refused_by_the_same_admission(kube_client, agents_ns, kind, complaint):
    job = build_job(_fake_run(agents_ns), 1, INPUT, _config().agent, _config().timeouts)
    with pytest.raises(client.ApiException) as err:
        client.CoreV1Api(kube_client).create_namespaced_pod(agents_ns, _weaken(kind, pod_from_template(job)))
    assert err.value.status == 403
    message = json.loads(err.value.body)["message"]
    assert 'violates PodSecurity "restricted:latest"' in message and complaint in message, message


# ---------------------------------------------------------------- the token Secret


def _secret(kube_client, namespace, name="lin-abc-1-a1-github"):
    return secret_or_none(kube_client, namespace, name)


def test_the_token_secret_is_created_once_owned_by_the_job_and_nowhere_else(kube_client, namespace, crds,
                                                                           agents_ns, caplog):
    caplog.set_level(logging.DEBUG)
    cfg = _config(namespace=agents_ns)
    run = create_owner_run(kube_client, namespace)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def go():
        provider = JobProvider(cfg, kube_client, StaticTokenSource(TOKEN))
        barrier.wait()
        try:
            provider.dispatch(run, 1, INPUT)
        except BaseException as err:  # noqa: BLE001 - asserted below
            errors.append(err)

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    job = client.BatchV1Api(kube_client).read_namespaced_job("lin-abc-1-a1", agents_ns)
    assert job.metadata.owner_references is None  # another namespace: the run cannot own it
    assert job.metadata.labels["foundry.dev/run-namespace"] == namespace
    secret = _secret(kube_client, agents_ns)
    assert [(o.kind, o.name, o.uid) for o in secret.metadata.owner_references] == [("Job", "lin-abc-1-a1",
                                                                                   job.metadata.uid)]
    assert base64.b64decode(secret.data["token"]).decode() == TOKEN
    version = secret.metadata.resource_version
    JobProvider(cfg, kube_client, StaticTokenSource(TOKEN)).dispatch(run, 1, INPUT)  # adopt: unchanged
    assert _secret(kube_client, agents_ns).metadata.resource_version == version

    core = client.CoreV1Api(kube_client)
    cm = core.read_namespaced_config_map("lin-abc-1-a1-input", agents_ns)
    places = {
        "input": json.dumps(cm.data),
        "job": json.dumps(kube_client.sanitize_for_serialization(job)),
        "events": json.dumps([kube_client.sanitize_for_serialization(e)
                              for ns in (namespace, agents_ns) for e in core.list_namespaced_event(ns).items]),
        "logs": "\n".join(r.getMessage() for r in caplog.records),
    }
    for where, text in places.items():
        assert TOKEN not in text, f"the token leaked into the {where}"
    # The pod reads it as a file, in the two steps that push, never in the agent's.
    pod = job.spec.template.spec
    for step in [*pod.init_containers, *pod.containers]:
        assert any(m.name == "credentials" for m in step.volume_mounts) is (step.name != "agent")
    # Cancel (the run's finalizer) reaches into the agent namespace too.
    JobProvider(cfg, kube_client, StaticTokenSource(TOKEN)).cancel(run, 1)
    assert _secret(kube_client, agents_ns) is None
    with pytest.raises(client.ApiException) as gone:
        client.BatchV1Api(kube_client).read_namespaced_job("lin-abc-1-a1", agents_ns)
    assert gone.value.status == 404


class ExpiringTokens:
    """A token source whose tokens live 20 minutes (as GitHub App tokens live an hour)."""

    def __init__(self, now):
        self.now = now
        self.issued: list[str] = []

    def push_token(self, repo):
        token = f"ghs_{repo.replace('/', '-')}-{len(self.issued)}"
        self.issued.append(token)
        return PushToken(token, self.now() + timedelta(minutes=20))


def test_a_token_about_to_expire_is_refreshed_while_the_job_runs(kube_client, namespace, crds):
    client.CoreV1Api(kube_client).create_namespaced_service_account(namespace, {"metadata": {"name": SA}})
    clock = [datetime.now(timezone.utc)]
    tokens = ExpiringTokens(lambda: clock[0])
    provider = JobProvider(_config(), kube_client, tokens, clock=lambda: clock[0])
    run = create_owner_run(kube_client, namespace)
    provider.dispatch(run, 1, INPUT)
    assert tokens.issued == ["ghs_acme-web-0"]
    first = _secret(kube_client, namespace)
    assert first.metadata.annotations["foundry.dev/token-expires-at"]

    provider.state(run, 1)  # 20 minutes left: nothing to do
    assert tokens.issued == ["ghs_acme-web-0"]
    clock[0] += timedelta(minutes=10)  # 10 minutes left, under the margin: a new token replaces it
    assert provider.state(run, 1)["state"] == "running"
    assert tokens.issued == ["ghs_acme-web-0", "ghs_acme-web-1"]
    assert base64.b64decode(_secret(kube_client, namespace).data["token"]).decode() == "ghs_acme-web-1"
    # A restarted operator (no memory of the expiry) reads it from the Secret and leaves it alone.
    JobProvider(_config(), kube_client, tokens, clock=lambda: clock[0]).state(run, 1)
    assert len(tokens.issued) == 2

    finish_job(kube_client, namespace, "lin-abc-1-a1")
    assert provider.state(run, 1)["state"] == "succeeded"
    assert _secret(kube_client, namespace) is None  # the attempt is over: the token leaves the cluster


def test_cancel_deletes_the_job_and_its_token(kube_client, namespace, crds):
    client.CoreV1Api(kube_client).create_namespaced_service_account(namespace, {"metadata": {"name": SA}})
    provider = JobProvider(_config(), kube_client, StaticTokenSource(TOKEN))
    run = create_owner_run(kube_client, namespace)
    provider.dispatch(run, 1, INPUT)
    assert _secret(kube_client, namespace) is not None
    provider.cancel(run, 1)
    assert provider.state(run, 1) == {"state": "missing"} and _secret(kube_client, namespace) is None


def test_no_credential_is_a_clear_error_that_names_what_to_set(kube_client, namespace, crds):
    provider = JobProvider(_config(), kube_client, StaticTokenSource(""))
    with pytest.raises(Exception, match="no GitHub token for the agent: configure the GitHub App or set "
                                        "FOUNDRY_GITHUB_TOKEN"):
        provider.dispatch(create_owner_run(kube_client, namespace), 1, INPUT)


# ---------------------------------------------------------------- results from the pod


PUSHED = {"version": 1, "step": "publish", "outcome": "pushed", "branch": "foundry/lin-abc-1", "headSha": "c" * 40,
          "pr": {"number": 7, "url": "https://github.com/acme/web/pull/7", "created": True}, "filesChanged": 2,
          "linesAdded": 14, "linesRemoved": 3, "tokens": {"input": 5123, "output": 812}, "costUsd": 0.0312,
          "summary": "Added /healthz."}


@pytest.mark.parametrize("steps, succeeded, expected", [
    ({"prepare": ('{"outcome": "pushed", "step": "prepare"}', 0, "Completed"),
      "agent": ('{"outcome": "pushed", "step": "agent", "tokens": {"input": 1, "output": 1}}', 0, "Completed"),
      "publish": (json.dumps(PUSHED), 0, "Completed")}, True,
     {"state": "succeeded", "outcome": "pushed", "step": "publish", "headSha": "c" * 40,
      "pr": {"number": 7, "url": "https://github.com/acme/web/pull/7"}, "filesChanged": 2, "linesAdded": 14,
      "linesRemoved": 3, "tokens": {"input": 5123, "output": 812}, "costUsd": 0.0312, "summary": "Added /healthz."}),
    ({"prepare": ('{"outcome": "pushed", "step": "prepare"}', 0, "Completed"),
      "agent": ('{"outcome": "failed", "step": "agent", "reason": "model API unreachable: connection refused", '
                '"tokens": {"input": 10, "output": 0}}', 1, "Error")}, False,
     {"state": "failed", "outcome": "failed", "step": "agent", "reason": "model API unreachable: connection refused",
      "tokens": {"input": 10, "output": 0}}),
    ({"prepare": ('{"outcome": "pushed"}', 0, "Completed"), "agent": ('{"outcome": "pushed"}', 0, "Completed"),
      "publish": ('{"outcome": "refused", "step": "publish", "reason": ".github/workflows/ci.yml is a workflow '
                  'file"}', 3, "Error")}, False,
     {"state": "failed", "outcome": "refused", "step": "publish",
      "reason": ".github/workflows/ci.yml is a workflow file"}),
    ({"prepare": ('{"outcome": "pushed"}', 0, "Completed"),
      "agent": ('{"outcome": "no-changes", "reason": "the agent changed nothing"}', 2, "Error")}, False,
     {"state": "failed", "outcome": "no-changes", "step": "agent", "reason": "the agent changed nothing"}),
    ({"prepare": ('{"outcome": "pushed"}', 0, "Completed"), "agent": (None, 137, "OOMKilled")}, False,
     {"state": "failed", "outcome": "failed", "step": "agent",
      "reason": "step agent ended with OOMKilled (exit code 137) and wrote no result"}),
    ({"prepare": ("panic: not json at all", 1, "Error")}, False,
     {"state": "failed", "outcome": "failed", "step": "prepare"}),
], ids=["pushed", "failed", "refused", "no-changes", "oom", "garbage"])
def test_termination_messages_become_the_attempts_record(kube_client, namespace, crds, steps, succeeded, expected):
    client.CoreV1Api(kube_client).create_namespaced_service_account(namespace, {"metadata": {"name": SA}})
    provider = JobProvider(_config(), kube_client, StaticTokenSource(TOKEN))
    run = create_owner_run(kube_client, namespace)
    provider.dispatch(run, 1, INPUT)
    play_pod(kube_client, namespace, "lin-abc-1-a1", steps=steps, phase="Succeeded" if succeeded else "Failed")
    assert provider.state(run, 1)["state"] == "running"  # the Job has not ended: nothing is read yet
    finish_job(kube_client, namespace, "lin-abc-1-a1", succeeded=succeeded)
    st = provider.state(run, 1)
    assert {k: st.get(k) for k in expected} == expected, st
    if expected["outcome"] == "failed" and "reason" not in expected:  # garbage: the reason names what was wrong
        assert "unreadable result: the result is not JSON" in st["reason"]
    assert "startedAt" in st and "finishedAt" in st


def test_a_job_without_pods_reads_as_before(kube_client, namespace, crds):
    provider = JobProvider(_config(), kube_client, StaticTokenSource(TOKEN))
    run = create_owner_run(kube_client, namespace)
    provider.dispatch(run, 1, INPUT)
    finish_job(kube_client, namespace, "lin-abc-1-a1", succeeded=False)
    st = provider.state(run, 1)
    assert (st["state"], st["reason"]) == ("failed", "BackoffLimitExceeded") and "outcome" not in st


# ---------------------------------------------------------------- admission refusal


def test_a_refused_pod_is_a_failed_attempt_at_once(kube_client, namespace, crds):
    provider = JobProvider(_config(), kube_client, StaticTokenSource(TOKEN))
    run = create_owner_run(kube_client, namespace)
    provider.dispatch(run, 1, INPUT)
    assert provider.state(run, 1)["state"] == "running"
    refusal = refuse_pods(kube_client, namespace, "lin-abc-1-a1")
    st = provider.state(run, 1)
    assert (st["state"], st["reason"]) == ("failed", "PodRefused")
    assert 'violates PodSecurity "restricted:latest"' in st["message"] and "runAsUser=0" in st["message"]
    assert refusal in st["message"]


def test_with_a_github_app_the_secret_holds_a_token_for_the_one_repository(kube_client, namespace, crds):
    from foundry.agents.credentials import AppTokenSource, push_token_source
    from foundry.dev.github_auth import generate_app_key
    from foundry.dev.github_server import GitHubServer

    private, public = generate_app_key()
    with GitHubServer() as gh:
        gh.add_repo("acme/web")
        gh.add_repo("acme/other")
        gh.install_app(app_id=4242, public_key_pem=public, installation_id=77, account="acme")
        settings = parse_config({"github": {"api_url": gh.url, "app_id": 4242, "installation_id": 77,
                                            "private_key_env": "TEST_APP_KEY"}}).github
        tokens = push_token_source(settings, env={"TEST_APP_KEY": private})
        assert isinstance(tokens, AppTokenSource)
        provider = JobProvider(_config(), kube_client, tokens)
        run = create_owner_run(kube_client, namespace)
        provider.dispatch(run, 1, INPUT)
        secret = _secret(kube_client, namespace)
        token = base64.b64decode(secret.data["token"]).decode()
        info = gh.token_info(token)
        assert info.kind == "installation" and info.repositories == frozenset({"acme/web"})
        assert {k: v for k, v in info.permissions.items() if v == "write"} == {"contents": "write",
                                                                              "pull_requests": "write"}
        expires = datetime.fromisoformat(secret.metadata.annotations["foundry.dev/token-expires-at"]
                                         .replace("Z", "+00:00"))
        assert abs(expires.timestamp() - info.expires_at) < 2
        # A plan of the same run gets a token that can only read that repository (and no push token).
        provider.dispatch_plan(run, 1, {**INPUT, "mode": "plan"})
        read = _secret(kube_client, namespace, "lin-abc-1-p1-github")
        assert set(read.data) == {"read-token"}
        info = gh.token_info(base64.b64decode(read.data["read-token"]).decode())
        assert info.kind == "installation" and info.repositories == frozenset({"acme/web"})
        assert dict(info.permissions) == {"contents": "read", "metadata": "read"}
    # Without an App: the development fallback, the static token of the environment.
    fallback = push_token_source(parse_config(None).github, env={"FOUNDRY_GITHUB_TOKEN": "dev-token"})
    assert isinstance(fallback, StaticTokenSource) and fallback.push_token("a/b").token == "dev-token"
    assert fallback.read_token("a/b") is None  # a plan then clones anonymously, never with the push token
    fallback = push_token_source(parse_config(None).github, env={"FOUNDRY_GITHUB_TOKEN": "dev-token",
                                                                 "FOUNDRY_GITHUB_READ_TOKEN": "dev-read"})
    assert fallback.read_token("a/b").token == "dev-read"
