"""Plan Jobs in real pods on the real node, started by the operator's JobProvider (dispatch_plan).

The pod runs prepare → plan → verify as real containers of the agent image in a namespace enforcing
`restricted`; the real Job controller ends the Job; the real Claude Code CLI plans read-only against the
model stand-in; the clone uses the read-only installation token the provider minted from the GitHub App
(the stand-in refuses anonymous git). plan_state() reads the verify step's termination message, and for a
plan too big for it, the verify container's log from the real kubelet.
"""

from __future__ import annotations

import base64
import json

import pytest

from foundry.domain import plans
from tests.support.agent_node import REPO, AgentPodBed
from tests.test_agent_pod_node import bed  # noqa: F401 - the module's bed: node, image, stand-ins
from tests.test_runner_plan import DECLARED, PLAN, answer, read_only_session

pytestmark = [pytest.mark.node, pytest.mark.slow, pytest.mark.timeout(1800)]

WORK = "/foundry/work/repo"


def _read_token_info(bed: AgentPodBed, namespace: str, job: str):
    secret = bed.core.read_namespaced_secret(f"{job}-github", namespace)
    assert set(secret.data) == {"read-token"}, set(secret.data)
    return bed.github.token_info(base64.b64decode(secret.data["read-token"]).decode())


def _nothing_pushed(bed: AgentPodBed, main_before: str, branch: str) -> None:
    assert bed.github.branch_sha(REPO, "main") == main_before
    assert branch not in bed.github.repos[REPO].branches
    assert [u for u in bed.github.ref_updates_for(REPO) if u.via == "git"] == []
    assert not bed.github.pulls


def test_claude_code_plans_read_only_in_a_restricted_pod_and_the_plan_is_reported(bed):
    ns = bed.namespace("plans")
    cfg = bed.config(ns, runner={"name": "claude-code", "model": "claude-sonnet-4-5", "timeout_seconds": 300})
    bed.model.set_script(read_only_session("claude-code", WORK))
    main_before = bed.github.branch_sha(REPO, "main")
    plan = bed.dispatch_plan(cfg)
    info = _read_token_info(bed, ns, plan.name)
    assert info.kind == "installation" and info.repositories == frozenset({REPO})
    assert dict(info.permissions) == {"contents": "read", "metadata": "read"}

    job = plan.wait_job("Complete", timeout=300)
    st = plan.wait_ended(timeout=30)
    print(f"\n[plan-pod] claude-code plan: {plan.marks}")
    assert job.status.succeeded == 1

    # plan_state(): the plan as the scripted answer has it, validated again and hashed.
    expected = plans.validate(PLAN)
    assert (st["state"], st["outcome"], st["step"]) == ("succeeded", "planned", "verify"), st
    assert st["plan"]["hash"] == plans.plan_hash(expected)
    assert st["plan"]["json"] == expected.as_dict() and st["plan"]["markdown"] == plans.render_markdown(expected)
    assert st["tokens"] == {"input": 1200 * 3, "output": 80 * 3}

    # The pod ran the plan's three steps as containers, each exiting 0, and nothing else.
    (pod,) = plan.pods()
    steps = {s.name: s.state.terminated for s in [*pod.status.init_container_statuses,
                                                  *pod.status.container_statuses]}
    assert list(steps) == ["prepare", "plan", "verify"] and all(t.exit_code == 0 for t in steps.values()), steps
    for c in [*pod.spec.init_containers, *pod.spec.containers]:
        assert c.security_context.read_only_root_filesystem is True
        assert not [e for e in c.env or [] if e.name == "FOUNDRY_GITHUB_TOKEN_FILE"]

    # The CLI declared plan mode on every request, read the code, and its edit was refused.
    modes = bed.model.declared_modes()
    assert modes and set(modes) == {DECLARED["claude-code"]}, modes
    results = bed.model.tool_results()
    assert "Hello, {name}!" in results[0].text
    assert results[1].is_error or "rejected" in results[1].text, results[1]

    # Nothing changed on GitHub; the read token left the cluster with the plan; no push token was made.
    _nothing_pushed(bed, main_before, f"foundry/{plan.run['metadata']['name']}")
    secrets = [s.metadata.name for s in bed.core.list_namespaced_secret(ns).items]
    assert f"{plan.name}-github" not in secrets and not [s for s in secrets if s.endswith("-a1-github")], secrets


def test_a_plan_too_big_for_the_result_is_read_from_the_verify_log(bed):
    ns = bed.namespace("plans")
    big = {**PLAN, "risks": [f"risk {i}: " + "r" * 900 for i in range(10)]}
    say = ["python3", "-c", f"import json; print(json.dumps({{'summary': {answer(big)!r}}}))"]
    plan = bed.dispatch_plan(bed.config(ns, runner=bed.command_runner(say)))
    plan.wait_job("Complete", timeout=180)
    st = plan.wait_ended(timeout=30)
    (pod,) = plan.pods()
    message = json.loads(pod.status.container_statuses[0].state.terminated.message)
    assert message["plan"]["cut"] is True and "json" not in message["plan"]  # the result held only the hash
    assert st["state"] == "succeeded", st
    assert st["plan"]["hash"] == message["plan"]["hash"] == plans.plan_hash(plans.validate(big))
    assert st["plan"]["json"] == plans.validate(big).as_dict()
    assert st["plan"]["bytes"] == message["plan"]["bytes"] > 4096
