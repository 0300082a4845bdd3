"""The local provider: a real subprocess per attempt, idempotent through its claim marker."""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import pytest
import yaml

from foundry.agents import AgentError
from foundry.agents.local import LocalProvider
from foundry.config import parse_config

RUN = {"metadata": {"name": "lin-abc-1", "namespace": "ns", "uid": "u"}}
INPUT = {"repo": "acme/web", "branch": "foundry/lin-abc-1"}


def provider(tmp_path, script: str) -> LocalProvider:
    cfg = parse_config(yaml.safe_load(yaml.safe_dump({"agent": {"provider": "local",
                                                                "local_command": [sys.executable, "-c", script]}})))
    return LocalProvider(cfg, root=tmp_path)


def wait_state(p, attempt, want, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = p.state(RUN, attempt)
        if st["state"] == want:
            return st
        time.sleep(0.05)
    raise AssertionError(f"attempt {attempt} never reached {want}: {p.state(RUN, attempt)}")


COPY_INPUT = ("import json, os, pathlib; d = json.load(open(os.environ['FOUNDRY_JOB_INPUT'])); "
              "pathlib.Path('seen.json').write_text(json.dumps(d)); print('ran')")


def test_runs_with_input_file_and_succeeds(tmp_path):
    p = provider(tmp_path, COPY_INPUT)
    assert p.state(RUN, 1) == {"state": "missing"}
    rec = p.dispatch(RUN, 1, INPUT)
    assert rec["name"] == "lin-abc-1-a1" and rec["state"] == "running"
    st = wait_state(p, 1, "succeeded")
    assert st["finishedAt"]
    work = tmp_path / "ns" / "lin-abc-1-a1"
    assert json.loads((work / "seen.json").read_text()) == INPUT
    assert "ran" in (work / "agent.log").read_text()


def test_nonzero_exit_fails(tmp_path):
    p = provider(tmp_path, "import sys; sys.exit(3)")
    p.dispatch(RUN, 1, INPUT)
    assert wait_state(p, 1, "failed")["reason"] == "ExitCode3"


def test_second_dispatch_adopts_instead_of_starting_again(tmp_path):
    # each start appends a line to a file shared by the attempt; two starts would leave two lines
    p = provider(tmp_path, "open('starts', 'a').write('x\\n')")
    threads = [threading.Thread(target=p.dispatch, args=(RUN, 1, INPUT)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_state(p, 1, "succeeded")
    # a restarted operator (a fresh provider) adopts too
    again = provider(tmp_path, "open('starts', 'a').write('x\\n')").dispatch(RUN, 1, INPUT)
    assert again["state"] == "succeeded"
    assert (tmp_path / "ns" / "lin-abc-1-a1" / "starts").read_text() == "x\n"


def test_cancel_terminates_the_process(tmp_path):
    p = provider(tmp_path, "import time; time.sleep(60)")
    p.dispatch(RUN, 1, INPUT)
    assert p.state(RUN, 1)["state"] == "running"
    p.cancel(RUN, 1)
    st = p.state(RUN, 1)
    assert st["state"] == "failed"
    pid = int((tmp_path / "ns" / "lin-abc-1-a1" / "pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    p.cancel(RUN, 1)  # again: no error
    p.cancel(RUN, 5)  # never started: no error


def test_needs_a_command():
    with pytest.raises(AgentError, match="local_command is required"):
        LocalProvider(parse_config(None))


def test_the_push_token_arrives_by_private_file_and_the_operators_secrets_stay_behind(tmp_path, monkeypatch):
    from foundry.agents.credentials import StaticTokenSource

    monkeypatch.setenv("FOUNDRY_GITHUB_TOKEN", "ghp_operator_own")
    monkeypatch.setenv("FOUNDRY_LINEAR_API_KEY", "lin_api_operator_own")
    script = ("import json, os, pathlib; p = os.environ['FOUNDRY_GITHUB_TOKEN_FILE']; "
              "pathlib.Path('seen.json').write_text(json.dumps({'token': open(p).read(), "
              "'mode': oct(os.stat(p).st_mode & 0o777), 'env': sorted(os.environ)}))")
    cfg = parse_config({"agent": {"provider": "local", "local_command": [sys.executable, "-c", script]}})
    p = LocalProvider(cfg, root=tmp_path, tokens=StaticTokenSource("ghs_attempt_scoped"))
    p.dispatch(RUN, 1, INPUT)
    wait_state(p, 1, "succeeded")
    seen = json.loads((tmp_path / "ns" / "lin-abc-1-a1" / "seen.json").read_text())
    assert seen["token"] == "ghs_attempt_scoped" and seen["mode"] == "0o600"
    assert "FOUNDRY_GITHUB_TOKEN" not in seen["env"] and "FOUNDRY_LINEAR_API_KEY" not in seen["env"]
