"""Leader election by Lease: the decisions, as pure functions of what was observed.

The rules are client-go's (k8s.io/client-go/tools/leaderelection):

- A Lease held by someone else is theirs until `leaseDurationSeconds` have
  passed since *this process saw the record change*. The holder's renewTime is
  not trusted: it is the holder's clock, and two nodes' clocks may disagree by
  more than a lease. A standby therefore times the lease on its own clock.
- A Lease with no holder (a clean release), or whose time ran out, may be
  taken; taking it counts a transition.
- The holder renews it every retry period. Each write carries the
  resourceVersion it was read at, so of two candidates writing the same
  record one gets a conflict and neither both win.
- The holder acts only until `renew deadline` has passed since the start of
  its last successful renewal (`still_leading`). The renew deadline is shorter
  than the lease duration, so the old holder has stopped before any standby's
  clock lets it take over.

Everything here is time in seconds on a monotonic clock, except the record's
own timestamps, which are only written (for people and for other tools).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime


@dataclass(frozen=True)
class LeaseRecord:
    """What a Lease's spec says (coordination.k8s.io/v1 LeaseSpec)."""

    holder: str | None
    lease_duration_seconds: int
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    transitions: int = 0

    @property
    def held(self) -> bool:
        return bool(self.holder)


@dataclass(frozen=True)
class Observation:
    """The record last read, and when (monotonic seconds) this process first saw it as it is."""

    record: LeaseRecord | None  # None: there is no Lease yet
    seen_at: float

    def after_read(self, record: LeaseRecord | None, now: float) -> "Observation":
        """The observation after a read at `now`: the clock restarts only if the record changed.

        A holder that renews changes renewTime, so an unchanged record means nobody
        renewed it since `seen_at`."""
        if record == self.record:
            return self
        return Observation(record, now)

    def expires_at(self) -> float:
        """When (on this process's clock) the observed holder's claim runs out."""
        if self.record is None or not self.record.held:
            return self.seen_at
        return self.seen_at + self.record.lease_duration_seconds


class Move(enum.Enum):
    CREATE = "create"  # no Lease: create it naming me
    ACQUIRE = "acquire"  # free or expired: take it over
    RENEW = "renew"  # mine: renew it
    WAIT = "wait"  # someone else's and still valid: look again later


@dataclass(frozen=True)
class Decision:
    move: Move
    # For WAIT: when (monotonic) the observed claim runs out, so a standby can look
    # again exactly then rather than up to a retry period later.
    until: float | None = None


def decide(observed: Observation, me: str, now: float) -> Decision:
    record = observed.record
    if record is None:
        return Decision(Move.CREATE)
    if record.holder == me:
        return Decision(Move.RENEW)
    if record.held and now < observed.expires_at():
        return Decision(Move.WAIT, until=observed.expires_at())
    return Decision(Move.ACQUIRE)


def next_record(current: LeaseRecord | None, move: Move, me: str, lease_duration: float,
                wall_now: datetime) -> LeaseRecord:
    """The record to write for `move` (CREATE, ACQUIRE or RENEW)."""
    duration = max(1, round(lease_duration))
    if move is Move.RENEW and current is not None:
        return replace(current, lease_duration_seconds=duration, renew_time=wall_now)
    transitions = 0 if current is None else current.transitions + 1
    return LeaseRecord(holder=me, lease_duration_seconds=duration, acquire_time=wall_now, renew_time=wall_now,
                       transitions=transitions)


def released(current: LeaseRecord, wall_now: datetime) -> LeaseRecord:
    """The record a leader writes when it stops cleanly: no holder, so a standby
    takes it at its next look instead of waiting the lease out. client-go writes
    the same (an empty holder, a one-second duration)."""
    return replace(current, holder=None, lease_duration_seconds=1, acquire_time=wall_now, renew_time=wall_now)


def still_leading(renewed_at: float | None, now: float, renew_deadline: float) -> bool:
    """Whether a holder whose last successful renewal started at `renewed_at` may still act.

    Timed from when the request was *sent*: the API server applied it at some
    moment after that, so a standby's clock for the lease started later still."""
    return renewed_at is not None and now - renewed_at < renew_deadline


def next_look(decision: Decision, now: float, retry_period: float) -> float:
    """Seconds until the next attempt: a retry period, or sooner if the observed claim runs out first."""
    if decision.move is Move.WAIT and decision.until is not None:
        return max(0.0, min(retry_period, decision.until - now))
    return retry_period
