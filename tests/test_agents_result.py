"""Reading an attempt's result (docs/agent-contract.md): the JSON of a termination
message or result.json, read defensively, and a pod's statuses (pure)."""

from __future__ import annotations

import json

import pytest

from foundry.agents.result import MAX_BYTES, parse_result, pod_result, totals

PUSHED = {"version": 1, "step": "publish", "outcome": "pushed", "reason": "", "branch": "foundry/r-1",
          "baseSha": "a" * 40, "headSha": "b" * 40,
          "pr": {"number": 7, "url": "https://github.com/acme/api/pull/7", "created": True},
          "filesChanged": 2, "linesAdded": 14, "linesRemoved": 3, "tokens": {"input": 5123, "output": 812},
          "costUsd": 0.0312, "turns": 5, "runner": "claude-code", "summary": "Added the endpoint.\nAnd a test.",
          "planHash": "sha256:" + "c" * 64, "somethingNew": {"ignored": True}}


def test_a_full_result_keeps_the_known_fields_only():
    got = parse_result(json.dumps(PUSHED))
    assert got == {"outcome": "pushed", "step": "publish", "branch": "foundry/r-1", "headSha": "b" * 40,
                   "pr": {"number": 7, "url": "https://github.com/acme/api/pull/7"}, "filesChanged": 2,
                   "linesAdded": 14, "linesRemoved": 3, "turns": 5, "tokens": {"input": 5123, "output": 812},
                   "costUsd": 0.0312, "runner": "claude-code", "summary": "Added the endpoint.\nAnd a test.",
                   "planHash": "sha256:" + "c" * 64}


@pytest.mark.parametrize("text, error", [
    (None, "no result was written"),
    ("  ", "the result is empty"),
    ("{not json", "the result is not JSON"),
    ("[1, 2]", "not an object (a list)"),
    ('{"outcome": "merged"}', "outcome 'merged' is not one of pushed, no-changes, refused, failed"),
    ('{"reason": "x"}', "outcome 'None' is not one of"),
    (json.dumps({"outcome": "failed", "summary": "x" * MAX_BYTES}), "more than the 4096 a termination message holds"),
    (b"\xff\xfe{}", "the result is not JSON"),
])
def test_garbage_becomes_a_clear_error(text, error):
    got = parse_result(text)
    assert set(got) == {"error"} and error in got["error"], got


def test_wrong_types_and_hostile_values_are_dropped_not_trusted():
    got = parse_result(json.dumps({
        "outcome": "refused", "reason": "a\n   forbidden\tpath  ", "headSha": "; rm -rf /", "filesChanged": -1,
        "tokens": {"input": "many", "output": 3}, "costUsd": True, "pr": {"number": "7"},
        "summary": ["not", "text"], "step": "evil", "planHash": "sha256:../../etc"}))
    assert got == {"outcome": "refused", "reason": "a forbidden path", "tokens": {"input": 0, "output": 3}}


def _pod(*statuses, init=()):
    return {"status": {"initContainerStatuses": list(init), "containerStatuses": list(statuses)}}


def _ended(name, message=None, exit_code=0, reason="Completed", finished="2026-01-01T00:00:05Z"):
    term = {"exitCode": exit_code, "reason": reason, "finishedAt": finished}
    if message is not None:
        term["message"] = message
    return {"name": name, "state": {"terminated": term}}


def test_the_last_step_that_ran_wins():
    prepare = _ended("prepare", json.dumps({"outcome": "pushed", "step": "prepare"}))
    agent = _ended("agent", json.dumps({"outcome": "no-changes", "step": "agent", "reason": "nothing to do"}), 2)
    waiting = {"name": "publish", "state": {"waiting": {"reason": "PodInitializing"}}}
    assert pod_result(_pod(waiting, init=[prepare, agent])) == {"outcome": "no-changes", "step": "agent",
                                                                 "reason": "nothing to do"}
    publish = _ended("publish", json.dumps({"outcome": "pushed", "headSha": "c" * 40}))
    got = pod_result(_pod(publish, init=[prepare, agent]))
    assert got == {"outcome": "pushed", "headSha": "c" * 40, "step": "publish"}
    assert pod_result(_pod(waiting)) is None


def test_a_step_killed_without_a_message_is_failed_with_the_kubelets_reason():
    oom = _ended("agent", None, 137, "OOMKilled")
    got = pod_result(_pod({"name": "publish", "state": {"waiting": {}}}, init=[_ended("prepare", "{}"), oom]))
    assert got == {"outcome": "failed", "step": "agent",
                   "reason": "step agent ended with OOMKilled (exit code 137) and wrote no result"}
    garbage = pod_result(_pod(_ended("publish", "Traceback (most recent call last): ...", 1, "Error")))
    assert garbage["outcome"] == "failed" and garbage["step"] == "publish"
    assert "step publish exited 1 with an unreadable result: the result is not JSON" in garbage["reason"]


def test_totals_sum_tokens_and_cost_over_attempts():
    jobs = [{"attempt": 1, "tokens": {"input": 100, "output": 10}, "costUsd": 0.5},
            {"attempt": 2},
            {"attempt": 3, "tokens": {"input": 1, "output": 2}, "costUsd": 0.25}]
    assert totals(jobs) == {"costUsd": 0.75, "tokens": {"input": 101, "output": 12}}
    assert totals([]) == {"costUsd": 0.0, "tokens": {"input": 0, "output": 0}}
