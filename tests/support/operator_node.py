"""The operator driving runs whose agent Jobs really run on the real node.

An AgentPodBed (tests.support.agent_node: the agent image on the node, the
GitHub stand-in with an App and the model stand-in on the node IP, restricted
agent namespaces) plus what the operator needs around it: the Linear stand-in,
a PostgreSQL engine, Foundry's CRDs on the node's API server, and the operator
itself (kopf in a thread of the test process, tests.support.operator_kit),
reading GitHub as the App and minting an installation token per attempt.

Nothing plays the kubelet or the Job controller: the run's phase follows what
the node's controllers report.

    with AgentPodBed(real_node, ref) as bed:
        agents = bed.namespace()
        doc = operator_config(bed, agents, runner=bed.command_runner(["sleep", "300"]), agent_seconds=15)
        with operator_on_node(bed, engine, run_namespace, doc) as stack:  # an OperatorStack
            issue_id, run = stack.agent_running()
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from tests.support.agent_node import APP_KEY_ENV, AgentPodBed
from tests.support.operator_stack import TEAM, OperatorStack, stack_config


def operator_config(bed: AgentPodBed, agents_namespace: str, *, runner: dict[str, Any], agent_seconds: int = 600,
                    resources: dict[str, Any] | None = None, **policy: Any) -> dict[str, Any]:
    """The operator stand's config (approvers, policy, trigger; resync every second) with the bed's
    repository, GitHub App and agent settings: attempts run as pods in `agents_namespace`."""
    doc = stack_config(**policy)
    agent_doc = bed.config_doc(agents_namespace, runner=runner, agent_seconds=agent_seconds, resources=resources)
    (repo,) = agent_doc["repositories"]
    # The stand's tickets are about a health endpoint: route them to the bed's repository.
    doc["repositories"] = [{**repo, "base_branch": "main", "keywords": ["health", "endpoint", "service"]}]
    doc["github"] = agent_doc["github"]
    doc["agent"] = agent_doc["agent"]
    doc["timeouts"] = {**doc["timeouts"], "agent_seconds": agent_seconds}
    return doc


@contextmanager
def operator_on_node(bed: AgentPodBed, engine: Any, namespace: str, config: dict[str, Any]) -> Iterator[OperatorStack]:
    """The operator watching FoundryRuns in `namespace` (CRDs must be installed), with its stand."""
    from foundry.agents.credentials import AppTokenSource
    from foundry.agents.job_provider import JobProvider
    from foundry.config import parse_config
    from foundry.connectors.github import GitHubClient
    from foundry.connectors.github_app import app_from_settings, token_source
    from foundry.connectors.linear import LinearClient
    from foundry.connectors.retry import RetryPolicy
    from foundry.db.engine import create_schema
    from foundry.operator.deps import Deps
    from tests.support.operator_kit import operator_thread
    from foundry.dev.linear_server import LinearServer

    create_schema(engine)
    cfg = parse_config(config)
    api = bed.cluster.api_client()
    retry = RetryPolicy(max_attempts=2, base_delay=0.05, max_delay=0.2)
    with LinearServer() as linear:
        linear.add_team(TEAM, "Acme")
        alice_id = linear.add_user("Alice", "alice@example.com")
        # As a deployed operator with an App: it reads GitHub with the App's own installation token
        # (so the PRs the attempts open are by the identity it adopts) and mints each attempt's.
        # The same URL goes into each attempt's input; the bed's GitHub binds the node IP, so pods reach it.
        app = app_from_settings(cfg.github, env={APP_KEY_ENV: bed.app_key}, base_url=bed.github.url)
        deps = Deps(api=api, engine=engine, config=cfg, agents=JobProvider(cfg, api, AppTokenSource(app)),
                    linear=LinearClient(linear.api_key, url=linear.graphql_url, retry=retry),
                    github=GitHubClient(token_source(app), base_url=bed.github.url, retry=retry))
        try:
            with operator_thread(deps, namespace):
                yield OperatorStack(api, engine, namespace, linear, bed.github, deps, alice_id)
        finally:
            deps.linear.close()
            deps.github.close()
            api.close()
