"""Linear's rate limits, for the Linear stand-in: two leaky buckets and the query complexity.

What Linear documents (developers/rate-limiting): every API key has a request
budget and a complexity budget per hour, each a leaky bucket refilled at a
constant `limit / period`. A query's complexity is 0.1 point per scalar field,
1 point per object, and a connection multiplies what it holds by its `first`
argument (50 when absent), rounded up. Every answer carries the budgets'
state in `X-RateLimit-Requests-*`, `X-RateLimit-Complexity-*` (resets in epoch
milliseconds) and the query's own cost in `X-Complexity`. A request that does
not fit is refused with HTTP 400 and a GraphQL error with code RATELIMITED
(and `statusCode: 429` in its extensions).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import graphql

DEFAULT_FIRST = 50
# Documented defaults for an API key (they change; tests set their own).
REQUESTS_PER_HOUR = 5_000
COMPLEXITY_PER_HOUR = 250_000


def query_complexity(document: graphql.DocumentNode, variables: dict[str, Any],
                     operation_name: str | None = None) -> int:
    """The complexity of the operation Linear would run, by its documented rule."""
    for definition in document.definitions:
        if isinstance(definition, graphql.OperationDefinitionNode):
            if operation_name and (definition.name is None or definition.name.value != operation_name):
                continue
            return max(1, math.ceil(round(_cost(definition.selection_set, variables), 6)))  # no float dust
    return 1


def _cost(selection_set: graphql.SelectionSetNode, variables: dict[str, Any]) -> float:
    total = 0.0
    for selection in selection_set.selections:
        if not isinstance(selection, graphql.FieldNode) or selection.name.value.startswith("__"):
            continue
        if selection.selection_set is None:
            total += 0.1
            continue
        inner = _cost(selection.selection_set, variables)
        if _is_connection(selection):
            inner *= _first(selection, variables)
        total += 1 + inner
    return total


def _is_connection(field: graphql.FieldNode) -> bool:
    assert field.selection_set is not None
    names = {s.name.value for s in field.selection_set.selections if isinstance(s, graphql.FieldNode)}
    return "nodes" in names or "edges" in names or any(a.name.value == "first" for a in field.arguments or ())


def _first(field: graphql.FieldNode, variables: dict[str, Any]) -> int:
    for argument in field.arguments or ():
        if argument.name.value == "first":
            value = graphql.value_from_ast_untyped(argument.value, variables)
            if isinstance(value, int) and value > 0:
                return value
    return DEFAULT_FIRST


class LeakyBucket:
    """`limit` tokens, refilled continuously at `limit / period` per second."""

    def __init__(self, limit: float, period: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.period = period
        self._clock = clock
        self._level = float(limit)
        self._at = clock()

    def _refill(self) -> float:
        now = self._clock()
        self._level = min(self.limit, self._level + (now - self._at) * self.limit / self.period)
        self._at = now
        return now

    def take(self, amount: float) -> bool:
        self._refill()
        if self._level < amount:
            return False
        self._level -= amount
        return True

    def remaining(self) -> int:
        self._refill()
        return int(self._level)

    def full_at(self) -> float:
        """When the bucket is full again (epoch seconds)."""
        now = self._refill()
        return now + (self.limit - self._level) * self.period / self.limit


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    complexity: int
    headers: dict[str, str]


class RateLimits:
    """The request and complexity buckets of one API key."""

    def __init__(self, *, requests: float = REQUESTS_PER_HOUR, complexity: float = COMPLEXITY_PER_HOUR,
                 period: float = 3600.0, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self.requests = LeakyBucket(requests, period, clock)
        self.complexity = LeakyBucket(complexity, period, clock)
        self.refused = 0

    def admit(self, cost: int) -> Verdict:
        """Charge one request of complexity `cost`, or refuse it without charging anything."""
        with self._lock:
            allowed = self.requests.remaining() >= 1 and self.complexity.remaining() >= cost
            if allowed:
                self.requests.take(1)
                self.complexity.take(cost)
            else:
                self.refused += 1
            headers = {
                "X-RateLimit-Requests-Limit": str(int(self.requests.limit)),
                "X-RateLimit-Requests-Remaining": str(self.requests.remaining()),
                "X-RateLimit-Requests-Reset": str(int(self.requests.full_at() * 1000)),
                "X-RateLimit-Complexity-Limit": str(int(self.complexity.limit)),
                "X-RateLimit-Complexity-Remaining": str(self.complexity.remaining()),
                "X-RateLimit-Complexity-Reset": str(int(self.complexity.full_at() * 1000)),
                "X-Complexity": str(cost),
            }
            return Verdict(allowed, cost, headers)
