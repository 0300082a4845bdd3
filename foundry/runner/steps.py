"""The three steps of an attempt (docs/agent-contract.md) as plain functions.

    prepare(ctx)  clone the base branch (or, on a remediation, the run's branch)
                  into the pristine git directory; check out the work tree
    agent(ctx)    write the prompt; run the coding-agent CLI in the work tree
    publish(ctx)  one commit from the work tree's files; policy; push; PR

A plan (input.json mode "plan") runs prepare, plan and verify instead:

    plan(ctx)     write the plan prompt; run the CLI in its read-only mode;
                  record its answer (like agent, without the pristine directory)
    verify(ctx)   check, from the pristine git directory, that the work tree is
                  exactly the commit prepare cloned; extract, validate and hash
                  the plan in the answer (foundry.domain.plans)

A plan never pushes: publish refuses to run for one, and a plan refuses to
start when the push token is mounted (it clones with the read-only token, or
none).

Each returns a Result and never raises for a foreseeable failure: a clone
that fails, a CLI that times out, a model API that is down, a change policy
refuses, a push the remote rejects all become a result with a one-line reason.
`run_all` runs the three in one process (the local provider, tests).

The step that holds the push token (prepare, publish) never runs the CLI; the
agent step never sees the token file (its container does not mount it, and
the CLI's environment is built without its path).
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from foundry.domain import plans
from foundry.runner import gitops
from foundry.runner import result as R
from foundry.runner.jobinput import JobInput
from foundry.runner.layout import DEFAULT_READ_TOKEN_FILE, ENV_READ_TOKEN_FILE, ENV_TOKEN_FILE, Layout
from foundry.runner.prompt import build_plan_prompt, build_prompt

if TYPE_CHECKING:
    from foundry.runner.pulls import PullsApi

STEPS = ("prepare", "agent", "publish")
PLAN_STEPS = ("prepare", "plan", "verify")
PLAN_FILE = "plan.json"
ANSWER_FILE = "answer.md"
ANSWER_LIMIT = 1 << 20  # the CLI's whole answer; the plan inside it is bounded by foundry.domain.plans
PLAN_END = "----- end of plan -----"
AGENT_STATE = "agent.json"
PROMPT_FILE = "prompt.md"
PROMPT_BEGIN = "----- prompt -----"
PROMPT_END = "----- end of prompt -----"
# Variables of the runner's own environment that must never reach the CLI.
_RUNNER_ONLY = (ENV_TOKEN_FILE, ENV_READ_TOKEN_FILE, R.ENV_PATH, "FOUNDRY_WORK_DIR", "FOUNDRY_PUBLISH_DIR")
_SUMMARY_CAP = 8000


class StepError(RuntimeError):
    """A step cannot go on; the message is the result's reason."""


@dataclass
class AgentOutcome:
    """What the agent step learned from the CLI run (the runner adapters' report, flattened)."""

    ok: bool
    reason: str = ""
    summary: str = ""
    tokens: dict[str, int] | None = None
    cost_usd: float | None = None
    turns: int | None = None
    runner: str | None = None


AgentCall = Callable[[JobInput, Layout, str, dict[str, str], TextIO], AgentOutcome]


@dataclass
class Context:
    job: JobInput
    layout: Layout
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    out: TextIO = field(default_factory=lambda: sys.stdout)
    # Seams: how the CLI is run and how the PR is opened (defaults: the real adapters and REST).
    run_agent: AgentCall | None = None
    pulls: "Callable[[str, str], PullsApi] | None" = None  # (api_url, token) -> PullsApi
    git_timeout: float = gitops.DEFAULT_TIMEOUT
    current: str = ""  # the step running now (for a result written when the process is stopped)
    _secrets: list[str] | None = field(default=None, init=False, repr=False)

    def log(self, step: str, message: str) -> None:
        self.out.write(f"[foundry {step}] {_scrub(message, self.secrets())}\n")
        self.out.flush()

    def secrets(self) -> list[str]:
        """What must never be printed: the token, when this step can read it (read once)."""
        if self._secrets is None:
            tokens = (_read_token(self.layout.token_file, required=False),
                      _read_token(self.layout.read_token_file, required=False))
            self._secrets = [t for t in tokens if t]
        return self._secrets

    def remote(self) -> gitops.Remote:
        token_file = self.layout.read_token_file if self.job.planning else self.layout.token_file
        return gitops.Remote(self.job.git.url, str(token_file) if token_file.is_file() else None)

    def git(self) -> gitops.Git:
        self.layout.scratch.mkdir(parents=True, exist_ok=True)
        return gitops.Git(scratch=self.layout.scratch, timeout=self.git_timeout)


