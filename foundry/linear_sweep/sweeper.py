"""One sweep round: read what changed in Linear since the cursor and feed the webhooks' commands.

A round, under the lease (foundry.linear_sweep.state):
1. issues that carry the trigger, updated since the issues cursor (minus an
   overlap, so a change that became visible late is not skipped), page by
   page → `commands.intake` for each that a webhook would have started;
2. `/foundry` comments on issues with an active run, created since the
   comments cursor (and after the run began) → `commands.decide`;
3. the cursors move forward by compare-and-set, and the round's start becomes
   `covered_until`, which the lag metric reads.

Anything that stops a round early (Linear's rate limit or a budget running
low, the database or API server down) leaves the cursors where they were, so
the next round reads the same window again. Every command is idempotent, so
reading a window twice changes nothing.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from sqlalchemy import Engine

from foundry.bridge import commands
from foundry.bridge.commands import Backend, Refused, Unavailable
from foundry.bridge.mapping import BadPayload, Decision, Intake, parse_time
from foundry.connectors.errors import ConnectorError, RateLimited
from foundry.domain.triggers import Trigger, TriggerRule
from foundry.linear_sweep import queries, state
from foundry.linear_sweep.decide import NeedsHistory, changed_since, decision_command, issue_command
from foundry.linear_sweep.metrics import SweepMetrics

log = logging.getLogger("foundry.bridge.sweep")  # the bridge process logs it with its own lines

SWEEP_NAME = "linear"
HISTORY_PAGES = 4  # a ticket edited more than this many pages of times since its last run has changed
SETTLED_MAX = 2048  # issues whose history said "only moved", remembered so it is not read every round
APPLIED_MAX = 4096  # comments this replica already fed, so the overlap does not re-send them every round


@dataclass(frozen=True)
class SweepSettings:
    interval: float = 60.0  # seconds between rounds
    overlap: float = 30.0  # each round re-reads this much before the cursor
    lookback: float = 24 * 3600.0  # where the very first round starts
    team: str | None = None  # a team key: only its issues
    # Stop a round while this much budget is left: the operator may share the API key.
    reserve_requests: int = 100
    reserve_complexity: int = 10_000

    @property
    def lease(self) -> timedelta:
        # Renewed after every page; long enough that a slow page does not lose it.
        return timedelta(seconds=max(60.0, 3 * self.interval))


@dataclass
class Round:
    """What one round did: outcome is swept | skipped | rate_limited | unavailable | failed | lost_lease."""

    outcome: str
    wait: float | None = None  # seconds Linear asked us to wait before the next request
    counts: dict[str, int] = field(default_factory=dict)
    detail: str | None = None

    def count(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1


class _Stop(Exception):
    def __init__(self, outcome: str, detail: str, wait: float | None = None) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail
        self.wait = wait


class Sweeper:
    """Runs rounds; blocking (the loop runs it in a thread of its own)."""

    def __init__(self, linear: Any, backend: Backend, engine: Engine, rule: TriggerRule, settings: SweepSettings,
                 metrics: SweepMetrics, *, holder: str, clock: Callable[[], datetime] | None = None,
                 name: str = SWEEP_NAME) -> None:
        self.linear = linear  # foundry.connectors.linear.LinearClient
        self.backend = backend
        self.engine = engine
        self.rule = rule
        self.settings = settings
        self.metrics = metrics
        self.holder = holder
        self.name = name  # the row in foundry_sweeps (one per Linear workspace)
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self._settled: OrderedDict[str, str] = OrderedDict()
        self._applied: OrderedDict[str, str] = OrderedDict()  # comment id -> the run it was applied to

    # ------------------------------------------------------------ one round

    def run_once(self) -> Round:
        started = self.clock()
        t0 = time.monotonic()
        try:
            lease = state.acquire(self.engine, self.name, self.holder, started, self.settings.lease)
        except Exception as exc:  # noqa: BLE001 - the database is down: the next round tries again
            return self._finish(Round("unavailable", detail=f"database: {type(exc).__name__}"))
        if lease is None:
            self.metrics.covered(self._covered())
            return self._finish(Round("skipped", detail="another replica holds the sweep lease"))
        result = Round("swept")
        try:
            issues_after = self._sweep_issues(lease, started, result)
            comments_after = self._sweep_comments(lease, started, result)
            moved = state.advance(self.engine, lease, self.holder, self.clock(), issues_after=issues_after,
                                  comments_after=comments_after, covered_until=started)
            if not moved:
                result.outcome, result.detail = "lost_lease", "the lease ran out before the cursors could move"
            else:
                self.metrics.covered(started)
                self.metrics.duration.observe(time.monotonic() - t0)
        except _Stop as stop:
            result.outcome, result.detail, result.wait = stop.outcome, stop.detail, stop.wait
        except Unavailable as exc:
            result.outcome, result.detail = "unavailable", str(exc)
        except Exception as exc:  # noqa: BLE001 - logged; the cursors stay, the next round retries
            log.exception("sweep round failed")
            result.outcome, result.detail = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            try:
                state.release(self.engine, self.name, self.holder, self.clock())
            except Exception:  # noqa: BLE001 - the lease runs out by itself
                log.warning("could not release the sweep lease; it ends by itself")
        return self._finish(result)

    def _finish(self, result: Round) -> Round:
        self.metrics.rounds.labels(result.outcome).inc()
        level = logging.INFO if result.outcome in ("swept", "skipped") else logging.WARNING
        log.log(level, "sweep round %s", result.outcome,
                extra={"fields": {"outcome": result.outcome, "detail": result.detail, **result.counts}})
        return result

    def _covered(self) -> datetime | None:
        try:
            current = state.read(self.engine, self.name)
        except Exception:  # noqa: BLE001 - the metric keeps its last value
            return None
        return current.covered_until if current else None

    # ------------------------------------------------------------ Linear

    def _query(self, operation: str, target: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        budget = self.linear.last_budget
        now = time.time()
        low = ((budget.requests_remaining is not None and budget.requests_remaining <= self.settings.reserve_requests)
               or (budget.complexity_remaining is not None
                   and budget.complexity_remaining <= self.settings.reserve_complexity + (budget.complexity or 0)))
        if low and (budget.reset_at is None or budget.reset_at > now):
            wait = None if budget.reset_at is None else budget.reset_at - now
            raise _Stop("rate_limited", "Linear budget at its reserve", wait)
        self.metrics.requests.inc()
        try:
            return self.linear.query(operation, target, query, variables)
        except RateLimited as err:
            raise _Stop("rate_limited", str(err), err.retry_after) from err
        except ConnectorError as err:
            raise _Stop("failed", str(err)) from err

    def _renew(self) -> None:
        if not state.renew(self.engine, self.name, self.holder, self.clock(), self.settings.lease):
            raise _Stop("lost_lease", "another replica took the sweep lease")

    def _since(self, cursor: datetime | None, started: datetime) -> datetime:
        if cursor is None:
            return started - timedelta(seconds=self.settings.lookback)
        return cursor - timedelta(seconds=self.settings.overlap)

    # ------------------------------------------------------------ issues → intake

    def _sweep_issues(self, lease: state.SweepState, started: datetime, result: Round) -> datetime | None:
        newest = lease.issues_after
        flt = queries.issue_filter(self.rule, self._since(lease.issues_after, started), self.settings.team)
        after: str | None = None
        while True:
            data = self._query("sweep_issues", "issues", queries.ISSUES_QUERY,
                               {"filter": flt, "first": queries.ISSUE_PAGE, "after": after})
            nodes, after = queries.page_of(data, "issues")
            last = state.last_runs(self.engine, [n["id"] for n in nodes if isinstance(n.get("id"), str)])
            for node in nodes:
                result.count("issues")
                self._issue(node, last.get(node.get("id")), result)
                try:
                    at = parse_time(node.get("updatedAt"), "issue.updatedAt")
                except BadPayload:
                    continue
                newest = at if newest is None or at > newest else newest
            if after is None:
                return newest
            self._renew()

    def _issue(self, node: dict[str, Any], last: state.LastRun | None, result: Round) -> None:
        try:
            command = issue_command(node, self.rule, last)
        except BadPayload as exc:
            self._counted(result, "intake", "bad_payload", f"issue {str(node.get('id'))[:64]}: {exc}")
            return
        if isinstance(command, NeedsHistory):
            issue_id, updated = command.intake.ticket.issue_id, str(node.get("updatedAt"))
            if self._settled.get(issue_id) == updated:
                command = None
            elif changed_since(self._history(issue_id, command.after), command.after):
                command = command.intake
            else:
                self._settle(issue_id, updated)
                command = None
        if not isinstance(command, Intake):
            self._counted(result, "intake", "ignored")
            return
        ticket = command.ticket
        trigger = Trigger("sweep", f"linear-sweep/{ticket.issue_id}@{ticket.updated_at.isoformat()}", received_at=self.clock())
        try:
            outcome = commands.intake(self.backend, command, trigger)
        except Refused as exc:
            self._counted(result, "intake", "refused", f"issue {ticket.issue_key}: {exc.reason}")
            return
        self._counted(result, "intake", outcome.status)
        if outcome.status == "created":
            log.info("sweep created %s for %s", outcome.run, ticket.issue_key)

    def _history(self, issue_id: str, after: datetime) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(HISTORY_PAGES):
            data = self._query("sweep_history", issue_id, queries.HISTORY_QUERY,
                               {"id": issue_id, "first": queries.HISTORY_PAGE, "after": cursor})
            nodes, cursor = queries.page_of(data, "issue", "history")
            entries.extend(nodes)
            older = [n for n in nodes if _time_or_none(n.get("createdAt")) is not None
                     and _time_or_none(n.get("createdAt")) <= after]  # type: ignore[operator]
            if cursor is None or older:
                return entries
        # More changes than we read since the last run: certainly not only a state move.
        return entries + [{"createdAt": queries.iso(self.clock()), "updatedDescription": True}]

    def _settle(self, issue_id: str, updated: str) -> None:
        self._settled[issue_id] = updated
        self._settled.move_to_end(issue_id)
        while len(self._settled) > SETTLED_MAX:
            self._settled.popitem(last=False)

    # ------------------------------------------------------------ comments → decisions

    def _sweep_comments(self, lease: state.SweepState, started: datetime, result: Round) -> datetime | None:
        newest = lease.comments_after
        active = state.active_runs(self.engine)
        if not active:
            return newest
        # Comments older than a run do not count for it, so the oldest active run bounds the window.
        since = max(self._since(lease.comments_after, started), min(active.values()))
        ids = sorted(active)
        for start in range(0, len(ids), queries.ISSUES_PER_COMMENT_QUERY):
            flt = queries.comment_filter(ids[start:start + queries.ISSUES_PER_COMMENT_QUERY], since)
            after: str | None = None
            while True:
                self._renew()
                data = self._query("sweep_comments", "comments", queries.COMMENTS_QUERY,
                                   {"filter": flt, "first": queries.COMMENT_PAGE, "after": after})
                nodes, after = queries.page_of(data, "comments")
                for node in nodes:
                    result.count("comments")
                    self._comment(node, active, result)
                    at = _time_or_none(node.get("createdAt"))
                    if at is not None and (newest is None or at > newest):
                        newest = at
                if after is None:
                    break
        return newest

    def _comment(self, node: dict[str, Any], active: dict[str, datetime], result: Round) -> None:
        issue = node.get("issue") if isinstance(node.get("issue"), dict) else {}
        try:
            command = decision_command(node, self.rule, active.get(issue.get("id")))
        except BadPayload as exc:
            self._counted(result, "decision", "bad_payload", f"comment {str(node.get('id'))[:64]}: {exc}")
            return
        if not isinstance(command, Decision):
            self._counted(result, "decision", "ignored")
            return
        comment_id = str(node.get("id"))
        if comment_id in self._applied:
            # Fed in an earlier round (the overlap reads it again): the approval exists already.
            result.count("decision_seen")
            return
        try:
            outcome = commands.decide(self.backend, command)
        except Refused as exc:
            self._counted(result, "decision", "refused", f"comment {comment_id[:64]}: {exc.reason}")
            return
        self._counted(result, "decision", outcome.status)
        if outcome.status == "applied" and outcome.run:
            self._applied[comment_id] = outcome.run
            while len(self._applied) > APPLIED_MAX:
                self._applied.popitem(last=False)

    def _counted(self, result: Round, command: str, outcome: str, problem: str | None = None) -> None:
        result.count(f"{command}_{outcome}")
        self.metrics.commands.labels(command, outcome).inc()
        if problem:
            log.warning("sweep: %s %s: %s", command, outcome, problem)


def _time_or_none(value: Any) -> datetime | None:
    try:
        return parse_time(value, "createdAt")
    except BadPayload:
        return None
