"""The result each step leaves in its container's termination message.

Kubernetes keeps at most 4 KiB of a termination message, so the JSON is cut
to fit before it is written: first a plan's JSON and markdown give way to
its hash and size (the whole plan is in the step's log and in
`work/state/plan.json`), then the summary, then the reason, lose their tails
(marked with an ellipsis). Known secrets are scrubbed from every string
on the way out, as a last line of defence.

Outcomes and exit codes are the contract's (docs/agent-contract.md); `ok`
is what a step reports when it did its part and leaves the rest to the next.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VERSION = 1
MAX_BYTES = 4096
DEFAULT_PATH = "/dev/termination-log"
ENV_PATH = "FOUNDRY_RESULT_PATH"

PUSHED = "pushed"
FAILED = "failed"
NO_CHANGES = "no-changes"
REFUSED = "refused"
OK = "ok"
PLANNED = "planned"
EXIT_CODES = {PUSHED: 0, OK: 0, PLANNED: 0, FAILED: 1, NO_CHANGES: 2, REFUSED: 3}
_ELLIPSIS = "…"


@dataclass
class Result:
    step: str
    outcome: str
    reason: str = ""
    branch: str | None = None
    baseSha: str | None = None
    headSha: str | None = None
    pr: dict[str, Any] | None = None
    filesChanged: int | None = None
    linesAdded: int | None = None
    linesRemoved: int | None = None
    tokens: dict[str, int] | None = None
    costUsd: float | None = None
    turns: int | None = None
    runner: str | None = None
    summary: str = ""
    plan: dict[str, Any] | None = None  # a plan step's plan: {hash, bytes, json, markdown}
    planHash: str | None = None  # an apply attempt's: the approved plan it was given (input.json planHash)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": VERSION}
        for key, value in self.__dict__.items():
            if key == "extra":
                continue
            if value is None:
                continue
            out[key] = value
        out.update(self.extra)
        return out


def encode(result: Result, secrets: Iterable[str] = ()) -> str:
    """The result as compact JSON of at most MAX_BYTES bytes, secrets replaced by `***`."""
    data = _scrub(result.as_dict(), [s for s in secrets if s and len(s) >= 4])
    text = _dump(data)
    if len(text.encode()) > MAX_BYTES and isinstance(data.get("plan"), Mapping):
        # The hash is what the operator needs here; it reads the whole plan from the log and checks it.
        data["plan"] = {k: data["plan"][k] for k in ("hash", "bytes") if k in data["plan"]} | {"cut": True}
        text = _dump(data)
    for key in ("summary", "reason"):
        if len(text.encode()) <= MAX_BYTES:
            break
        data[key] = _shorten(data, key, len(text.encode()) - MAX_BYTES)
        text = _dump(data)
    if len(text.encode()) > MAX_BYTES:  # only unbounded extras could do this; keep what the operator needs
        kept = ("version", "step", "outcome", "reason", "branch", "headSha", "plan", "planHash")
        data = {k: data[k] for k in kept if k in data}
        data["reason"] = str(data.get("reason", ""))[:1024]
        text = _dump(data)
    return text


def write(result: Result, *, env: Mapping[str, str] | None = None, secrets: Iterable[str] = ()) -> Path:
    """Write the result to $FOUNDRY_RESULT_PATH (else /dev/termination-log); the path written."""
    env = os.environ if env is None else env
    override = env.get(ENV_PATH)
    path = Path(override or DEFAULT_PATH)
    text = encode(result, secrets)
    if override:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)  # a reader (the local provider) never sees half a result
    else:
        # The kubelet bind-mounts /dev/termination-log: it can only be written in place (a rename onto
        # a mount point fails), and it is read once the container has exited.
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    return path


def read(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _dump(data: Mapping[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def _shorten(data: Mapping[str, Any], key: str, excess: int) -> str:
    """`data[key]` cut by at least `excess` bytes (JSON escaping counted), ending in an ellipsis."""
    value = str(data.get(key) or "")
    if not value:
        return value
    encoded_len = len(_dump(value).encode())
    keep_bytes = max(0, encoded_len - excess - len(_ELLIPSIS.encode()) - 2)
    # Cut characters until the JSON-encoded value fits (escapes make bytes and characters differ).
    lo, hi = 0, len(value)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(_dump(value[:mid]).encode()) - 2 <= keep_bytes:
            lo = mid
        else:
            hi = mid - 1
    return value[:lo].rstrip() + _ELLIPSIS if lo < len(value) else value


def _scrub(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, "***")
        return value
    if isinstance(value, Mapping):
        return {k: _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, secrets) for v in value]
    return value
