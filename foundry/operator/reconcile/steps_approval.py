"""Approval: WaitingApproval → Approved | Expired, and the checks every human decision passes.

Who counts is foundry.domain.policy's decision (distinct approvers, roles that
cover the run's risk areas, N-of-M, default deny). Before that, each decision
must be what it claims (foundry.domain.confirmation): made after the plan (an
approval) or the run (a reject or stop), and, from Linear, confirmed by reading
its comment back from Linear. A decision that does not count is said so: in
the status message, in a Warning Event, and in one ticket comment per decision
telling the person why.

The reject and stop that end a run from any phase pass the same checks; they
are taken in steps_endings.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from foundry.connectors.marked_comments import keyed_purpose
from foundry.connectors.errors import NotFound
from foundry.domain import comment_text as texts
from foundry.domain import confirmation, plan_status, policy
from foundry.domain.phases import Phase
from foundry.operator.events import post_event
from foundry.operator.kubeio import list_approvals
from foundry.operator.outside import outside_call
from foundry.operator.reconcile import commentio, passcache, timing
from foundry.operator.reconcile.outcome import Outcome, Stay, Transition
from foundry.operator.reconcile.view import RunView

if TYPE_CHECKING:
    from foundry.operator.deps import Deps

# A decision that did not count, and why.
Refusal = tuple[dict[str, Any], str]

# Refusals told on the ticket per run, at most: each takes a key in
# status.comments (the CRD allows 64), and a flood of forged decisions must
# not crowd out the run's own comments. Beyond this, status and Events only.
MAX_REFUSAL_COMMENTS = 10
# Replan decisions remembered as taken (status.replans; the CRD allows 64).
MAX_REPLANS = 64

# FoundryApproval uids whose Linear comment was confirmed. A confirmed comment
# stays confirmed (its id, issue, author and time cannot change), so each is
# read from Linear once per operator process; refusals are re-read, since
# Linear may merely have been slow. Bounded: oldest forgotten first.
_CONFIRMED_MAX = 4096
_confirmed: "OrderedDict[str, None]" = OrderedDict()
_confirmed_lock = threading.Lock()


def await_approvals(deps: "Deps", run: RunView) -> Outcome:
    decisions = listed(deps, run)
    replaced = replan_reason(deps, run, decisions)
    if replaced is not None:
        return replan(deps, run, replaced)
    plan = run.status.get("plan") or {}
    deadline = expires_at(deps, run)
    # Only approvals given by the deadline count: one given later (while the
    # operator was down, or before the resync noticed the deadline) must not
    # revive an expired plan.
    areas = list(run.status.get("riskAreas") or [])
    refused: list[Refusal] = []
    standing: list[dict[str, Any]] = []
    for approval in decisions:
        spec = approval.get("spec") or {}
        if spec.get("decision") != "approve" or (deadline is not None and _made_at(approval) > deadline):
            continue
        why = why_not(deps, run, approval) or plan_status.approval_mismatch(spec, plan)
        if why is None:
            # The policy's own refusals (not an approver, lacking a role), told per decision too.
            why = next((reason for _, reason in policy.tally_approvals(deps.config, [spec], areas).refused), None)
        if why is None:
            standing.append(spec)
        else:
            refused.append((approval, why))
    tally = policy.tally_approvals(deps.config, standing, areas)
    approvals = {"required": tally.required, "received": tally.received,
                 "summary": f"{tally.received}/{tally.required}", "approvers": tally.approvers}
    told = announce(deps, run, refused) if refused else None
    extra = {"comments": told} if told is not None else {}
    if tally.satisfied:
        # What was approved, by hash: the apply guard (agentio.start) checks the plan still is that.
        return Transition(Phase.APPROVED, "ApprovalsSatisfied",
                          f"approved by {', '.join(a['name'] for a in tally.approvers)}"
                          + (f" (plan {plan_status.short(plan['hash'])})" if plan.get("hash") else ""),
                          status={"approvals": {**approvals, "planHash": plan.get("hash")}, **extra})
    if deadline is not None and deps.clock() >= deadline:
        return Transition(Phase.EXPIRED, "ApprovalExpired", f"no sufficient approval by {deadline.isoformat()}",
                          status={"approvals": approvals, **extra}, warning=True)
    message = waiting_message(tally.received, tally.required) + (f"; refused: {summary(refused)}" if refused else "")
    if approvals == run.status.get("approvals") and message == run.status.get("message") and not extra:
        return Stay()
    return Stay(status={"approvals": approvals, "message": message, **extra},
                audit="approvals-seen" if refused or tally.received else None,
                audit_detail={"received": tally.received, "required": tally.required,
                              "refused": [[who(a.get("spec") or {}), why] for a, why in refused]})


@dataclass(frozen=True)
class Replan:
    why: str
    decision: str | None = None  # the FoundryApproval (decision replan) that asked, taken once


def replan_reason(deps: "Deps", run: RunView, decisions: list[dict[str, Any]]) -> Replan | None:
    """Why the waiting run's plan no longer stands: its ticket changed, or a person asked (None: it stands).
    Each replan decision is taken once (status.replans names those taken)."""
    plan = run.status.get("plan") or {}
    made_from = plan.get("ticketHash")
    if made_from and made_from != plan_status.ticket_hash(run.ticket):
        return Replan("the ticket changed")
    taken = set(run.status.get("replans") or [])
    for approval in decisions:
        spec = approval.get("spec") or {}
        if spec.get("decision") != "replan" or approval["metadata"]["name"] in taken:
            continue
        if spec.get("planHash") not in (None, "", plan.get("hash")):
            continue  # about an older plan, which was replaced already
        verdict = policy.may_decide(deps.config, spec.get("approver", ""), spec.get("source", ""), "replan")
        if verdict.allowed and why_not(deps, run, approval) is None:
            return Replan(f"{verdict.approver or who(spec)} asked for a re-plan", approval["metadata"]["name"])
    return None


def replan(deps: "Deps", run: RunView, asked: Replan) -> Transition:
    """→ Analysing for plan n+1; the approvers are told that approvals of plan n no longer count."""
    why = asked.why
    plan = run.status.get("plan") or {}
    taken = list(run.status.get("replans") or [])
    if asked.decision is not None:
        taken = [*taken, asked.decision][-MAX_REPLANS:]
    revision = int(plan.get("revision") or 1)
    old = plan_status.short(str(plan.get("hash") or ""))
    posted = commentio.post(deps, run, keyed_purpose("replanned", f"r{revision + 1}"),
                            texts.replanned(run.issue_key, old, revision, why))
    return Transition(Phase.ANALYSING, "Replanning",
                      f"{why}: plan {old} (revision {revision}) is being replaced; its approvals no longer count",
                      status={"comments": posted, "questions": [], "replans": taken,
                              "approvals": {"received": 0, "approvers": [], "summary": None, "planHash": None}})


def waiting_message(received: int, required: int) -> str:
    """status.message while approvals are awaited; the Planned transition writes it first, so the
    first pass here finds it written and has nothing to write."""
    return f"{received}/{required} approvals"


def expires_at(deps: "Deps", run: RunView) -> datetime | None:
    since = _waiting_since(run)
    seconds = getattr(deps.config.timeouts, "approval_seconds", None)
    if since is None or not seconds:
        return None
    return since + timedelta(seconds=seconds)


def _waiting_since(run: RunView) -> datetime | None:
    return timing.waiting_since(run.status)


# --- The checks a decision passes (approve here; reject and stop in steps_endings) ---

def listed(deps: "Deps", run: RunView) -> list[dict[str, Any]]:
    """The run's FoundryApprovals, listed once per reconcile pass (passcache)."""
    return passcache.cached(("approvals", run.namespace, run.name),
                            lambda: list_approvals(deps.api, run.namespace, run.name))


