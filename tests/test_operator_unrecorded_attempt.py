"""An attempt started but never recorded is still found, and a stop cancels it.

Starting an attempt (creating Job `<run>-a<n>`) and recording it in the run's
status are two writes. The operator is killed between them by the
`after-job-create` fault point (tests.support.crash_points), deterministically;
then a human stops the run before the operator is back. The restarted
operator must find the Job by its deterministic name, delete it, and record
it as cancelled, instead of ending the run with the agent still at work.
(Real kopf in a child process, API server and PostgreSQL; Linear and GitHub
stand-ins.)
"""

from __future__ import annotations

import pytest

from tests.support.operator_kit import wait_phase
from tests.support.operator_process import OperatorProcess
from tests.support.operator_stack import OperatorStack

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]

START = 45.0  # a child operator's first start imports kopf and the clients


@pytest.fixture
def stand(control_plane, kube_client, crds, namespace, engine, pg_url, tmp_path):
    with OperatorStack.open(kube_client, engine, namespace) as stack, \
            OperatorProcess.open(stack, control_plane.kubeconfig, pg_url, tmp_path / "operator") as op:
        yield stack, op


def test_a_stop_cancels_an_attempt_that_was_started_but_not_recorded(stand):
    stack, op = stand
    _, run = stack.ticket()
    op.start(fault="after-job-create")
    wait_phase(stack.api, stack.namespace, run, "WaitingApproval", timeout=START)
    stack.decide(run, "approve", "alice")
    code = op.wait_exit(START)
    assert code == 137, f"exit {code}, not the fault point's 137\n{op.log_tail()}"
    # The crash fell in the gap: the Job exists, the status does not name it.
    assert stack.jobs(run) == [f"{run}-a1"]
    status = stack.run(run)["status"]
    assert status["phase"] == "Approved" and not (status.get("agent") or {}).get("jobs"), status

    stack.decide(run, "stop", "alice")
    op.start()
    stopped = wait_phase(stack.api, stack.namespace, run, "Stopped", timeout=START)
    assert stack.jobs(run) == [], "the unrecorded attempt's Job is still there after the stop"
    jobs = stopped["status"]["agent"]["jobs"]
    assert [(j["attempt"], j["name"], j["state"]) for j in jobs] == [(1, f"{run}-a1", "cancelled")]
