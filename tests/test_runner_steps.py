"""The runner's three steps with the `command` runner, against real git over smart HTTP.

Each step runs with a fresh Context, as each runs in its own container in the
pod. The remote is the GitHub stand-in: bare repositories served by `git
http-backend`, anonymous git refused (so every clone and push went through the
runner's credential helper), non-fast-forward updates refused and recorded;
what it holds is read back with a fresh `git clone`.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from foundry.runner import gitops
from foundry.runner import result as R
from foundry.runner.jobinput import parse
from foundry.runner.layout import Layout
from foundry.runner.steps import Context, agent, prepare, publish, run_all
from foundry.dev.github_server import GitHubServer
from tests.support.runner_kit import (
    BASE_FILES, PLAN_TEXT, basic_auth, command_runner, fresh_clone, git, job_input, make_origin, remote_sha, trailers,
    write_edit_script,
)

TOKEN = "ghs_runnerTestToken0123456789abcdef"
REPO = "acme/api"
RUN = "linear-acme-42-1"
BRANCH = f"foundry/{RUN}"
FIXED = 'def greet(name: str) -> str:\n    return f"Hello, {name.strip()}!"\n'


class Bed:
    """The stand-in with one repository, a token file and an edit script, for one test."""

    def __init__(self, tmp: Path, gh: GitHubServer) -> None:
        self.tmp = tmp
        self.gh = gh
        gh.add_repo(REPO, files=BASE_FILES)
        self.url = gh.git_url(REPO)
        self.script = write_edit_script(tmp)
        self.token_file = tmp / "credentials" / "token"
        self.token_file.parent.mkdir()
        self.token_file.write_text(TOKEN + "\n")
        self.attempts = 0

    def context(self, raw: dict[str, Any], attempt_dir: Path) -> tuple[Context, io.StringIO]:
        layout = Layout(attempt_dir / "work", attempt_dir / "publish", self.token_file)
        out = io.StringIO()
        env = {"PATH": os.environ["PATH"], "FOUNDRY_GITHUB_TOKEN_FILE": str(self.token_file)}
        return Context(job=parse(raw), layout=layout, env=env, out=out), out

    def input(self, ops: dict[str, Any], **kw: Any) -> dict[str, Any]:
        return job_input(run=RUN, repo=REPO, git_url=self.url, api_url=self.gh.url,
                         runner=command_runner(self.script, ops, self.tmp), **kw)

    def attempt(self, ops: dict[str, Any], **kw: Any) -> tuple[list[R.Result], Layout, str]:
        """prepare, agent, publish, each with a fresh Context (as in three containers)."""
        self.attempts += 1
        raw = self.input(ops, **kw)
        results: list[R.Result] = []
        transcript = []
        layout = None
        for step in (prepare, agent, publish):
            ctx, out = self.context(raw, self.tmp / f"attempt{self.attempts}")
            layout = ctx.layout
            results.append(step(ctx))
            transcript.append(out.getvalue())
            if results[-1].outcome != R.OK:
                break
        assert layout is not None
        return results, layout, "".join(transcript)

    def branch(self, name: str = BRANCH) -> str | None:
        return self.gh.repos[REPO].branches.get(name)

    def pulls(self) -> list[Any]:
        return [p for p in self.gh.pulls.values() if p.repo == REPO and p.head_ref == BRANCH]

    def pushes(self) -> list[Any]:
        return [u for u in self.gh.ref_updates_for(REPO, BRANCH) if u.via == "git"]

    def check_out(self, name: str = "check") -> Path:
        return fresh_clone(self.url, BRANCH, self.tmp / name, env=basic_auth(TOKEN))


@pytest.fixture
def bed(tmp_path: Path):
    with GitHubServer(token=TOKEN, require_auth=True, git_root=tmp_path / "github") as gh:
        yield Bed(tmp_path, gh)


def test_three_steps_push_one_commit_with_trailers_and_author(bed: Bed) -> None:
    base = bed.branch("main")
    results, layout, transcript = bed.attempt({"write": {"greeter.py": FIXED, "test_greeter.py": "assert True\n"},
                                               "say": "Stripped the name."})
    assert [r.outcome for r in results] == ["ok", "ok", "pushed"], results[-1].reason
    final = results[-1]
    clone = bed.check_out()
    head = git("rev-parse", "HEAD", cwd=clone).strip()
    assert final.headSha == head and final.baseSha == base
    assert git("rev-parse", "HEAD^", cwd=clone).strip() == base  # one commit, on what prepare cloned
    assert (clone / "greeter.py").read_text() == FIXED
    assert (clone / "test_greeter.py").read_text() == "assert True\n"
    assert git("log", "-1", "--format=%an <%ae>|%cn <%ce>", cwd=clone).strip() == \
        "Foundry agent <agent@foundry.dev>|Foundry agent <agent@foundry.dev>"
    assert trailers(clone) == {"Foundry-Run": RUN, "Foundry-Attempt": "1", "Foundry-Issue": "ACME-42"}
    assert git("log", "-1", "--format=%s", cwd=clone).strip() == "ACME-42: Greet people by name"
    assert (final.filesChanged, final.linesAdded, final.linesRemoved) == (2, 2, 1)
    [pull] = bed.pulls()
    assert final.pr == {"number": pull.number, "url": f"https://github.com/{REPO}/pull/{pull.number}", "created": True}
    assert pull.draft and pull.base_ref == "main" and pull.title == "ACME-42: Greet people by name"
    assert "https://linear.app/acme/issue/ACME-42" in pull.body and PLAN_TEXT.strip() in pull.body
    assert "Stripped the name." in pull.body and final.summary == "Stripped the name."
    assert bed.branch("main") == base  # main untouched
    assert [(u.old, u.new, u.accepted, u.forced) for u in bed.pushes()] == [("0" * 40, head, True, False)]
    assert f"pushed {head} to {BRANCH}" in transcript
    prompt = (layout.state / "prompt.md").read_text()
    assert PLAN_TEXT.strip() in prompt and "BEGIN UNTRUSTED TICKET" in prompt
    assert f"----- prompt -----\n{prompt}----- end of prompt -----\n" in transcript  # the log shows what it was told


def test_a_remediation_clones_the_branch_and_adds_a_second_commit_without_force(bed: Bed) -> None:
    first, _, _ = bed.attempt({"write": {"greeter.py": FIXED}})
    assert first[-1].outcome == "pushed"
    sha1 = first[-1].headSha
    feedback = {"reason": "CI failed", "headSha": sha1,
                "checks": [{"name": "ci", "conclusion": "failure", "summary": "empty name",
                            "annotations": [{"path": "greeter.py", "startLine": 2, "message": "empty name"}]}]}
    second, layout, _ = bed.attempt({"write": {"greeter.py": FIXED.replace("name.strip()", "name.strip() or 'there'")}},
                                    attempt=2, pr=1, feedback=feedback)
    assert second[-1].outcome == "pushed", second[-1].reason
    assert second[0].baseSha == sha1  # prepare cloned the run's branch, not main
    clone = bed.check_out()
    assert git("rev-parse", "HEAD^", cwd=clone).strip() == sha1
    assert git("rev-list", "--count", "origin/main..HEAD", cwd=clone).strip() == "2"
    assert trailers(clone)["Foundry-Attempt"] == "2"
    assert "or 'there'" in (clone / "greeter.py").read_text()
    [pull] = bed.pulls()
    assert second[-1].pr == {**first[-1].pr, "created": False} and first[-1].pr["number"] == pull.number
    assert "Attempt 2" in pull.body and pull.draft
    assert [(u.old, u.new, u.accepted, u.forced) for u in bed.pushes()] == [
        ("0" * 40, sha1, True, False), (sha1, second[-1].headSha, True, False)]
    assert "greeter.py:2 empty name" in (layout.state / "prompt.md").read_text()


def test_publish_ignores_the_agents_own_commits_hooks_and_config(bed: Bed) -> None:
    decoy = make_origin(bed.tmp / "decoy.git")
    marker = bed.tmp / "hook-ran"
    hooks = bed.tmp / "planted-hooks"
    plant = (f"mkdir -p {hooks} && for h in pre-commit pre-push post-commit reference-transaction; do "
             f"printf '#!/bin/sh\\ntouch {marker}\\n' > .git/hooks/$h; cp .git/hooks/$h {hooks}/$h; "
             f"chmod +x .git/hooks/$h {hooks}/$h; done")
    ops = {
        "write": {"greeter.py": FIXED},
        "run": [
            ["git", "-c", "user.name=Mallory", "-c", "user.email=m@evil.test", "commit", "--quiet", "-am",
             "agent's own commit"],
            ["sh", "-c", plant],  # after the agent's commit: only a later git would run them
            ["git", "config", "core.hooksPath", str(hooks)],
            ["git", "remote", "add", "origin", decoy.as_uri()],
            ["git", "config", "user.name", "Mallory"],
        ],
    }
    results, layout, _ = bed.attempt(ops)
    assert results[-1].outcome == "pushed", results[-1].reason
    own = git("rev-parse", "HEAD", cwd=layout.repo).strip()
    clone = bed.check_out()
    assert git("log", "-1", "--format=%an", cwd=clone).strip() == "Foundry agent"
    assert git("rev-parse", "HEAD^", cwd=clone).strip() == results[0].baseSha  # not the agent's commit
    assert git("cat-file", "-t", own, cwd=clone, check=False).strip() != "commit"  # never pushed
    assert (clone / "greeter.py").read_text() == FIXED
    assert (hooks / "pre-push").is_file() and (layout.repo / ".git" / "hooks" / "pre-push").is_file()
    assert not marker.exists()
    assert remote_sha(decoy.as_uri(), BRANCH) is None


@pytest.mark.parametrize("ops,rule_text", [
    ({"write": {".github/workflows/ci.yml": "on: push\njobs: {evil: {}}\n"}}, "is a workflow file"),
    ({"rename": [["deploy/prod.yaml", "deploy/old.yaml"]]}, "deploy/prod.yaml matches forbidden path"),
    ({"delete": ["deploy/prod.yaml"]}, "deploy/prod.yaml matches forbidden path deploy/prod.yaml (removed)"),
    ({"write": {"big.txt": "x\n" * 1001}}, "1001 lines changed, more than the limit of 1000"),
])
def test_a_refused_change_is_not_pushed(bed: Bed, ops: dict, rule_text: str) -> None:
    results, _, transcript = bed.attempt({"write": {"greeter.py": FIXED}, **ops} if "write" not in ops else ops)
    final = results[-1]
    assert final.outcome == "refused" and final.exit_code == 3
    assert final.reason.startswith("policy refused the change: ") and rule_text in final.reason
    assert final.headSha is None
    assert bed.branch() is None and bed.pushes() == [] and bed.pulls() == []
    assert "refused (" in transcript


def test_a_refused_remediation_leaves_the_branch_where_it_was(bed: Bed) -> None:
    first, _, _ = bed.attempt({"write": {"greeter.py": FIXED}})
    second, _, _ = bed.attempt({"write": {"secrets/key.txt": "k\n"}}, attempt=2, pr=1)
    assert second[-1].outcome == "refused" and "secrets/key.txt matches forbidden path secrets/**" in second[-1].reason
    assert bed.branch() == first[-1].headSha and len(bed.pushes()) == 1


def test_no_changes_pushes_nothing(bed: Bed) -> None:
    results, _, _ = bed.attempt({"write": {"README.md": "# api\n"}})  # same content as before
    final = results[-1]
    assert (final.outcome, final.exit_code, final.reason) == ("no-changes", 2, "the agent changed no files")
    assert bed.branch() is None and bed.pushes() == [] and bed.pulls() == []


def test_a_clone_that_fails_says_so(bed: Bed, tmp_path: Path) -> None:
    raw = bed.input({})
    raw["git"]["url"] = f"{bed.gh.url}/acme/no-such.git"
    ctx, out = bed.context(raw, tmp_path / "a")
    res = prepare(ctx)
    assert res.outcome == "failed" and res.reason.startswith(f"clone failed: {bed.gh.url}/acme/no-such.git (branch ")
    assert "not found" in res.reason.lower()
    assert res.reason in out.getvalue()


def test_a_remediation_whose_branch_is_gone_says_so(bed: Bed, tmp_path: Path) -> None:
    ctx, _ = bed.context(bed.input({}, attempt=2, pr=1), tmp_path / "a")
    res = prepare(ctx)
    assert res.outcome == "failed" and f"clones the run's branch {BRANCH}" in res.reason


def test_a_push_the_remote_rejects_is_a_failure_with_git_s_reason(bed: Bed) -> None:
    # Someone else's commit already sits on the branch: a first attempt's commit does not fast-forward it.
    theirs = bed.gh.commit(REPO, BRANCH, {"x.txt": "x\n"}, "elsewhere")
    results, _, _ = bed.attempt({"write": {"greeter.py": FIXED}})
    final = results[-1]
    assert final.outcome == "failed" and final.reason.startswith(f"push to {BRANCH} refused: ")
    assert "rejected" in final.reason or "non-fast-forward" in final.reason
    assert bed.branch() == theirs and bed.pulls() == []
    assert bed.pushes() == []  # git saw the branch moved and sent nothing: no force, no partial update


def test_a_failing_command_fails_the_attempt_and_publish_never_runs(bed: Bed) -> None:
    results, _, _ = bed.attempt({"run": [["false"]]})
    assert [r.outcome for r in results] == ["ok", "failed"]
    assert results[-1].step == "agent" and results[-1].reason
    assert bed.branch() is None


def test_publish_refuses_to_run_after_a_failed_agent_step(bed: Bed, tmp_path: Path) -> None:
    raw = bed.input({"run": [["false"]]})
    for step in (prepare, agent):
        step(bed.context(raw, tmp_path / "a")[0])
    res = publish(bed.context(raw, tmp_path / "a")[0])
    assert res.outcome == "failed" and res.reason.startswith("the agent step failed: ")


def test_run_all_stops_at_the_first_step_that_does_not_end_ok(bed: Bed, tmp_path: Path) -> None:
    raw = bed.input({"write": {"greeter.py": FIXED}})
    ctx, _ = bed.context(raw, tmp_path / "all")
    seen: list[str] = []
    final = run_all(ctx, on_result=lambda r: seen.append(f"{r.step}:{r.outcome}"))
    assert seen == ["prepare:ok", "agent:ok", "publish:pushed"] and final.outcome == "pushed"


def test_the_result_fits_in_4_kib_and_keeps_its_fields() -> None:
    res = R.Result(step="publish", outcome="pushed", branch=BRANCH, baseSha="a" * 40, headSha="b" * 40,
                   pr={"number": 7, "url": "https://github.com/acme/api/pull/7", "created": True},
                   filesChanged=2, linesAdded=14, linesRemoved=3, tokens={"input": 5123, "output": 812},
                   costUsd=0.0312, turns=5, runner="claude-code", summary="é\"x" * 3000, reason="")
    text = R.encode(res, secrets=[TOKEN])
    assert len(text.encode()) <= R.MAX_BYTES
    data = json.loads(text)
    assert data["summary"].endswith("…") and len(data["summary"]) > 1000
    for key in ("version", "step", "outcome", "branch", "baseSha", "headSha", "pr", "filesChanged", "linesAdded",
                "linesRemoved", "tokens", "costUsd", "turns", "runner"):
        assert key in data, key
    assert R.encode(R.Result(step="agent", outcome="failed", reason=f"bad {TOKEN}"), [TOKEN]).count(TOKEN) == 0


def test_the_token_stays_out_of_the_work_tree_argv_result_and_transcript(bed: Bed) -> None:
    results, layout, transcript = bed.attempt({"write": {"greeter.py": FIXED}})
    assert results[-1].outcome == "pushed"
    # The stand-in refuses anonymous git: the clone and the push authenticated with the token, via the helper.
    assert [u.actor for u in bed.pushes()] == ["foundry-agent"]
    # The helper git runs is the packaged script, outside the work tree, and argv never holds the token.
    remote = gitops.Remote("https://github.test/acme/api.git", str(bed.token_file))
    argv = gitops.Git(scratch=bed.tmp).argv(["push"], remote)
    assert f"credential.https://github.test.helper=!sh {gitops.CREDENTIAL_HELPER}" in argv
    assert gitops.CREDENTIAL_HELPER.is_file() and layout.repo not in gitops.CREDENTIAL_HELPER.parents
    assert not any(TOKEN in a for a in argv)
    for path in layout.work.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    assert TOKEN not in transcript
    assert all(TOKEN not in R.encode(r) for r in results)


def test_the_credential_helper_answers_only_for_the_remote_s_origin(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    g = gitops.Git(scratch=tmp_path)
    remote = gitops.Remote("http://127.0.0.1:9/acme/api.git", str(token_file))

    def fill(url: str) -> str:
        return g.run("credential fill", "credential", "fill", remote=remote,
                     input=f"url={url}\n\n", env={"GIT_ASKPASS": "/bin/false"})

    answer = fill("http://127.0.0.1:9/acme/api.git")
    assert "username=x-access-token\n" in answer and f"password={TOKEN}\n" in answer
    with pytest.raises(gitops.GitError):
        fill("http://127.0.0.2:9/acme/api.git")  # another host gets nothing (git then has no password)


def test_the_cli_writes_the_result_and_exits_with_the_outcome_s_code(bed: Bed, tmp_path: Path) -> None:
    raw = bed.input({"write": {"README.md": "# api\n"}})
    (tmp_path / "input.json").write_text(json.dumps(raw))
    env = {**os.environ, "FOUNDRY_WORK_DIR": str(tmp_path / "w"), "FOUNDRY_PUBLISH_DIR": str(tmp_path / "p"),
           "FOUNDRY_GITHUB_TOKEN_FILE": str(bed.token_file), "FOUNDRY_RESULT_PATH": str(tmp_path / "result.json")}
    done = subprocess.run([sys.executable, "-m", "foundry.cli.main", "agent", "run", "--input",
                           str(tmp_path / "input.json")], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    data = R.read(tmp_path / "result.json")
    assert (data["step"], data["outcome"], data["version"]) == ("publish", "no-changes", 1)
    assert "[foundry publish] the agent changed nothing" in done.stdout
    assert TOKEN not in done.stdout + done.stderr


def test_the_cli_reports_a_bad_input_as_a_failed_result(tmp_path: Path) -> None:
    (tmp_path / "input.json").write_text(json.dumps({"version": 2, "run": "r"}))
    env = {**os.environ, "FOUNDRY_RESULT_PATH": str(tmp_path / "result.json")}
    done = subprocess.run([sys.executable, "-m", "foundry.cli.main", "agent", "run", "--step", "prepare",
                           "--input", str(tmp_path / "input.json")], env=env, capture_output=True, text=True)
    assert done.returncode == 1
    data = R.read(tmp_path / "result.json")
    assert data["outcome"] == "failed" and data["reason"].startswith("input.json: ")


def test_a_work_tree_swapped_for_a_symlink_is_not_published(bed: Bed) -> None:
    # The agent points the work tree at the credentials directory, hoping publish commits the token.
    swap = f"cd .. && mv repo repo.orig && ln -s {bed.token_file.parent} repo"
    results, _, transcript = bed.attempt({"run": [["sh", "-c", swap]]})
    final = results[-1]
    assert (final.step, final.outcome) == ("publish", "failed")
    assert "is not a directory (a symlink or a file was put in its place)" in final.reason
    assert bed.branch() is None and bed.pushes() == []
    assert TOKEN not in transcript and TOKEN not in R.encode(final)


def test_an_agent_record_replaced_by_a_symlink_is_not_read(bed: Bed, tmp_path: Path) -> None:
    raw = bed.input({"write": {"greeter.py": FIXED}})
    for step in (prepare, agent):
        assert step(bed.context(raw, tmp_path / "a")[0]).outcome == "ok"
    record = tmp_path / "a" / "work" / "state" / "agent.json"
    record.unlink()
    record.symlink_to(bed.token_file)
    ctx, out = bed.context(raw, tmp_path / "a")
    res = publish(ctx)
    assert res.outcome == "failed" and "cannot be opened as a plain file" in res.reason
    assert TOKEN not in out.getvalue() and bed.branch() is None


def test_a_nested_repository_is_refused(bed: Bed) -> None:
    nested = ("mkdir vendored && cd vendored && git init --quiet && echo x > x && git add x && "
              "git -c user.name=a -c user.email=a@b commit --quiet -m x")
    results, _, _ = bed.attempt({"write": {"greeter.py": FIXED}, "run": [["sh", "-c", nested]]})
    final = results[-1]
    assert final.outcome == "refused" and final.reason.startswith(
        "policy refused the change: vendored is a nested git repository")
    assert bed.branch() is None


def test_a_bad_token_fails_the_clone_with_git_s_reason_and_never_shows_the_token(bed: Bed) -> None:
    bed.token_file.write_text("ghs_notAValidToken000000000000")
    results, _, transcript = bed.attempt({"write": {"greeter.py": FIXED}})
    final = results[-1]
    assert (final.step, final.outcome) == ("prepare", "failed")
    assert final.reason.startswith(f"clone failed: {bed.url} (branch main): ") and "Authentication failed" in final.reason
    assert "ghs_notAValidToken" not in transcript + R.encode(final)


def test_a_pr_github_refuses_after_the_push_is_a_failure_that_names_the_pushed_commit(bed: Bed) -> None:
    # The token may push (contents: write) but not open pull requests.
    limited = "ghs_contentsOnly0123456789abcdef"
    bed.gh.register_token(limited, login="foundry-agent", permissions={"contents": "write", "metadata": "read"})
    bed.token_file.write_text(limited)
    results, _, _ = bed.attempt({"write": {"greeter.py": FIXED}})
    final = results[-1]
    assert (final.step, final.outcome) == ("publish", "failed")
    assert final.headSha == bed.branch() and final.headSha
    assert final.reason.startswith(f"pushed {final.headSha[:12]} to {BRANCH}, but opening the pull request failed: ")
    assert bed.pulls() == []


def test_the_three_steps_as_three_processes_like_the_pod_s_containers(bed: Bed, tmp_path: Path) -> None:
    say = json.dumps({"summary": "Stripped the name.", "tokensIn": 321, "tokensOut": 45, "costUsd": 0.0042,
                      "turns": 3})
    raw = bed.input({"write": {"greeter.py": FIXED}, "say": say})
    (tmp_path / "input.json").write_text(json.dumps(raw))
    common = {"PATH": os.environ["PATH"], "FOUNDRY_JOB_INPUT": str(tmp_path / "input.json"),
              "FOUNDRY_WORK_DIR": str(tmp_path / "work"), "FOUNDRY_PUBLISH_DIR": str(tmp_path / "publish")}
    results = {}
    for step in ("prepare", "agent", "publish"):
        env = {**common, "FOUNDRY_RESULT_PATH": str(tmp_path / f"{step}.json")}
        if step != "agent":  # only prepare and publish mount the credentials
            env["FOUNDRY_GITHUB_TOKEN_FILE"] = str(bed.token_file)
        done = subprocess.run([sys.executable, "-m", "foundry.cli.main", "agent", "run", "--step", step], env=env,
                              capture_output=True, text=True, timeout=120)
        results[step] = R.read(tmp_path / f"{step}.json")
        assert done.returncode == 0, (step, done.stdout, done.stderr)
        assert TOKEN not in done.stdout + done.stderr
    assert (results["prepare"]["outcome"], results["prepare"]["baseSha"]) == ("ok", bed.branch("main"))
    assert results["agent"]["outcome"] == "ok"
    assert (results["agent"]["tokens"], results["agent"]["costUsd"], results["agent"]["turns"]) == \
        ({"input": 321, "output": 45}, 0.0042, 3)
    final = results["publish"]
    assert final["outcome"] == "pushed" and final["headSha"] == bed.branch()
    assert (final["tokens"], final["costUsd"], final["summary"]) == ({"input": 321, "output": 45}, 0.0042,
                                                                     "Stripped the name.")
    # The prepare record publish trusts lives on the publish volume, not in the agent's work volume.
    assert (tmp_path / "publish" / "prepared.json").is_file()
    assert not list((tmp_path / "work").rglob("prepared.json"))


def test_sigterm_stops_the_cli_and_everything_it_started_and_leaves_a_result(bed: Bed, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    raw = bed.input({"run": [["sh", "-c", f"sleep 300 & echo $! > {marker}; wait"]]})
    (tmp_path / "input.json").write_text(json.dumps(raw))
    env = {"PATH": os.environ["PATH"], "FOUNDRY_JOB_INPUT": str(tmp_path / "input.json"),
           "FOUNDRY_WORK_DIR": str(tmp_path / "w"), "FOUNDRY_PUBLISH_DIR": str(tmp_path / "p"),
           "FOUNDRY_GITHUB_TOKEN_FILE": str(bed.token_file), "FOUNDRY_RESULT_PATH": str(tmp_path / "result.json")}
    proc = subprocess.Popen([sys.executable, "-m", "foundry.cli.main", "agent", "run"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not (marker.is_file() and marker.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.1)
    sleeper = int(marker.read_text())
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1, out
    data = R.read(tmp_path / "result.json")
    assert (data["step"], data["outcome"]) == ("agent", "failed")
    assert data["reason"].startswith("stopped by SIGTERM during the agent step")
    time.sleep(0.2)
    state = Path(f"/proc/{sleeper}/stat").read_text().rsplit(")", 1)[1].split()[0] \
        if Path(f"/proc/{sleeper}").exists() else "gone"
    assert state in ("gone", "Z"), f"the CLI's child {sleeper} still runs ({state})"
    assert bed.branch() is None


def test_outside_a_pod_the_folders_default_to_the_current_directory(tmp_path: Path) -> None:
    layout = Layout.from_env({}, cwd=tmp_path, in_pod=False)
    assert (layout.repo, layout.git_dir) == (tmp_path / "work" / "repo", tmp_path / "publish" / "repo.git")
    assert layout.token_file == Path("/foundry/credentials/token")
    pod = Layout.from_env({}, cwd=tmp_path, in_pod=True)
    assert (pod.repo, pod.home, pod.git_dir) == (Path("/foundry/work/repo"), Path("/foundry/work/home"),
                                                 Path("/foundry/publish/repo.git"))
    moved = Layout.from_env({"FOUNDRY_WORK_DIR": "/w", "FOUNDRY_PUBLISH_DIR": "/p", "FOUNDRY_GITHUB_TOKEN_FILE": "/t"})
    assert (moved.work, moved.publish, moved.token_file) == (Path("/w"), Path("/p"), Path("/t"))


def test_the_work_tree_has_no_remote_and_an_identity_for_clis_that_commit(bed: Bed, tmp_path: Path) -> None:
    ctx, _ = bed.context(bed.input({}), tmp_path / "a")
    assert prepare(ctx).outcome == "ok"
    repo = ctx.layout.repo
    assert git("remote", cwd=repo).strip() == ""
    assert git("config", "user.name", cwd=repo).strip() == "Foundry agent"
    assert git("log", "-1", "--format=%H", cwd=repo).strip() == bed.branch("main")
    config = (repo / ".git" / "config").read_text()
    assert bed.gh.url not in config and TOKEN not in config and "credential" not in config