def why_not(deps: "Deps", run: RunView, approval: dict[str, Any]) -> str | None:
    """Why this recorded decision is not what it claims (None: it stands; the policy judges it next)."""
    spec = approval.get("spec") or {}
    decision = str(spec.get("decision") or "")
    bound = _not_before(run, decision)
    late = confirmation.check_made_after(decision, _made_at(approval), bound)
    if late or spec.get("source") != "linear":
        return late
    uid = approval["metadata"].get("uid") or approval["metadata"]["name"]
    with _confirmed_lock:
        if uid in _confirmed:
            _confirmed.move_to_end(uid)
            return None
    comment_id = spec.get("commentId")
    facts = _linear_facts(deps, str(comment_id)) if comment_id else None
    reason = confirmation.check_linear_comment(spec, facts, run.issue_id, bound)
    if reason is None:
        with _confirmed_lock:
            _confirmed[uid] = None
            while len(_confirmed) > _CONFIRMED_MAX:
                _confirmed.popitem(last=False)
    return reason


def _made_at(approval: dict[str, Any]) -> datetime:
    return confirmation.parse_time(approval["metadata"]["creationTimestamp"])


def _not_before(run: RunView, decision: str) -> datetime | None:
    """An approval (or a re-plan) is about the plan, so it must be newer than the plan; a reject or
    stop, newer than the run."""
    if decision in ("approve", "replan"):
        return _waiting_since(run)
    created = run.meta.get("creationTimestamp")
    return confirmation.parse_time(created) if created else None


def _linear_facts(deps: "Deps", comment_id: str) -> confirmation.LinearCommentFacts | None:
    with outside_call(f"reading Linear comment {comment_id} to confirm a decision"):
        try:
            c = deps.linear.get_comment(comment_id)
        except NotFound:
            return None
    return confirmation.LinearCommentFacts(c.id, c.issue_id, c.user_id, c.user_email, c.body,
                                           confirmation.parse_time(c.created_at))


def announce(deps: "Deps", run: RunView, refused: list[Refusal]) -> dict[str, str] | None:
    """One Event and one ticket comment per refused decision not yet told; the new status.comments, if any."""
    recorded = run.comments
    told = sum(1 for k in recorded if k.startswith("refused."))
    fresh = [(a, why) for a, why in refused if keyed_purpose("refused", a["metadata"]["name"]) not in recorded]
    if not fresh or told >= MAX_REFUSAL_COMMENTS:
        return None
    merged = dict(recorded)
    for approval, why in fresh[:MAX_REFUSAL_COMMENTS - told]:
        spec = approval.get("spec") or {}
        decision, source = str(spec.get("decision")), str(spec.get("source"))
        post_event(deps.api, run.body, "DecisionRefused",
                   f"{decision} by {who(spec)} ({source}) did not count: {why}", type_="Warning")
        purpose = keyed_purpose("refused", approval["metadata"]["name"])
        text = confirmation.refusal_comment(run.issue_key, decision, who(spec), source, why)
        merged.update(commentio.post(deps, RunView({**run.body, "status": {**run.status, "comments": merged}}),
                                    purpose, text))
    return merged


def who(spec: dict[str, Any]) -> str:
    return str(spec.get("approver") or "?")


def summary(refused: list[Refusal]) -> str:
    return "; ".join(f"{who(a.get('spec') or {})}: {why}" for a, why in refused)
