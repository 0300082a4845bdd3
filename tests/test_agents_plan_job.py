"""Plan Jobs (`<run>-p<n>`) through the job provider, against the real API server: create-or-adopt, the
read-only token's Secret (and never the push token's), cancel, and plan_state from the termination message
the verify step writes (foundry.runner.result.encode, the runner's own encoder).

No kubelet runs on the test control plane: pods are made from the Job's template and ended through the
status subresource (tests/support/agent_pods.play_pod). A plan cut from the result is read from the verify
container's log, which needs a kubelet: that case runs on the real node (tests/test_plan_pod_node.py); here,
its log cannot be read, and that too is a PlanInvalid with the reason.
"""

from __future__ import annotations

import base64
import json

import pytest
from kubernetes import client

from foundry.agents.credentials import StaticTokenSource
from foundry.agents.job_provider import JobProvider
from foundry.agents.plan_result import PlanInvalid, checked_plan, framed_plan
from foundry.config import parse_config
from foundry.domain import plans
from foundry.runner import result as R
from foundry.runner.steps import PLAN_END, plan_begin
from tests.support.agent_pods import ensure_service_account, play_pod, refuse_pods, secret_or_none
from tests.support.jobs import create_owner_run, finish_job, rival_wins_first_read

PUSH = "ghs_push-token-never-in-a-plan-0123"
READ = "ghs_read-only-token-for-plans-4567"
SA = "foundry-agent"
PLAN = {"summary": "greet() strips the name.", "files": [{"path": "greeter.py", "why": "greet formats the name"}],
        "approach": "Call name.strip().", "tests": ["a padded name"], "risks": [], "openQuestions": []}
BIG = {**PLAN, "risks": [f"risk {i}: " + "r" * 900 for i in range(10)]}  # over the 4 KiB result
INPUT = {"version": 2, "mode": "plan", "run": "lin-abc-1", "repo": "acme/web", "baseBranch": "main",
         "branch": "foundry/lin-abc-1", "plan": {}, "planText": ""}


def _config():
    return parse_config({"repositories": [{"name": "web", "github": "acme/web"}],
                         "agent": {"image": "registry.example/agent:1", "service_account": SA,
                                   "runner": {"name": "claude-code"}},
                         "plan": {"timeout_seconds": 120}})


def _provider(kube_client, read: str = READ) -> JobProvider:
    return JobProvider(_config(), kube_client, StaticTokenSource(PUSH, read))


_secret = secret_or_none


def _jobs(kube_client, namespace):
    return [j.metadata.name for j in client.BatchV1Api(kube_client).list_namespaced_job(namespace).items]


def _verify_message(plan: dict, **change) -> str:
    """What the runner's verify step leaves in its termination message for `plan`."""
    made = plans.validate(plan)
    record = {**plans.summary_fields(made), "bytes": len(plans.canonical_json(made).encode()), **change}
    return R.encode(R.Result(step="verify", outcome=R.PLANNED, plan=record, summary=made.summary,
                             tokens={"input": 3300, "output": 210}, costUsd=0.012))


@pytest.fixture
def run(kube_client, namespace, crds):
    ensure_service_account(kube_client, namespace, SA)
    return create_owner_run(kube_client, namespace)


# ---------------------------------------------------------------- the Job and its token


