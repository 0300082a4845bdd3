"""One FoundryApproval listing per reconcile pass (foundry.operator.reconcile.passcache):
the steps of a pass share it, and the next pass reads afresh."""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

from foundry.config import parse_config
from foundry.domain.phases import Phase
from foundry.operator.reconcile import passcache, steps_approval, steps_endings
from foundry.operator.reconcile.outcome import Transition
from foundry.operator.reconcile.view import RunView
from tests.support.operator_stack import stack_config


def _run() -> RunView:
    return RunView({
        "metadata": {"name": "r1", "namespace": "ns", "uid": "u1"},
        "spec": {"issueId": "i1", "issueKey": "ACME-1"},
        "status": {"phase": "WaitingApproval", "riskAreas": [],
                   "approvals": {"required": 1, "received": 0, "summary": "0/1", "approvers": []}},
    })


def _approve(run: str = "r1") -> dict:
    # As the API server returns it: every object has its name, uid and creation time.
    made = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"metadata": {"name": f"{run}-approve-alice", "namespace": "ns", "uid": f"a-{run}",
                         "creationTimestamp": made},
            "spec": {"run": run, "decision": "approve", "approver": "alice", "source": "kubernetes"}}


def _setup(monkeypatch, listings: list[list[dict]]):
    calls: list[str] = []

    def list_approvals(api, namespace, name):
        calls.append(name)
        return listings[min(len(calls), len(listings)) - 1]

    monkeypatch.setattr(steps_approval, "list_approvals", list_approvals)
    deps = SimpleNamespace(api=None, config=parse_config(stack_config()),
                           clock=lambda: datetime.now(timezone.utc))
    return deps, calls


def test_the_steps_of_one_pass_share_one_listing(monkeypatch):
    deps, calls = _setup(monkeypatch, [[_approve()]])
    run = _run()
    with passcache.one_pass():
        assert steps_endings.interrupt(deps, run) is None
        outcome = steps_approval.await_approvals(deps, run)
        assert steps_endings.interrupt(deps, run) is None  # the next step of the same pass
    assert isinstance(outcome, Transition) and outcome.to == Phase.APPROVED
    assert calls == ["r1"]


def test_each_pass_and_each_run_reads_afresh(monkeypatch):
    # First pass: no approval yet. An approval arrives; the next pass must see it.
    deps, calls = _setup(monkeypatch, [[], [_approve()], [_approve("r2")]])
    with passcache.one_pass():
        assert not isinstance(steps_approval.await_approvals(deps, _run()), Transition)
    with passcache.one_pass():
        assert steps_approval.await_approvals(deps, _run()).to == Phase.APPROVED
        other = _run()
        other.meta["name"] = "r2"
        steps_approval.await_approvals(deps, other)  # another run: its own listing
    assert calls == ["r1", "r1", "r2"]


def test_outside_a_pass_nothing_is_cached(monkeypatch):
    deps, calls = _setup(monkeypatch, [[]])
    steps_endings.interrupt(deps, _run())
    steps_approval.await_approvals(deps, _run())
    assert calls == ["r1", "r1"]
