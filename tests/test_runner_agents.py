"""The agent adapters (foundry.runner.agents) driving the real CLIs against the model stand-in.

Each CLI edits a real git repository exactly as scripted; what it was told and what its
tools sent back are read from the stand-in's request log. The CLIs are installed by
tools/agent-clis.sh (the agent_bin_dir fixture): a missing CLI fails, it never skips.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from foundry.runner.agents import AgentSpec, run_agent, spec_from_input
from foundry.runner.agents.aider import AiderReader, last_reply_prose
from foundry.runner.agents.codex import config_toml
from foundry.runner.agents.environment import build_env, denied
from foundry.dev.model_server import Final, ModelServer, Patch, ToolCall, Usage

MODELS = {"claude-code": "claude-sonnet-4-5", "codex": "gpt-5.5", "aider": "gpt-4o"}
PROMPT = "You are working on the repository. PLAN-MARK-7731: create new.txt and greet the world in README.md."
# What a caller's environment may hold and the CLI must never see (Codex hides *TOKEN* from its
# commands by itself, so names without TOKEN prove the runner's own allow-list).
SECRETS = {
    "GITHUB_TOKEN": "ghp_leak1", "GH_TOKEN": "gho_leak2", "GITHUB_APP_ID": "leak3", "GH_HOST": "leak4.example",
    "GIT_ASKPASS": "/leak5/askpass", "KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_PORT": "tcp://leak6:443",
    "FOUNDRY_GITHUB_TOKEN_FILE": "/foundry/credentials/token", "SOME_SERVICE_TOKEN": "leak7",
}
LEAK_MARKS = ("leak", "ghp_", "gho_", "10.96.0.1", "/foundry/credentials", *SECRETS)
USAGE = Usage(input_tokens=1000, output_tokens=50)


# ------------------------------------------------------------------ helpers


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def make_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("hello\n")
    (repo / "app.py").write_text("print('app')\n")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    return repo


def changes(repo: Path) -> dict[str, str]:
    """Every path that differs from HEAD (tracked or not, ignored files too) -> its status."""
    out = git(repo, "status", "--porcelain", "--untracked-files=all", "--ignored")
    return {line[3:]: line[:2].strip() for line in out.splitlines()}


def caller_env(model: ModelServer) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", **SECRETS,
            "ANTHROPIC_BASE_URL": model.url, "ANTHROPIC_API_KEY": "sk-ant-test",
            "OPENAI_BASE_URL": model.url + "/v1", "OPENAI_API_KEY": "sk-oai-test"}


def edit_script(name: str, repo: Path) -> list:
    """Create new.txt and change README.md's line, in each CLI's own tools."""
    if name == "claude-code":
        return [ToolCall("Write", {"file_path": f"{repo}/new.txt", "content": "created by the agent\n"}),
                ToolCall("Read", {"file_path": f"{repo}/README.md"}),
                ToolCall("Edit", {"file_path": f"{repo}/README.md", "old_string": "hello", "new_string": "hello world"}),
                Final("SUMMARY-MARK: created new.txt and greeted the world.")]
    if name == "codex":
        return [Patch("*** Begin Patch\n*** Add File: new.txt\n+created by the agent\n*** End Patch\n"),
                Patch("*** Begin Patch\n*** Update File: README.md\n@@\n-hello\n+hello world\n*** End Patch\n"),
                Final("SUMMARY-MARK: created new.txt and greeted the world.")]
    # Aider: the prompt names README.md, so Aider has put it in the chat already (a file it
    # lacked, named in a reply, would be added and the model asked again).
    return [Final("SUMMARY-MARK: created new.txt and greeted the world.\n\n"
                  "new.txt\n```\n<<<<<<< SEARCH\n=======\ncreated by the agent\n>>>>>>> REPLACE\n```\n\n"
                  "README.md\n```\n<<<<<<< SEARCH\nhello\n=======\nhello world\n>>>>>>> REPLACE\n```\n")]


def started_pid(transcript: bytes) -> int:
    m = re.search(rb"\(pid (\d+), process group \1\)", transcript)
    assert m, transcript[-2000:]
    return int(m.group(1))


def tied_to(pid: int) -> list[str]:
    """Live (non-zombie) processes in the group or session `pid` led, as ps shows them."""
    out = subprocess.run(["ps", "-eo", "pid=,pgid=,sid=,stat=,args="], capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split(None, 4)
        if len(parts) >= 4 and (parts[1] == str(pid) or parts[2] == str(pid) or parts[0] == str(pid)) \
                and not parts[3].startswith("Z"):
            rows.append(line.strip())
    return rows


def gone(pid: int, within: float = 5.0) -> list[str]:
    deadline = time.monotonic() + within
    while (rows := tied_to(pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return rows


@pytest.fixture
def model():
    with ModelServer(usage=USAGE) as server:
        yield server


CLIS = ["claude-code", "codex", "aider"]
# Aider spends 5-30 s starting up on a busy two-core machine (Python imports litellm).
STARTUP = {"claude-code": 20, "codex": 20, "aider": 90}


def run(name: str, model: ModelServer, repo: Path, home: Path, bin_dir: Path, *, timeout: int = 120,
        extra: tuple[str, ...] = (), env: dict[str, str] | None = None):
    transcript = io.BytesIO()
    spec = AgentSpec(name, model=MODELS[name], timeout_seconds=timeout, extra_args=extra)
    started = time.monotonic()
    report = run_agent(spec, workdir=repo, home=home, prompt=PROMPT, env=env or caller_env(model),
                       transcript=transcript, bin_dir=bin_dir)
    return report, transcript.getvalue(), time.monotonic() - started


# ------------------------------------------------------------------ the real CLIs


@pytest.mark.slow
@pytest.mark.parametrize("name", CLIS)
def test_cli_edits_the_repo_as_scripted_and_reports_usage(name, model, tmp_path, agent_bin_dir):
    repo = make_repo(tmp_path)
    script = edit_script(name, repo)
    model.set_script(script)
    report, transcript, took = run(name, model, repo, tmp_path / "home", agent_bin_dir)
    assert report.ok, (report, transcript[-3000:])
    assert report.exit_code == 0 and not report.timed_out and report.reason == ""
    # Exactly the scripted change, and none of the CLI's own files in the repository.
    found = changes(repo)
    assert set(found) == {"new.txt", "README.md"} and found["README.md"] == "M", found
    assert (repo / "new.txt").read_text() == "created by the agent\n"
    assert (repo / "README.md").read_text() == "hello world\n"
    assert git(repo, "log", "--oneline").count("\n") == 1, "the CLI must not commit (the runner does)"
    # The prompt reached the model, and every scripted step was served once, in order.
    assert "PLAN-MARK-7731" in model.prompt_text()
    assert model.served_steps() == list(range(len(script)))
    assert "SUMMARY-MARK" in report.summary
    assert report.turns == len(script)
    if name == "aider":  # Aider counts tokens itself and prints them rounded to 0.1k
        assert report.tokens_in > 0 and report.tokens_out > 0 and report.cost_usd > 0
    else:
        assert (report.tokens_in, report.tokens_out) == (USAGE.input_tokens * len(script),
                                                          USAGE.output_tokens * len(script))
    if name == "claude-code":  # Claude Code prices the tokens it was served (Sonnet 4.5: $3 / $15 per Mtok)
        assert report.cost_usd == pytest.approx(len(script) * (1000 * 3 + 50 * 15) / 1e6)
    if name == "codex":
        assert report.cost_usd is None  # Codex reports no cost
    # The scripted tool calls succeeded (a CLI can exit 0 when one failed).
    assert all(not r.is_error for r in model.tool_results())
    assert b"[foundry] started" in transcript
    print(f"{name}: scripted run of {len(script)} model turns in {took:.1f} s")


def env_script(name: str, repo: Path) -> tuple[list, tuple[str, ...]]:
    if name == "claude-code":
        return [ToolCall("Bash", {"command": "env", "description": "print the environment"}), Final("done")], ()
    if name == "codex":
        return [ToolCall("exec_command", {"cmd": "env", "workdir": str(repo)}), Final("done")], ()
    # Aider runs no model-chosen commands headless; its test command runs in its environment
    # and a failing one's output goes back to the model.
    return ([Final("new.txt\n```\n<<<<<<< SEARCH\n=======\nx\n>>>>>>> REPLACE\n```\n"), Final("done")],
            ("--test-cmd", "env; exit 1", "--auto-test"))


@pytest.mark.slow
@pytest.mark.parametrize("name", CLIS)
def test_cli_environment_has_no_credentials(name, model, tmp_path, agent_bin_dir):
    repo, home = make_repo(tmp_path), tmp_path / "home"
    script, extra = env_script(name, repo)
    model.set_script(script)
    report, transcript, _ = run(name, model, repo, home, agent_bin_dir, extra=extra)
    assert report.ok, (report, transcript[-3000:])
    if name == "aider":
        seen = "\n".join(json.dumps(r.body) for r in model.model_requests()[1:])
    else:
        results = model.tool_results()
        assert len(results) == 1 and not results[0].is_error, results
        seen = results[0].text
    assert f"HOME={home}" in seen, seen[:2000]  # it is the CLI's environment
    leaks = [mark for mark in LEAK_MARKS if mark in seen]
    assert leaks == [], seen
    names = set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)=", seen.replace("\\n", "\n"), re.M))
    assert not names & set(SECRETS), names
    # Names the CLIs set for their own children (Codex GH_PAGER=cat, Claude Code its session
    # messaging token, Aider/litellm TIKTOKEN_CACHE_DIR); nothing else credential-like may be there.
    own = {"GH_PAGER", "CLAUDE_CODE_MESSAGING_TOKEN", "TIKTOKEN_CACHE_DIR"}
    assert {n for n in names if denied(n)} <= own, names


@pytest.mark.slow
@pytest.mark.parametrize("name", CLIS)
def test_model_api_down_fails_fast_with_a_clear_reason(name, model, tmp_path, agent_bin_dir):
    repo = make_repo(tmp_path)
    model.set_script(edit_script(name, repo))
    model.set_fault("down")
    report, transcript, took = run(name, model, repo, tmp_path / "home", agent_bin_dir)
    assert not report.ok and not report.timed_out
    assert "503" in report.reason or "down" in report.reason, report.reason
    assert took < STARTUP[name], f"took {took:.1f} s: retries are not off"
    assert model.requests, "the CLI never reached the stand-in"
    assert changes(repo) == {}
    assert gone(started_pid(transcript)) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", ["claude-code", "codex"])
def test_model_api_unreachable_fails_fast(name, tmp_path, agent_bin_dir):
    repo = make_repo(tmp_path)
    with ModelServer() as dead:
        env = caller_env(dead)
    # The stand-in has stopped: its port refuses connections.
    started = time.monotonic()
    report = run_agent(AgentSpec(name, model=MODELS[name], timeout_seconds=120), workdir=repo, home=tmp_path / "h",
                       prompt=PROMPT, env=env, bin_dir=agent_bin_dir)
    assert not report.ok and not report.timed_out and report.reason
    assert time.monotonic() - started < STARTUP[name], "an unreachable API must not be retried for long"


@pytest.mark.slow
@pytest.mark.parametrize("name", CLIS)
def test_cli_hanging_past_its_limit_is_stopped_with_its_whole_group(name, model, tmp_path, agent_bin_dir):
    repo = make_repo(tmp_path)
    model.set_script(edit_script(name, repo))
    model.set_fault("hang")
    limit = STARTUP[name] // 2 if name == "aider" else 6
    report, transcript, took = run(name, model, repo, tmp_path / "home", agent_bin_dir, timeout=limit)
    assert report.timed_out and not report.ok and report.exit_code is None
    assert f"limit of {limit} s" in report.reason
    assert limit <= took < limit + 10
    posts = [r for r in model.requests if r.method == "POST"]
    assert posts, "the CLI should have been hanging in a model call"
    assert gone(started_pid(transcript)) == []


# ------------------------------------------------------------------ the command runner


AGENT_PY = """\
import json, os, pathlib, sys
prompt = pathlib.Path(os.environ["FOUNDRY_PROMPT_FILE"]).read_text()
pathlib.Path("made.txt").write_text(prompt.upper())
pathlib.Path(os.environ["HOME"], "env.json").write_text(json.dumps(dict(os.environ)))
print("working")
print(json.dumps({"summary": "made made.txt", "turns": 2, "tokensIn": 10, "tokensOut": 3, "costUsd": 0.5}))
"""


def test_command_runner_runs_any_executable(tmp_path):
    repo, home = make_repo(tmp_path), tmp_path / "home"
    agent = tmp_path / "agent.py"
    agent.write_text(AGENT_PY)
    spec = spec_from_input({"name": "command", "command": [sys.executable, str(agent)], "timeoutSeconds": 60})
    env = {"PATH": "/usr/bin:/bin", **SECRETS, "ANTHROPIC_API_KEY": "sk-ant"}
    report = run_agent(spec, workdir=repo, home=home, prompt="make it so", env=env)
    assert report.ok, report
    assert (repo / "made.txt").read_text() == "MAKE IT SO"
    assert (report.summary, report.turns, report.tokens_in, report.tokens_out, report.cost_usd) == \
        ("made made.txt", 2, 10, 3, 0.5)
    seen = json.loads((home / "env.json").read_text())
    assert seen["HOME"] == str(home) and seen["ANTHROPIC_API_KEY"] == "sk-ant"
    assert not set(SECRETS) & set(seen)
    assert changes(repo) == {"made.txt": "??"}


def test_command_failure_and_plain_output(tmp_path):
    repo = make_repo(tmp_path)
    spec = AgentSpec("command", command=("sh", "-c", "echo did something; echo broke >&2; exit 3"))
    report = run_agent(spec, workdir=repo, home=tmp_path / "home", prompt="p", env={"PATH": "/usr/bin:/bin"})
    assert not report.ok and report.exit_code == 3
    assert report.reason == "the command exited with code 3: broke" and report.summary == "did something"


def test_timeout_kills_what_the_command_started_even_in_its_own_session(tmp_path):
    repo = make_repo(tmp_path)
    marker = f"{int(time.time() * 1000) % 100000 + 700000}"
    # A child in a new session escapes a process-group kill; the runner must still find it.
    spec = AgentSpec("command", timeout_seconds=2,
                     command=("sh", "-c", f"setsid sleep {marker} & sleep {marker}1 & sleep {marker}2"))
    transcript = io.BytesIO()
    started = time.monotonic()
    report = run_agent(spec, workdir=repo, home=tmp_path / "home", prompt="p", env={"PATH": "/usr/bin:/bin"},
                       transcript=transcript)
    assert report.timed_out and not report.ok and 2 <= time.monotonic() - started < 10
    assert gone(started_pid(transcript.getvalue())) == []
    left = subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True, text=True).stdout
    assert left == "", f"left running: {left}"


def test_leftovers_of_a_command_that_exited_are_killed(tmp_path):
    repo = make_repo(tmp_path)
    marker = f"{int(time.time() * 1000) % 100000 + 800000}"
    # The last one is started by a shell that exits at once: it leaves the CLI's group, session
    # and tree before anyone could see it (only a subreaper inherits it).
    spec = AgentSpec("command", command=("sh", "-c", f"sleep {marker} & setsid sleep {marker}1 & "
                                         f"sh -c 'setsid sleep {marker}2 &'; sleep 0.5; echo ok"))
    report = run_agent(spec, workdir=repo, home=tmp_path / "home", prompt="p", env={"PATH": "/usr/bin:/bin"})
    assert report.ok and report.summary == "ok"
    time.sleep(0.2)
    left = subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True, text=True).stdout
    assert left == "", f"left running: {left}"


def test_output_past_the_cap_is_dropped_and_noted(tmp_path):
    repo = make_repo(tmp_path)
    spec = AgentSpec("command", output_cap_bytes=4096,
                     command=(sys.executable, "-c", "import sys\nfor i in range(20000): print('x' * 50)\n"
                              "print('{\"summary\": \"the end\"}')"))
    transcript = tmp_path / "logs" / "transcript.log"
    report = run_agent(spec, workdir=repo, home=tmp_path / "home", prompt="p", env={"PATH": "/usr/bin:/bin"},
                       transcript=transcript)
    text = transcript.read_bytes()
    assert report.ok and report.summary == "the end"  # the parser still saw the last line
    total = 20000 * 51 + len('{"summary": "the end"}\n')
    assert b"output cap of 4096 bytes reached" in text and f"dropped {total - 4096} bytes".encode() in text
    assert text.count(b"x" * 50) < 4096 // 50 + 2
    assert len(text) < 4096 + 2000


# ------------------------------------------------------------------ setup failures


def test_missing_cli_names_the_install_script(tmp_path, model):
    repo = make_repo(tmp_path)
    report = run_agent(AgentSpec("codex"), workdir=repo, home=tmp_path / "home", prompt="p",
                       env=caller_env(model), bin_dir=tmp_path / "nothing-here")
    assert not report.ok and "tools/agent-clis.sh" in report.reason and "codex" in report.reason
    report = run_agent(AgentSpec("claude-code"), workdir=repo, home=tmp_path / "home", prompt="p",
                       env={"PATH": str(tmp_path)})
    assert not report.ok and "tools/agent-clis.sh" in report.reason and "not on PATH" in report.reason


def test_missing_key_home_in_repo_and_long_prompt_are_refused(tmp_path, agent_bin_dir):
    repo = make_repo(tmp_path)
    report = run_agent(AgentSpec("claude-code"), workdir=repo, home=tmp_path / "home", prompt="p",
                       env={"PATH": "/usr/bin:/bin", "GITHUB_TOKEN": "x"}, bin_dir=agent_bin_dir)
    assert not report.ok and "ANTHROPIC_API_KEY" in report.reason
    report = run_agent(AgentSpec("aider"), workdir=repo, home=repo / ".home", prompt="p",
                       env={"OPENAI_API_KEY": "k"}, bin_dir=agent_bin_dir)
    assert not report.ok and "outside the repository" in report.reason
    report = run_agent(AgentSpec("codex"), workdir=repo, home=tmp_path / "home", prompt="x" * 200_000,
                       env={"OPENAI_API_KEY": "k"}, bin_dir=agent_bin_dir)
    assert not report.ok and "prompt is 200000 bytes" in report.reason
    assert changes(repo) == {}


# ------------------------------------------------------------------ pure parts


def test_spec_from_input_validates():
    spec = spec_from_input({"name": "claude-code", "model": "claude-sonnet-4-5", "timeoutSeconds": 60,
                            "outputCapBytes": 65536, "extraArgs": ["--max-turns", "9"]})
    assert spec == AgentSpec("claude-code", "claude-sonnet-4-5", 60, 65536, ("--max-turns", "9"))
    assert spec_from_input({"name": "aider"}) == AgentSpec("aider")
    for bad, message in [({"name": "cursor"}, "runner.name must be one of"),
                         ({"name": "command"}, "runner.command"),
                         ({"name": "codex", "command": ["x"]}, "only for runner.name 'command'"),
                         ({"name": "codex", "timeoutSeconds": "60"}, "timeoutSeconds must be an integer"),
                         ({"name": "codex", "timeoutSeconds": 0}, "between 1 and"),
                         ({"name": "codex", "extraArgs": "--x"}, "extraArgs must be a list of strings"),
                         ({"name": "codex", "model": ""}, "runner.model"),
                         ([], "must be a JSON object")]:
        with pytest.raises(ValueError, match=message):
            spec_from_input(bad)  # type: ignore[arg-type]


def test_environment_is_an_allow_list_with_a_deny_rule():
    source = {**SECRETS, "PATH": "/bin", "LC_ALL": "C", "TZ": "UTC", "TMPDIR": "/tmp", "HOME": "/root",
              "ANTHROPIC_API_KEY": "k", "ANTHROPIC_AUTH_TOKEN": "t", "OPENAI_API_KEY": "o", "AWS_SECRET_ACCESS_KEY": "a",
              "PYTHONPATH": "/evil", "LD_PRELOAD": "/evil.so"}
    env = build_env(source, home="/work/home", model_vars=("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"),
                    fixed={"DISABLE_TELEMETRY": "1"})
    assert env == {"PATH": "/bin", "LC_ALL": "C", "TZ": "UTC", "TMPDIR": "/tmp", "HOME": "/work/home",
                   "ANTHROPIC_API_KEY": "k", "ANTHROPIC_AUTH_TOKEN": "t", "DISABLE_TELEMETRY": "1"}
    # The deny rule holds even for a name an adapter lists by mistake.
    assert build_env(SECRETS, home="/h", model_vars=tuple(SECRETS)) == {"PATH": "/usr/local/bin:/usr/bin:/bin",
                                                                         "HOME": "/h"}
    assert all(denied(k) for k in SECRETS) and not denied("ANTHROPIC_AUTH_TOKEN")
    with pytest.raises(ValueError):
        build_env({}, home="/h", model_vars=(), fixed={"GITHUB_TOKEN": "x"})


def test_codex_config_turns_retries_and_phone_home_off():
    import tomllib

    config = tomllib.loads(config_toml(base_url="http://10.0.0.5:8080/v1", model="gpt-5.5"))
    provider = config["model_providers"][config["model_provider"]]
    assert provider["base_url"] == "http://10.0.0.5:8080/v1" and provider["wire_api"] == "responses"
    assert provider["env_key"] == "OPENAI_API_KEY"
    assert provider["request_max_retries"] == 0 and provider["stream_max_retries"] == 0
    assert config["model"] == "gpt-5.5" and config["check_for_update_on_startup"] is False
    assert config["analytics"]["enabled"] is False and config["feedback"]["enabled"] is False
    for feature in ("unbounded_connection_retries", "plugins", "remote_plugin", "apps", "tool_suggest",
                    "api_key_model_discovery"):
        assert config["features"][feature] is False, feature


def test_aider_output_reading(tmp_path):
    reader = AiderReader(tmp_path / "none.md")
    for line in ["Aider v0.86.2", "Tokens: 2.4k sent, 57 received. Cost: $0.0068 message, $0.0068 session.",
                 "Tokens: 1.2k sent, 1.5k cache write, 900 cache hit, 3 received.", "Cost: $0.01 message, $0.02 session.",
                 "Tokens: 12k sent, 0 received."]:
        assert reader.stdout_line(line) is None
    assert reader.stdout_line("litellm.ServiceUnavailableError: down") is None
    stop = reader.stdout_line("Retrying in 0.2 seconds...")
    assert stop and "ServiceUnavailableError: down" in stop
    parsed = reader.finish()
    assert (parsed.turns, parsed.tokens_in, parsed.tokens_out) == (3, 15600, 60)
    assert parsed.cost_usd == pytest.approx(0.0168)
    history = tmp_path / "chat.md"
    history.write_text("# aider chat started at now\n\n#### do it\n\nFirst reply.\n\n> Tokens: 1k sent\n\n"
                       "Edited the greeting.\n\nREADME.md\n```\n<<<<<<< SEARCH\nhello\n=======\nhi\n>>>>>>> REPLACE\n"
                       "```\n\n> Applied edit to README.md\n")
    assert last_reply_prose(history) == "Edited the greeting."


# ------------------------------------------------------------------ the install script


def test_install_script_is_idempotent_under_concurrency_and_pins_what_it_installs(agent_bin_dir, tmp_path):
    script = Path(__file__).resolve().parents[1] / "tools" / "agent-clis.sh"
    pins = dict(line.split() for line in subprocess.run(["bash", str(script), "--versions"], capture_output=True,
                                                        text=True, check=True).stdout.splitlines())
    assert set(pins) == {"claude-code", "codex", "aider"}
    # Two runs at once on a complete install: both reuse it (the lock serialises them).
    runs = [subprocess.Popen(["bash", str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in runs]
    assert [p.returncode for p in runs] == [0, 0], outs
    assert {o.strip().splitlines()[-1] for o, _ in outs} == {str(agent_bin_dir.parent)}
    assert all("installing" not in err for _, err in outs), outs
    assert subprocess.run(["bash", str(script), "--check"], capture_output=True).returncode == 0
    for exe, name in (("claude", "claude-code"), ("codex", "codex"), ("aider", "aider")):
        out = subprocess.run([str(agent_bin_dir / exe), "--version"], capture_output=True, text=True, timeout=120,
                             env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                  "DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"})
        assert pins[name] in out.stdout, (exe, out.stdout, out.stderr)


PID1_PY = """\
import os, sys, time
from pathlib import Path
from foundry.runner.agents import AgentSpec, run_agent
assert os.getpid() == 1, os.getpid()
spec = AgentSpec("command", command=("sh", "-c", "sleep 300 & setsid sleep 301 & (sleep 0.2; exit 0) & echo done"))
report = run_agent(spec, workdir=Path(sys.argv[1]), home=Path(sys.argv[2]), prompt="p", env={"PATH": "/usr/bin:/bin"})
time.sleep(0.5)
left = []
for pid in os.listdir("/proc"):
    if pid.isdigit() and pid != "1":
        stat = Path(f"/proc/{pid}/stat").read_text()
        left.append(stat[stat.rindex("(") - 1:].strip())
print(report.ok, report.summary, left)
"""


def test_as_a_containers_pid_1_the_runner_leaves_no_zombie(tmp_path):
    # In a pod the runner is PID 1: the CLI's orphans are reparented to it, and only it can reap them.
    repo, home = make_repo(tmp_path), tmp_path / "home"
    script = tmp_path / "pid1.py"
    script.write_text(PID1_PY)
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc",
                           sys.executable, str(script), str(repo), str(home)],
                          capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True done []", proc.stdout
