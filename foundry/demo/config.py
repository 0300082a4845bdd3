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


def demo_config(*, linear_graphql_url: str, github_url: str, repo_dir: Path, agent_workdir: Path | None = None) -> dict[str, Any]:
    """agent_workdir: where the local provider may keep per-attempt files (never inside the repository)."""
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
            "local_command": [sys.executable, "-m", "foundry.demo.agent"],
            "local_workdir": str(agent_workdir or repo_dir.parent / "agent-work"),
            "env": {"FOUNDRY_DEMO_REPO": str(repo_dir), "FOUNDRY_DEMO_GITHUB_URL": github_url},
        },
        # Short waits: the demo should finish in about a minute, not an hour.
        "timeouts": {"agent_seconds": 120, "pr_wait_seconds": 60, "resync_seconds": 3},
        "linear": {"api_url": linear_graphql_url, "team": TEAM},
        "github": {"api_url": github_url},
    }
