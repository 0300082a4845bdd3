"""`foundry agent run` in plan mode: the CLI read-only on the base branch, a validated plan, no push.

Real git over smart HTTP (the GitHub stand-in, anonymous git refused, `main`
protected); the clone uses a token that can only read. The real Claude Code
and Codex run against the model stand-in, whose request log shows the
read-only mode each CLI declared; a `command` runner (which has no read-only
mode of its own) shows that the runner's own check catches a CLI that edits.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from foundry.dev.github_server import GitHubServer
from foundry.dev.model_server import Final, ModelServer, Patch, ToolCall, Usage
from foundry.domain import plans
from foundry.runner import jobinput
from foundry.runner.agents.aider import READ_ONLY_REFUSAL
from foundry.runner.steps import PLAN_END, plan_begin
from tests.support.runner_kit import BASE_FILES, command_runner, job_input, write_edit_script

PUSH_TOKEN = "ghs_planPushToken0123456789abcdefXYZ"
READ_TOKEN = "ghs_planReadOnly0123456789abcdefXYZ"
REPO = "acme/api"
RUN = "linear-acme-42-1"
BRANCH = f"foundry/{RUN}"
MODELS = {"claude-code": "claude-sonnet-4-5", "codex": "gpt-5.5"}
PLAN = {
    "summary": "PLAN-SUMMARY-4410: greet() strips the name before formatting it.",
    "files": [{"path": "greeter.py", "why": "greet() formats the raw name"},
              {"path": "test_greeter.py", "why": "a test for a padded name"}],
    "approach": "Call name.strip() inside greet(); the signature stays.",
    "tests": ["test_greeter.py: greet('  Ada ') == 'Hello, Ada!'"],
    "risks": ["Callers that rely on the padding."],
    "openQuestions": [],
}


def answer(obj: Any) -> str:
    return "I read greeter.py. Here is the plan.\n\n```json\n" + json.dumps(obj, indent=2) + "\n```\n"


@pytest.fixture
def github():
    with GitHubServer(token=PUSH_TOKEN, require_auth=True) as gh:
        gh.add_repo(REPO, files=BASE_FILES)
        gh.protect_branch(REPO, "main")
        gh.register_token(READ_TOKEN, repositories=[REPO], permissions={"contents": "read", "metadata": "read"})
        yield gh


class PlanRun:
    """One `foundry agent run` process of a plan, its folders and what it left."""

    def __init__(self, tmp: Path, gh: GitHubServer, bin_dir: Path | None = None, name: str = "p1") -> None:
        self.tmp, self.gh, self.bin_dir = tmp, gh, bin_dir
        self.dir = tmp / name
        self.dir.mkdir()
        self.read_token = tmp / "credentials" / "read-token"
        self.read_token.parent.mkdir(exist_ok=True)
        self.read_token.write_text(READ_TOKEN + "\n")
        self.push_token = tmp / "credentials" / "token"  # absent unless a test mounts it
        self.repo_dir = self.dir / "work" / "repo"

    def input(self, runner: dict[str, Any], **kw: Any) -> dict[str, Any]:
        raw = job_input(run=RUN, repo=REPO, git_url=self.gh.git_url(REPO), api_url=self.gh.url, runner=runner, **kw)
        raw["mode"] = "plan"
        raw.pop("planText")  # nothing is approved yet
        return raw

    def run(self, raw: dict[str, Any], model: ModelServer | None = None, step: str | None = None,
            timeout: float = 240) -> tuple[int, str, dict[str, Any]]:
        path = self.dir / "input.json"
        path.write_text(json.dumps(raw))
        env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "FOUNDRY_JOB_INPUT": str(path),
               "FOUNDRY_WORK_DIR": str(self.dir / "work"), "FOUNDRY_PUBLISH_DIR": str(self.dir / "publish"),
               "FOUNDRY_GITHUB_TOKEN_FILE": str(self.push_token),
               "FOUNDRY_GITHUB_READ_TOKEN_FILE": str(self.read_token),
               "FOUNDRY_RESULT_PATH": str(self.dir / "result.json")}
        if self.bin_dir is not None:
            env["FOUNDRY_AGENT_BIN_DIR"] = str(self.bin_dir)
        if model is not None:
            env.update({"ANTHROPIC_BASE_URL": model.url, "ANTHROPIC_API_KEY": "sk-ant-plan",
                        "OPENAI_BASE_URL": model.url + "/v1", "OPENAI_API_KEY": "sk-oai-plan"})
        argv = [sys.executable, "-m", "foundry.cli.main", "agent", "run", *(["--step", step] if step else [])]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
        return done.returncode, done.stdout + done.stderr, json.loads((self.dir / "result.json").read_text())

    def files(self) -> dict[str, str]:
        return {str(p.relative_to(self.repo_dir)): p.read_text() for p in self.repo_dir.rglob("*")
                if p.is_file() and ".git" not in p.relative_to(self.repo_dir).parts}


def assert_nothing_pushed(gh: GitHubServer, main_before: str) -> None:
    assert gh.branch_sha(REPO, "main") == main_before
    assert BRANCH not in gh.repos[REPO].branches
    assert [u for u in gh.ref_updates_for(REPO) if u.via == "git"] == []
    assert not gh.pulls


def command_plan(tmp: Path, say: str, ops: dict[str, Any] | None = None) -> dict[str, Any]:
    """A `command` runner whose final answer (its last stdout line, JSON) is `say`."""
    return command_runner(write_edit_script(tmp), {**(ops or {}), "say": json.dumps({"summary": say})}, tmp)


# ------------------------------------------------------------------ the runner's own rules (no model)


def test_a_plan_is_validated_hashed_and_reported_and_nothing_is_pushed(github: GitHubServer, tmp_path: Path) -> None:
    run = PlanRun(tmp_path, github)
    main_before = github.branch_sha(REPO, "main")
    code, log, result = run.run(run.input(command_plan(tmp_path, answer(PLAN))))
    assert (code, result["outcome"], result["step"]) == (0, "planned", "verify"), (result, log[-3000:])
    expected = plans.validate(PLAN)
    assert result["plan"]["hash"] == plans.plan_hash(expected)
    assert plans.validate(result["plan"]["json"]) == expected
    assert result["plan"]["markdown"] == plans.render_markdown(expected)
    assert result["baseSha"] == main_before and result["summary"] == PLAN["summary"]
    # The whole plan is in the log, framed by its hash, and in the state directory.
    framed = log.split(plan_begin(result["plan"]["hash"]) + "\n", 1)[1].split("\n" + PLAN_END, 1)[0]
    assert plans.plan_hash(plans.parse_json(framed)) == result["plan"]["hash"]
    stored = json.loads((run.dir / "work" / "state" / "plan.json").read_text())
    assert stored["hash"] == result["plan"]["hash"]
    assert run.files() == BASE_FILES
    assert_nothing_pushed(github, main_before)
    assert READ_TOKEN not in log and READ_TOKEN not in json.dumps(result)
    # The same plan, written differently, is the same plan: a second run gives the same hash.
    again = PlanRun(tmp_path, github, name="p2")
    reordered = {k: PLAN[k] for k in reversed(list(PLAN))}
    _, _, second = again.run(again.input(command_plan(tmp_path, "Plan:\n```json\n" + json.dumps(reordered)
                                                      + "\n```")))
    assert second["plan"]["hash"] == result["plan"]["hash"]


@pytest.mark.parametrize("say,reason", [
    ("I could not make up my mind.", "the plan is refused: the agent's answer has no ```json block"),
    (answer({**PLAN, "files": "greeter.py"}), "the plan is refused: plan.files must be a list"),
    ("```json\n{\"summary\": \"x\",\n```", "the plan is refused: the plan is not valid JSON"),
    (answer({**PLAN, "risks": ["r" * 1500 + str(i) for i in range(60)]}),
     f"the plan is refused: the plan is .* bytes; a plan may be at most {plans.MAX_PLAN_BYTES} bytes"),
])
def test_a_malformed_or_oversized_plan_fails_with_the_reason(say: str, reason: str, github: GitHubServer,
                                                             tmp_path: Path) -> None:
    run = PlanRun(tmp_path, github)
    main_before = github.branch_sha(REPO, "main")
    code, log, result = run.run(run.input(command_plan(tmp_path, say)))
    assert (code, result["outcome"], result["step"]) == (1, "failed", "verify"), (result, log[-2000:])
    assert re.match(reason, result["reason"]), result["reason"]
    assert "plan" not in result
    assert_nothing_pushed(github, main_before)


@pytest.mark.parametrize("ops,reason", [
    ({"write": {"greeter.py": "def greet(name): return name\n"}}, "(M greeter.py)"),
    ({"write": {"notes/new.txt": "x\n"}}, "(?? notes/new.txt)"),
    ({"delete": ["README.md"]}, "(D README.md)"),
    # Hidden by the work tree's own .git/info/exclude: that .git is not what the check reads.
    ({"write": {".git/info/exclude": "secret.txt\n", "secret.txt": "x\n"}}, "(?? secret.txt)"),
    ({"run": [["git", "commit", "-q", "--allow-empty", "-m", "sneaky"]]}, "moved the work tree's HEAD"),
])
def test_a_cli_that_changes_the_work_tree_in_plan_mode_fails_the_plan(ops: dict[str, Any], reason: str,
                                                                     github: GitHubServer, tmp_path: Path) -> None:
    run = PlanRun(tmp_path, github)
    main_before = github.branch_sha(REPO, "main")
    code, log, result = run.run(run.input(command_plan(tmp_path, answer(PLAN), ops)))
    assert (code, result["outcome"], result["step"]) == (1, "failed", "verify"), (result, log[-2000:])
    assert reason in result["reason"] and "in plan mode" in result["reason"], result["reason"]
    assert "plan" not in result  # a plan made by changing files is not reported
    assert_nothing_pushed(github, main_before)


def test_an_ignored_file_the_cli_left_fails_the_plan_too(github: GitHubServer, tmp_path: Path) -> None:
    github.add_repo("acme/ignores", files={**BASE_FILES, ".gitignore": "*.log\n"})
    run = PlanRun(tmp_path, github)
    raw = run.input(command_plan(tmp_path, answer(PLAN), {"write": {"debug.log": "x\n"}}))
    raw.update(repo="acme/ignores", git={"url": github.git_url("acme/ignores"), "apiUrl": github.url})
    github.register_token(READ_TOKEN, repositories=["acme/ignores"], permissions={"contents": "read"})
    code, _, result = run.run(raw)
    assert (code, result["outcome"]) == (1, "failed") and "!! debug.log" in result["reason"], result


def test_a_plan_refuses_to_start_when_the_push_token_is_mounted(github: GitHubServer, tmp_path: Path) -> None:
    run = PlanRun(tmp_path, github)
    run.push_token.write_text(PUSH_TOKEN)
    code, _, result = run.run(run.input(command_plan(tmp_path, answer(PLAN))))
    assert (code, result["outcome"], result["step"]) == (1, "failed", "prepare"), result
    assert "a plan takes no push credential" in result["reason"] and str(run.push_token) in result["reason"]
    assert not (run.dir / "publish" / "repo.git").exists()  # it cloned nothing
    assert PUSH_TOKEN not in json.dumps(result)


def test_a_plan_never_publishes_and_its_token_could_not_push_anyway(github: GitHubServer, tmp_path: Path) -> None:
    run = PlanRun(tmp_path, github)
    main_before = github.branch_sha(REPO, "main")
    raw = run.input(command_plan(tmp_path, answer(PLAN), {"write": {"greeter.py": "changed\n"}}))
    for step in ("prepare", "agent", "publish"):
        code, _, result = run.run(raw, step=step)
        if step == "prepare":
            assert (code, result["outcome"]) == (0, "ok"), result
        else:
            assert (code, result["outcome"]) == (1, "failed"), result
            assert "input.json asks for a plan" in result["reason"], result
    # Step by step, as the pod runs them: plan (the CLI edits, exits 0), then verify catches the edit.
    assert run.run(raw, step="plan")[2]["outcome"] == "ok"
    code, _, result = run.run(raw, step="verify")
    assert (code, result["outcome"], result["step"]) == (1, "failed", "verify")
    assert "(M greeter.py)" in result["reason"], result
    assert_nothing_pushed(github, main_before)
    # The read token is contents: read: GitHub (the stand-in) refuses a push with it.
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_TERMINAL_PROMPT": "0"}
    url = github.git_url(REPO).replace("://", f"://x-access-token:{READ_TOKEN}@")
    pushed = subprocess.run(["git", "-C", str(run.dir / "publish" / "repo.git"), "push", url, "main:refs/heads/x"],
                            env=env, capture_output=True, text=True)
    assert pushed.returncode != 0
    assert [u for u in github.ref_updates_for(REPO) if u.accepted and u.via == "git"] == []


def test_a_large_plan_keeps_its_hash_in_the_4_kib_result_and_the_whole_plan_in_the_log(
        github: GitHubServer, tmp_path: Path) -> None:
    big = {**PLAN, "risks": [f"risk {i}: " + "r" * 900 for i in range(10)]}
    run = PlanRun(tmp_path, github)
    code, log, result = run.run(run.input(command_plan(tmp_path, answer(big))))
    assert (code, result["outcome"]) == (0, "planned"), (result, log[-2000:])
    assert len((run.dir / "result.json").read_bytes()) <= 4096
    expected = plans.plan_hash(plans.validate(big))
    assert result["plan"] == {"hash": expected, "bytes": len(plans.canonical_json(plans.validate(big)).encode()),
                              "cut": True}
    framed = log.split(plan_begin(expected) + "\n", 1)[1].split("\n" + PLAN_END, 1)[0]
    assert plans.plan_hash(plans.parse_json(framed)) == expected


def test_aider_is_refused_for_a_plan_with_the_reason(github: GitHubServer, tmp_path: Path,
                                                    agent_bin_dir: Path) -> None:
    run = PlanRun(tmp_path, github, agent_bin_dir)
    with ModelServer() as model:
        code, _, result = run.run(run.input({"name": "aider", "model": "gpt-4o", "timeoutSeconds": 60}), model)
        assert model.model_requests() == []  # refused before it started
    assert (code, result["outcome"], result["step"]) == (1, "failed", "plan")
    assert READ_ONLY_REFUSAL in result["reason"]


@pytest.mark.parametrize("change,message", [
    ({"mode": "dry-run"}, "mode must be one of apply, plan"),
    ({"mode": "plan", "pr": {"number": 3}}, "a plan reads the base branch"),
    ({"mode": "plan", "feedback": {"reason": "CI failed"}}, "a plan reads the base branch"),
])
def test_the_job_input_mode_is_checked(change: dict[str, Any], message: str) -> None:
    raw = {**job_input(git_url="file:///x", api_url="http://127.0.0.1:1", runner={"name": "codex"}), **change}
    with pytest.raises(jobinput.JobInputError, match=message):
        jobinput.parse(raw)
    assert jobinput.parse(job_input(git_url="file:///x", api_url="http://127.0.0.1:1",
                                    runner={"name": "codex"})).mode == "apply"


# ------------------------------------------------------------------ the real CLIs, read-only


def read_only_session(name: str, repo: Path) -> list:
    """Read the code, try one edit (the CLI's read-only mode refuses it), answer with the plan."""
    if name == "claude-code":
        return [ToolCall("Read", {"file_path": f"{repo}/greeter.py"}),
                ToolCall("Write", {"file_path": f"{repo}/greeter.py", "content": "overwritten\n"}),
                Final(answer(PLAN))]
    return [ToolCall("exec_command", {"cmd": "cat greeter.py", "workdir": str(repo)}),
            Patch("*** Begin Patch\n*** Update File: greeter.py\n@@\n-def greet(name: str) -> str:\n"
                  "+def greet(name):\n*** End Patch\n"),
            Final(answer(PLAN))]


DECLARED = {"claude-code": "plan", "codex": "read-only"}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["claude-code", "codex"])
def test_a_real_cli_plans_read_only_and_the_plan_is_reported(name: str, github: GitHubServer, tmp_path: Path,
                                                             agent_bin_dir: Path) -> None:
    run = PlanRun(tmp_path, github, agent_bin_dir)
    main_before = github.branch_sha(REPO, "main")
    with ModelServer(read_only_session(name, run.repo_dir), usage=Usage(1100, 70)) as model:
        code, log, result = run.run(run.input({"name": name, "model": MODELS[name], "timeoutSeconds": 120}),
                                    model)
        modes = model.declared_modes()
        results = model.tool_results()
        prompt = model.prompt_text()
        served = model.served_steps()
    assert (code, result["outcome"], result["step"]) == (0, "planned", "verify"), (result, log[-3000:])
    assert served == [0, 1, 2]
    # The CLI told the model it was read-only, on every request.
    assert modes and set(modes) == {DECLARED[name]}, modes
    # It read the code, and its read-only mode refused the edit.
    assert "Hello, {name}!" in results[0].text
    refusal = results[1]
    assert refusal.is_error or "rejected" in refusal.text, refusal
    # The plan prompt, with the ticket fenced as untrusted.
    assert "End your reply with exactly one fenced JSON block" in prompt
    assert prompt.index("## Your answer") < prompt.index("BEGIN UNTRUSTED TICKET")
    # The plan validates and hashes as the scripted one does; nothing changed, nothing was pushed.
    expected = plans.validate(PLAN)
    assert plans.validate(result["plan"]["json"]) == expected
    assert result["plan"]["hash"] == plans.plan_hash(expected)
    assert result["tokens"] == {"input": 1100 * 3, "output": 70 * 3}
    assert run.files() == BASE_FILES
    assert_nothing_pushed(github, main_before)
    assert READ_TOKEN not in log and READ_TOKEN not in model.all_text()


@pytest.mark.parametrize("body,mode", [
    # Trimmed from what the pinned CLIs sent: Claude Code in plan mode, Codex read-only and in apply mode.
    ({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "<system-reminder>\nPlan mode is active. The user indicated that they do not "
                                 "want you to execute yet\n</system-reminder>"}, {"type": "text", "text": "plan"}]}]},
     "plan"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "do it"}]}]}, None),
    ({"input": [{"type": "message", "role": "developer", "content": [{"type": "input_text", "text":
        "<permissions instructions>\nFilesystem sandboxing defines which files can be read or written. "
        "`sandbox_mode` is `read-only`: The sandbox only permits reading files."}]}]}, "read-only"),
    ({"input": [{"type": "message", "role": "developer", "content": [{"type": "input_text", "text":
        "`sandbox_mode` is `danger-full-access`: No filesystem sandboxing"}]}]}, "danger-full-access"),
])
def test_the_model_stand_in_reads_the_mode_a_request_declares(body: dict[str, Any], mode: str | None) -> None:
    from foundry.dev.model_wire import declared_mode

    assert declared_mode(body) == mode