def base_result(ctx: Context, step: str, outcome: str, reason: str = "", **fields: Any) -> R.Result:
    return R.Result(step=step, outcome=outcome, reason=" ".join(reason.split()), branch=ctx.job.branch,
                    runner=str(ctx.job.runner.get("name") or "") or None, planHash=ctx.job.plan_hash, **fields)


# ---------------------------------------------------------------- prepare


def prepare(ctx: Context) -> R.Result:
    job, layout = ctx.job, ctx.layout
    branch = job.branch if job.remediation else job.base_branch
    try:
        if job.planning:
            _refuse_push_token(ctx)
        for path in (layout.repo, layout.git_dir):
            if path.exists() and any(path.iterdir()):
                raise StepError(f"{path} is not empty: prepare runs once, on fresh volumes")
        for path in (layout.home, layout.state, layout.publish):
            path.mkdir(parents=True, exist_ok=True)
        git = ctx.git()
        started = time.monotonic()
        try:
            base = gitops.clone_pristine(git, ctx.remote(), branch, layout.git_dir)
        except gitops.GitError as err:
            hint = (f" (a remediation clones the run's branch {branch}; is it still on the remote?)"
                    if job.remediation and "not found" in err.stderr.lower() else "")
            raise StepError(f"{err.summary}{hint}") from None
        gitops.checkout_work_tree(git, layout.git_dir, branch, layout.repo)
        _write_json(layout.prepared, {"baseSha": base, "clonedBranch": branch, "remediation": job.remediation})
        ctx.log("prepare", f"cloned {job.repo} {branch} at {base} in {time.monotonic() - started:.1f} s")
        return base_result(ctx, "prepare", R.OK, baseSha=base)
    except (StepError, gitops.GitError, OSError) as err:
        reason = str(err) if isinstance(err, StepError) else f"prepare failed: {err}"
        ctx.log("prepare", reason)
        return base_result(ctx, "prepare", R.FAILED, reason)


# ---------------------------------------------------------------- agent


def agent(ctx: Context) -> R.Result:
    job, layout = ctx.job, ctx.layout
    try:
        if job.planning:
            raise StepError("input.json asks for a plan: its steps are prepare, plan and verify, not agent")
        if not (layout.repo / ".git").exists():
            raise StepError(f"no work tree at {layout.repo}: prepare has not run")
        layout.home.mkdir(parents=True, exist_ok=True)
        layout.state.mkdir(parents=True, exist_ok=True)
        prompt = build_prompt(job, str(layout.repo))
        (layout.state / PROMPT_FILE).write_text(prompt, encoding="utf-8")
        ctx.log("agent", f"prompt ({len(prompt)} characters, also in {layout.state / PROMPT_FILE}):")
        ctx.out.write(f"{PROMPT_BEGIN}\n{prompt}{PROMPT_END}\n")  # the transcript starts with what the agent was told
        call = ctx.run_agent or run_cli
        started = time.monotonic()
        outcome = call(job, layout, prompt, cli_env(ctx.env), ctx.out)
    except StepError as err:
        outcome = AgentOutcome(False, str(err))
        started = time.monotonic()
    except Exception as err:  # an adapter bug must still end as a result, not a traceback alone
        outcome = AgentOutcome(False, f"the agent runner failed: {type(err).__name__}: {err}")
        started = time.monotonic()
    outcome.summary = (outcome.summary or "").strip()[:_SUMMARY_CAP]
    state = {"ok": outcome.ok, "reason": outcome.reason, "summary": outcome.summary, "tokens": outcome.tokens,
             "costUsd": outcome.cost_usd, "turns": outcome.turns, "runner": outcome.runner}
    try:
        _write_json(layout.state / AGENT_STATE, state)
    except OSError as err:
        outcome = AgentOutcome(False, f"cannot record the agent's outcome: {err}")
    ctx.log("agent", (f"the CLI finished in {time.monotonic() - started:.1f} s" if outcome.ok
                      else f"the CLI failed: {outcome.reason}"))
    res = base_result(ctx, "agent", R.OK if outcome.ok else R.FAILED, "" if outcome.ok else outcome.reason,
                      summary=outcome.summary, **_usage(state))
    if outcome.runner:
        res.runner = outcome.runner
    return res


