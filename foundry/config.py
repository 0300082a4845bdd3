"""Foundry's configuration: one YAML file, parsed into frozen dataclasses.

The file (path from FOUNDRY_CONFIG; a ConfigMap mount in a cluster) holds
everything that is not a secret: trigger rules, repositories, approvers and
their roles, policy, the agent provider, timeouts and the tracker/forge URLs.
Secrets stay in environment variables; the config only *names* them
(agent.secret_refs, agent.webhook_secret_env).

Validation is strict: an unknown key is an error (a typo in `forbiden_paths`
must not silently disable a guard), and every error names the path of the bad
key, e.g. `policy.roles_required.auth[0]: expected a string, got 3`.
docs/configuration.md documents every key.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from foundry import __version__
from foundry.domain.triggers import TriggerRule

ENV_CONFIG = "FOUNDRY_CONFIG"

RISK_AREAS: tuple[str, ...] = ("auth", "payments", "pii", "migrations", "infra")
PROVIDERS: tuple[str, ...] = ("job", "webhook", "local")
RUNNERS: tuple[str, ...] = ("claude-code", "codex", "aider", "command")
# An agent container with no resources named gets these (a coding-agent CLI is a
# Node or Python process that wants about a core and a gigabyte or two).
DEFAULT_AGENT_RESOURCES: Mapping[str, Mapping[str, str]] = MappingProxyType({
    "requests": MappingProxyType({"cpu": "500m", "memory": "1Gi"}),
    "limits": MappingProxyType({"memory": "2Gi", "ephemeral-storage": "4Gi"}),
})

_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")
_GITHUB_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class ConfigError(ValueError):
    """The configuration is invalid; the message starts with the path of the bad key."""


class ConfigFileNotFound(ConfigError, FileNotFoundError):
    """An explicitly named config file does not exist."""


# ---------------------------------------------------------------- the model


@dataclass(frozen=True)
class Repository:
    """A repository Foundry may change, and the hints that route a ticket to it."""

    name: str
    github: str  # owner/repo
    base_branch: str = "main"
    keywords: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class Approver:
    """A human allowed to approve, known by a Kubernetes username and/or a Linear id or email."""

    name: str
    kubernetes: str | None = None
    linear: str | None = None
    roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class Policy:
    approvals_required: int = 1
    # risk area -> roles of which an approver needs at least one for that area
    roles_required: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    forbidden_paths: tuple[str, ...] = ()
    forbidden_risks: tuple[str, ...] = ()
    max_changed_files: int = 50
    max_changed_lines: int = 1000  # lines added + removed; more → refused before push, review after
    allow_workflows: bool = False  # .github/workflows/** is refused unless this is true
    retry_cap: int = 2  # remediation attempts after the first one
    budget_cap: int = 3  # agent attempts in total, first one included
    budget_usd: float | None = None  # model spend per run (summed from the attempts' results); None = no cap
    budget_tokens: int | None = None  # input + output tokens per run; None = no cap
    # Extra words / path globs per risk area, on top of the built-in ones (foundry.domain.risk).
    risk_keywords: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    risk_paths: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class SecretRef:
    """A secret the agent gets by reference: all keys (`env` unset) or one key as env var `env`."""

    secret: str
    key: str | None = None
    env: str | None = None


@dataclass(frozen=True)
class Runner:
    """Which coding agent the runner drives inside the attempt's pod, and its limits."""

    name: str = "claude-code"
    model: str | None = None  # None: the CLI's own default
    timeout_seconds: int = 1800  # wall-clock limit of the CLI (kept under timeouts.agent_seconds)
    output_cap_bytes: int = 1024 * 1024  # CLI output kept beyond this is cut
    extra_args: tuple[str, ...] = ()
    command: tuple[str, ...] = ()  # runner `command`: the argv of any program that edits the work tree