@pytest.mark.kube
def test_a_plan_job_is_adopted_holds_only_a_read_token_and_cancel_takes_both(kube_client, namespace, run):
    provider = _provider(kube_client)
    assert provider.plan_state(run, 1) == {"state": "missing"}
    first = provider.dispatch_plan(run, 1, INPUT)
    assert {k: first[k] for k in ("name", "number", "state")} == {"name": "lin-abc-1-p1", "number": 1,
                                                                  "state": "running"}
    assert first["startedAt"] and "attempt" not in first
    again = _provider(kube_client).dispatch_plan(run, 1, {**INPUT, "baseBranch": "other"})  # a restarted operator
    assert again == first
    assert _jobs(kube_client, namespace) == ["lin-abc-1-p1"]

    job = client.BatchV1Api(kube_client).read_namespaced_job("lin-abc-1-p1", namespace)
    assert job.spec.active_deadline_seconds == 120  # plan.timeout_seconds
    cm = client.CoreV1Api(kube_client).read_namespaced_config_map("lin-abc-1-p1-input", namespace)
    assert json.loads(cm.data["input.json"])["baseBranch"] == "main"  # the first dispatch's input stays
    secret = _secret(kube_client, namespace, "lin-abc-1-p1-github")
    assert [(o.kind, o.name, o.uid) for o in secret.metadata.owner_references] == [
        ("Job", "lin-abc-1-p1", job.metadata.uid)]
    assert {k: base64.b64decode(v).decode() for k, v in secret.data.items()} == {"read-token": READ}
    # The push token is nowhere: no Secret holds it, no step names its path.
    secrets = client.CoreV1Api(kube_client).list_namespaced_secret(namespace).items
    assert [s.metadata.name for s in secrets] == ["lin-abc-1-p1-github"]
    assert PUSH not in json.dumps([kube_client.sanitize_for_serialization(s) for s in secrets])
    assert PUSH not in json.dumps(kube_client.sanitize_for_serialization(job))
    steps = [*job.spec.template.spec.init_containers, *job.spec.template.spec.containers]
    assert [s.name for s in steps] == ["prepare", "plan", "verify"]
    assert not [e for s in steps for e in s.env or [] if e.name == "FOUNDRY_GITHUB_TOKEN_FILE"]
    assert [s.name for s in steps if any(m.name == "credentials" for m in s.volume_mounts)] == ["prepare"]
    # An attempt of the same number is another object: plans and attempts never meet.
    assert provider.state(run, 1) == {"state": "missing"}

    provider.cancel_plan(run, 1)
    assert provider.plan_state(run, 1) == {"state": "missing"}
    assert _secret(kube_client, namespace, "lin-abc-1-p1-github") is None
    provider.cancel_plan(run, 1)  # gone already
    provider.cancel_plan(run, 9)  # never was


@pytest.mark.kube
def test_a_409_on_create_is_adopted_and_no_token_is_minted_for_it(kube_client, namespace, run, monkeypatch):
    provider, other = _provider(kube_client), _provider(kube_client)
    calls = rival_wins_first_read(monkeypatch, provider, lambda: other.dispatch_plan(run, 1, INPUT))
    rec = provider.dispatch_plan(run, 1, INPUT)
    assert (rec["name"], rec["state"], calls["n"]) == ("lin-abc-1-p1", "running", 2)
    assert _jobs(kube_client, namespace) == ["lin-abc-1-p1"]
    assert _secret(kube_client, namespace, "lin-abc-1-p1-github") is not None


@pytest.mark.kube
def test_without_a_read_token_the_plan_clones_anonymously_no_secret_no_mount(kube_client, namespace, run):
    provider = _provider(kube_client, read="")
    provider.dispatch_plan(run, 2, INPUT)
    job = client.BatchV1Api(kube_client).read_namespaced_job("lin-abc-1-p2", namespace)
    assert not [v for v in job.spec.template.spec.volumes if v.secret is not None]
    assert client.CoreV1Api(kube_client).list_namespaced_secret(namespace).items == []
    assert provider.plan_state(run, 2)["state"] == "running"


# ---------------------------------------------------------------- plan_state from the pod


def _ended(kube_client, namespace, run, steps, *, succeeded=True, reason="BackoffLimitExceeded"):
    provider = _provider(kube_client)
    provider.dispatch_plan(run, 1, INPUT)
    play_pod(kube_client, namespace, "lin-abc-1-p1", steps=steps, phase="Succeeded" if succeeded else "Failed")
    assert provider.plan_state(run, 1)["state"] == "running"  # the Job has not ended: nothing is read yet
    finish_job(kube_client, namespace, "lin-abc-1-p1", succeeded=succeeded, reason=reason)
    st = provider.plan_state(run, 1)
    assert _secret(kube_client, namespace, "lin-abc-1-p1-github") is None  # the read token left with the Job
    return st


OK = ('{"version":1,"step":"prepare","outcome":"ok"}', 0, "Completed")


@pytest.mark.kube
def test_a_succeeded_plan_is_reported_validated_with_its_hash(kube_client, namespace, run):
    st = _ended(kube_client, namespace, run, {"prepare": OK, "plan": OK,
                                              "verify": (_verify_message(PLAN), 0, "Completed")})
    made = plans.validate(PLAN)
    assert (st["state"], st["outcome"], st["step"]) == ("succeeded", "planned", "verify"), st
    assert st["plan"] == {"hash": plans.plan_hash(made), "json": made.as_dict(),
                          "markdown": plans.render_markdown(made), "bytes": len(plans.canonical_json(made).encode())}
    assert st["tokens"] == {"input": 3300, "output": 210} and st["costUsd"] == 0.012
    assert st["startedAt"] and st["finishedAt"] and "reason" not in st