def cli_env(env: Mapping[str, str]) -> dict[str, str]:
    """The container's environment minus what is the runner's alone (the adapters scrub further)."""
    return {k: v for k, v in env.items() if k not in _RUNNER_ONLY}


def run_cli(job: JobInput, layout: Layout, prompt: str, env: dict[str, str], out: TextIO) -> AgentOutcome:
    """The real adapters (foundry.runner.agents): claude-code, codex, aider, command."""
    from dataclasses import replace

    from foundry.runner.agents import run_agent, spec_from_input

    try:
        spec = spec_from_input(dict(job.runner))
    except ValueError as err:
        return AgentOutcome(False, f"input.json: runner: {err}")
    if job.planning:
        spec = replace(spec, read_only=True)
    transcript = getattr(out, "buffer", None) or _TextSink(out)
    report = run_agent(spec, workdir=layout.repo, home=layout.home, prompt=prompt, env=env, transcript=transcript)
    return outcome_from_report(report, str(job.runner.get("name") or ""))


def outcome_from_report(report: Any, runner: str) -> AgentOutcome:
    """Flatten an AgentReport (foundry.runner.agents.spec) into what the result carries."""
    tokens = None
    if report.tokens_in is not None or report.tokens_out is not None:
        tokens = {"input": int(report.tokens_in or 0), "output": int(report.tokens_out or 0)}
    return AgentOutcome(ok=bool(report.ok), reason=report.reason or "", summary=report.summary or "",
                        tokens=tokens, cost_usd=report.cost_usd, turns=report.turns, runner=runner or None)


# ---------------------------------------------------------------- plan


def plan(ctx: Context) -> R.Result:
    """Run the CLI read-only on the plan prompt; record its answer for verify (as the agent step does)."""
    job, layout = ctx.job, ctx.layout
    try:
        if not job.planning:
            raise StepError("the plan step is for input.json mode plan; this input's mode is apply")
        _refuse_push_token(ctx)
        if not (layout.repo / ".git").exists():
            raise StepError(f"no work tree at {layout.repo}: prepare has not run")
        layout.home.mkdir(parents=True, exist_ok=True)
        layout.state.mkdir(parents=True, exist_ok=True)
        prompt = build_plan_prompt(job, str(layout.repo))
        (layout.state / PROMPT_FILE).write_text(prompt, encoding="utf-8")
        ctx.log("plan", f"prompt ({len(prompt)} characters, also in {layout.state / PROMPT_FILE}):")
        ctx.out.write(f"{PROMPT_BEGIN}\n{prompt}{PROMPT_END}\n")
        started = time.monotonic()
        try:
            outcome = (ctx.run_agent or run_cli)(job, layout, prompt, cli_env(ctx.env), ctx.out)
        except Exception as err:  # an adapter bug must still end as a result
            outcome = AgentOutcome(False, f"the agent runner failed: {type(err).__name__}: {err}")
    except (StepError, OSError) as err:
        outcome, started = AgentOutcome(False, str(err) if isinstance(err, StepError) else f"plan failed: {err}"), 0.0
    state = {"ok": outcome.ok, "reason": outcome.reason, "summary": "", "tokens": outcome.tokens,
             "costUsd": outcome.cost_usd, "turns": outcome.turns, "runner": outcome.runner}
    try:
        layout.state.mkdir(parents=True, exist_ok=True)
        (layout.state / ANSWER_FILE).write_text(outcome.summary or "", encoding="utf-8")
        _write_json(layout.state / AGENT_STATE, state)
    except OSError as err:
        outcome = AgentOutcome(False, f"cannot record the CLI's answer: {err}")
    ctx.log("plan", f"the CLI finished in {time.monotonic() - started:.1f} s" if outcome.ok
            else f"the CLI failed: {outcome.reason}")
    return base_result(ctx, "plan", R.OK if outcome.ok else R.FAILED, "" if outcome.ok else outcome.reason,
                       **_usage(state))


