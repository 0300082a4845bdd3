"""Plans through the local provider: a real `foundry agent run` in plan mode (a `command` runner) in its own
folder, cloning from the GitHub stand-in (anonymous git refused) with the read-only token the provider wrote,
and plan_state reporting the plan only once it has been checked again."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import pytest

from foundry.agents.credentials import StaticTokenSource
from foundry.agents.local import LocalProvider
from foundry.config import parse_config
from foundry.dev.github_server import GitHubServer
from foundry.domain import plans
from tests.support.runner_kit import command_runner, job_input, write_edit_script
# The stand-in with anonymous git refused and READ registered as a contents:read token for REPO.
from tests.test_runner_plan import PUSH_TOKEN as PUSH, READ_TOKEN as READ, REPO, github  # noqa: F401

RUN = {"metadata": {"name": "linear-acme-42-1", "namespace": "ns", "uid": "u"}}
PLAN = {"summary": "greet() strips the name.", "files": [{"path": "greeter.py", "why": "greet formats the name"}],
        "approach": "Call name.strip().", "tests": ["a padded name"], "risks": [], "openQuestions": []}


def answer(obj) -> str:
    return "Here is the plan.\n```json\n" + json.dumps(obj) + "\n```\n"


def _provider(tmp_path: Path, read: str = READ, timeout: int | None = None) -> LocalProvider:
    cfg = parse_config({"agent": {"provider": "local", "runner": {"name": "claude-code"},
                                  "local_command": [sys.executable, "-m", "foundry.cli.main", "agent", "run"]}})
    if timeout is not None:  # below the 30 s a config file may say, to see the deadline quickly
        cfg = dataclasses.replace(cfg, plan=dataclasses.replace(cfg.plan, timeout_seconds=timeout))
    return LocalProvider(cfg, root=tmp_path / "agents", tokens=StaticTokenSource(PUSH, read))


def _input(gh: GitHubServer, tmp_path: Path, say: str, ops: dict | None = None) -> dict:
    runner = command_runner(write_edit_script(tmp_path), {**(ops or {}), "say": json.dumps({"summary": say})}, tmp_path)
    raw = job_input(run="linear-acme-42-1", repo=REPO, git_url=gh.git_url(REPO), api_url=gh.url, runner=runner)
    raw.update(mode="plan", planText="")
    return raw


def _ended(p: LocalProvider, number: int = 1, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = p.plan_state(RUN, number)
        if st["state"] != "running":
            return st
        time.sleep(0.1)
    raise AssertionError(f"plan {number} still running: {p.plan_state(RUN, number)}")


def test_a_local_plan_clones_with_the_read_token_and_its_checked_plan_is_reported(github, tmp_path):
    p = _provider(tmp_path)
    main_before = github.branch_sha(REPO, "main")
    assert p.plan_state(RUN, 1) == {"state": "missing"}
    rec = p.dispatch_plan(RUN, 1, _input(github, tmp_path, answer(PLAN)))
    assert (rec["name"], rec["number"], rec["state"]) == ("linear-acme-42-1-p1", 1, "running") and rec["startedAt"]
    st = _ended(p)
    work = tmp_path / "agents" / "ns" / "linear-acme-42-1-p1"
    made = plans.validate(PLAN)
    assert (st["state"], st["outcome"], st["step"]) == ("succeeded", "planned", "verify"), (
        st, (work / "agent.log").read_text()[-2000:])
    assert st["plan"] == {"hash": plans.plan_hash(made), "json": made.as_dict(),
                          "markdown": plans.render_markdown(made), "bytes": len(plans.canonical_json(made).encode())}
    # The folder holds the read token where the runner looked for it, and never the push token.
    creds = work / "credentials"
    assert sorted(f.name for f in creds.iterdir()) == ["read-token"]
    assert (creds / "read-token").read_text() == READ and oct((creds / "read-token").stat().st_mode & 0o777) == "0o600"
    assert json.loads((work / "input.json").read_text())["mode"] == "plan"
    log = (work / "agent.log").read_text()
    assert READ not in log and PUSH not in log and PUSH not in json.dumps(st)
    # A second dispatch (a restarted operator) adopts the plan that ended, and starts nothing.
    again = _provider(tmp_path).dispatch_plan(RUN, 1, _input(github, tmp_path, "other"))
    assert (again["state"], again["finishedAt"]) == ("succeeded", st["finishedAt"])
    assert github.branch_sha(REPO, "main") == main_before and not github.pulls
    assert [u for u in github.ref_updates_for(REPO) if u.via == "git"] == []
    p.cancel_plan(RUN, 1)  # ended: nothing to stop, but the token goes
    assert not (creds / "read-token").exists()


def test_a_plan_cut_from_the_result_is_read_from_the_log_and_a_refused_one_says_why(github, tmp_path):
    big = {**PLAN, "risks": [f"risk {i}: " + "r" * 900 for i in range(10)]}
    p = _provider(tmp_path)
    p.dispatch_plan(RUN, 1, _input(github, tmp_path, answer(big)))
    st = _ended(p)
    work = tmp_path / "agents" / "ns" / "linear-acme-42-1-p1"
    assert json.loads((work / "result.json").read_text())["plan"]["cut"] is True
    assert st["state"] == "succeeded" and st["plan"]["json"] == plans.validate(big).as_dict(), st
    assert st["plan"]["hash"] == plans.plan_hash(plans.validate(big))
    # The log is what plan_state trusts for a cut plan, so a log that lost the plan loses the plan.
    (work / "agent.log").write_text("[foundry verify] nothing framed here\n")
    lost = p.plan_state(RUN, 1)
    assert (lost["state"], lost["reason"]) == ("failed", "PlanInvalid") and "holds no complete frame" in lost["message"]

    p.dispatch_plan(RUN, 2, _input(github, tmp_path, "I could not make up my mind."))
    refused = _ended(p, 2)
    assert (refused["state"], refused["outcome"], refused["step"]) == ("failed", "failed", "verify"), refused
    assert refused["reason"].startswith("the plan is refused: the agent's answer has no ```json block")
    assert "plan" not in refused


def test_without_a_read_token_the_plan_clones_anonymously_and_the_stand_in_refuses(github, tmp_path):
    p = _provider(tmp_path, read="")
    p.dispatch_plan(RUN, 1, _input(github, tmp_path, answer(PLAN)))
    st = _ended(p)
    assert (st["state"], st["step"]) == ("failed", "prepare"), st
    assert not (tmp_path / "agents" / "ns" / "linear-acme-42-1-p1" / "credentials").exists()


def test_a_plan_past_its_deadline_is_stopped_and_says_so(github, tmp_path):
    p = _provider(tmp_path, timeout=2)
    p.dispatch_plan(RUN, 1, _input(github, tmp_path, answer(PLAN), {"run": [["sleep", "60"]]}))
    st = _ended(p, timeout=30)
    assert (st["state"], st["cause"], st["outcome"]) == ("failed", "DeadlineExceeded", "failed"), st
    assert st["reason"] == "the plan ran past its deadline of 2 s (DeadlineExceeded)"
    pid = int((tmp_path / "agents" / "ns" / "linear-acme-42-1-p1" / "pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert p.plan_state(RUN, 1) == st  # it stays so


def test_an_apply_input_is_not_a_plan(tmp_path):
    with pytest.raises(Exception, match="a plan runs input.json mode plan"):
        _provider(tmp_path).dispatch_plan(RUN, 1, {"mode": "apply"})