@pytest.mark.kube
@pytest.mark.parametrize("message, why", [
    (_verify_message(PLAN, hash=plans.plan_hash(plans.validate({**PLAN, "summary": "another plan"}))),
     "the plan hashes to sha256:"),
    (_verify_message(PLAN, json={**PLAN, "files": "greeter.py"}), "does not validate: plan.files must be a list"),
    (_verify_message(BIG), "was cut from the result and the verify log could not be read"),
    ('{"version":1,"step":"verify","outcome":"ok"}', "its verify step reported outcome 'failed'"),
    (None, "its verify step reported outcome 'failed', not a plan"),
], ids=["hash-mismatch", "invalid", "cut-without-log", "no-plan", "no-message"])
def test_a_succeeded_plan_job_without_an_acceptable_plan_is_plan_invalid(kube_client, namespace, run, message, why):
    st = _ended(kube_client, namespace, run, {"prepare": OK, "plan": OK, "verify": (message, 0, "Completed")})
    assert (st["state"], st["reason"], st["outcome"]) == ("failed", "PlanInvalid", "failed"), st
    assert why in st["message"], st["message"]
    assert "plan" not in st


@pytest.mark.kube
def test_a_runner_failure_is_the_plans_reason(kube_client, namespace, run):
    refused = R.encode(R.Result(step="verify", outcome=R.FAILED,
                                reason="the plan is refused: the agent's answer has no ```json block holding the plan"))
    st = _ended(kube_client, namespace, run, {"prepare": OK, "plan": OK, "verify": (refused, 1, "Error")},
                succeeded=False)
    assert (st["state"], st["outcome"], st["step"]) == ("failed", "failed", "verify"), st
    assert st["reason"].startswith("the plan is refused: the agent's answer has no ```json block")
    assert "cause" not in st and "plan" not in st


@pytest.mark.kube
def test_a_plan_past_its_deadline_names_the_plans_deadline(kube_client, namespace, run):
    st = _ended(kube_client, namespace, run, {"prepare": OK, "plan": (None, 137, "Error")}, succeeded=False,
                reason="DeadlineExceeded")
    assert (st["state"], st["cause"], st["outcome"]) == ("failed", "DeadlineExceeded", "failed"), st
    assert st["reason"].startswith("the plan ran past its deadline of 120 s (DeadlineExceeded); step plan ended"), st


@pytest.mark.kube
def test_a_refused_plan_pod_is_a_failed_plan_at_once(kube_client, namespace, run):
    provider = _provider(kube_client)
    provider.dispatch_plan(run, 1, INPUT)
    refusal = refuse_pods(kube_client, namespace, "lin-abc-1-p1")
    st = provider.plan_state(run, 1)
    assert (st["state"], st["reason"], st["cause"]) == ("failed", "PodRefused", "PodRefused"), st
    assert refusal in st["message"]


# ---------------------------------------------------------------- pure: the cut plan's frame


def test_a_cut_plan_is_taken_from_its_frame_and_must_hash_as_reported():
    made = plans.validate(BIG)
    digest = plans.plan_hash(made)
    reported = {"hash": digest, "bytes": 1, "cut": True}
    canonical = plans.canonical_json(made)
    # A frame for another hash, and a frame cut short, come before the real one (a CLI can print anything).
    log = (f"[foundry plan] noise\n{plan_begin('sha256:' + '0' * 64)}\n{{}}\n{PLAN_END}\n"
           f"{plan_begin(digest)}\n{canonical}\n"
           f"{plan_begin(digest)}\n{canonical}\n{PLAN_END}\n[foundry verify] plan {digest}\n")
    assert framed_plan(log, digest) == canonical
    assert checked_plan(reported, log)["json"] == made.as_dict()
    forged = log.replace(canonical, plans.canonical_json(plans.validate(PLAN)))
    with pytest.raises(PlanInvalid, match=f"hashes to {plans.plan_hash(plans.validate(PLAN))}, not to the {digest}"):
        checked_plan(reported, forged)
    with pytest.raises(PlanInvalid, match="holds no complete frame"):
        checked_plan(reported, f"{plan_begin(digest)}\n{canonical}\n")
    with pytest.raises(PlanInvalid, match="carries no plan hash"):
        checked_plan({"json": BIG}, None)

