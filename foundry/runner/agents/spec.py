"""What the runner is asked to run (input.json's "runner", docs/agent-contract.md) and what it reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

NAMES = ("claude-code", "codex", "aider", "command")
MAX_TIMEOUT_SECONDS = 24 * 3600
MIN_OUTPUT_CAP = 4096


@dataclass(frozen=True)
class AgentSpec:
    name: str  # claude-code | codex | aider | command
    model: str | None = None
    timeout_seconds: int = 1800
    output_cap_bytes: int = 1 << 20
    extra_args: tuple[str, ...] = ()
    command: tuple[str, ...] = ()  # for name == "command": the argv of any executable
    # A plan: the CLI runs in its own read-only mode (Claude Code's plan permission mode, Codex's
    # read-only sandbox); the runner still checks the work tree afterwards.
    read_only: bool = False


@dataclass(frozen=True)
class AgentReport:
    ok: bool
    exit_code: int | None
    timed_out: bool
    reason: str  # why not ok, one line ("" when ok)
    summary: str
    turns: int | None
    tokens_in: int | None
    tokens_out: int | None
    cost_usd: float | None


def _int(runner: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = runner.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"runner.{key} must be an integer, not {value!r}")
    if not low <= value <= high:
        raise ValueError(f"runner.{key} must be between {low} and {high}, not {value}")
    return value


def _strings(runner: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = runner.get(key) or []
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"runner.{key} must be a list of strings, not {value!r}")
    return tuple(value)


def spec_from_input(runner: Mapping[str, Any]) -> AgentSpec:
    """Validate input.json's "runner" object (camelCase keys) into an AgentSpec."""
    if not isinstance(runner, Mapping):
        raise ValueError(f"runner must be a JSON object, not {type(runner).__name__}")
    name = runner.get("name")
    if name not in NAMES:
        raise ValueError(f"runner.name must be one of {', '.join(NAMES)}; got {name!r}")
    model = runner.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise ValueError(f"runner.model must be a non-empty string when given, not {model!r}")
    command = _strings(runner, "command")
    if name == "command" and not command:
        raise ValueError("runner.command (the argv of the executable to run) is required when runner.name is 'command'")
    if name != "command" and command:
        raise ValueError(f"runner.command is only for runner.name 'command', not {name!r}")
    return AgentSpec(
        name=name,
        model=model.strip() if isinstance(model, str) else None,
        timeout_seconds=_int(runner, "timeoutSeconds", 1800, 1, MAX_TIMEOUT_SECONDS),
        output_cap_bytes=_int(runner, "outputCapBytes", 1 << 20, MIN_OUTPUT_CAP, 1 << 30),
        extra_args=_strings(runner, "extraArgs"),
        command=command,
    )
