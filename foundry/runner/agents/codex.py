"""OpenAI Codex CLI, headless: `codex exec --json -- PROMPT`, configured by $CODEX_HOME/config.toml.

The config (written under the run's private HOME, never in the repository) points a
custom provider at the model API with every retry off, and turns off what would
reach other hosts: update checks, analytics, feedback, plugins and apps (which run
`git ls-remote` against github.com), tool suggestions and API-key model discovery.
`unbounded_connection_retries = false`, or an unreachable API loops "Reconnecting..."
forever. `--strict-config` makes a renamed key in a new version fail loudly instead
of silently turning a switch back on.

The JSONL events carry the items (each a model action) and, per turn, usage; Codex
reports no cost.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from foundry.runner.agents.adapter import Invocation, Parsed, check_prompt, json_event, one_line, require_key
from foundry.runner.agents.environment import build_env
from foundry.runner.agents.spec import AgentSpec

EXECUTABLE = "codex"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
MODEL_VARS = ("OPENAI_API_KEY", "OPENAI_BASE_URL")
FEATURES_OFF = ("unbounded_connection_retries", "plugins", "remote_plugin", "apps", "tool_suggest",
                "api_key_model_discovery", "in_app_updates", "daemon_auto_start", "hooks")
# Apply: the pod is the sandbox (restricted Pod Security, no credentials); Codex's own
# bubblewrap sandbox needs user namespaces a restricted pod does not grant.
APPLY_ARGS = ("--dangerously-bypass-approvals-and-sandbox",)
# Plan: Codex's read-only sandbox policy, and no approvals to ask for (a write is refused, not queued).
READ_ONLY_ARGS = ("--sandbox", "read-only", "-c", 'approval_policy="never"')
# Items that are not an action of the model's (and so not a turn).
NOT_TURNS = frozenset({"reasoning", "error", "todo_list"})


def _toml(value: Any) -> str:
    # TOML basic strings take JSON's escapes; booleans and integers are spelled alike.
    return json.dumps(value)


def config_toml(*, base_url: str, model: str | None) -> str:
    lines = []
    if model:
        lines.append(f"model = {_toml(model)}")
    lines += [
        'model_provider = "foundry"',
        "check_for_update_on_startup = false",
        "",
        "[model_providers.foundry]",
        'name = "foundry"',
        f"base_url = {_toml(base_url)}",
        'wire_api = "responses"',
        'env_key = "OPENAI_API_KEY"',
        "request_max_retries = 0",
        "stream_max_retries = 0",
        "",
        "[analytics]",
        "enabled = false",
        "",
        "[feedback]",
        "enabled = false",
        "",
        # The model's commands need no API key: keep it (and anything like it) out of their env.
        "[shell_environment_policy]",
        'inherit = "all"',
        'exclude = ["*API_KEY*", "*TOKEN*", "*SECRET*"]',
        "",
        "[features]",
        *(f"{name} = false" for name in FEATURES_OFF),
    ]
    return "\n".join(lines) + "\n"


class CodexReader:
    def __init__(self) -> None:
        self.summary = ""
        self.turns = 0
        self.tokens_in: int | None = None
        self.tokens_out: int | None = None
        self.error: str | None = None
        self.completed = False

    def stdout_line(self, line: str) -> str | None:
        event = json_event(line)
        if event is None:
            return None
        kind = event.get("type")
        if kind == "item.completed":
            item = event.get("item") or {}
            if item.get("type") not in NOT_TURNS:
                self.turns += 1
            if item.get("type") == "agent_message" and isinstance(item.get("text"), str):
                self.summary = item["text"].strip()
        elif kind == "turn.completed":
            self.completed = True
            usage = event.get("usage") or {}
            if isinstance(usage.get("input_tokens"), int):
                self.tokens_in = (self.tokens_in or 0) + usage["input_tokens"]
            if isinstance(usage.get("output_tokens"), int):
                self.tokens_out = (self.tokens_out or 0) + usage["output_tokens"]
        elif kind == "turn.failed":
            self.error = one_line(str((event.get("error") or {}).get("message") or "the turn failed"))
        elif kind == "error" and self.error is None:
            self.error = one_line(str(event.get("message") or "error"))
        return None

    def stderr_line(self, line: str) -> str | None:
        return None

    def finish(self) -> Parsed:
        error = self.error
        if error is None and not self.completed:
            error = "Codex did not complete its turn"
        return Parsed(summary=self.summary, turns=self.turns or None, tokens_in=self.tokens_in,
                      tokens_out=self.tokens_out, cost_usd=None, error=error)


def prepare(spec: AgentSpec, *, exe: Path, workdir: Path, home: Path, prompt: str,
            env: Mapping[str, str]) -> Invocation:
    check_prompt(prompt)
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    cli_env = build_env(env, home=str(home), model_vars=MODEL_VARS, fixed={"CODEX_HOME": str(codex_home)})
    require_key(cli_env, ("OPENAI_API_KEY",), "Codex")
    base_url = (env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    config = codex_home / "config.toml"
    config.write_text(config_toml(base_url=base_url, model=spec.model))
    config.chmod(0o600)
    argv = [str(exe), "exec", "--json", "--strict-config", "--ephemeral", "--skip-git-repo-check",
            *(READ_ONLY_ARGS if spec.read_only else APPLY_ARGS), "--cd", str(workdir), *spec.extra_args,
            "--", prompt]
    return Invocation(argv, cli_env, CodexReader(),
                      notes=[f"model API {base_url}, model {spec.model or '(default)'}, config {config}"])
