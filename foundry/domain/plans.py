"""An agent-written plan: its fixed structure, parsed from the agent's answer, validated, rendered, hashed.

The coding agent, run read-only against the real repository, answers with one
fenced JSON block:

    ```json
    {"summary": "...", "files": [{"path": "greeter.py", "why": "..."}], "approach": "...",
     "tests": ["..."], "risks": ["..."], "openQuestions": ["..."]}
    ```

`parse_answer` finds the block (the last ```json fence in the answer), decodes
it and validates it into an AgentPlan; every refusal is a PlanError whose
message names the field (`plan.files[2].path must be relative ...`). The
validated plan is normalised (strings stripped, paths in POSIX form), so two
answers that differ only in whitespace around values or in key order are the
same plan.

The plan's identity is `plan_hash`: SHA-256 over its canonical JSON (sorted
keys, no insignificant whitespace, UTF-8). Approvals bind to that hash, so
the same plan always hashes the same and any change to what an approver reads
gives a new hash. A plan whose canonical JSON is over MAX_PLAN_BYTES is
refused: it would not be read, and it could not be stored in a run's status.

Everything here is pure (no I/O); the agent's answer is untrusted text.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_PLAN_BYTES = 64 << 10
MAX_TEXT = 8000  # summary, approach
MAX_ITEM = 2000  # one test, risk, question, or a file's why
MAX_ITEMS = 64  # tests, risks, questions
MAX_FILES = 256
MAX_PATH = 1024
HASH_PREFIX = "sha256:"
PLAN_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")  # what a plan hash looks like wherever one is stored
KEYS = ("summary", "files", "approach", "tests", "risks", "openQuestions")

# A fence line: three or more backticks, an optional info string. A closing fence is a line of at
# least as many backticks as its opening one and nothing else (CommonMark's rule).
_FENCE = re.compile(r"^[ ]{0,3}(`{3,})[ \t]*([^`\s]*)[^`\n]*$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class PlanError(ValueError):
    """The agent's answer holds no valid plan; the message says what is wrong, in one line."""


@dataclass(frozen=True)
class PlannedFile:
    path: str
    why: str


@dataclass(frozen=True)
class AgentPlan:
    summary: str
    files: tuple[PlannedFile, ...]
    approach: str
    tests: tuple[str, ...]
    risks: tuple[str, ...]
    open_questions: tuple[str, ...]

    @property
    def needs_answers(self) -> bool:
        """The agent cannot plan without answers: the ticket needs clarification first."""
        return bool(self.open_questions)

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(f.path for f in self.files)

    def as_dict(self) -> dict[str, Any]:
        return {"summary": self.summary, "files": [{"path": f.path, "why": f.why} for f in self.files],
                "approach": self.approach, "tests": list(self.tests), "risks": list(self.risks),
                "openQuestions": list(self.open_questions)}


# ---------------------------------------------------------------- finding the block


def extract_block(answer: str) -> str:
    """The body of the last ```json fenced block in `answer`."""
    lines = answer.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    blocks: list[str] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        bar, info = m.group(1), m.group(2).lower()
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not re.fullmatch(rf"[ ]{{0,3}}`{{{len(bar)},}}[ \t]*", lines[j]):
            body.append(lines[j])
            j += 1
        if j == len(lines):
            break  # an unclosed fence: nothing after it is a block
        if info == "json":
            blocks.append("\n".join(body))
        i = j + 1
    if not blocks:
        raise PlanError("the agent's answer has no ```json block holding the plan")
    return blocks[-1]


def parse_answer(answer: str) -> AgentPlan:
    """The plan in the agent's final answer (its last ```json block), validated."""
    block = extract_block(answer)
    size = len(block.encode("utf-8", "replace"))
    if size > MAX_PLAN_BYTES:
        raise PlanError(f"the plan is {size} bytes; a plan may be at most {MAX_PLAN_BYTES} bytes")
    return parse_json(block)


def parse_json(text: str) -> AgentPlan:
    """A plan from its JSON text (the agent's block, or a stored canonical form)."""
    try:
        raw = json.loads(text)
    except ValueError as err:
        raise PlanError(f"the plan is not valid JSON: {err}") from None
    return validate(raw)


# ---------------------------------------------------------------- validation


def validate(raw: Any) -> AgentPlan:
    """A decoded plan object checked against the fixed structure, normalised."""
    if not isinstance(raw, Mapping):
        raise PlanError(f"the plan must be a JSON object, got {_kind(raw)}")
    unknown = sorted(str(k) for k in raw if k not in KEYS)
    if unknown:
        raise PlanError(f"the plan has unknown fields {', '.join(unknown)}; its fields are {', '.join(KEYS)}")
    missing = [k for k in KEYS if k not in raw]
    if missing:
        raise PlanError(f"the plan lacks {', '.join(missing)} (use an empty list when there is nothing to say)")
    summary = _text(raw["summary"], "plan.summary", MAX_TEXT, required=True)
    approach = _text(raw["approach"], "plan.approach", MAX_TEXT, required=True)
    files = _files(raw["files"])
    tests = _items(raw["tests"], "plan.tests")
    risks = _items(raw["risks"], "plan.risks")
    questions = _items(raw["openQuestions"], "plan.openQuestions")
    if not files and not questions:
        raise PlanError("the plan names no file to change and asks no question; a plan says what it will change, "
                        "or what must be answered before it can")
    plan = AgentPlan(summary, files, approach, tests, risks, questions)
    size = len(canonical_json(plan).encode())
    if size > MAX_PLAN_BYTES:
        raise PlanError(f"the plan is {size} bytes; a plan may be at most {MAX_PLAN_BYTES} bytes")
    return plan


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def _text(value: Any, where: str, limit: int, *, required: bool) -> str:
    if not isinstance(value, str):
        raise PlanError(f"{where} must be a string, got {_kind(value)}")
    text = unicodedata.normalize("NFC", _CONTROL.sub("", value.replace("\r\n", "\n"))).strip()
    if required and not text:
        raise PlanError(f"{where} is empty")
    if len(text) > limit:
        raise PlanError(f"{where} is {len(text)} characters; at most {limit}")
    return text


