"""The Prometheus endpoints as a scraper sees them: real processes, real HTTP,
the exposition parsed by prometheus_client's own parser, and the table in
docs/operations.md held to what is actually exported.

- `foundry operator --metrics-port` (the CLI a Deployment runs) drives a run
  to WaitingApproval against the stand's API server, PostgreSQL, Linear and
  GitHub; its /metrics counts the run, its transitions and its reconciles.
- `foundry bridge` answers a few signed (and one badly signed) deliveries;
  its /metrics counts them by outcome.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.bridge_kit import BridgeProcess, encode, github_headers, linear_headers, linear_issue
from foundry.db.engine import create_schema, make_engine
from foundry.domain.phases import Phase
from tests.support.operator_kit import wait_for, wait_phase
from foundry.dev.linear_server import LinearServer
from tests.support.operator_process import operator_env, write_config
from tests.support.operator_stack import OperatorStack
from foundry.dev.postgres import free_port

pytestmark = [pytest.mark.kube, pytest.mark.postgres, pytest.mark.slow]

DOCS = Path(__file__).resolve().parents[1] / "docs" / "operations.md"
# A child process imports kopf and the clients before it serves anything; generous.
START = 45.0
LINEAR_SECRET = "metrics-linear-secret"
GITHUB_SECRET = "metrics-github-secret"


# ---- scraping -----------------------------------------------------------------------


@dataclass(frozen=True)
class Scrape:
    """One parsed exposition: family types, and sample values by (sample name, labels)."""

    types: dict[str, str]
    samples: dict[tuple[str, frozenset], float]

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))

    def label_names(self, name: str) -> set[str]:
        """The label names on the samples of `name` (a sample name, e.g. x_total or x_count)."""
        return {k for (n, labels) in self.samples if n == name for k, _ in labels if k != "le"}

    def sample_names(self) -> set[str]:
        return {n for n, _ in self.samples}


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return None


def scrape(url: str) -> Scrape:
    text = _get(url)
    assert text is not None, f"{url} did not answer"
    types: dict[str, str] = {}
    samples: dict[tuple[str, frozenset], float] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return Scrape(types, samples)


def documented_metrics() -> dict[str, tuple[str, set[str], str]]:
    """docs/operations.md's metrics table: name → (type, label names, which process)."""
    rows = re.findall(r"^\| `(foundry_\w+)` \| (\w+) \| ([^|]*) \| (\w+) \|$", DOCS.read_text(), re.MULTILINE)
    assert rows, "no metrics table in docs/operations.md"
    return {name: (kind, {label.strip() for label in labels.split(",") if label.strip()}, source)
            for name, kind, labels, source in rows}


def check_documented(found: Scrape, source: str) -> None:
    """Every metric the doc lists for `source` is exported under that exact name, type and labels."""
    for name, (kind, labels, where) in documented_metrics().items():
        if where != source:
            continue
        # What a query names: a counter's _total, a histogram's base (its _count here), a gauge itself.
        family, sample = {"counter": (name.removesuffix("_total"), name),
                          "histogram": (name, f"{name}_count"), "gauge": (name, name)}[kind]
        assert found.types.get(family) == kind, (name, found.types.get(family))
        assert sample in found.sample_names(), f"{sample} not exported; a query on {name} finds nothing"
        assert found.label_names(sample) == labels, (name, found.label_names(sample), labels)


# ---- the operator, as `foundry operator --metrics-port` ----------------------------


