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
from tests.support.agent_node import AGENT_SA, MODEL_KEY, REPO, AgentPodBed, agent_image, fake_run
from foundry.dev.model_server import Final, Patch, ToolCall
from tests.support.runner_kit import BASE_FILES, basic_auth, fresh_clone, git, trailers

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


def test_codex_in_a_restricted_pod_pushes_its_patch(bed, tmp_path):
    ns = bed.namespace()
    cfg = bed.config(ns, runner={"name": "codex", "model": "gpt-5.5", "timeout_seconds": 300})
    bed.model.set_script([
        Patch("*** Begin Patch\n*** Update File: greeter.py\n@@\n-    return f\"Hello, {name}!\"\n"
              "+    return f\"Hello, {name.strip()}!\"\n*** End Patch\n"),
        Final(SUMMARY),
    ])
    attempt = bed.dispatch(cfg)
    branch = f"foundry/{attempt.run['metadata']['name']}"
    attempt.wait_running(timeout=180)
    attempt.wait_job("Complete", timeout=300)
    st = attempt.wait_ended(timeout=30)
    print(f"\n[agent-pod] codex attempt: {attempt.marks}")
    assert (st["state"], st["outcome"], st["headSha"]) == ("succeeded", "pushed",
                                                            bed.github.branch_sha(REPO, branch)), st
    assert st["tokens"] == {"input": 1200 * 2, "output": 80 * 2} and "costUsd" not in st  # Codex reports no cost
    clone = fresh_clone(bed.github.git_url(REPO), branch, tmp_path / "check", env=basic_auth(bed.github.token))
    assert (clone / "greeter.py").read_text() == FIXED
    assert trailers(clone)["Foundry-Run"] == attempt.run["metadata"]["name"]
    assert bed.github.pulls[(REPO, st["pr"]["number"])].draft
    assert bed.model.model_requests("responses")  # it was Codex that asked


# ---------------------------------------------------------------- the agent's identity in the cluster


