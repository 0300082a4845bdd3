"""Failures no retry can fix: name them before a step trips over them, and end the run Blocked.

A run whose repository was removed from the configuration would otherwise
fail every reconcile with a KeyError, retried forever while it holds its
issue's slot. It ends Blocked instead, with the reason in its status, an
Event and the one "blocked" comment; its agent, if still at work, is
cancelled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from foundry.domain import comments as texts
from foundry.domain.phases import Phase
from foundry.operator.errors import CannotReconcile
from foundry.operator.reconcile import agentio, comments
from foundry.operator.reconcile.outcome import Transition
from foundry.operator.reconcile.view import RunView

if TYPE_CHECKING:
    from foundry.operator.deps import Deps


def check(deps: "Deps", run: RunView) -> None:
    """Raise CannotReconcile if the run refers to something the configuration no longer has."""
    repo = run.status.get("repo")
    if repo and repo not in deps.config.repositories:
        known = ", ".join(sorted(deps.config.repositories)) or "none"
        raise CannotReconcile(f"repository {repo!r} is no longer in Foundry's configuration "
                              f"(configured: {known})", reason="RepositoryRemoved")


def blocked(deps: "Deps", run: RunView, err: CannotReconcile) -> Transition:
    """The transition that ends the run for `err`."""
    message = str(err)
    status: dict = {}
    if run.attempt:
        jobs = agentio.end_attempt(deps, run)
        if jobs != run.jobs:
            status["agent"] = {**run.agent, "jobs": jobs}
    status["comments"] = comments.post(deps, run, "blocked", texts.blocked(run.issue_key, message))
    return Transition(Phase.BLOCKED, err.reason, message, status=status, warning=True)