def verify(ctx: Context) -> R.Result:
    """The work tree is unchanged; the answer holds a valid plan: report it with its hash."""
    job, layout = ctx.job, ctx.layout
    fields: dict[str, Any] = {}
    try:
        if not job.planning:
            raise StepError("the verify step is for input.json mode plan; this input's mode is apply")
        _refuse_push_token(ctx)
        prepared = _read_json(layout.prepared, "prepare's record")
        base = str(prepared.get("baseSha") or "")
        fields["baseSha"] = base
        state = _agent_state(layout)
        fields.update(_usage(state))
        # Checked before anything the CLI said is read: a plan made by changing files is no plan.
        _check_unchanged(ctx, base)
        if not state.get("ok"):
            raise StepError(f"the plan step failed: {state.get('reason') or 'no reason recorded'}")
        answer = _read_untrusted(layout.state / ANSWER_FILE, "the CLI's answer", ANSWER_LIMIT)
        try:
            made = plans.parse_answer(answer.decode("utf-8", "replace"))
        except plans.PlanError as err:
            raise StepError(f"the plan is refused: {err}") from None
        record = {**plans.summary_fields(made), "bytes": len(plans.canonical_json(made).encode())}
        try:
            _write_json(layout.state / PLAN_FILE, record)
        except OSError:
            pass  # the work volume may be mounted read-only here; the log and the result carry the plan
        # The whole plan, framed, in the log: the result's 4 KiB may carry only its hash.
        ctx.out.write(f"{plan_begin(record['hash'])}\n{plans.canonical_json(made)}\n{PLAN_END}\n")
        ctx.log("verify", f"plan {record['hash']} ({record['bytes']} bytes, {len(made.files)} files, "
                          f"{len(made.open_questions)} open questions)")
        return base_result(ctx, "verify", R.PLANNED, plan=record, summary=made.summary[:_SUMMARY_CAP], **fields)
    except (StepError, gitops.GitError, OSError) as err:
        reason = str(err) if isinstance(err, StepError) else f"verify failed: {err}"
        ctx.log("verify", reason)
        return base_result(ctx, "verify", R.FAILED, reason, **fields)


def plan_begin(plan_hash: str) -> str:
    return f"----- plan {plan_hash} -----"


def _refuse_push_token(ctx: Context) -> None:
    token_file = ctx.layout.token_file
    if token_file.exists():
        raise StepError(f"a plan takes no push credential, but {token_file} (${ENV_TOKEN_FILE}) exists: mount a "
                        f"read-only token (contents: read) at {DEFAULT_READ_TOKEN_FILE} (${ENV_READ_TOKEN_FILE}) "
                        f"instead, or none for a public repository")


