"""The demo: its pieces (config, local agent, CI, work directories) and the whole
story run non-interactively on the test control plane."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from foundry.config import parse_config
from foundry.demo import example_repo
from foundry.demo.ci import run_tests
from foundry.demo.config import demo_config
from foundry.demo.run import KEEP_WORKDIRS, new_workdir

RUN = "lin-abc-0123456789ab-1"


def test_the_demo_config_passes_foundrys_own_validation(tmp_path):
    cfg = parse_config(demo_config(linear_graphql_url="http://127.0.0.1:1/graphql", github_url="http://127.0.0.1:2",
                                   agent_workdir=tmp_path))
    assert cfg.agent.provider == "local"
    # The agent is Foundry's own runner, as in the agent image, driving the scripted command agent.
    assert cfg.agent.local_command[1:] == ("-m", "foundry.cli.main", "agent", "run")
    assert cfg.agent.runner.name == "command"
    assert cfg.agent.runner.command[1:] == ("-m", "foundry.demo.agent")
    assert cfg.repositories["greeter"].github == example_repo.REPO
    assert [a.kubernetes for a in cfg.approvers] == ["alice"]


def test_ci_passes_the_initial_repository_and_fails_a_broken_one():
    assert run_tests(example_repo.INITIAL_FILES).conclusion == "success"
    broken = dict(example_repo.INITIAL_FILES, **{"greeter.py": "def greet(name):\n    return 'Hi'\n"})
    result = run_tests(broken)
    assert result.conclusion == "failure" and "AssertionError" in result.output


def test_workdirs_are_fresh_per_run_and_old_ones_are_pruned(tmp_path):
    made = []
    for _ in range(KEEP_WORKDIRS + 2):
        made.append(new_workdir(tmp_path))
        os.utime(made[-1], (len(made), len(made)))  # distinct ages, oldest first
    left = sorted(p.name for p in (tmp_path / "demo").iterdir())
    assert len(set(p.name for p in made)) == len(made)
    assert left == sorted(p.name for p in made[-KEEP_WORKDIRS:])


def _agent(tree: Path, prompt: str) -> subprocess.CompletedProcess:
    prompt_file = tree.parent / "prompt.md"
    prompt_file.write_text(prompt)
    env = {**os.environ, "FOUNDRY_PROMPT_FILE": str(prompt_file)}
    return subprocess.run([sys.executable, "-m", "foundry.demo.agent"], cwd=tree, env=env, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_the_demo_agent_edits_the_work_tree_and_fixes_what_the_feedback_names(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    for name, content in example_repo.INITIAL_FILES.items():
        (tree / name).write_text(content)
    first = _agent(tree, "## The approved plan\n\nGreet politely.\n")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout.strip().splitlines()[-1])["summary"]  # the command runner's report line
    files = {p.name: p.read_text() for p in tree.iterdir()}
    # The first try forgets the empty name: the demo's CI fails once, on purpose.
    assert run_tests(files).conclusion == "failure"

    retry = _agent(tree, "## The approved plan\n\nGreet politely.\n\n## Feedback on the previous attempt\n\nCI failed.\n")
    assert retry.returncode == 0, retry.stderr
    assert run_tests({p.name: p.read_text() for p in tree.iterdir()}).conclusion == "success"


def test_the_demo_agent_explains_how_it_is_meant_to_run(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "FOUNDRY_PROMPT_FILE"}
    proc = subprocess.run([sys.executable, "-m", "foundry.demo.agent"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=30, env=env)
    assert proc.returncode == 1
    assert "FOUNDRY_PROMPT_FILE is not set" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.kube
@pytest.mark.slow
def test_the_demo_runs_unattended_to_a_merged_pr(control_plane, kube_client, crds, namespace, tmp_path):
    from kubernetes import client

    from foundry.db.audit import audit_events, verify_audit_chain
    from foundry.db.claims import get_run
    from foundry.db.engine import make_engine

    summary_path = tmp_path / "summary.json"
    env = {**os.environ, "FOUNDRY_STATE_DIR": str(tmp_path / "state")}
    proc = subprocess.run(
        [sys.executable, "-m", "foundry.cli.main", "dev", "demo", "--kubeconfig", str(control_plane.kubeconfig),
         "--namespace", namespace, "--keep", "--summary", str(summary_path), "--step-timeout", "60"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=420, env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = json.loads(summary_path.read_text())

    # One run, Complete — read from the cluster, not from the demo's own report.
    runs = client.CustomObjectsApi(kube_client).list_namespaced_custom_object(
        "foundry.dev", "v1alpha1", namespace, "foundryruns")["items"]
    assert [r["metadata"]["name"] for r in runs] == [summary["run"]]
    assert runs[0]["status"]["phase"] == "Complete"
    jobs = runs[0]["status"]["agent"]["jobs"]
    assert [j["attempt"] for j in jobs] == [1, 2]
    # Each attempt is Foundry's runner: it pushed, and its report (termination-message JSON) is in status.
    assert [j.get("outcome") for j in jobs] == ["pushed", "pushed"], jobs
    assert all(j.get("headSha") and j.get("summary") for j in jobs), jobs

    # One merged PR in the GitHub stand-in, from the run's branch; CI failed once, then passed.
    [pr] = summary["pullRequests"]
    assert pr["merged"] and pr["head"] == f"foundry/{summary['run']}"
    assert [c["conclusion"] for c in summary["ci"]] == ["failure", "success"]
    # Two real commits pushed over git to the stand-in, read back with a fresh clone.
    assert len(summary["agentCommits"]) == 2, summary["agentCommits"]
    assert pr["headSha"] == jobs[1]["headSha"]

    # The expected comments in the Linear stand-in: one of each purpose, and Alice's approval.
    comments = summary["linearComments"]
    purposes = [p for c in comments for p in c["purposes"]]
    # Each purpose exactly once (no clarification or blocked on this ticket).
    assert sorted(purposes) == ["approval_request", "done", "pr_opened"], purposes
    assert [c["author"] for c in comments if c["body"].strip() == "/foundry approve"] == ["alice@example.com"]

    # The audit trail in the demo's SQLite database is complete and intact.
    engine = make_engine(summary["databaseUrl"])
    row = get_run(engine, namespace, summary["run"])
    phases = [e.payload["to"] for e in audit_events(engine, row.id) if e.kind == "phase"]
    story = ["WaitingApproval", "Approved", "AgentRunning", "PROpen", "Complete"]
    first_seen = list(dict.fromkeys(phases))  # a retry may revisit AgentRunning/PROpen
    assert [p for p in first_seen if p in story] == story, phases
    assert phases[-1] == "Complete"
    assert verify_audit_chain(engine, row.id)
    engine.dispose()

    # It printed the runs table, the timeline and where the logs are, and left no process behind.
    assert "kubectl get foundryruns" in proc.stdout and "Timeline" in proc.stdout and "operator.log" in proc.stdout
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path / "state")], capture_output=True, text=True)
    assert leftovers.stdout.strip() == ""
