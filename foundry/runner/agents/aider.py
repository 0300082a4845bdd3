"""Aider, headless: `aider --message=PROMPT --yes-always ...` against an OpenAI-compatible API.

Aider has no tools: the model answers with SEARCH/REPLACE blocks, which Aider
applies. Foundry commits, so Aider's own commits are off. Its history files, caches
and config live in the run's private HOME, never in the repository; an empty
--config and --env-file keep the repository's own .aider.conf.yml and .env (untrusted
input) from reconfiguring it.

Aider retries a failing API for about a minute and has no switch for it, so the
reader stops it at its first "Retrying in" line: the attempt fails fast, as the other
CLIs do with retries off. Aider prints "Tokens: 2.4k sent, 57 received. Cost: $0.0068
message, $0.01 session." per model call, so tokens are as exact as that rounding.
"""

from __future__ import annotations

import re
import shutil
from collections import deque
from pathlib import Path
from typing import Mapping

from foundry.runner.agents.adapter import Invocation, Parsed, SetupError, check_prompt, one_line, require_key
from foundry.runner.agents.environment import build_env
from foundry.runner.agents.spec import AgentSpec

EXECUTABLE = "aider"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o"
MODEL_VARS = ("OPENAI_API_KEY", "OPENAI_BASE_URL")
PRICES = "model_prices_and_context_window.json"
LITELLM_BACKUP = "model_prices_and_context_window_backup.json"

# Aider's own formats (aider/coders/base_coder.py, utils.format_tokens): counts under 1000
# as is, then "2.4k", then "12k"; the cost follows on the same line, or on the next one
# when both cache figures are shown, and is missing for a model without a price.
_TOKENS = re.compile(r"Tokens: ([\d.]+)(k?) sent(?:, [\d.]+k? cache (?:write|hit))*, ([\d.]+)(k?) received\.")
_COST = re.compile(r"Cost: \$([\d.]+) message")
_RETRY = re.compile(r"^Retrying in [\d.]+ seconds")


def _count(number: str, suffix: str) -> int:
    return int(round(float(number) * (1000 if suffix else 1)))


class AiderReader:
    def __init__(self, chat_history: Path) -> None:
        self.chat_history = chat_history
        self.turns = 0
        self.tokens_in = 0
        self.tokens_out = 0
        self.cost: float | None = None
        self.recent: deque[str] = deque(maxlen=3)  # what Aider printed just before it gave up or retried
        self.error: str | None = None

    def stdout_line(self, line: str) -> str | None:
        m = _TOKENS.search(line)
        if m:
            self.turns += 1
            self.tokens_in += _count(m.group(1), m.group(2))
            self.tokens_out += _count(m.group(3), m.group(4))
        c = _COST.search(line)
        if c:
            self.cost = (self.cost or 0.0) + float(c.group(1))
        if m or c:
            return None
        if _RETRY.match(line.strip()):
            said = " ".join(self.recent) or line.strip()
            self.error = one_line(f"the model API failed and Aider started retrying: {said}")
            return self.error
        if line.strip():
            self.recent.append(line.strip())
        return None

    def stderr_line(self, line: str) -> str | None:
        if line.strip():
            self.recent.append(line.strip())
        return None

    def finish(self) -> Parsed:
        return Parsed(summary=last_reply_prose(self.chat_history), turns=self.turns or None,
                      tokens_in=self.tokens_in if self.turns else None,
                      tokens_out=self.tokens_out if self.turns else None, cost_usd=self.cost, error=self.error)


def last_reply_prose(chat_history: Path) -> str:
    """The model's last reply in Aider's markdown history, without code blocks and file names.

    In that file "####" lines are the user's, "> " lines are Aider's own output, and
    everything else is the model's reply.
    """
    try:
        text = chat_history.read_text(errors="replace")
    except OSError:
        return ""
    replies: list[list[str]] = []
    current: list[str] | None = None
    fenced = False
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("#### ") or line.startswith("# aider chat"):
            current = None
            continue
        if line.startswith(">"):
            current = None
            continue
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if nxt.startswith("```") and line.strip() and " " not in line.strip():
            continue  # the file name a SEARCH/REPLACE block starts with
        if current is None:
            current = []
            replies.append(current)
        current.append(line)
    for reply in reversed(replies):
        prose = "\n".join(reply).strip()
        if prose:
            return prose
    return ""


def _price_table(exe: Path) -> Path | None:
    """litellm's bundled price table: beside the install (tools/agent-clis.sh), else in Aider's venv."""
    real = exe.resolve()
    for cand in (real.parent.parent.parent / PRICES, real.parent.parent / PRICES):
        if cand.is_file():
            return cand
    try:
        first = real.read_text(errors="replace").split("\n", 1)[0]
    except OSError:
        return None
    if first.startswith("#!"):
        prefix = Path(first[2:].strip().split()[0]).parent.parent
        for cand in prefix.glob(f"lib/python3*/site-packages/litellm/{LITELLM_BACKUP}"):
            return cand
    return None


READ_ONLY_REFUSAL = ("Aider cannot make a plan: it has no read-only mode that guarantees no edits (its ask mode "
                     "and --dry-run are conventions of its own, not a boundary) and no tools to read the repository "
                     "by itself; plan with runner claude-code or codex")


def prepare(spec: AgentSpec, *, exe: Path, workdir: Path, home: Path, prompt: str,
            env: Mapping[str, str]) -> Invocation:
    if spec.read_only:
        raise SetupError(READ_ONLY_REFUSAL)
    check_prompt(prompt)
    cli_env = build_env(env, home=str(home), model_vars=MODEL_VARS, fixed={"LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    require_key(cli_env, ("OPENAI_API_KEY",), "Aider")
    prices = _price_table(exe)
    if prices is None:
        raise SetupError(f"litellm's price table was not found beside {exe} (Aider would fetch it from the "
                         f"internet); reinstall the agent CLIs with tools/agent-clis.sh")
    aider_home = home / ".aider"
    (aider_home / "caches").mkdir(parents=True, exist_ok=True)
    # A fresh copy: Aider refetches a table older than a day.
    shutil.copyfile(prices, aider_home / "caches" / PRICES)
    config, env_file = aider_home / "empty.conf.yml", aider_home / "empty.env"
    config.write_text("{}\n")  # YAML for an empty mapping: Aider refuses an empty file
    env_file.write_text("")
    chat_history = aider_home / "chat-history.md"
    model = spec.model or DEFAULT_MODEL
    model = model if "/" in model else f"openai/{model}"
    base_url = (env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    argv = [
        str(exe), "--config", str(config), "--env-file", str(env_file),
        "--model", model, "--weak-model", model, "--openai-api-base", base_url,
        "--edit-format", "diff", "--yes-always", "--no-auto-commits", "--no-dirty-commits",
        "--no-check-update", "--analytics-disable", "--no-show-release-notes", "--no-show-model-warnings",
        "--no-gitignore", "--map-tokens", "0", "--no-suggest-shell-commands",
        "--chat-history-file", str(chat_history), "--input-history-file", str(aider_home / "input-history"),
        "--no-pretty", "--no-fancy-input", "--no-detect-urls", "--encoding", "utf-8",
        *spec.extra_args, f"--message={prompt}",
    ]
    return Invocation(argv, cli_env, AiderReader(chat_history), notes=[f"model API {base_url}, model {model}"])
