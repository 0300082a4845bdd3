"""What each adapter provides: the CLI's argv and environment, and a reader for its output."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol

from foundry.runner.agents.spec import AgentSpec

# One argv string may hold at most 128 KiB on Linux (MAX_ARG_STRLEN); the CLIs take the
# prompt as one argument and stdin stays /dev/null, so a longer prompt cannot be passed.
MAX_PROMPT_BYTES = 120 << 10


class SetupError(Exception):
    """The CLI cannot be started as asked (no API key, prompt too long ...): the reason, one line."""


@dataclass
class Parsed:
    summary: str = ""
    turns: int | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None
    error: str | None = None  # the CLI's own account of a failure, one line


class OutputReader(Protocol):
    def stdout_line(self, line: str) -> str | None:
        """Take one line of stdout; a returned string stops the CLI with that reason."""

    def stderr_line(self, line: str) -> str | None:
        """Take one line of stderr; a returned string stops the CLI with that reason."""

    def finish(self) -> Parsed:
        """What the CLI said it did, once it has exited."""


@dataclass
class Invocation:
    argv: list[str]
    env: dict[str, str]
    reader: OutputReader
    notes: list[str] = field(default_factory=list)  # setup facts for the transcript


class Adapter(Protocol):
    EXECUTABLE: str

    def prepare(self, spec: AgentSpec, *, exe: Path, workdir: Path, home: Path, prompt: str,
                env: Mapping[str, str]) -> Invocation: ...


class NullReader:
    """For a CLI whose output carries nothing to parse."""

    def stdout_line(self, line: str) -> str | None:
        return None

    def stderr_line(self, line: str) -> str | None:
        return None

    def finish(self) -> Parsed:
        return Parsed()


def check_prompt(prompt: str) -> None:
    size = len(prompt.encode())
    if size > MAX_PROMPT_BYTES:
        raise SetupError(f"the prompt is {size} bytes; the agent CLI takes it as one argument of at most "
                         f"{MAX_PROMPT_BYTES} bytes (shorten the plan or the feedback)")
    if not prompt.strip():
        raise SetupError("the prompt is empty")


def one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def require_key(env: Mapping[str, str], names: tuple[str, ...], cli: str) -> None:
    if not any(env.get(n) for n in names):
        raise SetupError(f"{cli} needs {' or '.join(names)} in its environment (the model API key, given to the "
                         f"agent container by Secret reference: agent.secret_refs)")


def json_event(line: str) -> dict[str, Any] | None:
    """One line of a CLI's JSON-lines stream as an object, or None for anything else (banners, noise)."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None
