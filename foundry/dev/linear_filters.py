"""Linear's filter semantics for the stand-in's `issues` and `comments` queries (pure functions).

The subset Foundry sends, with Linear's meaning: comparators (`eq`,
`eqIgnoreCase`, `in`, `nin`, `startsWith`, `containsIgnoreCase`; dates `eq`,
`gt`, `gte`, `lt`, `lte`), `and` / `or` lists, and on a collection of labels
`name` / `some` (at least one label matches) and `every`. Every key of one
filter object must hold. Facts are plain dicts built by the server:

    issue:   {"id", "createdAt", "updatedAt", "labels": [names], "state": {"name", "type"}, "team": {"id", "key"}}
    comment: {"createdAt", "updatedAt", "body", "issue": {"id"}}
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


class FilterError(ValueError):
    """A filter the stand-in cannot evaluate (Linear would answer with a validation error)."""


def _time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise FilterError(f"expected an ISO-8601 date, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise FilterError(f"expected an ISO-8601 date, got {value!r} (durations are not supported here)") from None
    if parsed.tzinfo is None:
        raise FilterError(f"date {value!r} has no time zone")
    return parsed


def match_string(comparator: dict[str, Any], value: str | None) -> bool:
    for op, wanted in comparator.items():
        if wanted is None:
            continue
        if op == "eq" and value != wanted:
            return False
        if op == "eqIgnoreCase" and (value is None or value.casefold() != wanted.casefold()):
            return False
        if op == "in" and value not in wanted:
            return False
        if op == "nin" and value in wanted:
            return False
        if op == "startsWith" and (value is None or not value.startswith(wanted)):
            return False
        if op == "containsIgnoreCase" and (value is None or wanted.casefold() not in value.casefold()):
            return False
    return True


def match_id(comparator: dict[str, Any], value: str) -> bool:
    if comparator.get("eq") is not None and value != comparator["eq"]:
        return False
    if comparator.get("in") is not None and value not in comparator["in"]:
        return False
    return True


def match_date(comparator: dict[str, Any], value: str) -> bool:
    at = _time(value)
    checks = {"eq": lambda w: at == w, "gt": lambda w: at > w, "gte": lambda w: at >= w,
              "lt": lambda w: at < w, "lte": lambda w: at <= w}
    for op, wanted in comparator.items():
        if wanted is not None and not checks[op](_time(wanted)):
            return False
    return True


def _label_collection(flt: dict[str, Any], names: list[str]) -> bool:
    for op, sub in flt.items():
        if sub is None:
            continue
        if op == "name" and not any(match_string(sub, n) for n in names):
            return False
        if op == "some" and not any(match_string(sub.get("name") or {}, n) for n in names):
            return False
        if op == "every" and not all(match_string(sub.get("name") or {}, n) for n in names):
            return False
    return True


def _logic(flt: dict[str, Any], facts: dict[str, Any], match: Any) -> bool:
    if flt.get("and") is not None and not all(match(f, facts) for f in flt["and"]):
        return False
    if flt.get("or") is not None and not any(match(f, facts) for f in flt["or"]):
        return False
    return True


def match_issue(flt: dict[str, Any] | None, issue: dict[str, Any]) -> bool:
    if not flt:
        return True
    for key, sub in flt.items():
        if sub is None or key in ("and", "or"):
            continue
        if key == "id" and not match_id(sub, issue["id"]):
            return False
        if key in ("createdAt", "updatedAt") and not match_date(sub, issue[key]):
            return False
        if key == "labels" and not _label_collection(sub, issue["labels"]):
            return False
        if key == "state" and not all(match_string(sub[f], issue["state"][f]) for f in ("name", "type") if sub.get(f)):
            return False
        if key == "team":
            team = issue["team"]
            if sub.get("id") and not match_id(sub["id"], team["id"]):
                return False
            if sub.get("key") and not match_string(sub["key"], team["key"]):
                return False
    return _logic(flt, issue, match_issue)


def match_comment(flt: dict[str, Any] | None, comment: dict[str, Any]) -> bool:
    if not flt:
        return True
    for key, sub in flt.items():
        if sub is None or key in ("and", "or"):
            continue
        if key in ("createdAt", "updatedAt") and not match_date(sub, comment[key]):
            return False
        if key == "body" and not match_string(sub, comment["body"]):
            return False
        if key == "issue" and not _nullable_issue(sub, comment["issue"]):
            return False
    return _logic(flt, comment, match_comment)


def _nullable_issue(flt: dict[str, Any], issue: dict[str, Any]) -> bool:
    if flt.get("id") is not None and not match_id(flt["id"], issue["id"]):
        return False
    return _logic(flt, issue, _nullable_issue)
