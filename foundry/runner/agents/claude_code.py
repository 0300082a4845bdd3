"""Claude Code, headless: `claude -p PROMPT --output-format stream-json --verbose`.

The stream (one JSON object a line) is the transcript; its last object, type
"result", carries the final text, num_turns, usage and total_cost_usd.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from foundry.runner.agents.adapter import Invocation, Parsed, SetupError, check_prompt, json_event, one_line, require_key
from foundry.runner.agents.environment import build_env
from foundry.runner.agents.spec import AgentSpec

EXECUTABLE = "claude"
MODEL_VARS = ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_MODEL",
              "ANTHROPIC_SMALL_FAST_MODEL", "ANTHROPIC_DEFAULT_*_MODEL", "ANTHROPIC_CUSTOM_HEADERS", "API_TIMEOUT_MS")
SWITCHES = {
    # No update checks, telemetry, error reports, title requests or DNS look-ups beyond the model API.
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
    # A model API that is down fails the attempt in seconds, not after minutes of backoff.
    "CLAUDE_CODE_MAX_RETRIES": "0",
}


# Apply: the pod is the sandbox, so no permission prompt stands between the model and its tools.
APPLY_ARGS = ("--dangerously-skip-permissions",)
# Plan: Claude Code's plan permission mode (reads and searches, no edits, no commands that change
# anything); `--permission-prompts none` denies, instead of asking nobody, whatever would need a prompt.
READ_ONLY_ARGS = ("--permission-mode", "plan", "--permission-prompts", "none")


class ClaudeReader:
    def __init__(self) -> None:
        self.result: dict[str, Any] | None = None
        self.assistant_messages = 0
        self.last_text = ""

    def stdout_line(self, line: str) -> str | None:
        event = json_event(line)
        if event is None:
            return None
        if event.get("type") == "result":
            self.result = event
        elif event.get("type") == "assistant":
            self.assistant_messages += 1
            content = (event.get("message") or {}).get("content") or []
            texts = [b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"]
            if any(t.strip() for t in texts):
                self.last_text = "\n".join(texts).strip()
        return None

    def stderr_line(self, line: str) -> str | None:
        return None

    def finish(self) -> Parsed:
        r = self.result
        if r is None:
            return Parsed(summary=self.last_text, turns=self.assistant_messages or None,
                          error="Claude Code printed no result" if not self.last_text else None)
        usage = r.get("usage") if isinstance(r.get("usage"), dict) else {}
        tokens_in = _int(usage.get("input_tokens"))
        if tokens_in is not None:  # cached input is input too
            tokens_in += (_int(usage.get("cache_creation_input_tokens")) or 0) + \
                (_int(usage.get("cache_read_input_tokens")) or 0)
        cost = r.get("total_cost_usd")
        text = r.get("result") if isinstance(r.get("result"), str) else ""
        error = None
        if r.get("is_error") or r.get("subtype") not in (None, "success"):
            error = one_line(text or f"Claude Code ended with {r.get('subtype')}")
        return Parsed(summary=text.strip() or self.last_text, turns=_int(r.get("num_turns")), tokens_in=tokens_in,
                      tokens_out=_int(usage.get("output_tokens")),
                      cost_usd=float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None,
                      error=error)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def prepare(spec: AgentSpec, *, exe: Path, workdir: Path, home: Path, prompt: str,
            env: Mapping[str, str]) -> Invocation:
    check_prompt(prompt)
    switches = dict(SWITCHES)
    if os.geteuid() == 0 and not spec.read_only:
        # As root, --dangerously-skip-permissions refuses unless told it is in a sandbox; the
        # agent pod is one (non-root there; root only on a development machine or in tests).
        switches["IS_SANDBOX"] = "1"
    cli_env = build_env(env, home=str(home), model_vars=MODEL_VARS, fixed=switches)
    require_key(cli_env, ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"), "Claude Code")
    argv = [str(exe), "--print", *(READ_ONLY_ARGS if spec.read_only else APPLY_ARGS),
            "--output-format", "stream-json", "--verbose"]
    if spec.model:
        argv += ["--model", spec.model]
    argv += [*spec.extra_args, "--", prompt]
    base = cli_env.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com (default)"
    return Invocation(argv, cli_env, ClaudeReader(), notes=[f"model API {base}, model {spec.model or '(default)'}"])


__all__ = ["EXECUTABLE", "prepare", "ClaudeReader", "SetupError"]
