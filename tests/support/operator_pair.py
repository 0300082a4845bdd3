"""Two operator processes under leader election, for the failover tests and tools/bench_failover.py.

Each is an OperatorProcess (a child `python -m tests.support.operator_kit`)
with operator.leader_election on, its own identity (POD_NAME op-0 / op-1) and
the Lease in the stack's namespace (POD_NAMESPACE). The Lease on the API
server says who leads; a watcher thread per process notes the moment it died.

    with OperatorPair.open(stack, kubeconfig, pg_url, workdir) as pair:
        leader = pair.start_leader_then_standby()
        died_at = pair.kill(leader)
        took = pair.wait_holder(pair.other(leader), after=died_at) - died_at
"""

from __future__ import annotations

import re
import time
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from kubernetes import client

from tests.support.operator_process import OperatorProcess
from tests.support.operator_stack import stack_config

LEASE = "foundry-operator"
# The defaults, client-go's: a standby takes over within lease duration + retry period of the last renewal.
LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 15.0, 10.0, 2.0
# A child operator's first start imports kopf and the clients: slow on a loaded machine.
START = 60.0

_TRANSITION = re.compile(r"^(\S+ \S+) INFO foundry\.operator\.reconcile\.commit run \S+/(\S+): (\w+) → (\w+) ")


def election_config(**election: Any) -> dict[str, Any]:
    cfg = stack_config()
    cfg["operator"] = {"leader_election": {"enabled": True, **election}}
    return cfg


def lease(api: client.ApiClient, namespace: str) -> dict[str, Any] | None:
    try:
        return client.CoordinationV1Api(api).read_namespaced_lease(LEASE, namespace).to_dict()["spec"]
    except client.ApiException as err:
        if err.status == 404:
            return None
        raise


def transitions(op: OperatorProcess) -> list[tuple[float, str, str, str]]:
    """(epoch seconds, run, from, to) of each transition this process logged."""
    out = []
    if not op.log_path.exists():
        return out
    for line in op.log_path.read_text(errors="replace").splitlines():
        m = _TRANSITION.match(line)
        if m:
            at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            out.append((at, m.group(2), m.group(3), m.group(4)))
    return out


class OperatorPair:
    def __init__(self, stack: Any, ops: list[OperatorProcess]) -> None:
        self.stack = stack
        self.ops = ops

    @classmethod
    @contextmanager
    def open(cls, stack: Any, kubeconfig: Path | str, database_url: str, workdir: Path,
             config: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> Iterator["OperatorPair"]:
        with ExitStack() as stack_of:
            ops = []
            for i in range(2):
                op = stack_of.enter_context(OperatorProcess.open(stack, kubeconfig, database_url,
                                                                 workdir / f"op-{i}", config or election_config()))
                op.env.update({"POD_NAME": f"op-{i}", "POD_NAMESPACE": stack.namespace, **(env or {})})
                ops.append(op)
            yield cls(stack, ops)

    def name(self, op: OperatorProcess) -> str:
        return op.env["POD_NAME"]

    def other(self, op: OperatorProcess) -> OperatorProcess:
        return self.ops[1] if op is self.ops[0] else self.ops[0]

    def holder(self) -> OperatorProcess | None:
        spec = lease(self.stack.api, self.stack.namespace) or {}
        return next((op for op in self.ops if self.name(op) == spec.get("holder_identity")), None)

    def wait_holder(self, op: OperatorProcess, *, after: float = 0.0, timeout: float = START) -> float:
        """When (epoch seconds, the Lease's acquireTime) `op` took the Lease, waiting for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spec = lease(self.stack.api, self.stack.namespace) or {}
            acquired = spec.get("acquire_time")
            if spec.get("holder_identity") == self.name(op) and acquired and acquired.timestamp() >= after:
                return acquired.timestamp()
            if op.proc is not None and op.proc.poll() is not None:
                raise AssertionError(f"{self.name(op)} exited {op.proc.returncode}\n{op.log_tail()}")
            time.sleep(0.05)
        raise AssertionError(f"{self.name(op)} did not take the Lease in {timeout}s (Lease: "
                             f"{lease(self.stack.api, self.stack.namespace)})\n{op.log_tail()}")

    def wait_started(self, op: OperatorProcess, timeout: float = START) -> None:
        """Until the process has run its startup (it watches, and waits for the Lease or holds it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "leader election on:" in op.log_path.read_text(errors="replace").split("===== start")[-1]:
                return
            if op.proc is not None and op.proc.poll() is not None:
                raise AssertionError(f"{self.name(op)} exited {op.proc.returncode}\n{op.log_tail()}")
            time.sleep(0.1)
        raise AssertionError(f"{self.name(op)} did not start in {timeout}s\n{op.log_tail()}")

    def start_leader_then_standby(self, fault: str | None = None) -> OperatorProcess:
        """op-0 (armed with `fault`) first, until it holds the Lease; then op-1, a standby."""
        leader, standby = self.ops
        leader.start(fault=fault)
        self.wait_holder(leader)
        standby.start()
        self.wait_started(standby)
        return leader

    def kill(self, op: OperatorProcess) -> float:
        """kill -9; the epoch second it was sent."""
        at = time.time()
        op.kill()
        return at

    def wait_death(self, op: OperatorProcess, timeout: float = START) -> float:
        """Wait for `op` to die on its own (a fault point); the epoch second it was seen dead."""
        deadline = time.monotonic() + timeout
        assert op.proc is not None
        while time.monotonic() < deadline:
            if op.proc.poll() is not None:
                return time.time()
            time.sleep(0.01)
        raise AssertionError(f"{self.name(op)} did not exit in {timeout}s\n{op.log_tail()}")
