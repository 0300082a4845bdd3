"""input.json, version 2 (docs/agent-contract.md): parsed, validated, typed.

Everything the runner passes to git comes from here, so names that reach a
git argv are checked strictly (a branch starting with `-` would be an
option; a URL with a user:password part would put a credential where the
contract forbids one). Errors name the field: `input.json: ticket.url must be
a string`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from foundry.domain import plans
from foundry.domain.changes import Constraints

VERSION = 2
_REPO = re.compile(r"^[A-Za-z0-9-]{1,39}/[A-Za-z0-9._-]{1,100}$")
# A conservative subset of git-check-ref-format: no option-looking or odd names reach git.
_REF = re.compile(r"^(?!-)(?!.*\.\.)(?!.*//)(?!.*@\{)(?!.*\.lock(?:/|$))[A-Za-z0-9._/+-]{1,200}(?<![./])$")
_SCHEMES = ("https", "http", "file")
APPLY, PLAN = "apply", "plan"
MODES = (APPLY, PLAN)


class JobInputError(ValueError):
    """input.json is missing, not JSON, or breaks the contract (the message names the field)."""


@dataclass(frozen=True)
class Ticket:
    key: str
    title: str
    url: str
    description: str


@dataclass(frozen=True)
class GitTarget:
    url: str  # clone/push URL, no credentials in it
    api_url: str  # GitHub REST base URL


@dataclass(frozen=True)
class JobInput:
    run: str
    issue: str
    attempt: int
    repo: str
    base_branch: str
    branch: str
    git: GitTarget
    ticket: Ticket
    plan: Mapping[str, Any]
    plan_text: str
    instructions: str
    constraints: Constraints
    runner: Mapping[str, Any]
    pr_number: int | None = None
    feedback: Mapping[str, Any] | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)
    # "apply" edits, commits and pushes; "plan" reads the base branch and reports a plan, nothing else.
    mode: str = APPLY
    # The approved plan's hash (sha256:<hex>), when the operator gave one: the prompt names it and the
    # result records it, so what ran can be matched to what was approved.
    plan_hash: str | None = None

    @property
    def planning(self) -> bool:
        return self.mode == PLAN

    @property
    def remediation(self) -> bool:
        """A later attempt on an existing branch/PR: clone the run's branch, not the base."""
        return self.pr_number is not None or bool(self.feedback)