@dataclass(frozen=True)
class Agent:
    provider: str = "job"
    # The runner image this repository builds (operator/Dockerfile.agent), at this Foundry's version.
    image: str = f"ghcr.io/foundry-dev/foundry-agent:{__version__}"
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    secret_refs: tuple[SecretRef, ...] = ()
    service_account: str | None = None
    resources: Mapping[str, Any] = field(default_factory=lambda: DEFAULT_AGENT_RESOURCES)
    runner: Runner = field(default_factory=Runner)
    namespace: str | None = None  # where Jobs run; None: the run's namespace
    ttl_seconds_after_finished: int | None = 86400  # finished Jobs (and what they own) go after this
    webhook_url: str | None = None
    webhook_secret_env: str = "FOUNDRY_AGENT_WEBHOOK_SECRET"
    local_command: tuple[str, ...] = ()
    local_workdir: str | None = None


@dataclass(frozen=True)
class Timeouts:
    agent_seconds: int = 3600  # a Job's activeDeadlineSeconds; a webhook/local attempt's deadline
    pr_wait_seconds: int = 1800  # agent finished, no PR yet: ExecutionFailed after this
    resync_seconds: int = 60  # re-read GitHub for runs waiting on it
    approval_seconds: int = 7 * 24 * 3600  # WaitingApproval longer than this → Expired; 0 = never


# Who writes the plan approvers read: the coding agent, read-only against the repository
# (a plan Job, docs/decisions/0021-plan-job.md), or the deterministic planner (foundry.domain.planning).
PLAN_MODES: tuple[str, ...] = ("agent", "heuristic")
# The runners that have a read-only mode to plan in (decision 0020; aider is refused): they plan by default.
PLANNING_RUNNERS: tuple[str, ...] = ("claude-code", "codex")
# A runner that plans only when plan.mode agent is written out: `command` has no read-only mode of its
# own, so the runner's work-tree check is its only guard, and a program written to edit files would
# simply fail every plan; whoever runs one that can plan (the demo's agent) says so.
OPT_IN_PLANNING_RUNNERS: tuple[str, ...] = ("command",)
# The providers that can run a plan Job (a webhook agent service speaks only the apply contract).
PLANNING_PROVIDERS: tuple[str, ...] = ("job", "local")


@dataclass(frozen=True)
class PlanSettings:
    """plan.mode and the plan Job's deadline. `mode` as parsed is already resolved: `agent` by
    default when the runner and provider can plan (claude-code or codex, job or local), else
    `heuristic`; the `command` runner plans only when `agent` is written out (`explicit`); `agent`
    asked for where it cannot work is a configuration error."""

    mode: str = "agent"
    timeout_seconds: int = 900  # the plan Job's activeDeadlineSeconds
    explicit: bool = False  # plan.mode was written in the config (an opt-in runner plans only then)

    def agent_plans(self, agent: "Agent") -> bool:
        """Whether runs are planned by a plan Job (also for configs built in code, not parsed)."""
        runner = agent.runner.name
        return (self.mode == "agent" and agent.provider in PLANNING_PROVIDERS
                and (runner in PLANNING_RUNNERS or (runner in OPT_IN_PLANNING_RUNNERS and self.explicit)))


@dataclass(frozen=True)
class Retention:
    """What the operator's housekeeping keeps, and how hard it works per round (0 = keep for ever)."""

    runs_seconds: int = 7 * 24 * 3600  # finished FoundryRuns are deleted after this (their DB rows stay)
    deliveries_seconds: int = 7 * 24 * 3600  # webhook delivery ids (the replay guard) are pruned after this
    interval_seconds: int = 300  # how often housekeeping runs (reaper, pruning, run GC)
    batch_size: int = 500  # rows or objects per batch
    max_batches: int = 20  # batches per kind per round; the rest waits for the next round
    reap_grace_seconds: int = 300  # an active row whose FoundryRun is missing is closed only after this


@dataclass(frozen=True)
class LinearSettings:
    api_url: str = "https://api.linear.app/graphql"
    team: str | None = None  # team key; None = any team
    # Workflow state names Foundry moves the issue to; None leaves the state alone.
    state_started: str | None = "In Progress"
    state_review: str | None = "In Review"
    state_done: str | None = "Done"
    # The bridge's periodic re-read of Linear (the sweep): 0 turns it off.
    sweep_seconds: int = 60
    sweep_overlap_seconds: int = 30  # each round re-reads this much before its cursor
    sweep_lookback_seconds: int = 24 * 3600  # how far back the very first round reads


