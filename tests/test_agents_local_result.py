"""The local provider reports the contract's result like a pod's termination
message: its child writes it to $FOUNDRY_RESULT_PATH (`<folder>/result.json`)."""

from __future__ import annotations

import sys

import yaml

from foundry.agents.local import LocalProvider
from foundry.config import parse_config
from tests.test_agents_local import INPUT, RUN, wait_state


def _provider(tmp_path, script: str) -> LocalProvider:
    cfg = parse_config(yaml.safe_load(yaml.safe_dump({"agent": {"provider": "local",
                                                                "local_command": [sys.executable, "-c", script]}})))
    return LocalProvider(cfg, root=tmp_path)


def _writes(result: str, code: int = 0) -> str:
    return f"import os, sys; open(os.environ['FOUNDRY_RESULT_PATH'], 'w').write({result!r}); sys.exit({code})"


def test_the_result_file_becomes_the_attempts_record(tmp_path):
    p = _provider(tmp_path, _writes('{"outcome": "pushed", "headSha": "' + "a" * 40 + '", "pr": {"number": 3}, '
                                    '"tokens": {"input": 7, "output": 2}, "costUsd": 0.001, "extra": 1}'))
    p.dispatch(RUN, 1, INPUT)
    st = wait_state(p, 1, "succeeded")
    assert {k: st[k] for k in ("outcome", "headSha", "pr", "tokens", "costUsd")} == {
        "outcome": "pushed", "headSha": "a" * 40, "pr": {"number": 3}, "tokens": {"input": 7, "output": 2},
        "costUsd": 0.001}
    assert (tmp_path / "ns" / "lin-abc-1-a1" / "result.json").exists()


def test_a_refusal_and_garbage_are_reported(tmp_path):
    p = _provider(tmp_path, _writes('{"outcome": "refused", "reason": "secrets/** is forbidden"}', 3))
    p.dispatch(RUN, 1, INPUT)
    st = wait_state(p, 1, "failed")
    assert (st["outcome"], st["reason"]) == ("refused", "secrets/** is forbidden")
    p2 = _provider(tmp_path / "b", _writes("not json", 1))
    p2.dispatch(RUN, 1, INPUT)
    bad = wait_state(p2, 1, "failed")
    assert bad["outcome"] == "failed" and bad["reason"].startswith("result.json: the result is not JSON")


def test_no_result_file_reads_as_before(tmp_path):
    p = _provider(tmp_path, "pass")
    p.dispatch(RUN, 1, INPUT)
    assert set(wait_state(p, 1, "succeeded")) == {"state", "startedAt", "finishedAt"}