def load(path: str | Path) -> JobInput:
    """Read and validate input.json at `path`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise JobInputError(f"cannot read the job input {path}: {err.strerror or err}") from None
    try:
        raw = json.loads(text)
    except ValueError as err:
        raise JobInputError(f"the job input {path} is not JSON: {err}") from None
    return parse(raw)


def parse(raw: Any) -> JobInput:
    """Validate a decoded input.json object."""
    o = _Obj(raw, "")
    version = raw.get("version") if isinstance(raw, Mapping) else None
    if version != VERSION:
        raise JobInputError(f"input.json: version must be {VERSION} (this runner speaks the version-{VERSION} "
                            f"contract, docs/agent-contract.md), got {version!r}")
    run = o.str("run", required=True)
    attempt = o.int("attempt", minimum=1)
    repo = o.str("repo", required=True)
    if not _REPO.match(repo):
        raise JobInputError(f"input.json: repo must be 'owner/name', got {repo!r}")
    base_branch = _ref(o, "baseBranch")
    branch = _ref(o, "branch")
    if branch == base_branch:
        raise JobInputError(f"input.json: branch and baseBranch are both {branch!r}; the agent never pushes to the base")
    git = o.obj("git")
    target = GitTarget(_url(git, "url"), _url(git, "apiUrl", schemes=("https", "http")))
    t = o.obj("ticket")
    ticket = Ticket(t.str("key", default=""), t.str("title", default=""), t.str("url", default=""),
                    t.str("description", default=""))
    issue = o.str("issue", default=ticket.key) or ticket.key or run
    plan = o.mapping("plan")
    constraints_raw = o.mapping("constraints")
    try:
        constraints = Constraints.from_mapping(constraints_raw)
    except ValueError as err:
        raise JobInputError(f"input.json: {err}") from None
    runner = o.mapping("runner")
    if not isinstance(runner.get("name"), str) or not runner.get("name"):
        raise JobInputError("input.json: runner.name is required (claude-code, codex, aider or command)")
    pr = o.mapping("pr", required=False)
    pr_number = None
    if pr:
        pr_number = _Obj(pr, "pr.").int("number", minimum=1)
    feedback = o.mapping("feedback", required=False) or None
    if feedback is not None:
        _check_feedback(feedback)
    mode = o.str("mode", default=APPLY)
    if mode not in MODES:
        raise JobInputError(f"input.json: mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == PLAN and (pr_number is not None or feedback is not None):
        raise JobInputError("input.json: a plan reads the base branch; pr and feedback belong to a remediation "
                            "(mode apply)")
    plan_hash = o.str("planHash", default="") or None
    if plan_hash is not None and not plans.is_plan_hash(plan_hash):
        raise JobInputError(f"input.json: planHash must be sha256:<64 hex digits>, got {plan_hash[:80]!r}")
    if plan_hash is not None and mode == PLAN:
        raise JobInputError("input.json: a plan has no planHash yet; planHash names the approved plan an apply "
                            "attempt carries out")
    return JobInput(
        run=run, issue=issue, attempt=attempt, repo=repo, base_branch=base_branch, branch=branch, git=target,
        ticket=ticket, plan=plan, plan_text=o.str("planText", default=""),
        instructions=o.str("instructions", default=""), constraints=constraints, runner=runner,
        pr_number=pr_number, feedback=feedback, raw=raw, mode=mode, plan_hash=plan_hash,
    )


def _ref(o: "_Obj", key: str) -> str:
    value = o.str(key, required=True)
    if not _REF.match(value):
        raise JobInputError(f"input.json: {o.prefix}{key} {value!r} is not a branch name git accepts here")
    return value


def _url(o: "_Obj", key: str, schemes: tuple[str, ...] = _SCHEMES) -> str:
    value = o.str(key, required=True)
    parts = urlsplit(value)
    if parts.scheme not in schemes or (parts.scheme != "file" and not parts.hostname):
        raise JobInputError(f"input.json: {o.prefix}{key} must be an {' or '.join(schemes)} URL, got {value!r}")
    if parts.username or parts.password:
        raise JobInputError(f"input.json: {o.prefix}{key} must not carry credentials; the token comes from "
                            "$FOUNDRY_GITHUB_TOKEN_FILE")
    return value.rstrip("/")


def _check_feedback(fb: Mapping[str, Any]) -> None:
    """Shape checks for the parts the prompt renders (lists of objects with string fields)."""
    root = _Obj(fb, "feedback.")
    for key in ("reason", "headSha"):
        root.str(key, default="")
    for kind, fields in (("checks", ("name", "conclusion", "title", "summary", "text")),
                         ("statuses", ("context", "state", "description")),
                         ("reviews", ("user", "state", "body"))):
        for item in root.list(kind):
            for f in fields:
                item.str(f, default="")
            if kind == "checks":
                for ann in item.list("annotations"):
                    for f in ("path", "level", "title", "message"):
                        ann.str(f, default="")
                    for f in ("startLine", "endLine"):
                        ann.opt_int(f)
            if kind == "reviews":
                for comment in item.list("comments"):
                    comment.str("path", default="")
                    comment.str("body", default="")
                    comment.opt_int("line")


class _Obj:
    """A JSON object being read, remembering where it sits for error messages."""

    def __init__(self, raw: Any, prefix: str) -> None:
        if not isinstance(raw, Mapping):
            where = prefix.rstrip(".") or "the job input"
            raise JobInputError(f"input.json: {where} must be an object")
        self.raw = raw
        self.prefix = prefix

    def str(self, key: str, *, default: str | None = None, required: bool = False) -> str:
        value = self.raw.get(key)
        if value is None or (required and value == ""):
            if required or default is None:
                raise JobInputError(f"input.json: {self.prefix}{key} is required")
            return default
        if not isinstance(value, str):
            raise JobInputError(f"input.json: {self.prefix}{key} must be a string, got {type(value).__name__}")
        return value

    def int(self, key: str, *, minimum: int) -> int:
        value = self.raw.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise JobInputError(f"input.json: {self.prefix}{key} must be an integer >= {minimum}, got {value!r}")
        return value

    def opt_int(self, key: str) -> int | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise JobInputError(f"input.json: {self.prefix}{key} must be an integer, got {value!r}")
        return value

    def obj(self, key: str) -> "_Obj":
        if key not in self.raw:
            raise JobInputError(f"input.json: {self.prefix}{key} is required")
        return _Obj(self.raw[key], f"{self.prefix}{key}.")

    def mapping(self, key: str, *, required: bool = True) -> Mapping[str, Any]:
        value = self.raw.get(key)
        if value is None:
            if required:
                raise JobInputError(f"input.json: {self.prefix}{key} is required")
            return {}
        if not isinstance(value, Mapping):
            raise JobInputError(f"input.json: {self.prefix}{key} must be an object")
        return value

    def list(self, key: str) -> "list[_Obj]":
        value = self.raw.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise JobInputError(f"input.json: {self.prefix}{key} must be a list")
        return [_Obj(item, f"{self.prefix}{key}[{i}].") for i, item in enumerate(value)]
