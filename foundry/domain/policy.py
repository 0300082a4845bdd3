"""The policy: who may approve, when work may start, what a diff may touch, when to retry.

Default deny throughout: an approval counts only from a configured approver
whose roles cover every risky area of the run; work starts only when every
condition of the gate holds; a retry happens only within both caps (the PR
step, foundry.operator.reconcile.steps_pr, retries a failing head SHA once).

Rules in one place:
- *Covering*: for each of the run's risk areas that `policy.roles_required`
  names, the approver holds at least one of that area's roles. Areas without
  an entry need no particular role. Each approver is judged alone, so N-of-M
  means N people who may each sign off on the whole change.
- *Distinct*: approvals are counted per configured person, whatever the
  source (a Kubernetes user and a Linear email of the same person count once).
- *Caps*: attempt n is allowed when n - 1 <= retry_cap (retries after the
  first) and n <= budget_cap (attempts in total), and when the attempts already
  used leave budget for one more: fewer attempts than budget_cap, and less
  spent (cost and tokens summed from the attempts' results) than
  policy.budget_usd / policy.budget_tokens when those are set.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from foundry.config import Approver, FoundryConfig
from foundry.domain.drift import Drift, plan_drift, shown
from foundry.domain.risk import areas_from_paths, areas_of_path

OK = "ok"
REVIEW_REQUIRED = "review_required"
BLOCKED = "blocked"

DECISIONS = ("approve", "reject", "stop", "replan")
SOURCES = ("kubernetes", "linear")


@dataclass(frozen=True)
class Verdict:
    """allowed, and the reason (why not, or what allowed it)."""

    allowed: bool
    reason: str
    approver: str | None = None  # the configured approver's name, when one was identified


# ---------------------------------------------------------------- identities and roles


def find_approver(cfg: FoundryConfig, identity: str, source: str) -> Approver | None:
    """The configured approver behind `identity` as `source` knows it (Linear ids/emails compare case-insensitively)."""
    if not isinstance(identity, str) or not identity.strip():
        return None
    ident = identity.strip()
    for a in cfg.approvers:
        if source == "kubernetes" and a.kubernetes is not None and a.kubernetes == ident:
            return a
        if source == "linear" and a.linear is not None and a.linear.lower() == ident.lower():
            return a
    return None


def missing_roles(cfg: FoundryConfig, approver: Approver, areas: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Risk area → the roles it needs, for each area the approver does not cover (empty: covers all)."""
    held = set(approver.roles)
    out: dict[str, tuple[str, ...]] = {}
    for area in areas:
        needed = cfg.policy.roles_required.get(area)
        if needed and not held.intersection(needed):
            out[area] = tuple(needed)
    return out


def who_may_approve(cfg: FoundryConfig, areas: Iterable[str]) -> tuple[Approver, ...]:
    """The configured approvers whose roles cover all of `areas`."""
    areas = tuple(areas)
    return tuple(a for a in cfg.approvers if not missing_roles(cfg, a, areas))


def required_approvals(cfg: FoundryConfig, areas: Iterable[str] = ()) -> int:
    """How many distinct approvals a run needs. Areas change who counts, not how many."""
    return cfg.policy.approvals_required


def may_decide(cfg: FoundryConfig, identity: str, source: str, decision: str) -> Verdict:
    """Whether `identity` (as `source` knows it) may make `decision` at all.

    Any configured approver may reject or stop (stopping work needs no special
    role); approving additionally needs covering roles, which tally_approvals checks.
    """
    if decision not in DECISIONS:
        return Verdict(False, f"unknown decision {decision!r}")
    if source not in SOURCES:
        return Verdict(False, f"unknown approval source {source!r}")
    person = find_approver(cfg, identity, source)
    if person is None:
        return Verdict(False, f"{identity!r} ({source}) is not a configured approver")
    return Verdict(True, f"{person.name} is a configured approver", person.name)


# ---------------------------------------------------------------- approvals


@dataclass(frozen=True)
class Tally:
    """The approvals that count toward a run, and why the others do not."""

    required: int
    received: int
    approvers: list[dict[str, Any]]  # [{name, roles, source, at}] for status.approvals.approvers
    refused: list[tuple[str, str]]  # (identity as given, reason)
    satisfied: bool
    eligible: tuple[str, ...] = field(default_factory=tuple)  # names who could approve


