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
    # The agent writes the plan (the command runner plans only when asked, and the demo asks).
    assert cfg.plan.mode == "agent" and cfg.agent_plans
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


def _plan_prompt(tree: Path) -> str:
    """The prompt the demo's plan gets: input.json as the operator builds it from the demo config."""
    from foundry.operator.reconcile.jobinput import build_plan
    from foundry.runner.jobinput import parse
    from foundry.runner.prompt import build_plan_prompt

    cfg = parse_config(demo_config(linear_graphql_url="http://127.0.0.1:1/graphql", github_url="http://127.0.0.1:2",
                                   agent_workdir=tree.parent))
    given = build_plan(cfg, run=RUN, issue_key="ACME-1", number=1, repo=cfg.repositories["greeter"],
                       branch=f"foundry/{RUN}", api_url="http://127.0.0.1:2",
                       ticket={"key": "ACME-1", "title": example_repo.TICKET_TITLE,
                               "description": example_repo.TICKET_DESCRIPTION})
    return build_plan_prompt(parse(given), str(tree))


def test_given_the_runners_plan_prompt_the_demo_agent_reads_the_tree_and_answers_with_a_plan(tmp_path):
    from foundry.domain import plans
    from foundry.runner.agents.command import CommandReader

    tree = tmp_path / "tree"
    tree.mkdir()
    for name, content in example_repo.INITIAL_FILES.items():
        (tree / name).write_text(content)
    before = {p.name: p.read_text() for p in tree.iterdir()}
    proc = _agent(tree, _plan_prompt(tree))
    assert proc.returncode == 0, proc.stderr
    assert {p.name: p.read_text() for p in tree.iterdir()} == before  # read-only: nothing changed or added
    # The command runner's answer is the summary of the last stdout line; the runner parses the plan from it.
    reader = CommandReader()
    for line in proc.stdout.splitlines():
        reader.stdout_line(line)
    made = plans.parse_answer(reader.finish().summary)
    assert made.paths == ("greeter.py", "test_greeter.py") and not made.open_questions
    # It names what it read: greet()'s line and its return, and the one test there is.
    assert 'greet() (line 4) returns f"Hello, {name}!"' in made.files[0].why
    assert "test_greets_by_name" in made.files[1].why

    # Another repository, another plan: without greet() it asks instead of planning.
    (tree / "greeter.py").write_text("def hello(name):\n    return name\n")
    reader = CommandReader()
    for line in _agent(tree, _plan_prompt(tree)).stdout.splitlines():
        reader.stdout_line(line)
    asked = plans.parse_answer(reader.finish().summary)
    assert asked.paths == () and asked.open_questions == ("Where does the greeting live? greeter.py has no greet() "
                                                          "function.",)


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

    # The agent wrote the plan (read-only, in <run>-p1), naming the files it read; Alice's approval names its
    # hash, the operator counted it for that hash, and each attempt was given it and its runner recorded it.
    plan = runs[0]["status"]["plan"]
    digest, short = plan["hash"], plan["hash"].removeprefix("sha256:")[:12]
    assert plan["source"] == "agent" and plan["revision"] == 1 and len(digest) == len("sha256:") + 64, plan
    assert plan["files"] == ["greeter.py", "test_greeter.py"]
    assert [f["path"] for f in plan["agent"]["files"]] == plan["files"] and not plan["agent"]["openQuestions"]
    assert "test_greets_by_name" in plan["agent"]["files"][1]["why"]  # it read the tests that are there
    assert runs[0]["status"]["planJob"]["name"] == f"{summary['run']}-p1"
    approvals = client.CustomObjectsApi(kube_client).list_namespaced_custom_object(
        "foundry.dev", "v1alpha1", namespace, "foundryapprovals")["items"]
    assert [(a["spec"]["decision"], a["spec"]["planHash"]) for a in approvals] == [("approve", digest)]
    assert runs[0]["status"]["approvals"]["planHash"] == digest
    folders = Path(summary["logs"]).parent / "agent-work" / namespace
    for attempt in (1, 2):
        given = json.loads((folders / f"{summary['run']}-a{attempt}" / "input.json").read_text())
        reported = json.loads((folders / f"{summary['run']}-a{attempt}" / "result.json").read_text())
        assert (given.get("mode", "apply"), given["planHash"], reported["planHash"]) == ("apply", digest, digest)

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
    approve = f"/foundry approve {short}"
    assert [c["author"] for c in comments if c["body"].strip() == approve] == ["alice@example.com"]
    [request] = [c for c in comments if "approval_request" in c["purposes"]]
    assert short in request["body"] and "greeter.py" in request["body"]  # the plan, with its hash, on the ticket

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

    # The printed story shows the plan: written by the agent, its hash and files, the approval naming it, and
    # the attempt given it.
    assert f"✓ the agent wrote the plan, read-only ({summary['run']}-p1): plan {digest[:19]}…" in proc.stdout
    assert "greeter.py: greet() (line 4) returns" in proc.stdout and "test_greeter.py: has 1 test" in proc.stdout
    assert f"Linear: Foundry posted the plan with its hash {short}" in proc.stdout
    assert f"Alice commented `{approve}`" in proc.stdout and f"names plan {digest[:19]}…" in proc.stdout
    assert f"attempt 1 was given plan {short} (input.json planHash), and its runner's result records it" in proc.stdout

    # It printed the runs table, the timeline and where the logs are, and left no process behind.
    assert "kubectl get foundryruns" in proc.stdout and "Timeline" in proc.stdout and "operator.log" in proc.stdout
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path / "state")], capture_output=True, text=True)
    assert leftovers.stdout.strip() == ""
