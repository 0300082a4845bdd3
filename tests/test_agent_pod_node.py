"""Agent attempts in real pods on the real node, started by the operator's JobProvider.

The pod runs prepare → agent → publish as real containers of the locally built
agent image; the real Job controller marks the Job (nothing patches a status);
the real PodSecurity admission decides on the pod in a namespace enforcing
`restricted`. The CLI talks to the model stand-in and git/REST go to the
GitHub stand-in, both on the node IP; the push token is an installation token
of a GitHub App, one per attempt, in the Secret the provider creates.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import subprocess
import time

import pytest
from kubernetes import client

from foundry.agents.job_manifest import build_job
from foundry.testing.agent_node import AGENT_SA, MODEL_KEY, REPO, AgentPodBed, agent_image
from foundry.testing.model_server import Final, ToolCall
from foundry.testing.runner_kit import BASE_FILES, basic_auth, fresh_clone, git, trailers

pytestmark = [pytest.mark.node, pytest.mark.slow, pytest.mark.timeout(1800)]

WORK = "/foundry/work/repo"
FIXED = 'def greet(name: str) -> str:\n    return f"Hello, {name.strip()}!"\n'
TESTS = 'from greeter import greet\n\nassert greet("  Ada ") == "Hello, Ada!"\n'
SUMMARY = "SUMMARY-4410: greet strips the name; a test covers it."
PROBE = ("echo UID=$(id -u); ls -la /var/run/secrets/kubernetes.io/serviceaccount; "
         "cat /foundry/credentials/token; ls /foundry; touch /usr/local/probe; "
         "echo CLI-ENV-BEGIN; env | sort; echo CLI-ENV-END; "
         "echo POD-ENV-BEGIN; tr '\\0' '\\n' < /proc/1/environ | sort; echo POD-ENV-END; echo PROBE-DONE")


@pytest.fixture(scope="module")
def bed(real_node):
    ref, tar = agent_image()
    started = time.monotonic()
    real_node.import_image(tar, ref)
    print(f"\n[agent-pod] imported {ref} in {time.monotonic() - started:.1f} s")
    with AgentPodBed(real_node, ref) as bed:
        yield bed


def _secret_token(bed: AgentPodBed, namespace: str, job: str) -> str:
    secret = bed.core.read_namespaced_secret(f"{job}-github", namespace)
    return base64.b64decode(secret.data["token"]).decode()


def _section(text: str, name: str) -> str:
    return text[text.index(f"{name}-BEGIN"):text.index(f"{name}-END")]


# ---------------------------------------------------------------- the happy path, with Claude Code


def test_claude_code_in_a_restricted_pod_pushes_a_commit_and_opens_a_draft_pr(bed, real_node, tmp_path):
    ns = bed.namespace()
    cfg = bed.config(ns, runner={"name": "claude-code", "model": "claude-sonnet-4-5", "timeout_seconds": 300})
    bed.model.set_script([
        ToolCall("Bash", {"command": PROBE, "description": "look around"}),
        ToolCall("Read", {"file_path": f"{WORK}/greeter.py"}),
        ToolCall("Edit", {"file_path": f"{WORK}/greeter.py", "old_string": "{name}",
                          "new_string": "{name.strip()}"}),
        ToolCall("Write", {"file_path": f"{WORK}/test_greeter.py", "content": TESTS}),
        Final(SUMMARY),
    ])
    main_before = bed.github.branch_sha(REPO, "main")
    attempt = bed.dispatch(cfg)
    branch = f"foundry/{attempt.run['metadata']['name']}"
    token = _secret_token(bed, ns, attempt.name)
    info = bed.github.token_info(token)
    assert info.kind == "installation" and info.repositories == frozenset({REPO})

    attempt.wait_running(timeout=180)
    job = attempt.wait_job("Complete", timeout=300)
    st = attempt.wait_ended(timeout=30)
    print(f"\n[agent-pod] claude-code attempt: {attempt.marks}")

    # The Job controller's verdict, and the pod really ran the three steps as containers.
    assert job.status.succeeded == 1 and job.status.failed in (None, 0)
    (pod,) = attempt.pods()
    assert pod.status.phase == "Succeeded"
    steps = {s.name: s.state.terminated for s in [*pod.status.init_container_statuses,
                                                  *pod.status.container_statuses]}
    assert list(steps) == ["prepare", "agent", "publish"]
    assert all(t is not None and t.exit_code == 0 for t in steps.values()), steps

    # JobProvider.state() read the termination message: what the stand-in has is what it says.
    head = bed.github.branch_sha(REPO, branch)
    assert st["state"] == "succeeded" and st["outcome"] == "pushed" and st["step"] == "publish", st
    assert st["headSha"] == head
    assert st["tokens"] == {"input": 1200 * 5, "output": 80 * 5} and st["costUsd"] > 0
    assert SUMMARY in st["summary"]
    assert (st["filesChanged"], st["linesAdded"], st["linesRemoved"]) == (2, 4, 1)

    # The push is real: a clone of the branch holds the scripted change in one commit on main's head.
    clone = fresh_clone(bed.github.git_url(REPO), branch, tmp_path / "check", env=basic_auth(bed.github.token))
    assert (clone / "greeter.py").read_text() == FIXED and (clone / "test_greeter.py").read_text() == TESTS
    assert set(git("ls-files", cwd=clone).split()) == {*BASE_FILES, "test_greeter.py"}
    assert git("rev-parse", "HEAD", cwd=clone).strip() == head
    assert git("rev-parse", "HEAD^", cwd=clone).strip() == main_before
    assert trailers(clone) == {"Foundry-Run": attempt.run["metadata"]["name"], "Foundry-Attempt": "1",
                               "Foundry-Issue": "ACME-42"}
    pull = bed.github.pulls[(REPO, st["pr"]["number"])]
    assert pull.draft and pull.head_ref == branch and pull.base_ref == "main" and SUMMARY in pull.body
    assert bed.github.branch_sha(REPO, "main") == main_before
    assert [u.via for u in bed.github.ref_updates_for(REPO, "main")] == ["control"]
    # The token's Secret left the cluster once the attempt was seen to end.
    with pytest.raises(client.ApiException) as gone:
        bed.core.read_namespaced_secret(f"{attempt.name}-github", ns)
    assert gone.value.status == 404

    # ---- the pod, as admitted by PodSecurity `restricted`
    labels = bed.core.read_namespace(ns).metadata.labels
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    spec = pod.spec
    assert spec.automount_service_account_token is False and spec.service_account_name == AGENT_SA
    assert spec.security_context.run_as_non_root is True and spec.security_context.run_as_user == 10001
    for c in [*spec.init_containers, *spec.containers]:
        assert c.security_context.read_only_root_filesystem is True
        assert c.security_context.allow_privilege_escalation is False
        assert c.security_context.capabilities.drop == ["ALL"]
        assert not [m for m in c.volume_mounts if "serviceaccount" in m.mount_path]

    # ---- the agent container's view, from the tool results its CLI sent back to the model
    results = [r.text for r in bed.model.tool_results()]
    probe = next(t for t in results if "PROBE-DONE" in t)
    assert "UID=10001" in probe
    assert re.search(r"/var/run/secrets/kubernetes.io/serviceaccount.*No such file or directory", probe), probe
    assert re.search(r"/foundry/credentials/token.*No such file or directory", probe), probe
    assert re.search(r"/usr/local/probe.*Read-only file system", probe), probe
    cli_env = _section(probe, "CLI-ENV")
    assert "PATH=" in cli_env and f"ANTHROPIC_API_KEY={MODEL_KEY}" in cli_env  # env did run; the model key is its
    for leak in (token, "FOUNDRY_GITHUB_TOKEN_FILE", "/foundry/credentials", "GITHUB", "GH_TOKEN", "KUBERNETES_",
                 "x-access-token"):
        assert leak not in cli_env, leak
    pod_env = _section(probe, "POD-ENV")  # the agent container's own environment (its PID 1, the runner)
    assert "FOUNDRY_STEP=agent" in pod_env, pod_env
    for leak in (token, "FOUNDRY_GITHUB_TOKEN_FILE", "/foundry/credentials", "GITHUB", "GH_TOKEN"):
        assert leak not in pod_env, leak
    assert token not in bed.model.all_text()
    for step in ("prepare", "agent", "publish"):
        assert token not in attempt.logs(step), step