def tally_approvals(cfg: FoundryConfig, decisions: Sequence[Mapping[str, Any]], areas: Iterable[str]) -> Tally:
    """Count approve decisions (FoundryApproval specs: approver, source, decision; optional `at`).

    Distinct configured approvers whose roles cover `areas`; others are refused
    with a reason. Non-approve decisions are ignored here (see may_decide).
    """
    areas = tuple(areas)
    required = required_approvals(cfg, areas)
    counted: dict[str, dict[str, Any]] = {}
    refused: list[tuple[str, str]] = []
    refused_seen: set[tuple[str, str]] = set()

    def refuse(who: str, why: str) -> None:
        if (who, why) not in refused_seen:
            refused_seen.add((who, why))
            refused.append((who, why))

    for d in decisions:
        if d.get("decision") != "approve":
            continue
        identity = str(d.get("approver") or "")
        source = str(d.get("source") or "")
        verdict = may_decide(cfg, identity, source, "approve")
        if not verdict.allowed:
            refuse(identity, verdict.reason)
            continue
        person = find_approver(cfg, identity, source)
        assert person is not None  # may_decide found it
        gaps = missing_roles(cfg, person, areas)
        if gaps:
            why = "; ".join(f"{area} needs one of the roles {', '.join(roles)}" for area, roles in gaps.items())
            refuse(identity, f"{person.name} lacks a required role: {why}")
            continue
        if person.name not in counted:
            entry: dict[str, Any] = {"name": person.name, "roles": list(person.roles), "source": source}
            if d.get("at"):
                entry["at"] = str(d["at"])
            counted[person.name] = entry
    approvers = sorted(counted.values(), key=lambda e: e["name"])
    received = len(approvers)
    eligible = tuple(a.name for a in who_may_approve(cfg, areas))
    return Tally(required, received, approvers, refused, received >= required, eligible)


# ---------------------------------------------------------------- the dispatch gate


def spend_exceeded(cfg: FoundryConfig, spent: Mapping[str, Any] | None) -> str | None:
    """Why the run's spend (status.agent.budgetUsed: costUsd, tokens {input, output}) leaves
    no room for another attempt under policy.budget_usd / budget_tokens; None when it does."""
    if not isinstance(spent, Mapping):
        return None
    p = cfg.policy
    cost = float(spent.get("costUsd") or 0)
    tokens = spent.get("tokens") if isinstance(spent.get("tokens"), Mapping) else {}
    used = int(tokens.get("input") or 0) + int(tokens.get("output") or 0)
    if p.budget_usd is not None and cost >= p.budget_usd:
        return f"budget cap reached: ${cost:.4f} spent of ${p.budget_usd:.2f}"
    if p.budget_tokens is not None and used >= p.budget_tokens:
        return f"budget cap reached: {used} tokens used of {p.budget_tokens}"
    return None


def attempt_allowed(cfg: FoundryConfig, attempt: int, budget_used: float = 0,
                    spent: Mapping[str, Any] | None = None) -> Verdict:
    """Whether agent attempt `attempt` fits the retry and budget caps (see module doc);
    `spent` is what earlier attempts cost (status.agent.budgetUsed)."""
    p = cfg.policy
    if attempt < 1:
        return Verdict(False, f"attempt must be at least 1, got {attempt}")
    if attempt - 1 > p.retry_cap:
        return Verdict(False, f"retry cap reached: attempt {attempt} would be retry {attempt - 1}, cap {p.retry_cap}")
    if attempt > p.budget_cap or budget_used + 1 > p.budget_cap:
        used = max(attempt - 1, int(budget_used))
        return Verdict(False, f"budget cap reached: {used} agent attempt(s) used of {p.budget_cap}")
    over = spend_exceeded(cfg, spent)
    if over is not None:
        return Verdict(False, over)
    return Verdict(True, f"attempt {attempt} within caps (retry cap {p.retry_cap}, budget cap {p.budget_cap})")


def gate(
    cfg: FoundryConfig,
    *,
    approved: bool,
    ready: bool,
    repo: str | None,
    risk_areas: Iterable[str],
    attempt: int,
    budget_used: float = 0,
    spent: Mapping[str, Any] | None = None,
) -> Verdict:
    """May agent attempt `attempt` start? Every condition must hold; the first failing one is the reason."""
    if not approved:
        return Verdict(False, "no sufficient approval is recorded")
    if not ready:
        return Verdict(False, "the ticket is not ready (open clarification questions)")
    if not repo:
        return Verdict(False, "no repository was routed")
    if repo not in cfg.repositories:
        return Verdict(False, f"repository {repo!r} is not configured")
    forbidden = [a for a in risk_areas if a in cfg.policy.forbidden_risks]
    if forbidden:
        return Verdict(False, f"risk area(s) {', '.join(forbidden)} are forbidden by policy")
    return attempt_allowed(cfg, attempt, budget_used, spent)