@dataclass(frozen=True)
class GitHubSettings:
    api_url: str = "https://api.github.com"
    # Where the agent clones and pushes: None derives it from api_url
    # (api.github.com → https://github.com, https://host/api/v3 → https://host, else api_url itself).
    git_url: str | None = None
    # GitHub App authentication (foundry.connectors.github_app). Unset: the static token in
    # $FOUNDRY_GITHUB_TOKEN (development). Set: app_id, installation_id and exactly one of
    # private_key_file (a mounted Secret) / private_key_env (the PEM in that variable).
    app_id: int | None = None
    installation_id: int | None = None
    private_key_file: str | None = None
    private_key_env: str | None = None

    @property
    def uses_app(self) -> bool:
        return self.app_id is not None


@dataclass(frozen=True)
class LeaderElection:
    """The operator's Lease (coordination.k8s.io/v1); client-go's defaults. Off: one process acts alone."""

    enabled: bool = False
    lease_name: str = "foundry-operator"
    namespace: str | None = None  # None: the operator's own namespace (POD_NAMESPACE, the ServiceAccount's)
    lease_duration_seconds: float = 15.0  # a standby takes over this long after the last renewal it saw
    renew_deadline_seconds: float = 10.0  # the leader stops acting this long after its last successful renewal
    retry_period_seconds: float = 2.0  # between renewals, and between a standby's looks


@dataclass(frozen=True)
class OperatorSettings:
    leader_election: LeaderElection = field(default_factory=LeaderElection)


@dataclass(frozen=True)
class FoundryConfig:
    """The whole configuration. `repositories` is keyed by repository name, in file order."""

    trigger: TriggerRule = field(default_factory=TriggerRule)  # its team is linear.team
    repositories: Mapping[str, Repository] = field(default_factory=lambda: MappingProxyType({}))
    approvers: tuple[Approver, ...] = ()
    policy: Policy = field(default_factory=Policy)
    agent: Agent = field(default_factory=Agent)
    timeouts: Timeouts = field(default_factory=Timeouts)
    retention: Retention = field(default_factory=Retention)
    linear: LinearSettings = field(default_factory=LinearSettings)
    github: GitHubSettings = field(default_factory=GitHubSettings)
    operator: OperatorSettings = field(default_factory=OperatorSettings)
    plan: PlanSettings = field(default_factory=PlanSettings)

    @property
    def agent_plans(self) -> bool:
        """Runs are planned by the coding agent in a plan Job (plan.mode agent, and it can)."""
        return self.plan.agent_plans(self.agent)


# The name others were told about; both spellings refer to the same class.
Config = FoundryConfig


# ---------------------------------------------------------------- loading


