"""input.json, version 2 (docs/agent-contract.md), built from plain values. Pure.

What the agent is told of the plan (`planText`) is rendered by the function
that renders it in the approval request (foundry.domain.comment_text.plan_text),
so the approvers and the agent read the same text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from foundry.config import FoundryConfig, Repository
from foundry.domain.comment_text import plan_text

VERSION = 2
PUBLIC_API = "api.github.com"


def git_url(api_url: str, repo: str, override: str | None = None) -> str:
    """Where the agent clones and pushes `repo` (owner/name).

    github.git_url when set; else api.github.com → https://github.com, a GitHub
    Enterprise `https://host/api/v3` → https://host, anything else (a stand-in)
    → the API URL itself; then `/<owner>/<name>.git`."""
    if override:
        base = override.rstrip("/")
    else:
        parts = urlsplit(api_url.rstrip("/"))
        if parts.hostname == PUBLIC_API:
            base = "https://github.com"
        else:
            path = parts.path[: -len("/api/v3")] if parts.path.endswith("/api/v3") else parts.path
            base = f"{parts.scheme}://{parts.netloc}{path}"
    return f"{base}/{repo}.git"


def runner_timeout(cfg: FoundryConfig) -> int:
    """agent.runner.timeout_seconds, kept under the Job's deadline so the runner can
    still report (and publish) after stopping a CLI that hangs."""
    deadline = cfg.timeouts.agent_seconds
    margin = min(300, deadline // 5)
    return max(1, min(cfg.agent.runner.timeout_seconds, deadline - margin))


def runner_section(cfg: FoundryConfig) -> dict[str, Any]:
    r = cfg.agent.runner
    out: dict[str, Any] = {"name": r.name, "timeoutSeconds": runner_timeout(cfg),
                           "outputCapBytes": r.output_cap_bytes, "extraArgs": list(r.extra_args)}
    if r.model:
        out["model"] = r.model
    if r.command:
        out["command"] = list(r.command)
    return out


def constraints(cfg: FoundryConfig) -> dict[str, Any]:
    p = cfg.policy
    return {"forbiddenPaths": list(p.forbidden_paths), "maxChangedFiles": p.max_changed_files,
            "maxChangedLines": p.max_changed_lines, "allowWorkflows": p.allow_workflows}


def build(cfg: FoundryConfig, *, run: str, issue_key: str, attempt: int, repo: Repository, branch: str,
          api_url: str, ticket: Mapping[str, Any], plan: Mapping[str, Any], pr_number: int | None = None,
          feedback: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The whole job input of one attempt; `pr_number` and `feedback` on a remediation only."""
    description = str(ticket.get("description") or "")
    out: dict[str, Any] = {
        "version": VERSION,
        "run": run,
        "issue": issue_key,
        "attempt": attempt,
        "repo": repo.github,
        "baseBranch": repo.base_branch,
        "branch": branch,
        "git": {"url": git_url(api_url, repo.github, cfg.github.git_url), "apiUrl": api_url.rstrip("/")},
        "ticket": {"key": issue_key, "title": str(ticket.get("title") or ""), "url": str(ticket.get("url") or ""),
                   "description": description},
        "plan": {k: v for k, v in plan.items() if k not in ("agent", "markdown")},
        "planText": plan_text(issue_key, plan),
        "instructions": description,  # version-1 runners read the ticket here
        "constraints": constraints(cfg),
        "runner": runner_section(cfg),
    }
    if plan.get("hash"):
        out["planHash"] = str(plan["hash"])  # the approved plan's; the runner records it in its result
    if pr_number is not None:
        out["pr"] = {"number": int(pr_number)}
    if feedback:
        out["feedback"] = dict(feedback)
    return out


def build_plan(cfg: FoundryConfig, *, run: str, issue_key: str, number: int, repo: Repository, branch: str,
               api_url: str, ticket: Mapping[str, Any]) -> dict[str, Any]:
    """input.json of plan `number` (mode plan): the base branch and the ticket, no plan yet, no PR."""
    out = build(cfg, run=run, issue_key=issue_key, attempt=number, repo=repo, branch=branch, api_url=api_url,
                ticket=ticket, plan={})
    out.update(mode="plan", planText="")
    return out
