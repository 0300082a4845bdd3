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
                                   repo_dir=tmp_path))
    assert cfg.agent.provider == "local"
    assert cfg.agent.local_command[1:] == ("-m", "foundry.demo.agent")
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


def _agent(tmp_path: Path, repo: Path, github_url: str, job: dict) -> subprocess.CompletedProcess:
    path = tmp_path / f"input-{job['attempt']}.json"
    path.write_text(json.dumps(job))
    env = {**os.environ, "FOUNDRY_DEMO_REPO": str(repo), "FOUNDRY_DEMO_GITHUB_URL": github_url,
           "FOUNDRY_JOB_INPUT": str(path)}
    return subprocess.run([sys.executable, "-m", "foundry.demo.agent"], env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def test_the_local_agent_commits_on_the_run_branch_and_opens_one_pr(tmp_path):
    from foundry.testing.github_server import GitHubServer

    repo = example_repo.create(tmp_path / "repo")
    branch = f"foundry/{RUN}"
    job = {"run": RUN, "issue": "ACME-1", "attempt": 1, "repo": example_repo.REPO, "baseBranch": "main",
           "branch": branch, "plan": {"goal": "greet politely"}}
    with GitHubServer() as github:
        github.add_repo(example_repo.REPO, files=dict(example_repo.INITIAL_FILES))
        first = _agent(tmp_path, repo, github.url, job)
        assert first.returncode == 0, first.stderr
        assert example_repo.branch_log(repo, branch) == ["ACME-1: handle messy names (attempt 1)"]
        [(key, pr)] = github.pulls.items()
        assert pr.head_ref == branch and pr.state == "open"
        # The PR carries what the agent committed, and its tests catch the forgotten case.
        assert run_tests(dict(github.commits[pr.head_sha].tree)).conclusion == "failure"
        first_head = pr.head_sha

        retry = _agent(tmp_path, repo, github.url, {**job, "attempt": 2, "feedback": "CI failed: tests"})
        assert retry.returncode == 0, retry.stderr
        assert len(example_repo.branch_log(repo, branch)) == 2
        assert len(github.pulls) == 1  # pushed to the same PR
        assert pr.head_sha != first_head
        assert run_tests(dict(github.commits[pr.head_sha].tree)).conclusion == "success"

        # The same attempt started again (say after an operator restart) adds no commit.
        again = _agent(tmp_path, repo, github.url, {**job, "attempt": 2, "feedback": "CI failed: tests"})
        assert again.returncode == 0 and "nothing new" in again.stdout
        assert len(example_repo.branch_log(repo, branch)) == 2 and len(github.pulls) == 1
        # The base branch is untouched: the change lives on foundry/<run> only.
        assert example_repo.git(repo, "show", "main:greeter.py") == example_repo.INITIAL_FILES["greeter.py"].strip()


def test_the_agent_reports_bad_input_without_a_traceback(tmp_path):
    bad = tmp_path / "job.json"
    bad.write_text('{"run": "x"}')
    proc = subprocess.run([sys.executable, "-m", "foundry.demo.agent", str(bad)], capture_output=True, text=True,
                          timeout=30, env={**os.environ, "FOUNDRY_DEMO_GITHUB_URL": "http://127.0.0.1:9"})
    assert proc.returncode == 1
    assert "job input lacks repo, branch" in proc.stderr and "Traceback" not in proc.stderr


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
    assert [j["attempt"] for j in runs[0]["status"]["agent"]["jobs"]] == [1, 2]

    # One merged PR in the GitHub stand-in, from the run's branch; CI failed once, then passed.
    [pr] = summary["pullRequests"]
    assert pr["merged"] and pr["head"] == f"foundry/{summary['run']}"
    assert [c["conclusion"] for c in summary["ci"]] == ["failure", "success"]
    assert len(summary["agentCommits"]) == 2  # real commits in the example git repository

    # The expected comments in the Linear stand-in: one of each purpose, and Alice's approval.
    comments = summary["linearComments"]
    purposes = [p for c in comments for p in c["purposes"]]
    # Each purpose exactly once (issue 4's purposes; no clarification or blocked on this ticket).
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
