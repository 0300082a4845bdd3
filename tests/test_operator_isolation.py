"""A hung dependency delays only the runs that need it (real kopf, API server,
PostgreSQL, the Linear stand-in; GitHub replaced by a server that accepts
connections and never answers).

Three runs wait in AgentRunning, each resync asking GitHub for its PR. GitHub
goes silent. With two workers, three new tickets must still be planned
(WaitingApproval) promptly: their reconciles need only Linear, PostgreSQL and
the API server. And the operator never holds more GitHub requests at once
than it has workers: every reconcile path (the resync timer included) runs
on the one pool `operator.workers` sizes, and after the first timeout the
breaker answers the rest at once instead of letting each wait out its own.
"""

from __future__ import annotations

import time

import pytest

from foundry.connectors.github import GitHubClient
from foundry.connectors.retry import RetryPolicy
from foundry.operator.deps import service_transport
from tests.support.operator_kit import operator_thread, wait_for, wait_phase
from tests.support.operator_stack import OperatorStack
from tests.support.silent_server import SilentServer

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]

WORKERS = 2
WAITING_ON_GITHUB = 3
NEW_TICKETS = 3
# A plan takes well under a second here; this leaves room for a busy machine, not for a
# queue behind GitHub timeouts (3 runs x 2 attempts x 2 s each per resync round).
PLANNED_WITHIN = 10.0


def test_a_silent_github_delays_only_the_runs_that_need_it(control_plane, kube_client, crds, namespace, engine):
    with OperatorStack.open(kube_client, engine, namespace) as stack, \
            operator_thread(stack.deps, namespace, workers=WORKERS):
        on_github = [stack.agent_running()[1] for _ in range(WAITING_ON_GITHUB)]
        with SilentServer() as silent:
            real = stack.deps.github
            stack.deps.github = GitHubClient(stack.github.token, base_url=silent.url, timeout=2.0,
                                             transport=service_transport(),
                                             retry=RetryPolicy(max_attempts=2, base_delay=0.05, max_delay=0.1))
            try:
                wait_for(lambda: silent.accepted >= 1, timeout=15, what="a resync to call the silent GitHub")
                took: dict[str, float] = {}
                for i in range(NEW_TICKETS):
                    created = time.monotonic()
                    _, run = stack.ticket(f"Add a health endpoint to the service ({i})")
                    wait_phase(kube_client, namespace, run, "WaitingApproval", timeout=PLANNED_WITHIN)
                    took[run] = time.monotonic() - created
                time.sleep(3)  # a few more resync rounds against the silent GitHub
                peak, accepted = silent.peak, silent.accepted
            finally:
                stack.deps.github.close()
                stack.deps.github = real
        phases = {run: stack.phase(run) for run in on_github}
    assert all(phase == "AgentRunning" for phase in phases.values()), phases  # waiting, not failed
    assert max(took.values()) < PLANNED_WITHIN, took
    assert peak <= WORKERS, f"{peak} GitHub requests held at once with {WORKERS} workers"
    print(f"planned in {sorted(round(t, 2) for t in took.values())}s; GitHub connections: "
          f"{accepted} opened, at most {peak} at once")