def _can_i(real_node, namespace: str, who: str) -> list[str]:
    done = subprocess.run([str(real_node.kubectl), "--kubeconfig", str(real_node.kubeconfig), "auth", "can-i",
                           "--list", "-n", namespace, f"--as={who}"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return sorted(" ".join(line.split()) for line in done.stdout.splitlines()[1:] if line.strip())


def test_a_command_attempt_completes_and_its_service_account_can_do_nothing_beyond_the_defaults(bed, real_node):
    ns = bed.namespace()
    attempt = bed.dispatch(bed.config(ns, runner=bed.command_runner()))
    attempt.wait_job("Complete", timeout=120)
    st = attempt.wait_ended(timeout=30)
    assert (st["outcome"], st["tokens"], st["costUsd"]) == ("pushed", {"input": 11, "output": 3}, 0.0004), st

    # What the attempt left in its namespace grants its ServiceAccount nothing: it sees only what
    # any authenticated identity sees (review its own access, read discovery and version URLs).
    rules = _can_i(real_node, ns, f"system:serviceaccount:{ns}:{AGENT_SA}")
    resources = [r for r in rules if not r.startswith("[")]
    assert resources == ["selfsubjectaccessreviews.authorization.k8s.io [] [] [create]",
                         "selfsubjectreviews.authentication.k8s.io [] [] [create]",
                         "selfsubjectrulesreviews.authorization.k8s.io [] [] [create]"], rules
    assert all(r.endswith("[get]") for r in rules if r.startswith("[")), rules
    # The same as a ServiceAccount nobody granted anything (the defaults every ServiceAccount has).
    untouched = bed.namespace("baseline")
    assert rules == _can_i(real_node, untouched, f"system:serviceaccount:{untouched}:default")


# ---------------------------------------------------------------- pod failures, as JobProvider.state() reports them


def test_an_agent_pod_over_its_memory_limit_is_a_failed_attempt_naming_oomkilled(bed):
    ns = bed.namespace()
    hog = ["python3", "-c", "blob = b'x' * (1 << 30); print('allocated', len(blob))"]
    cfg = bed.config(ns, runner=bed.command_runner(hog),
                     resources={"requests": {"cpu": "100m", "memory": "96Mi"}, "limits": {"memory": "160Mi"}})
    attempt = bed.dispatch(cfg)
    attempt.wait_job("Failed", timeout=120)
    st = attempt.wait_ended(timeout=30)
    print(f"\n[agent-pod] OOM: {st}")
    (pod,) = attempt.pods()
    agent = next(s for s in pod.status.init_container_statuses if s.name == "agent")
    assert agent.state.terminated.reason == "OOMKilled", agent.state
    assert (st["state"], st["outcome"], st["step"]) == ("failed", "failed", "agent"), st
    assert "OOMKilled" in st["reason"], st
    assert bed.github.ref_updates_for(REPO, f"foundry/{attempt.run['metadata']['name']}") == []


def test_an_agent_pod_past_its_deadline_is_a_failed_attempt_at_once(bed):
    ns = bed.namespace()
    deadline = 15
    cfg = bed.config(ns, runner=bed.command_runner(), agent_seconds=deadline)
    bed.github.faults.add("git/git-upload-pack", "hang", seconds=120)  # the clone hangs: only the deadline ends it
    try:
        attempt = bed.dispatch(cfg)
        first = attempt.wait_ended(timeout=deadline + 30, poll=0.1)
        ended_after = attempt.marks["ended"]
        job = attempt.wait_job("Failed", timeout=60)
        settled = attempt.provider.state(attempt.run, 1)
    finally:
        bed.github.faults.clear()
    print(f"\n[agent-pod] deadline: first {first} after {ended_after} s; settled {settled}; marks {attempt.marks}")
    assert first["state"] == "failed" and "DeadlineExceeded" in first["reason"], first
    # The controller's verdict (startTime has whole seconds, so up to 1 s early), not the grace period's end.
    assert deadline - 1.5 <= ended_after < deadline + 8
    assert [c.reason for c in job.status.conditions if c.type == "Failed"] == ["DeadlineExceeded"]
    assert attempt.marks["failed"] < deadline + 20  # short grace period: Failed follows within seconds
    assert settled["state"] == "failed" and "DeadlineExceeded" in settled["reason"], settled


def test_an_agent_pod_refused_by_pod_security_is_reported_at_once(bed):
    ns = bed.namespace()
    cfg = bed.config(ns, runner=bed.command_runner())
    # The manifest has no knob that weakens it (that is the point), so the template is altered here.
    run = fake_run("linear-acme-42-refused")
    job_input = bed.job_input(cfg, run["metadata"]["name"])
    body = copy.deepcopy(build_job(run, 1, job_input, cfg.agent, cfg.timeouts))
    body["spec"]["template"]["spec"]["securityContext"]["runAsUser"] = 0
    started = time.monotonic()
    bed.batch.create_namespaced_job(ns, body)
    provider = bed.provider(cfg)
    provider.dispatch(run, 1, job_input)  # adopts the Job, adds its input and token
    while True:
        st = provider.state(run, 1)
        if st["state"] != "running" or time.monotonic() - started > 30:
            break
        time.sleep(0.1)
    took = time.monotonic() - started
    print(f"\n[agent-pod] refused after {took:.2f} s: {st}")
    assert (st["state"], st["reason"]) == ("failed", "PodRefused"), st
    assert 'violates PodSecurity "restricted:latest"' in st["message"] and "runAsUser=0" in st["message"], st
    assert took < 10
    assert bed.core.list_namespaced_pod(ns).items == []


# ---------------------------------------------------------------- pure: what state() makes of such a pod


def test_an_oomkilled_step_that_wrote_a_result_still_says_oomkilled():
    from foundry.agents.result import pod_result

    message = json.dumps({"outcome": "failed", "step": "agent", "reason": "the command exited with code 137"})
    pod = {"status": {"initContainerStatuses": [
        {"name": "agent", "state": {"terminated": {"exitCode": 1, "reason": "OOMKilled", "message": message}}}]}}
    assert pod_result(pod)["reason"] == ("step agent was OOMKilled (over its memory limit): "
                                         "the command exited with code 137")