# ---------------------------------------------------------------- the diff check


@dataclass(frozen=True)
class DiffVerdict:
    """outcome: ok | review_required | blocked (blocked is sticky); reasons explain it."""

    outcome: str
    reasons: tuple[str, ...]
    areas: tuple[str, ...]  # risk areas the diff touches
    drift: Drift = Drift(judged=False)  # the paths outside the plan (foundry.domain.drift)
    cause: str = ""  # why blocked, for status.reason: ForbiddenPath | PlanDrift

    @property
    def kind(self) -> str:
        """Short form: blocked | review | ok."""
        return "review" if self.outcome == REVIEW_REQUIRED else self.outcome

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "the change stays within the plan and policy"


def check_diff(
    cfg: FoundryConfig,
    files: Sequence[str],
    plan: Mapping[str, Any] | Sequence[str] | None = None,
    approved_areas: Iterable[str] = (),
    *,
    changes: Sequence[Mapping[str, Any]] | None = None,
) -> DiffVerdict:
    """Judge a pull request's changed files against policy and the approved plan.

    `plan` is status.plan (its `files` bound the scope) or just the planned
    file list; `approved_areas` are the run's risk areas the approval covered;
    `changes` are GitHub's file entries (status, previous_filename, additions,
    deletions) when known, so the runner's pre-push rules
    (foundry.domain.changes) apply again here, renames and deletions included.
    blocked: a path (or a rename's old path) matches policy.forbidden_paths, a
    workflow file changes without policy.allow_workflows, or the diff touches a
    forbidden risk area. review_required: the diff touches a risk area the
    approval did not cover, changes more than max_changed_files files or
    max_changed_lines lines, or changes files outside a plan that named files.
    Files outside the plan that are forbidden or in a risk area the approval
    did not cover block instead (cause PlanDrift; foundry.domain.drift).
    Otherwise ok.
    """
    from foundry.domain import changes as rules

    if isinstance(plan, Mapping):
        planned_files: Sequence[Any] = list(plan.get("files") or [])
    else:
        planned_files = list(plan or [])
    p = cfg.policy
    items = rules.from_github_files(changes) if changes else [rules.Change(path=f) for f in files]
    touched = list(dict.fromkeys(path for c in items for path in c.paths))
    areas = areas_from_paths(touched, cfg)
    verdict = rules.check_changes(items, rules.Constraints(
        forbidden_paths=p.forbidden_paths, max_changed_files=p.max_changed_files,
        max_changed_lines=p.max_changed_lines if changes else None, allow_workflows=p.allow_workflows))
    sticky = (rules.RULE_FORBIDDEN, rules.RULE_WORKFLOW)
    blocked = [v.message for v in verdict.violations if v.rule in sticky]
    forbidden_areas = [a for a in areas if a in p.forbidden_risks]
    if forbidden_areas:
        blocked.append(f"the change touches forbidden risk area(s) {', '.join(forbidden_areas)}")
    approved = set(approved_areas)
    # Every path counts, a rename's old one too: moving a file out of migrations/ touches migrations.
    drift = plan_drift(touched, planned_files, forbidden_paths=p.forbidden_paths,
                       areas_of=lambda path: areas_of_path(path, cfg), covered_areas=approved)
    if blocked:
        return DiffVerdict(BLOCKED, tuple(blocked), areas, drift, "ForbiddenPath")
    if drift.blocking:
        return DiffVerdict(BLOCKED, (drift.why_blocked(),), areas, drift, "PlanDrift")

    review: list[str] = []
    unapproved = [a for a in areas if a not in approved]
    if unapproved:
        review.append(f"the change touches {', '.join(unapproved)}, which the approval did not cover")
    review.extend(v.message for v in verdict.violations if v.rule not in sticky)
    if drift.drifted:
        review.append(f"files outside the plan: {shown(drift.outside, 5)}")
    if review:
        return DiffVerdict(REVIEW_REQUIRED, tuple(review), areas, drift)
    return DiffVerdict(OK, (), areas, drift)
