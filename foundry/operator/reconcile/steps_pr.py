"""PR and remediation: PROpen / ReviewRequired (and AgentRunning once a PR
exists). GitHub is the truth; every decision is made on a fresh read
(prtruth.fetch, which also refuses a PR on the branch that is not Foundry's).

- merged → Complete; closed unmerged → Closed (`ending`);
- every new head SHA: the diff check (a forbidden path, also as a rename's old
  path or a deletion, or a workflow file → Blocked, sticky; risky area not
  approved, too many files or lines, files outside the plan → ReviewRequired);
- plan drift (foundry.domain.drift): the PlanDrift condition names the files
  outside the approved plan (a Warning Event when it starts naming them);
  out-of-plan files in a risk area the approvals did not cover → Blocked
  (PlanDrift), with the one "blocked" ticket comment saying which and why;
  the PR body carries one "Plan drift" section saying the same (`flag_drift`);
- CI failed or changes requested → a new agent attempt on the same branch,
  keyed by the failing head SHA (the same failure seen twice makes one retry),
  within the retry and budget caps, else ReviewRequired. The attempt is told
  what fails (foundry.operator.reconcile.feedback).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

from foundry.connectors.errors import ConnectorError
from foundry.domain import comment_text as texts
from foundry.domain import drift as plan_drift
from foundry.domain import policy
from foundry.domain.phases import Phase
from foundry.operator.reconcile import agentio, commentio, feedback
from foundry.operator.reconcile.outcome import Outcome, Stay, Transition
from foundry.operator.reconcile.prtruth import PRTruth, fetch
from foundry.operator.reconcile.view import RunView
from foundry.operator.status import PLAN_DRIFT, differs, plan_drift_condition

if TYPE_CHECKING:
    from foundry.operator.deps import Deps

log = logging.getLogger(__name__)

# PR bodies GitHub refused for good in this process (a token that may only read PRs, say):
# (namespace, run, PR number, sha256 of the body asked for). Not asked again each pass; bounded.
_REFUSED_MAX = 4096
_refused: "OrderedDict[tuple[str, str, int, str], None]" = OrderedDict()
_refused_lock = threading.Lock()

def watch_pr(deps: "Deps", run: RunView) -> Outcome:
    truth = fetch(deps, run)
    if truth is None:
        return Stay(status=synced(deps, run, None))  # the PR vanished from view; keep waiting
    return ending(deps, run, truth) or judge(deps, run, truth)


def synced(deps: "Deps", run: RunView, truth: PRTruth | None) -> dict:
    """The status fields every PR-phase decision records: the PR as GitHub
    has it now, and the agent attempts as the provider has them now."""
    status = {"lastSyncedAt": deps.clock().strftime("%Y-%m-%dT%H:%M:%SZ")}
    if truth is not None:
        status["pr"] = truth.status(run.branch)
    jobs = agentio.refreshed_jobs(deps, run)
    changes: dict[str, int] = {}
    if truth is not None and not any(j.get("headSha") == truth.head_sha for j in jobs):
        # A head no recorded attempt pushed: a human's, or an attempt's whose start was never
        # recorded (the operator died between creating its Job and writing the status, and by
        # the time a successor looked the attempt had pushed, so no step replayed its start).
        stray = agentio.unrecorded(deps, run)
        if stray is not None:
            jobs = agentio.with_job(jobs, stray)
            changes["attempt"] = int(stray["attempt"])
    if jobs != run.jobs or changes:
        status["agent"] = agentio.agent_status(run.agent, jobs, **changes)
    return status


def ending(deps: "Deps", run: RunView, truth: PRTruth) -> Transition | None:
    """Merged → Complete, closed → Closed, each with its one closing comment."""
    if truth.state != "closed" and not truth.merged:
        return None
    base = synced(deps, run, truth)
    _stop_agent(deps, run, base)
    base["comments"] = commentio.post(deps, run, "done", texts.done(run.issue_key, truth.number, truth.url,
                                                                  merged=truth.merged))
    if truth.merged:
        return Transition(Phase.COMPLETE, "Merged", f"PR #{truth.number} merged", status=base)
    return Transition(Phase.CLOSED, "ClosedUnmerged", f"PR #{truth.number} closed without merging",
                      status=base, warning=True)


def _stop_agent(deps: "Deps", run: RunView, base: dict) -> None:
    """The run is ending: an agent still at work on the branch is cancelled (recorded in `base`)."""
    agent = base.get("agent", run.agent)
    jobs = agentio.cancel_running(deps, run, agent.get("jobs") or [])
    if jobs != (agent.get("jobs") or []):
        base["agent"] = agentio.agent_status(agent, jobs)


def judge(deps: "Deps", run: RunView, truth: PRTruth) -> Outcome:
    """Decide on an open PR whose head is not being remediated."""
    base = synced(deps, run, truth)
    verdict = policy.check_diff(deps.config, list(truth.files), run.status.get("plan") or {},
                                list(run.status.get("riskAreas") or []), changes=truth.changes)
    drift = plan_drift_condition(verdict.drift)
    drifts = [drift] if differs(run.status.get("conditions"), drift) else []
    flag_drift(deps, run, truth, verdict.drift)
    if verdict.kind == "blocked":
        _stop_agent(deps, run, base)
        base["comments"] = commentio.post(deps, run, "blocked", texts.blocked(run.issue_key, verdict.reason))
        # The transition's own Event says it (reason PlanDrift when drift is the cause).
        return Transition(Phase.BLOCKED, verdict.cause or "ForbiddenPath", verdict.reason, status=base,
                          warning=True, conditions=drifts)
    if "pr_opened" not in run.comments:
        # The ticket hears of the PR once, whatever the first verdict on it:
        # one that waits for review is news too.
        base["comments"] = commentio.post(deps, run, "pr_opened", texts.pr_opened(
            run.issue_key, truth.number, truth.url, run.branch, run.attempt or 1))
    outcome = _decide(deps, run, truth, verdict, base)
    if drifts:
        outcome.conditions.extend(drifts)
        if drift.status:  # people hear of drift once, when the condition starts naming these paths
            outcome.events.append((PLAN_DRIFT, drift.message, True))
    return outcome


def flag_drift(deps: "Deps", run: RunView, truth: PRTruth, drift: plan_drift.Drift) -> None:
    """The PR body's "Plan drift" section as this head's diff says: written when it differs
    from what the body has (so once per change, and again after a remediation's runner
    rewrote the body), taken out when the head is back within the plan. The condition is
    the record; the body is for whoever reads the PR, so a failed edit is logged and tried
    again at the next pass rather than holding the run, and a refused one (not retryable)
    is not asked again for the same body."""
    body = plan_drift.pr_body_with(truth.body, drift)
    if body == truth.body:
        return
    key = (run.namespace, run.name, truth.number, hashlib.sha256(body.encode()).hexdigest())
    with _refused_lock:
        if key in _refused:
            return
    repo = deps.config.repositories[run.status["repo"]].github
    try:
        deps.github.update_pull(repo, truth.number, body=body)
    except ConnectorError as err:
        log.warning("run %s/%s: could not flag plan drift in the body of PR #%s: %s",
                    run.namespace, run.name, truth.number, err)
        if not err.retryable:
            with _refused_lock:
                _refused[key] = None
                while len(_refused) > _REFUSED_MAX:
                    _refused.popitem(last=False)


def _decide(deps: "Deps", run: RunView, truth: PRTruth, verdict: policy.DiffVerdict, base: dict) -> Outcome:
    if verdict.kind == "review":
        return _stay_or_move(run, Phase.REVIEW_REQUIRED, "DiffNeedsReview", verdict.reason, base)
    failing = truth.checks == "failure" or truth.review == "changes_requested"
    if failing and truth.head_sha not in run.remediations:
        return remediate(deps, run, truth, base)
    if failing:
        # Already retried this SHA and the agent gave up without a new commit.
        return _stay_or_move(run, Phase.REVIEW_REQUIRED, "RemediationDidNotHelp",
                             f"head {truth.head_sha[:12]} still fails after attempt "
                             f"{run.remediations[truth.head_sha]}", base)
    message = f"PR #{truth.number} open, checks {truth.checks}, review {truth.review}"
    return _stay_or_move(run, Phase.PR_OPEN, "PROpened", message, base)


def remediate(deps: "Deps", run: RunView, truth: PRTruth, base: dict) -> Outcome:
    attempt = run.attempt + 1
    verdict = agentio.gate(deps, run, attempt, base.get("agent", run.agent).get("jobs") or [])
    why = "CI failed" if truth.checks == "failure" else "changes requested"
    if not verdict.allowed:
        # Name the cap that stopped it: the retry cap counts retries, the budget cap all attempts.
        cap = "RetryCapReached" if attempt - 1 > deps.config.policy.retry_cap else "BudgetCapReached"
        return _stay_or_move(run, Phase.REVIEW_REQUIRED, cap, f"{why}; {verdict.reason}", base)
    # What fails is read first: between cancelling the running attempt and recording
    # the new one, as little as possible should happen.
    repo = deps.config.repositories[run.status["repo"]].github
    told = feedback.gather(deps, repo, truth, why)
    # One agent on the branch at a time: the new attempt replaces a running one.
    jobs = agentio.cancel_running(deps, run, base.get("agent", run.agent).get("jobs") or [])
    record = agentio.start(deps, run, attempt, pr_number=truth.number, feedback=told)
    agent = agentio.agent_status(run.agent, agentio.with_job(jobs, record), attempt=attempt)
    base.update({"agent": agent, "remediations": {**run.remediations, truth.head_sha: attempt}})
    return Transition(Phase.AGENT_RUNNING, "Remediating", f"{why} on {truth.head_sha[:12]}: attempt {attempt}",
                      status=base)


def _stay_or_move(run: RunView, phase: Phase, reason: str, message: str, status: dict) -> Outcome:
    if run.phase == phase:
        if (status.get("pr") == run.pr and status.get("comments", run.comments) == run.comments
                and "agent" not in status):
            return Stay(status={"lastSyncedAt": status["lastSyncedAt"]})
        return Stay(status=status)
    return Transition(phase, reason, message, status=status, warning=phase == Phase.REVIEW_REQUIRED)
