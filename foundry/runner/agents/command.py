"""Any executable that edits the work tree and exits 0 (runner.command is its argv).

It runs in the work tree with the same scrubbed environment as the CLIs, plus
FOUNDRY_PROMPT_FILE naming a file (in the private HOME) that holds the prompt. If
its last stdout line is a JSON object, its "summary", "turns", "tokensIn",
"tokensOut" and "costUsd" are reported; otherwise the last line is the summary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from foundry.runner.agents.adapter import Invocation, Parsed, one_line
from foundry.runner.agents.claude_code import MODEL_VARS as ANTHROPIC_VARS
from foundry.runner.agents.codex import MODEL_VARS as OPENAI_VARS
from foundry.runner.agents.environment import build_env
from foundry.runner.agents.spec import AgentSpec

EXECUTABLE = ""  # the spec names it
PROMPT_FILE = "foundry-prompt.md"


class CommandReader:
    def __init__(self) -> None:
        self.last = ""

    def stdout_line(self, line: str) -> str | None:
        if line.strip():
            self.last = line.strip()
        return None

    def stderr_line(self, line: str) -> str | None:
        return None

    def finish(self) -> Parsed:
        try:
            data: Any = json.loads(self.last) if self.last.startswith("{") else None
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return Parsed(summary=self.last)

        def num(key: str, kind: type) -> Any:
            v = data.get(key)
            return v if isinstance(v, kind) and not isinstance(v, bool) else None

        cost = data.get("costUsd")
        return Parsed(summary=str(data.get("summary") or ""), turns=num("turns", int), tokens_in=num("tokensIn", int),
                      tokens_out=num("tokensOut", int),
                      cost_usd=float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None,
                      error=one_line(str(data["error"])) if data.get("error") else None)


def prepare(spec: AgentSpec, *, exe: Path, workdir: Path, home: Path, prompt: str,
            env: Mapping[str, str]) -> Invocation:
    prompt_file = home / PROMPT_FILE
    prompt_file.write_text(prompt, encoding="utf-8")
    cli_env = build_env(env, home=str(home), model_vars=(*ANTHROPIC_VARS, *OPENAI_VARS),
                        fixed={"FOUNDRY_PROMPT_FILE": str(prompt_file)})
    return Invocation([str(exe), *spec.command[1:], *spec.extra_args], cli_env, CommandReader())