@contextmanager
def operator_cli(stack: OperatorStack, kubeconfig: Path, database_url: str, workdir: Path) -> Iterator[str]:
    """`foundry operator -n NS --metrics-port P` as a child; yields its metrics URL once it answers."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = operator_env(stack, kubeconfig, database_url, write_config(stack, workdir / "foundry.yaml"))
    port = free_port()
    log_path = workdir / "operator.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "foundry.cli.main", "operator", "-n", stack.namespace,
                                 "--metrics-port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_for(lambda: proc.poll() is not None or _get(url) is not None, timeout=START,
                 what="the operator's metrics endpoint")
        assert proc.poll() is None, f"the operator exited {proc.returncode}\n{log_path.read_text()[-3000:]}"
        yield url
        # As Kubernetes ends the pod: SIGTERM, and a clean exit within the grace period.
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log_path.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_operator_metrics_as_scraped(control_plane, kube_client, crds, namespace, pg_url, tmp_path):
    engine = make_engine(pg_url)
    try:
        with OperatorStack.open(kube_client, engine, namespace) as stack, \
                operator_cli(stack, control_plane.kubeconfig, pg_url, tmp_path / "operator") as url:
            before = scrape(url)
            # Every phase is exported from the start, so a dashboard has a series before the first run.
            assert {before.value("foundry_runs", phase=p.value) for p in Phase} == {0.0}
            # The error counter too: a series born at 1 hides its first error from rate().
            assert before.value("foundry_reconcile_errors_total", kind="retry") == 0.0

            _, run = stack.ticket()
            wait_phase(kube_client, namespace, run, "WaitingApproval", timeout=START)
            # The gauge moves just after the status write that wait_phase sees; the reconcile's
            # duration is observed when it returns, a moment later.
            after = wait_for(lambda: (s := scrape(url)).value("foundry_runs", phase="WaitingApproval") == 1
                             and (s.value("foundry_reconcile_seconds_count") or 0) > 0 and s,
                             timeout=10, what="foundry_runs{phase=WaitingApproval} == 1, a reconcile timed")
    finally:
        engine.dispose()

    assert sum(after.value("foundry_runs", phase=p.value) for p in Phase) == 1  # one run, counted once
    transitions = "foundry_run_transitions_total"
    assert after.value(transitions, from_phase="Pending", to_phase="Analysing") == 1
    assert after.value(transitions, from_phase="Analysing", to_phase="WaitingApproval") == 1
    assert after.value("foundry_reconcile_seconds_count") > 0
    assert after.value("foundry_reconcile_seconds_sum") > 0
    assert after.types["foundry_reconcile_errors"] == "counter"
    assert after.value("foundry_reconcile_errors_total", kind="unexpected") == 0  # a clean run
    check_documented(after, "operator")


# ---- the bridge, as `foundry bridge` ------------------------------------------------


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=15) as answer:
            return answer.status
    except urllib.error.HTTPError as err:
        return err.code


def test_bridge_metrics_count_deliveries_by_outcome(control_plane, crds, namespace, pg_url, tmp_path):
    engine = make_engine(pg_url)
    create_schema(engine)
    engine.dispose()
    env = {"KUBECONFIG": str(control_plane.kubeconfig), "FOUNDRY_NAMESPACE": namespace,
           "FOUNDRY_DATABASE_URL": pg_url, "FOUNDRY_LINEAR_WEBHOOK_SECRET": LINEAR_SECRET,
           "FOUNDRY_GITHUB_WEBHOOK_SECRET": GITHUB_SECRET}
    # With a Linear key the bridge also sweeps Linear (its first round at start), so
    # the sweep's metrics are exported too; without one they are absent, not a lag
    # that grows for ever.
    with LinearServer() as tracker:
        tracker.add_team("ACME", "Acme")
        author = tracker.add_user("Alice", "alice@example.com")
        # A labelled ticket only the sweep hears of: the first round, at start, feeds its intake.
        tracker.create_issue("ACME", "Add a version endpoint", "The service needs GET /version.\n\n"
                             "## Acceptance criteria\n- GET /version answers 200\n", labels=["foundry"], actor_id=author)
        env |= {"FOUNDRY_LINEAR_API_KEY": tracker.api_key, "FOUNDRY_LINEAR_URL": tracker.graphql_url}
        with BridgeProcess(env, log_path=tmp_path / "bridge.log") as bridge:
            linear, github = f"{bridge.url}/webhooks/linear", f"{bridge.url}/webhooks/github"
            issue = encode(linear_issue(str(uuid.uuid4()), "ACME-7", description="Add a health endpoint."))
            delivery = str(uuid.uuid4())
            answers = [
                _post(linear, issue, linear_headers(issue, LINEAR_SECRET, delivery)),  # a new run
                _post(linear, issue, linear_headers(issue, LINEAR_SECRET, delivery)),  # its replay
                _post(linear, issue, linear_headers(issue, "not-the-secret", str(uuid.uuid4()))),  # forged
                _post(github, b"{}", github_headers(b"{}", GITHUB_SECRET, str(uuid.uuid4()), "ping")),
            ]
            assert answers == [200, 200, 401, 200]
            def swept() -> Scrape | None:
                s = scrape(f"{bridge.url}/metrics")
                fed = s.value("foundry_linear_sweep_commands_total", command="intake", outcome="created") or 0
                return s if fed >= 1 and (s.value("foundry_linear_sweep_rounds_total", outcome="swept") or 0) >= 1 else None

            found = wait_for(swept, timeout=90, what="a complete sweep round that fed the labelled ticket's intake")

    deliveries = "foundry_bridge_deliveries_total"
    assert found.value(deliveries, provider="linear", event="Issue", outcome="created") == 1
    assert found.value(deliveries, provider="linear", event="Issue", outcome="duplicate") == 1
    # Nothing of an unauthentic delivery is read, its event type included (no label from a stranger).
    assert found.value(deliveries, provider="linear", event="none", outcome="unauthorized") == 1
    assert found.value(deliveries, provider="github", event="ping", outcome="pong") == 1
    assert found.value("foundry_bridge_delivery_seconds_count", provider="linear") == 3
    assert found.value("foundry_bridge_delivery_seconds_count", provider="github") == 1
    assert found.value("foundry_bridge_in_flight") == 0
    assert found.value("foundry_linear_sweep_requests_total") >= 1 and found.value("foundry_linear_sweep_lag_seconds") >= 0
    check_documented(found, "bridge")
