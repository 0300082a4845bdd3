"""plan.mode (foundry.config) and the plan Job's objects (foundry.agents.job_manifest.build_plan_job). Pure."""

from __future__ import annotations

import pytest

from foundry.agents.job_manifest import READ_TOKEN_PATH, ManifestError, build_plan_job, plan_selector
from foundry.config import ConfigError, parse_config

RUN = {"metadata": {"name": "r1", "namespace": "ns", "uid": "u1"}}
SECRETS = {"secret_refs": [{"secret": "model", "key": "k", "env": "ANTHROPIC_API_KEY"}]}


def _job(read_token: bool = True, **agent):
    cfg = parse_config({"agent": {**SECRETS, **agent}, "plan": {"timeout_seconds": 300}})
    return build_plan_job(RUN, 2, {"mode": "plan", "repo": "acme/app"}, cfg.agent, cfg.plan, read_token=read_token)


def test_plan_mode_defaults_to_agent_only_where_the_runner_and_provider_can_plan():
    assert parse_config({}).plan.mode == "agent" and parse_config({}).agent_plans
    assert parse_config({"agent": {"runner": {"name": "aider"}}}).plan.mode == "heuristic"
    assert parse_config({"agent": {"runner": {"name": "command", "command": ["x"]}}}).plan.mode == "heuristic"
    assert parse_config({"agent": {"provider": "webhook", "webhook_url": "http://a"}}).plan.mode == "heuristic"
    with pytest.raises(ConfigError, match="plan.mode: agent plans are not possible here: the aider runner"):
        parse_config({"agent": {"runner": {"name": "aider"}}, "plan": {"mode": "agent"}})
    with pytest.raises(ConfigError, match="plan.mode"):
        parse_config({"plan": {"mode": "llm"}})


def test_only_prepare_holds_the_read_token_and_no_step_sees_the_push_token_path():
    job = _job()
    spec = job["spec"]["template"]["spec"]
    steps = {c["name"]: c for c in spec["initContainers"] + spec["containers"]}
    assert [c["name"] for c in spec["initContainers"]] == ["prepare", "plan"]
    assert [c["name"] for c in spec["containers"]] == ["verify"]
    for name, c in steps.items():
        env = {e["name"]: e for e in c["env"]}
        assert "FOUNDRY_GITHUB_TOKEN_FILE" not in env
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        assert ("/foundry/credentials" in mounts) == (name == "prepare")
        assert ("ANTHROPIC_API_KEY" in env) == (name == "plan")  # the model key reaches the CLI only
        assert ("/foundry/publish" in mounts) == (name != "plan")  # the CLI never sees the pristine git dir
        assert c["securityContext"]["readOnlyRootFilesystem"] and c["args"][-2:] == ["--step", name]
    assert {e["name"]: e["value"] for e in steps["prepare"]["env"] if "value" in e}[
        "FOUNDRY_GITHUB_READ_TOKEN_FILE"] == READ_TOKEN_PATH
    assert steps["verify"]["volumeMounts"][1] == {"name": "work", "mountPath": "/foundry/work", "readOnly": True}
    (secret,) = [v for v in spec["volumes"] if "secret" in v]
    assert secret["secret"]["secretName"] == "r1-p2-github"
    assert spec["automountServiceAccountToken"] is False and job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 300 and job["metadata"]["name"] == "r1-p2"
    labels = job["metadata"]["labels"]
    assert labels["foundry.dev/run"] == "r1" and labels["foundry.dev/plan"] == "2" and "foundry.dev/attempt" not in labels
    assert plan_selector(RUN, 2) == "foundry.dev/run=r1,foundry.dev/run-namespace=ns,foundry.dev/plan=2"


def test_without_a_read_token_nothing_is_mounted_and_apply_input_is_refused():
    spec = _job(read_token=False)["spec"]["template"]["spec"]
    assert not any("secret" in v for v in spec["volumes"])
    assert not any(m["mountPath"] == "/foundry/credentials" for c in spec["initContainers"] for m in c["volumeMounts"])
    cfg = parse_config({})
    with pytest.raises(ManifestError, match="mode plan"):
        build_plan_job(RUN, 1, {"mode": "apply"}, cfg.agent, cfg.plan, read_token=False)
