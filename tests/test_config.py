"""foundry.config: defaults, the example file, and errors that name the bad key."""

from __future__ import annotations

import pytest
import yaml

from foundry.config import ConfigError, ConfigFileNotFound, FoundryConfig, load_config, parse_config
from foundry.paths import REPO_ROOT

EXAMPLE = REPO_ROOT / "docs" / "examples" / "config.yaml"


def test_no_path_and_no_env_gives_defaults(monkeypatch):
    monkeypatch.delenv("FOUNDRY_CONFIG", raising=False)
    cfg = load_config()
    assert cfg == FoundryConfig()
    assert cfg.trigger.label == "foundry" and cfg.trigger.states == ()
    assert cfg.policy.approvals_required == 1 and cfg.policy.retry_cap == 2 and cfg.policy.budget_cap == 3
    assert cfg.policy.max_changed_files == 50
    assert cfg.agent.provider == "job"
    assert dict(cfg.repositories) == {} and cfg.approvers == ()


def test_path_comes_from_env(monkeypatch, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("trigger: {label: go, states: [Todo]}\n")
    monkeypatch.setenv("FOUNDRY_CONFIG", str(path))
    cfg = load_config()
    assert cfg.trigger.label == "go" and cfg.trigger.states == ("Todo",)


def test_named_file_that_is_missing_is_an_error(tmp_path):
    with pytest.raises(ConfigFileNotFound, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    # the bridge catches FileNotFoundError; the operator catches ValueError
    assert issubclass(ConfigFileNotFound, FileNotFoundError) and issubclass(ConfigFileNotFound, ValueError)


def test_empty_file_gives_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("")
    assert load_config(path) == FoundryConfig()


def test_example_file_loads_with_every_section():
    cfg = load_config(EXAMPLE)
    assert list(cfg.repositories) == ["web", "api"]
    assert cfg.repositories["api"].base_branch == "develop"
    assert cfg.repositories["web"].keywords == ("frontend", "checkout page", "dashboard")
    assert [a.name for a in cfg.approvers] == ["alice", "bob", "carol"]
    assert cfg.policy.roles_required["auth"] == ("security",)
    assert cfg.policy.forbidden_risks == ("infra",)
    assert cfg.agent.secret_refs[1].env == "LLM_API_KEY"
    assert cfg.agent.resources["limits"]["memory"] == "2Gi"
    assert cfg.timeouts.approval_seconds == 604800
    assert cfg.linear.team == "ACME"


def test_config_is_frozen():
    cfg = load_config(EXAMPLE)
    with pytest.raises(AttributeError):
        cfg.policy.retry_cap = 9  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.repositories["x"] = cfg.repositories["web"]  # type: ignore[index]


@pytest.mark.parametrize(
    "doc, message",
    [
        ("[1, 2]", "<top level>: expected a mapping, got a list"),
        ("polcy: {}", "polcy: unknown key; did you mean 'policy'?"),
        ("policy: {forbiden_paths: []}", "policy.forbiden_paths: unknown key; did you mean 'forbidden_paths'?"),
        ("policy: {max_changed_files: yes}", "policy.max_changed_files: expected a whole number, got a boolean"),
        ("policy: {max_changed_files: 0}", "policy.max_changed_files: must be at least 1, got 0"),
        ("policy: {retry_cap: -1}", "policy.retry_cap: must be at least 0"),
        ("policy: {forbidden_paths: [ok, 3]}", "policy.forbidden_paths[1]: expected a non-empty string, got int 3"),
        ("policy: {forbidden_risks: [weather]}", "policy.forbidden_risks[0]: unknown risk area 'weather'"),
        ("policy: {roles_required: {auth: []}}", "policy.roles_required.auth: list at least one role"),
        ("policy: {roles_required: {fun: [x]}}", "policy.roles_required.fun: unknown risk area"),
        ("policy: {risk_paths: {fun: ['x/**']}}", "policy.risk_paths.fun: unknown risk area"),
        ("repositories: {web: x}", "repositories: expected a list, got a mapping"),
        ("repositories: [{name: web}]", "repositories[0].github: required"),
        ("repositories: [{name: web, github: nope}]", "repositories[0].github: expected 'owner/repo'"),
        ("repositories: [{name: Web!, github: a/b}]", "repositories[0].name: 'Web!' must be lowercase"),
        ("repositories: [{name: w, github: a/b}, {name: w, github: a/c}]", "repositories[1].name: repository 'w' is listed twice"),
        ("approvers: [{name: a}]", "approvers[0]: approver 'a' needs a `kubernetes` username or a `linear` identity"),
        ("approvers: [{name: a, kubernetes: x}, {name: b, kubernetes: x}]", "approvers[1].kubernetes: 'x' is already used by approver 'a'"),
        ("approvers: [{name: a, linear: A@x.io}, {name: b, linear: a@x.io}]", "approvers[1].linear: 'a@x.io' is already used"),
        ("approvers: [{name: a, kubernetes: a, roles: [dev]}]\npolicy: {roles_required: {auth: [security]}}",
         "policy.roles_required.auth: no approver has any of the roles ['security']"),
        ("agent: {provider: magic}", "agent.provider: expected one of job, webhook, local, got 'magic'"),
        ("agent: {provider: webhook}", "agent.webhook_url: the webhook provider needs an http(s) URL"),
        ("agent: {provider: local}", "agent.local_command: the local provider needs a command"),
        ("agent: {env: {1BAD: x}}", "agent.env.1BAD: '1BAD' is not a valid environment variable name"),
        ("agent: {env: {A: 1}}", "agent.env.A: expected a non-empty string, got int 1"),
        ("agent: {secret_refs: [{secret: s, key: k}]}", "agent.secret_refs[0]: give both `key` and `env`"),
        ("agent: {secret_refs: [{secret: Bad_Name}]}", "agent.secret_refs[0].secret: 'Bad_Name' is not a Kubernetes Secret name"),
        ("agent: {command: run}", "agent.command: expected a list of strings, got str 'run'"),
        ("timeouts: {resync_seconds: 0}", "timeouts.resync_seconds: must be at least 1"),
        ("timeouts: {agent_seconds: 1.5}", "timeouts.agent_seconds: expected a whole number, got float 1.5"),
        ("trigger: {label: null}", "trigger: needs a label or at least one state"),
        ("github: {api_url: ''}", "github.api_url: expected a non-empty string"),
    ],
)
def test_bad_values_name_the_key(doc, message):
    with pytest.raises(ConfigError) as err:
        parse_config(yaml.safe_load(doc))
    assert message in str(err.value)


def test_file_errors_carry_the_file_name(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("policy:\n  retry_cap: many\n")
    with pytest.raises(ConfigError, match=rf"{path}: policy.retry_cap: expected a whole number"):
        load_config(path)
    path.write_text("policy: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_explicit_null_switches_a_linear_state_off():
    cfg = parse_config(yaml.safe_load("linear: {state_review: null}"))
    assert cfg.linear.state_review is None and cfg.linear.state_done == "Done"


def test_trigger_with_states_only():
    cfg = parse_config(yaml.safe_load("trigger: {label: null, states: [Ready]}"))
    assert cfg.trigger.label is None and cfg.trigger.states == ("Ready",)


COMMAND = {"name": "command", "command": ["my-agent"]}


def test_a_command_runner_plans_with_the_agent_only_when_asked():
    # By default a command is planned by the heuristic planner: a program written to edit files has
    # no read-only mode, and the runner's work-tree check would throw every plan it made away.
    default = parse_config({"agent": {"runner": COMMAND}})
    assert default.plan.mode == "heuristic" and not default.agent_plans
    # Asked for, it plans with the agent (the work-tree check is its guard), with job or local alike.
    for agent in ({"runner": COMMAND}, {"provider": "local", "local_command": ["x"], "runner": COMMAND}):
        asked = parse_config({"agent": agent, "plan": {"mode": "agent"}})
        assert asked.plan.mode == "agent" and asked.agent_plans, agent
    assert not parse_config({"agent": {"runner": COMMAND}, "plan": {"mode": "heuristic"}}).agent_plans


def test_a_command_config_built_in_code_keeps_the_heuristic_planner_unless_it_says_agent():
    from dataclasses import replace

    from foundry.config import PlanSettings, Runner

    cfg = FoundryConfig()
    command = replace(cfg.agent, runner=Runner(name="command", command=("my-agent",)))
    assert cfg.agent_plans  # claude-code with the job provider: the agent plans by default
    assert not replace(cfg, agent=command).agent_plans
    assert replace(cfg, agent=command, plan=PlanSettings(mode="agent", explicit=True)).agent_plans


@pytest.mark.parametrize(
    "agent, message",
    [
        ({"runner": {"name": "aider"}}, "the aider runner has no read-only mode to plan in"),
        ({"provider": "webhook", "webhook_url": "http://a", "runner": COMMAND},
         "the webhook provider cannot run a plan Job"),
    ],
)
def test_agent_plans_that_cannot_work_are_refused_with_the_reason(agent, message):
    with pytest.raises(ConfigError) as err:
        parse_config({"agent": agent, "plan": {"mode": "agent"}})
    assert str(err.value).startswith("plan.mode: agent plans are not possible here: ") and message in str(err.value)
    assert str(err.value).endswith("; use heuristic")