def load_config(path: str | Path | None = None) -> FoundryConfig:
    """Load and validate the config file at `path` (default: $FOUNDRY_CONFIG).

    No path and no FOUNDRY_CONFIG → all defaults. A path that was named but does
    not exist raises ConfigFileNotFound (a typo must not quietly mean "defaults");
    an empty file means defaults. Invalid content raises ConfigError naming the key.
    """
    if path is None:
        path = os.environ.get(ENV_CONFIG) or None
    if path is None:
        return FoundryConfig()
    p = Path(path)
    if not p.is_file():
        raise ConfigFileNotFound(f"config file {p} does not exist (set by {ENV_CONFIG} or --config)")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML: {err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{p}: not UTF-8 text: {err}") from None
    try:
        return parse_config(raw)
    except ConfigError as err:
        raise ConfigError(f"{p}: {err}") from None


def parse_config(raw: Any) -> FoundryConfig:
    """Validate an already-parsed document (a mapping, or None for defaults)."""
    if raw is None:
        return FoundryConfig()
    top = _Obj(raw, "")
    linear = _linear(top.section("linear"))
    agent = _agent(top.section("agent"))
    cfg = FoundryConfig(
        # The rule carries linear.team, so webhooks and the sweep start runs for that team only.
        trigger=replace(_trigger(top.section("trigger")), team=linear.team),
        repositories=_repositories(top.list("repositories")),
        approvers=_approvers(top.list("approvers")),
        policy=_policy(top.section("policy")),
        agent=agent,
        timeouts=_timeouts(top.section("timeouts")),
        retention=_retention(top.section("retention")),
        linear=linear,
        github=_github(top.section("github")),
        operator=_operator(top.section("operator")),
        plan=_plan(top.section("plan"), agent),
    )
    top.done()
    _cross_checks(cfg)
    return cfg


# ---------------------------------------------------------------- sections


def _trigger(o: "_Obj") -> TriggerRule:
    d = TriggerRule()
    label = o.opt_str("label", d.label)
    states = o.str_list("states")
    o.done()
    if not label and not states:
        raise ConfigError("trigger: needs a label or at least one state; as written nothing would start a run")
    return TriggerRule(label=label or None, states=states)


def _repositories(items: list["_Obj"]) -> Mapping[str, Repository]:
    repos: dict[str, Repository] = {}
    for o in items:
        name = o.name("name")
        github = o.str("github")
        if not _GITHUB_REPO.match(github):
            raise ConfigError(f"{o.at('github')}: expected 'owner/repo', got {github!r}")
        repo = Repository(
            name=name,
            github=github,
            base_branch=o.str("base_branch", "main"),
            keywords=tuple(k.lower() for k in o.str_list("keywords")),
            paths=o.str_list("paths"),
        )
        o.done()
        if name in repos:
            raise ConfigError(f"{o.at('name')}: repository {name!r} is listed twice")
        repos[name] = repo
    return MappingProxyType(repos)


def _approvers(items: list["_Obj"]) -> tuple[Approver, ...]:
    out: list[Approver] = []
    seen: dict[str, str] = {}
    for o in items:
        a = Approver(
            name=o.str("name"),
            kubernetes=o.opt_str("kubernetes"),
            linear=o.opt_str("linear"),
            roles=o.str_list("roles"),
        )
        o.done()
        if not a.kubernetes and not a.linear:
            raise ConfigError(f"{o.path}: approver {a.name!r} needs a `kubernetes` username or a `linear` identity")
        # One identity must map to one person, or N-of-M counting could be gamed.
        for kind, ident in (("name", a.name), ("kubernetes", a.kubernetes), ("linear", a.linear)):
            if ident is None:
                continue
            key = f"{kind}:{ident.lower()}"
            if key in seen:
                raise ConfigError(f"{o.at(kind)}: {ident!r} is already used by approver {seen[key]!r}")
            seen[key] = a.name
        out.append(a)
    return tuple(out)


def _policy(o: "_Obj") -> Policy:
    d = Policy()
    roles_obj = o.section("roles_required")
    roles_required = {area: roles_obj.str_list(area, required=True) for area in roles_obj.keys()}
    for area, roles in roles_required.items():
        if not roles:
            raise ConfigError(f"{roles_obj.at(area)}: list at least one role (an empty list would let nobody approve)")
    roles_obj.done()
    extra: dict[str, Mapping[str, tuple[str, ...]]] = {}
    for key in ("risk_keywords", "risk_paths"):
        sub = o.section(key)
        extra[key] = MappingProxyType({area: sub.str_list(area, required=True) for area in sub.keys()})
        sub.done()
    p = Policy(
        approvals_required=o.int("approvals_required", d.approvals_required, minimum=1),
        roles_required=MappingProxyType(roles_required),
        forbidden_paths=o.str_list("forbidden_paths"),
        forbidden_risks=o.str_list("forbidden_risks"),
        max_changed_files=o.int("max_changed_files", d.max_changed_files, minimum=1),
        max_changed_lines=o.int("max_changed_lines", d.max_changed_lines, minimum=1),
        allow_workflows=o.bool("allow_workflows", d.allow_workflows),
        retry_cap=o.int("retry_cap", d.retry_cap, minimum=0),
        budget_cap=o.int("budget_cap", d.budget_cap, minimum=1),
        budget_usd=o.opt_number("budget_usd"),
        budget_tokens=o.opt_int("budget_tokens", minimum=1),
        risk_keywords=extra["risk_keywords"],
        risk_paths=extra["risk_paths"],
    )
    o.done()
    return p


def _secret_ref(o: "_Obj") -> SecretRef:
    ref = SecretRef(secret=o.str("secret"), key=o.opt_str("key"), env=o.opt_str("env"))
    o.done()
    if not _K8S_NAME.match(ref.secret):
        raise ConfigError(f"{o.at('secret')}: {ref.secret!r} is not a Kubernetes Secret name")
    if (ref.key is None) != (ref.env is None):
        raise ConfigError(f"{o.path}: give both `key` and `env` (one key as one variable) or neither (all keys)")
    if ref.env is not None and not _ENV_NAME.match(ref.env):
        raise ConfigError(f"{o.at('env')}: {ref.env!r} is not a valid environment variable name")
    return ref


def _agent(o: "_Obj") -> Agent:
    d = Agent()
    provider = o.str("provider", d.provider)
    if provider not in PROVIDERS:
        raise ConfigError(f"{o.at('provider')}: expected one of {', '.join(PROVIDERS)}, got {provider!r}")
    env_obj = o.section("env")
    env = {k: env_obj.str(k, required=True) for k in env_obj.keys()}
    env_obj.done()
    for k in env:
        if not _ENV_NAME.match(k):
            raise ConfigError(f"{env_obj.at(k)}: {k!r} is not a valid environment variable name")
    resources = _resources(o.section("resources"))
    a = Agent(
        provider=provider,
        image=o.str("image", d.image),
        command=o.str_list("command"),
        args=o.str_list("args"),
        env=MappingProxyType(env),
        secret_refs=tuple(_secret_ref(r) for r in o.list("secret_refs")),
        service_account=o.opt_str("service_account"),
        resources=resources,
        runner=_runner(o.section("runner")),
        namespace=o.opt_str("namespace"),
        ttl_seconds_after_finished=o.opt_int("ttl_seconds_after_finished", d.ttl_seconds_after_finished, minimum=0),
        webhook_url=o.opt_str("webhook_url"),
        webhook_secret_env=o.str("webhook_secret_env", d.webhook_secret_env),
        local_command=o.str_list("local_command"),
        local_workdir=o.opt_str("local_workdir"),
    )
    o.done()
    if a.provider == "webhook":
        if not a.webhook_url or not re.match(r"^https?://", a.webhook_url):
            raise ConfigError(f"{o.at('webhook_url')}: the webhook provider needs an http(s) URL")
    if a.provider == "local" and not a.local_command:
        raise ConfigError(f"{o.at('local_command')}: the local provider needs a command (a list of strings)")
    if not _ENV_NAME.match(a.webhook_secret_env):
        raise ConfigError(f"{o.at('webhook_secret_env')}: {a.webhook_secret_env!r} is not an environment variable name")
    if a.namespace is not None and not _NAMESPACE.match(a.namespace):
        raise ConfigError(f"{o.at('namespace')}: {a.namespace!r} is not a Kubernetes namespace name")
    return a


def _resources(o: "_Obj") -> Mapping[str, Any]:
    """DEFAULT_AGENT_RESOURCES with what the file names on top (per section and resource).
    Quantities are passed through as written: the API server validates them."""
    merged: dict[str, Any] = {k: dict(v) for k, v in DEFAULT_AGENT_RESOURCES.items()}
    for key in o.keys():
        value = o.raw[key]
        if key in ("requests", "limits"):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{o.at(key)}: expected a mapping of resource → quantity, got {_kind(value)}")
            merged[key].update(value)
        else:
            merged[key] = value
    o.consume_all()
    return MappingProxyType(merged)


def _runner(o: "_Obj") -> Runner:
    d = Runner()
    name = o.str("name", d.name)
    if name not in RUNNERS:
        raise ConfigError(f"{o.at('name')}: expected one of {', '.join(RUNNERS)}, got {name!r}")
    r = Runner(
        name=name,
        model=o.opt_str("model"),
        timeout_seconds=o.int("timeout_seconds", d.timeout_seconds, minimum=1),
        output_cap_bytes=o.int("output_cap_bytes", d.output_cap_bytes, minimum=1024),
        extra_args=o.str_list("extra_args"),
        command=o.str_list("command"),
    )
    o.done()
    if r.name == "command" and not r.command:
        raise ConfigError(f"{o.at('command')}: the command runner needs the argv of a program (a list of strings)")
    if r.name != "command" and r.command:
        raise ConfigError(f"{o.at('command')}: only the `command` runner takes a command (runner is {r.name!r})")
    return r


def _timeouts(o: "_Obj") -> Timeouts:
    d = Timeouts()
    t = Timeouts(
        agent_seconds=o.int("agent_seconds", d.agent_seconds, minimum=1),
        pr_wait_seconds=o.int("pr_wait_seconds", d.pr_wait_seconds, minimum=1),
        resync_seconds=o.int("resync_seconds", d.resync_seconds, minimum=1),
        approval_seconds=o.int("approval_seconds", d.approval_seconds, minimum=0),
    )
    o.done()
    return t


def _plan(o: "_Obj", agent: Agent) -> PlanSettings:
    d = PlanSettings()
    mode = o.opt_str("mode")
    timeout = o.int("timeout_seconds", d.timeout_seconds, minimum=30)
    o.done()
    if mode is not None and mode not in PLAN_MODES:
        raise ConfigError(f"{o.at('mode')}: expected one of {', '.join(PLAN_MODES)}, got {mode!r}")
    why = _no_agent_plans(agent) if mode == "agent" else None
    if why:
        raise ConfigError(f"{o.at('mode')}: agent plans are not possible here: {why}; use heuristic")
    can = agent.runner.name in PLANNING_RUNNERS and agent.provider in PLANNING_PROVIDERS
    return PlanSettings(mode=mode or ("agent" if can else "heuristic"), timeout_seconds=timeout,
                        explicit=mode is not None)


def _no_agent_plans(agent: Agent) -> str | None:
    """Why plan.mode agent cannot work with this agent, or None when it can."""
    if agent.runner.name not in (*PLANNING_RUNNERS, *OPT_IN_PLANNING_RUNNERS):
        return (f"the {agent.runner.name} runner has no read-only mode to plan in (plans need claude-code or "
                f"codex, or a command runner whose program answers with a plan)")
    if agent.provider not in PLANNING_PROVIDERS:
        return f"the {agent.provider} provider cannot run a plan Job (plans need the job or local provider)"
    return None


def _retention(o: "_Obj") -> Retention:
    d = Retention()
    r = Retention(
        runs_seconds=o.int("runs_seconds", d.runs_seconds, minimum=0),
        deliveries_seconds=o.int("deliveries_seconds", d.deliveries_seconds, minimum=0),
        interval_seconds=o.int("interval_seconds", d.interval_seconds, minimum=1),
        batch_size=o.int("batch_size", d.batch_size, minimum=1),
        max_batches=o.int("max_batches", d.max_batches, minimum=1),
        reap_grace_seconds=o.int("reap_grace_seconds", d.reap_grace_seconds, minimum=0),
    )
    o.done()
    return r


def _linear(o: "_Obj") -> LinearSettings:
    d = LinearSettings()
    s = LinearSettings(
        api_url=o.str("api_url", d.api_url),
        team=o.opt_str("team"),
        state_started=o.opt_str("state_started", d.state_started),
        state_review=o.opt_str("state_review", d.state_review),
        state_done=o.opt_str("state_done", d.state_done),
        sweep_seconds=o.int("sweep_seconds", d.sweep_seconds, minimum=0),
        sweep_overlap_seconds=o.int("sweep_overlap_seconds", d.sweep_overlap_seconds, minimum=0),
        sweep_lookback_seconds=o.int("sweep_lookback_seconds", d.sweep_lookback_seconds, minimum=0),
    )
    o.done()
    return s


def _github(o: "_Obj") -> GitHubSettings:
    s = GitHubSettings(api_url=o.str("api_url", GitHubSettings().api_url), git_url=o.opt_str("git_url"),
                       app_id=o.opt_int("app_id", minimum=1), installation_id=o.opt_int("installation_id", minimum=1),
                       private_key_file=o.opt_str("private_key_file"), private_key_env=o.opt_str("private_key_env"))
    if s.git_url is not None and not re.match(r"^https?://[^\s/]+", s.git_url):
        raise ConfigError(f"{o.at('git_url')}: expected an http(s) URL, got {s.git_url!r}")
    if (s.app_id is None) != (s.installation_id is None):
        have, lack = ("app_id", "installation_id") if s.installation_id is None else ("installation_id", "app_id")
        raise ConfigError(f"{o.at(lack)}: required with {have} (a GitHub App needs both)")
    keys = [k for k in ("private_key_file", "private_key_env") if getattr(s, k) is not None]
    if s.app_id is not None and len(keys) != 1:
        raise ConfigError(f"{o.at('private_key_file')}: a GitHub App needs exactly one of private_key_file or "
                          f"private_key_env, got {keys or 'neither'}")
    if s.app_id is None and keys:
        raise ConfigError(f"{o.at(keys[0])}: only meaningful with app_id and installation_id")
    if s.private_key_env is not None and not _ENV_NAME.match(s.private_key_env):
        raise ConfigError(f"{o.at('private_key_env')}: not an environment variable name: {s.private_key_env!r}")
    o.done()
    return s


def _operator(o: "_Obj") -> OperatorSettings:
    s = OperatorSettings(leader_election=_leader_election(o.section("leader_election")))
    o.done()
    return s


def _leader_election(o: "_Obj") -> LeaderElection:
    d = LeaderElection()
    e = LeaderElection(
        enabled=o.bool("enabled", d.enabled),
        lease_name=o.str("lease_name", d.lease_name),
        namespace=o.opt_str("namespace"),
        lease_duration_seconds=o.opt_number("lease_duration_seconds") or d.lease_duration_seconds,
        renew_deadline_seconds=o.opt_number("renew_deadline_seconds") or d.renew_deadline_seconds,
        retry_period_seconds=o.opt_number("retry_period_seconds") or d.retry_period_seconds,
    )
    o.done()
    if not _K8S_NAME.match(e.lease_name):
        raise ConfigError(f"{o.at('lease_name')}: {e.lease_name!r} is not a Kubernetes object name")
    if e.namespace is not None and not _NAMESPACE.match(e.namespace):
        raise ConfigError(f"{o.at('namespace')}: {e.namespace!r} is not a Kubernetes namespace name")
    # client-go's rules: the leader must stop acting before a standby may take over, and must get
    # several tries at renewing (retries are up to 1.2 periods apart) before it gives up.
    if e.lease_duration_seconds <= e.renew_deadline_seconds:
        raise ConfigError(f"{o.at('lease_duration_seconds')}: must be longer than renew_deadline_seconds "
                          f"({e.renew_deadline_seconds:g}), or a standby could act while the leader still does")
    if e.renew_deadline_seconds <= 1.2 * e.retry_period_seconds:
        raise ConfigError(f"{o.at('renew_deadline_seconds')}: must be longer than 1.2 × retry_period_seconds "
                          f"({1.2 * e.retry_period_seconds:g})")
    return e


def _cross_checks(cfg: FoundryConfig) -> None:
    roles = {r for a in cfg.approvers for r in a.roles}
    for area, needed in cfg.policy.roles_required.items():
        if area not in RISK_AREAS:
            raise ConfigError(f"policy.roles_required.{area}: unknown risk area; known: {', '.join(RISK_AREAS)}")
        if cfg.approvers and not set(needed) & roles:
            # Not fatal by nature, but it makes every run touching the area unapprovable: say so now.
            raise ConfigError(
                f"policy.roles_required.{area}: no approver has any of the roles {list(needed)}; "
                "runs touching this area could never be approved"
            )
    for key in ("risk_keywords", "risk_paths"):
        for area in getattr(cfg.policy, key):
            if area not in RISK_AREAS:
                raise ConfigError(f"policy.{key}.{area}: unknown risk area; known: {', '.join(RISK_AREAS)}")
    for i, area in enumerate(cfg.policy.forbidden_risks):
        if area not in RISK_AREAS:
            raise ConfigError(f"policy.forbidden_risks[{i}]: unknown risk area {area!r}; known: {', '.join(RISK_AREAS)}")


# ---------------------------------------------------------------- a path-aware reader


class _Obj:
    """A mapping being read at `path`; remembers which keys were read so leftovers are errors."""

    def __init__(self, raw: Any, path: str) -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{path or '<top level>'}: expected a mapping, got {_kind(raw)}")
        for k in raw:
            if not isinstance(k, str):
                raise ConfigError(f"{path or '<top level>'}: keys must be strings, got {k!r}")
        self.raw: Mapping[str, Any] = raw
        self.path = path
        self._read: set[str] = set()

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def keys(self) -> list[str]:
        return list(self.raw)

    def consume_all(self) -> None:
        self._read.update(self.raw)

    def _get(self, key: str) -> Any:
        self._read.add(key)
        return self.raw.get(key)

    def done(self) -> None:
        unknown = [k for k in self.raw if k not in self._read]
        if unknown:
            key = unknown[0]
            close = difflib.get_close_matches(key, list(self._read), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(self._read))}"
            raise ConfigError(f"{self.at(key)}: unknown key{hint}")

    def section(self, key: str) -> "_Obj":
        return _Obj(self._get(key), self.at(key))

    def list(self, key: str) -> list["_Obj"]:
        value = self._get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise ConfigError(f"{self.at(key)}: expected a list, got {_kind(value)}")
        return [_Obj(item, f"{self.at(key)}[{i}]") for i, item in enumerate(value)]

    def str(self, key: str, default: str | None = None, *, required: bool = False) -> str:
        value = self._get(key)
        if value is None:
            if default is None or required:
                raise ConfigError(f"{self.at(key)}: required")
            return default
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{self.at(key)}: expected a non-empty string, got {_kind(value)}")
        return value.strip()

    def opt_str(self, key: str, default: str | None = None) -> str | None:
        self._read.add(key)
        if key not in self.raw:
            return default
        if self.raw[key] is None:
            return None  # an explicit null switches the setting off
        return self.str(key)

    def name(self, key: str) -> str:
        value = self.str(key)
        if not _NAME.match(value):
            raise ConfigError(f"{self.at(key)}: {value!r} must be lowercase letters, digits, '.', '_' or '-'")
        return value

    def int(self, key: str, default: int, *, minimum: int) -> int:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{self.at(key)}: expected a whole number, got {_kind(value)}")
        if value < minimum:
            raise ConfigError(f"{self.at(key)}: must be at least {minimum}, got {value}")
        return value

    def bool(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(f"{self.at(key)}: expected true or false, got {_kind(value)}")
        return value

    def opt_int(self, key: str, default: int | None = None, *, minimum: int) -> int | None:
        """A whole number, or null to switch the setting off."""
        self._read.add(key)
        if key not in self.raw:
            return default
        if self.raw[key] is None:
            return None
        return self.int(key, 0, minimum=minimum)

    def opt_number(self, key: str) -> float | None:
        value = self._get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(f"{self.at(key)}: expected a positive number, got {_kind(value)}")
        return float(value)

    def str_list(self, key: str, *, required: bool = False) -> tuple[str, ...]:
        value = self._get(key)
        if value is None:
            if required:
                raise ConfigError(f"{self.at(key)}: required")
            return ()
        if not isinstance(value, list):
            raise ConfigError(f"{self.at(key)}: expected a list of strings, got {_kind(value)}")
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise ConfigError(f"{self.at(key)}[{i}]: expected a non-empty string, got {_kind(item)}")
        return tuple(item.strip() for item in value)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"
