"""The Foundry config file the demo writes for its operator and bridge (pure)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from foundry.demo.example_repo import BASE_BRANCH, REPO

TEAM = "ACME"
APPROVER_NAME = "Alice"
APPROVER_EMAIL = "alice@example.com"
APPROVER_KUBE_USER = "alice"  # a static user of the local control plane
REPO_NAME = "greeter"


def demo_config(*, linear_graphql_url: str, github_url: str, agent_workdir: Path) -> dict[str, Any]:
    """agent_workdir: where the local provider keeps per-attempt folders (the runner's clone lives there).

    The agent is Foundry's own runner (`foundry agent run`, as in the agent
    image) driving the demo's scripted `command` agent: it clones from the
    GitHub stand-in, commits, checks policy, pushes and opens the PR itself."""
    return {
        "trigger": {"label": "foundry"},
        "repositories": [{
            "name": REPO_NAME,
            "github": REPO,
            "base_branch": BASE_BRANCH,
            "keywords": ["greet", "greeting", "greeter"],
            "paths": ["greeter.py", "test_greeter.py"],
        }],
        "approvers": [{
            "name": APPROVER_NAME,
            "kubernetes": APPROVER_KUBE_USER,
            "linear": APPROVER_EMAIL,
            "roles": ["lead"],
        }],
        "policy": {"approvals_required": 1, "retry_cap": 2, "budget_cap": 3, "max_changed_files": 10},
        "agent": {
            "provider": "local",
            "local_command": [sys.executable, "-m", "foundry.cli.main", "agent", "run"],
            "local_workdir": str(agent_workdir),
            "runner": {"name": "command", "command": [sys.executable, "-m", "foundry.demo.agent"],
                       "timeout_seconds": 60},
        },
        # The agent writes the plan Alice approves: the same runner, read-only (the `command`
        # runner plans only when asked; the runner's work-tree check is its guard, decision 0021).
        "plan": {"mode": "agent", "timeout_seconds": 60},
        # Short waits: the demo should finish in about a minute, not an hour.
        "timeouts": {"agent_seconds": 120, "pr_wait_seconds": 60, "resync_seconds": 3},
        "linear": {"api_url": linear_graphql_url, "team": TEAM},
        "github": {"api_url": github_url},
    }
