"""A deterministic plan from the ticket text: goal, steps, files, tests, out-of-scope.

No model is asked: the plan is a structured restatement of what the ticket
already says, so the approver sees exactly what the agent will be told and the
same ticket always yields the same plan. Its `files` also bound the diff check
(files outside the plan send the PR to review), so only paths the ticket
actually names go there.

The result is a plain dict shaped like FoundryRun status.plan (camelCase keys),
trimmed to the CRD's limits.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from foundry.domain.readiness import acceptance_criteria, bullets, sections

# status.plan limits from crds/foundryrun.yaml
MAX_TEXT = 4096
MAX_ITEMS = 128
MAX_FILES = 512
MAX_PATH = 1024

_OUT_OF_SCOPE = ("out of scope", "out-of-scope", "non-goals", "non goals", "not in scope", "won't do", "wont do")
_TEST_HEADINGS = ("tests", "testing", "test plan", "how to test")

# A path: has a '/' or a file extension, made of path characters; optional backticks around it.
_PATH = re.compile(r"(?<![\w@:/.-])((?:[\w.-]+/)+[\w.*-]*|[\w-]+(?:\.[\w-]+)*\.(?:py|js|jsx|ts|tsx|go|rs|java|kt|rb|"
                   r"php|cs|c|h|cpp|hpp|sql|ya?ml|json|toml|ini|cfg|md|rst|txt|html|css|scss|sh|tf|proto|vue|svelte))"
                   r"(?![\w/])")
_URLISH = re.compile(r"https?://\S+")

AREA_TESTS: Mapping[str, str] = {
    "auth": "a test that requests without valid credentials or permissions are refused",
    "payments": "a test that amounts, currencies and failure paths of the payment flow are handled exactly",
    "pii": "a test that personal data is not logged, exported or exposed beyond what the ticket requires",
    "migrations": "a test that the migration applies to a copy of the current schema and can be rolled back",
    "infra": "a check that the changed infrastructure definitions validate (plan/lint) before merge",
}


def _clip(text: str, limit: int = MAX_TEXT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _first_sentence(text: str) -> str:
    for para in text.split("\n\n"):
        para = para.strip()
        if not para or para.startswith("#") or re.match(r"^\s*([-*+]|\d+[.)])\s", para):
            continue
        m = re.match(r"(.+?[.!?])(\s|$)", " ".join(para.split()))
        return m.group(1) if m else " ".join(para.split())
    return ""


def mentioned_paths(text: str) -> tuple[str, ...]:
    """Repository paths written in the ticket text (with a '/' or a known file extension), in order."""
    text = _URLISH.sub(" ", text)
    seen: dict[str, None] = {}
    for m in _PATH.finditer(text):
        path = m.group(1).strip(".").lstrip("./")
        if not path or path.startswith("//") or len(path) > MAX_PATH or re.fullmatch(r"[\d./]+", path):
            continue
        seen.setdefault(path, None)
    return tuple(seen)[:MAX_FILES]


def _section_items(parts: Mapping[str, list[str]], names: Sequence[str]) -> list[str]:
    items: list[str] = []
    for heading, lines in parts.items():
        if heading in names:
            items.extend(bullets(lines) or [ln.strip() for ln in lines if ln.strip()])
    return items


def make_plan(ticket: Mapping[str, Any], repo: str | None, areas: Sequence[str] = ()) -> dict[str, Any]:
    """The plan for a ready ticket routed to `repo`, with risk `areas` (see module doc for the shape)."""
    title = " ".join(str(ticket.get("title") or "").split())
    description = str(ticket.get("description") or "")
    criteria = list(acceptance_criteria(description))
    parts = sections(description)
    files = list(mentioned_paths(f"{title}\n{description}"))

    summary = _first_sentence(description)
    goal = title or summary or "Implement the ticket"
    if summary and summary.rstrip(".!?").lower() != title.rstrip(".!?").lower():
        goal = f"{goal}: {summary}" if title else summary

    where = f" in {repo}" if repo else ""
    steps = []
    if files:
        steps.append(f"Read the code{where} around {', '.join(files[:8])}{' and others' if len(files) > 8 else ''}.")
    else:
        steps.append(f"Find the code{where} that implements the behaviour described in the ticket.")
    if areas:
        steps.append(f"Take care in the risky area(s) {', '.join(areas)}: keep the change minimal there.")
    closing = ["Add or update tests for each acceptance criterion.",
               "Run the test suite and linters, then push the branch and open a pull request."]
    room = MAX_ITEMS - len(steps) - len(closing)
    steps.extend(f"Make it so that: {c}" for c in criteria[:room])
    steps.extend(closing)

    tests = [f"A test showing: {c}" for c in criteria]
    tests.extend(_section_items(parts, _TEST_HEADINGS))
    tests.extend(f"For {a}: {AREA_TESTS[a]}" for a in areas if a in AREA_TESTS)

    out_of_scope = _section_items(parts, _OUT_OF_SCOPE)
    out_of_scope.append("Anything not required by the acceptance criteria (refactors, dependency upgrades, "
                        "formatting of untouched code).")
    if not areas:
        out_of_scope.append("Changes to authentication, payments, personal data, database schema or infrastructure.")

    return {
        "goal": _clip(goal),
        "steps": [_clip(s) for s in steps][:MAX_ITEMS],
        "files": files[:MAX_FILES],
        "tests": _dedup([_clip(t) for t in tests])[:MAX_ITEMS],
        "outOfScope": _dedup([_clip(o) for o in out_of_scope])[:MAX_ITEMS],
    }


def _dedup(items: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for item in items:
        if item.lower() not in seen:
            seen.add(item.lower())
            out.append(item)
    return out
