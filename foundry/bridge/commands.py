"""Carrying out the commands a webhook maps to (blocking; the app runs these in its thread pool).

Every command is idempotent, so a delivery processed twice (a crash between
the command and the delivery record, two replicas racing on the same delivery)
has one effect. The steps here talk to the outside world only through a
`Backend`, which the app builds once per process from the real database and
Kubernetes modules (foundry.bridge.backend).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from foundry.bridge.mapping import Decision, Intake, PrHint, Ticket
from foundry.domain.attempts import Claim
from foundry.domain.naming import DNS1123_LABEL
from foundry.domain.plan_stamp import STAMPED, StampRefused, stamp
from foundry.domain.triggers import Trigger

PR_HINT_ANNOTATION = "foundry.dev/pr-hint"


class Unavailable(Exception):
    """The API server or the database cannot be reached right now (answered 503 + Retry-After)."""

    def __init__(self, what: str, detail: str) -> None:
        super().__init__(f"{what} unavailable: {detail}")
        self.what = what
        self.detail = detail


class Refused(Exception):
    """A dependency refused the command for a reason retrying will not fix (answered with `status`)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


# (namespace, name) of a FoundryRun
RunRef = tuple[str, str]


@dataclass(frozen=True)
class Outcome:
    """The answer for one delivery: status is created | attached | updated | applied | ignored.

    updated: the issue's run was attached to and its spec.ticket brought up to
    date with a changed ticket, so the operator re-plans (foundry.domain.ticket_refresh)."""

    status: str
    run: str | None
    reason: str | None = None


class Backend(Protocol):
    """The bridge's view of the database and the Kubernetes API (one instance per process)."""

    def delivery_recorded(self, provider: str, delivery_id: str) -> bool: ...

    def record_delivery(self, provider: str, delivery_id: str, outcome: str) -> bool:
        """Record the delivery; False when another copy already recorded it."""
        ...

    def claim(self, ticket: Ticket) -> Claim: ...

    def create_or_attach_run(self, claim: Claim, intake: Intake, trigger: Trigger) -> str:
        """Create the FoundryRun the claim named; "created", or "attached" to it, or "updated" when
        attached and its not yet approved plan's ticket text was brought up to date."""
        ...

    def active_run(self, issue_id: str) -> RunRef | None: ...

    def active_run_by_key(self, issue_key: str) -> RunRef | None: ...

    def run_plan_hash(self, run: RunRef) -> str | None:
        """The run's status.plan.hash (None: no plan hash yet, or no such run)."""
        ...

    def create_approval(self, run: RunRef, decision: Decision, plan_hash: str | None = None) -> bool:
        """Create the FoundryApproval (spec.planHash = plan_hash); False when it already existed."""
        ...

    def hint_run(self, run: RunRef | str, value: str) -> bool:
        """Set the pr-hint annotation on the run (a bare name: in the bridge's namespace); False when absent."""
        ...

    def check_ready(self) -> dict[str, str]:
        """{"kubernetes": "ok" | error, "database": "ok" | error}."""
        ...


def intake(backend: Backend, command: Intake, trigger: Trigger) -> Outcome:
    """Claim the issue's run in the database first, then create-or-attach the FoundryRun it names.

    The claim decides the name and attempt across all replicas (insert first,
    partial unique index); the API server's name uniqueness is the second guard.
    A crash between the two is repaired by the sender's retry: the claim then
    attaches and the create happens.
    """
    claim = backend.claim(command.ticket)
    if nothing_to_create(claim):
        return _unchanged(claim)
    created = backend.create_or_attach_run(claim, command, trigger)
    return Outcome(created, claim.name)


class AsyncIntakeBackend(Protocol):
    """The intake hot path run on the event loop (foundry.bridge.lean); same contract as Backend's methods."""

    async def claim(self, ticket: Ticket) -> Claim: ...

    async def create_or_attach_run(self, claim: Claim, intake: Intake, trigger: Trigger) -> str: ...

    async def record_delivery(self, provider: str, delivery_id: str, outcome: str) -> bool: ...

    async def close(self) -> None: ...


async def intake_async(backend: AsyncIntakeBackend, command: Intake, trigger: Trigger) -> Outcome:
    """intake() for an AsyncIntakeBackend: the same two steps in the same order."""
    claim = await backend.claim(command.ticket)
    if nothing_to_create(claim):
        return _unchanged(claim)
    created = await backend.create_or_attach_run(claim, command, trigger)
    return Outcome(created, claim.name)


def nothing_to_create(claim: Claim) -> bool:
    return claim.status == "unchanged" or claim.name is None


def _unchanged(claim: Claim) -> Outcome:
    return Outcome("ignored", claim.name, "no run is active and the ticket has not changed since the last one")


def decide(backend: Backend, command: Decision) -> Outcome:
    """Approve, reject, stop or replan the issue's active run via a FoundryApproval keyed by approver.

    approve and replan are about the run's plan: the approval is stamped with
    the run's current plan hash, or the one the comment names if that is the
    current one. A comment naming another plan records nothing: the person
    approved a plan the run no longer has."""
    run = backend.active_run(command.issue_id)
    if run is None:
        return Outcome("ignored", None, "the issue has no active run")
    plan_hash = None
    if command.decision in STAMPED:
        try:
            plan_hash = stamp(command.decision, backend.run_plan_hash(run), command.plan_ref)
        except StampRefused as exc:
            return Outcome("ignored", run[1], f"not recorded: {exc}")
    backend.create_approval(run, command, plan_hash)
    # Applying the same decision twice finds the object already there: same outcome.
    return Outcome("applied", run[1])


def pr_hint(backend: Backend, command: PrHint, value: str) -> Outcome:
    """Bump the pr-hint annotation on the run the event correlates with.

    A `foundry/<run>` head branch names the run exactly; otherwise an issue key
    in the branch or title leads to that issue's active run.
    """
    for name in command.run_names:
        if DNS1123_LABEL.match(name) and backend.hint_run(name, value):
            return Outcome("applied", name)
    for key in command.issue_keys:
        run = backend.active_run_by_key(key)
        if run is not None and backend.hint_run(run, value):
            return Outcome("applied", run[1])
    return Outcome("ignored", None, "no Foundry run correlates with the event")