def _check_unchanged(ctx: Context, base: str) -> None:
    """The work tree is the commit prepare cloned: no file changed, added (ignored ones too) or removed, and
    its HEAD did not move. Judged from the pristine git directory, not the work tree's own .git."""
    git, layout = ctx.git(), ctx.layout
    cloned = gitops.rev_parse(git, layout.git_dir, f"refs/heads/{ctx.job.base_branch}")
    if cloned != base:
        raise StepError(f"the pristine git directory moved ({cloned[:12]} is not {base[:12]})")
    changed = gitops.work_tree_changes(git, layout.git_dir, base, layout.repo, layout.index)
    if changed:
        shown = ", ".join(line.strip() for line in changed[:5]) + (f" and {len(changed) - 5} more"
                                                                     if len(changed) > 5 else "")
        raise StepError(f"the CLI changed the work tree in plan mode ({shown}); a plan must change nothing, "
                        f"so it is discarded")
    try:
        head = gitops.work_tree_head(git, layout.repo)
    except gitops.GitError as err:
        raise StepError(f"the CLI broke the work tree's git directory in plan mode ({err.summary})") from None
    if head != base:
        raise StepError(f"the CLI moved the work tree's HEAD in plan mode ({head[:12]} is not {base[:12]}); "
                        f"the plan is discarded")


# ---------------------------------------------------------------- publish


def publish(ctx: Context) -> R.Result:
    # Imported here: only publish talks to GitHub's API (httpx is slow to import for the other steps).
    from foundry.runner.publish import build, commit_and_push, open_pull
    from foundry.runner.pulls import PullsError, client

    job, layout = ctx.job, ctx.layout
    fields: dict[str, Any] = {}
    try:
        if job.planning:
            raise StepError("input.json asks for a plan: a plan never publishes (its steps are prepare, plan "
                            "and verify)")
        prepared = _read_json(layout.prepared, "prepare's record")
        base = str(prepared.get("baseSha") or "")
        fields["baseSha"] = base
        agent_state = _agent_state(layout)
        fields.update(_usage(agent_state))
        summary = agent_state.get("summary") or ""
        if not agent_state.get("ok"):
            raise StepError(f"the agent step failed: {agent_state.get('reason') or 'no reason recorded'}")
        git = ctx.git()
        # The pristine directory's ref is the truth for the base; the record only says which one.
        cloned, base_tree = gitops.commit_and_tree(git, layout.git_dir, f"refs/heads/{prepared.get('clonedBranch')}")
        if cloned != base:
            raise StepError(f"the pristine git directory moved ({cloned[:12]} is not {base[:12]})")
        built = build(git, layout, job, base, base_tree)
        fields.update(filesChanged=len(built.changes), linesAdded=built.added, linesRemoved=built.removed)
        if built.empty:
            ctx.log("publish", "the agent changed nothing; nothing pushed")
            return base_result(ctx, "publish", R.NO_CHANGES, "the agent changed no files", summary=summary, **fields)
        if not built.verdict.allowed:
            reason = f"policy refused the change: {built.verdict.reason}"
            for v in built.verdict.violations:
                ctx.log("publish", f"refused ({v.rule}): {v.message}")
            return base_result(ctx, "publish", R.REFUSED, reason, summary=summary, **fields)
        try:
            sha = commit_and_push(git, layout, job, built, summary, ctx.remote())
        except gitops.GitError as err:
            raise StepError(err.summary) from None
        fields["headSha"] = sha
        ctx.log("publish", f"pushed {sha} to {job.branch} ({built.verdict.reason})")
        token = _read_token(layout.token_file, required=True)
        try:
            pr = open_pull((ctx.pulls or client)(job.git.api_url, token), job, summary)
        except PullsError as err:
            raise StepError(f"pushed {sha[:12]} to {job.branch}, but {err}") from None
        ctx.log("publish", f"pull request #{pr.number} {'opened (draft)' if pr.created else 'updated'}: {pr.url}")
        return base_result(ctx, "publish", R.PUSHED, pr=pr.as_dict(), summary=summary, **fields)
    except (StepError, gitops.GitError, OSError) as err:
        reason = str(err) if isinstance(err, StepError) else f"publish failed: {err}"
        ctx.log("publish", reason)
        return base_result(ctx, "publish", R.FAILED, reason, **fields)