def _items(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise PlanError(f"{where} must be a list of strings, got {_kind(value)}")
    if len(value) > MAX_ITEMS:
        raise PlanError(f"{where} has {len(value)} entries; at most {MAX_ITEMS}")
    return tuple(_text(v, f"{where}[{i}]", MAX_ITEM, required=True) for i, v in enumerate(value))


def _files(value: Any) -> tuple[PlannedFile, ...]:
    if not isinstance(value, list):
        raise PlanError(f"plan.files must be a list of {{\"path\", \"why\"}} objects, got {_kind(value)}")
    if len(value) > MAX_FILES:
        raise PlanError(f"plan.files has {len(value)} entries; at most {MAX_FILES}")
    out: list[PlannedFile] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        where = f"plan.files[{i}]"
        if not isinstance(item, Mapping):
            raise PlanError(f"{where} must be an object with path and why, got {_kind(item)}")
        extra = sorted(str(k) for k in item if k not in ("path", "why"))
        if extra:
            raise PlanError(f"{where} has unknown fields {', '.join(extra)}; a file has path and why")
        path = normalise_path(_text(item.get("path"), f"{where}.path", MAX_PATH, required=True), f"{where}.path")
        if path in seen:
            raise PlanError(f"{where}.path {path} is listed twice")
        seen.add(path)
        out.append(PlannedFile(path, _text(item.get("why"), f"{where}.why", MAX_ITEM, required=True)))
    return tuple(out)


def normalise_path(path: str, where: str = "path") -> str:
    """A repository-relative POSIX path: no leading `/`, no `..`, no `.git`, no empty segment."""
    if "\\" in path or "\n" in path:
        raise PlanError(f"{where} {path!r} must be a POSIX path relative to the repository root")
    parts = [p for p in path.removeprefix("./").split("/")]
    if path.startswith("/") or any(p in ("", "..") for p in parts):
        raise PlanError(f"{where} {path!r} must be relative to the repository root, without '..' or empty parts")
    parts = [p for p in parts if p != "."]
    if not parts:
        raise PlanError(f"{where} {path!r} names no file")
    if parts[0] == ".git":
        raise PlanError(f"{where} {path!r} is inside .git")
    return "/".join(parts)


# ---------------------------------------------------------------- identity and rendering


def canonical_json(plan: AgentPlan) -> str:
    """The plan as canonical JSON: sorted keys, no insignificant whitespace, non-ASCII kept as UTF-8."""
    return _canonical(plan.as_dict())


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def plan_hash(plan: AgentPlan) -> str:
    """`sha256:<hex>` of the canonical JSON: what an approval binds to."""
    return json_hash(plan.as_dict())


def json_hash(value: Any) -> str:
    """`sha256:<hex>` of any JSON value's canonical form (a plan's; the deterministic planner's, a ticket's)."""
    return HASH_PREFIX + hashlib.sha256(_canonical(value).encode("utf-8")).hexdigest()


def is_plan_hash(value: Any) -> bool:
    return isinstance(value, str) and PLAN_HASH.match(value) is not None


def render_markdown(plan: AgentPlan) -> str:
    """The plan as people read it (the ticket comment, the apply prompt), headed by its sections."""
    out = ["### Summary", "", plan.summary, "", "### Files to change", ""]
    out += [f"- {_code(f.path)}: {_line(f.why)}" for f in plan.files] or ["- (none)"]
    out += ["", "### Approach", "", plan.approach, "", "### Tests", ""]
    out += _bullets(plan.tests)
    out += ["", "### Risks", ""]
    out += _bullets(plan.risks)
    out += ["", "### Open questions", ""]
    out += _bullets(plan.open_questions)
    return "\n".join(out).rstrip() + "\n"


def summary_fields(plan: AgentPlan) -> dict[str, Any]:
    """The plan's JSON form, markdown and hash, as a runner result carries them."""
    return {"hash": plan_hash(plan), "json": plan.as_dict(), "markdown": render_markdown(plan)}


def _bullets(items: Sequence[str]) -> list[str]:
    return [f"- {_line(x)}" for x in items] or ["- (none)"]


def _line(text: str) -> str:
    return " ".join(text.split())


def _code(path: str) -> str:
    bar = "`" * (max((len(m) for m in re.findall(r"`+", path)), default=0) + 1)
    pad = " " if path.startswith("`") or path.endswith("`") else ""
    return f"{bar}{pad}{path}{pad}{bar}"