def _agent_state(layout: Layout) -> dict[str, Any]:
    """agent.json, read as untrusted input (the CLI could have written it): known fields, checked types."""
    raw = _read_untrusted_json(layout.state / AGENT_STATE, "the agent step's record")
    state: dict[str, Any] = {"ok": raw.get("ok") is True, "reason": str(raw.get("reason") or "")[:1000],
                             "summary": str(raw.get("summary") or "")[:_SUMMARY_CAP]}
    state.update(_usage(raw))
    return state


def _usage(raw: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    tokens = raw.get("tokens")
    if isinstance(tokens, Mapping):
        counts = {k: tokens.get(k) for k in ("input", "output")}
        if all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts.values()):
            out["tokens"] = counts
    cost = raw.get("costUsd")
    if isinstance(cost, (int, float)) and not isinstance(cost, bool) and 0 <= cost < 1e6:
        out["costUsd"] = round(float(cost), 6)
    turns = raw.get("turns")
    if isinstance(turns, int) and not isinstance(turns, bool) and turns >= 0:
        out["turns"] = turns
    return out


# ---------------------------------------------------------------- all three


def run_step(ctx: Context, step: str) -> R.Result:
    ctx.current = step
    return {"prepare": prepare, "agent": agent, "publish": publish, "plan": plan, "verify": verify}[step](ctx)


def run_all(ctx: Context, on_result: Callable[[R.Result], None] | None = None) -> R.Result:
    """prepare → agent → publish (a plan: prepare → plan → verify) in this process; stops at the first
    step that does not end `ok`."""
    res = R.Result(step="prepare", outcome=R.FAILED, reason="nothing ran")
    for step in PLAN_STEPS if ctx.job.planning else STEPS:
        res = run_step(ctx, step)
        if on_result is not None:
            on_result(res)
        if res.outcome != R.OK:
            break
    return res


# ---------------------------------------------------------------- helpers


class _TextSink:
    """A bytes writer over a text stream (the adapters write the transcript as bytes)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def write(self, data: bytes) -> int:
        self.out.write(data.decode("utf-8", "replace"))
        return len(data)

    def flush(self) -> None:
        self.out.flush()


def _read_token(path: Path, *, required: bool) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as err:
        if not required:
            return ""
        raise StepError(f"no GitHub token: cannot read {path} (${ENV_TOKEN_FILE}): {err.strerror or err}") from None
    if not token and required:
        raise StepError(f"no GitHub token: {path} (${ENV_TOKEN_FILE}) is empty")
    return token


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StepError(f"{what} is missing ({path}): did the earlier step run?") from None
    except (OSError, ValueError) as err:
        raise StepError(f"{what} ({path}) is unreadable: {err}") from None
    if not isinstance(data, dict):
        raise StepError(f"{what} ({path}) is not a JSON object")
    return data


def _read_untrusted_json(path: Path, what: str, limit: int = 64 << 10) -> dict[str, Any]:
    """A JSON object from a file the agent could have replaced (see _read_untrusted)."""
    raw = _read_untrusted(path, what, limit)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise StepError(f"{what} ({path}) is not JSON ({type(err).__name__})") from None
    if not isinstance(data, dict):
        raise StepError(f"{what} ({path}) is not a JSON object")
    return data


def _read_untrusted(path: Path, what: str, limit: int) -> bytes:
    """A file the agent could have replaced: a regular file only (no symlink to a credential, no FIFO
    to block on), at most `limit` bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise StepError(f"{what} is missing ({path}): did the earlier step run?") from None
    except OSError as err:
        raise StepError(f"{what} ({path}) cannot be opened as a plain file: {err.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StepError(f"{what} ({path}) is not a regular file")
        raw = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    if len(raw) > limit:
        raise StepError(f"{what} ({path}) is larger than {limit} bytes")
    return raw


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
