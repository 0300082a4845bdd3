"""The API calls of one intake, Pending to WaitingApproval (tools/bench_operator.py's hot path).

Each step is decided on the API server's answer to the previous step's status write, not on
a read after it: the pass reads the run once. The Planned transition writes the status message
the waiting run shows ("0/1 approvals"), so the WaitingApproval step that follows in the same
pass has nothing to write. Real API server, real PostgreSQL, the reconciler in this thread.
"""

from __future__ import annotations

from collections import Counter

import pytest

from foundry.db import audit, claims
from foundry.db.engine import make_engine
from foundry.operator.reconcile.loop import reconcile, reconcile_run
from tests.support.operator_stack import OperatorStack

pytestmark = [pytest.mark.kube, pytest.mark.postgres]


def _count_calls(api, run: str) -> Counter:
    """(method, what) of every request made through `api` about the FoundryRun `run`."""
    calls: Counter = Counter()
    rest = api.rest_client
    original = rest.request

    def request(method, url, *args, **kwargs):
        path = url.split("?", 1)[0]
        if "/foundryruns/" in path and path.rstrip("/").split("/foundryruns/", 1)[1].split("/")[0] == run:
            calls[(method, "status" if path.endswith("/status") else "run")] += 1
        elif "/events" in path:
            calls[(method, "event")] += 1
        return original(method, url, *args, **kwargs)

    rest.request = request
    return calls


def test_one_read_and_two_status_writes_from_pending_to_waiting(control_plane, crds, namespace, pg_url):
    engine = make_engine(pg_url)
    try:
        with OperatorStack.open(control_plane.api_client(), engine, namespace) as stack:
            _, run = stack.ticket()
            calls = _count_calls(stack.api, run)
            phase, body = reconcile(stack.deps, namespace, run)
            assert phase is not None and phase.value == "WaitingApproval"
            # Before: a GET before each of the three steps and a third status PATCH for "0/1 approvals".
            assert calls == {("GET", "run"): 1, ("PATCH", "status"): 2, ("POST", "event"): 2}, calls
            # What the pass hands back is what the API server holds now (the next wake is scheduled from it).
            held = stack.run(run)
            assert body["metadata"]["resourceVersion"] == held["metadata"]["resourceVersion"]
            assert held["status"]["message"] == "0/1 approvals"
            assert held["status"]["approvals"]["summary"] == "0/1"
            ready = next(c for c in held["status"]["conditions"] if c["type"] == "Ready")
            assert ready["reason"] == "Planned" and ready["message"].startswith("plan ") and " posted" in ready["message"], ready

            # The next pass finds nothing to write.
            calls.clear()
            assert reconcile_run(stack.deps, namespace, run).value == "WaitingApproval"
            assert calls == {("GET", "run"): 1}, calls

            row = claims.get_run(engine, namespace, run)
            assert [e.payload["to"] for e in audit.audit_events(engine, row.id) if e.kind == "phase"] == [
                "Analysing", "WaitingApproval"]
    finally:
        engine.dispose()


def test_the_controller_takes_a_new_run_from_its_watch_event_with_no_read_and_no_metadata_write(
        control_plane, crds, namespace, pg_url):
    """The bridge makes the run with the operator's finalizer, and the watch event carries the
    whole object: the first pass starts from it, so an intake costs the operator two status
    writes and two Events on the run, nothing else. A run changed after its event (a label) is
    a 409 on the first write, then one read, and the change is kept."""
    from kubernetes import client

    from foundry.operator import runview
    from foundry.operator.controller import RunController
    from foundry.operator.kubeio import GROUP, MERGE_PATCH, RUNS, VERSION

    engine = make_engine(pg_url)
    try:
        with OperatorStack.open(control_plane.api_client(), engine, namespace) as stack:
            controller = RunController(stack.deps, workers=1)
            _, run = stack.ticket()
            made = stack.run(run)
            assert made["metadata"]["finalizers"] == [runview.FINALIZER]
            controller.run_event("ADDED", made)
            calls = _count_calls(stack.api, run)
            controller.process((namespace, run))
            assert calls == {("PATCH", "status"): 2, ("POST", "event"): 2}, calls
            assert stack.phase(run) == "WaitingApproval"
            assert controller.seen[(namespace, run)].fresh is None  # used once, then dropped

            _, changed = stack.ticket()
            made = stack.run(changed)
            controller.run_event("ADDED", made)
            client.CustomObjectsApi(stack.api).patch_namespaced_custom_object(
                GROUP, VERSION, namespace, RUNS, changed, {"metadata": {"labels": {"team": "blue"}}},
                _content_type=MERGE_PATCH)
            calls = _count_calls(stack.api, changed)
            controller.process((namespace, changed))
            assert calls == {("PATCH", "status"): 3, ("GET", "run"): 1, ("POST", "event"): 2}, calls
            held = stack.run(changed)
            assert held["status"]["phase"] == "WaitingApproval" and held["metadata"]["labels"]["team"] == "blue"
    finally:
        engine.dispose()


def _without_finalizers(stack: OperatorStack, run: str) -> dict:
    """The run as one made by hand (kubectl apply) stands: no finalizer at all."""
    from kubernetes import client

    from foundry.operator.kubeio import GROUP, MERGE_PATCH, RUNS, VERSION

    return client.CustomObjectsApi(stack.api).patch_namespaced_custom_object(
        GROUP, VERSION, stack.namespace, RUNS, run, {"metadata": {"finalizers": None}}, _content_type=MERGE_PATCH)


def test_a_new_run_gets_the_finalizer_without_a_read(control_plane, crds, namespace, pg_url):
    """A run made without the finalizer (by hand; the bridge adds it): the watch showed it with
    none, so ours is written on that resourceVersion with no GET first. A run changed since the
    event (a label here) is read and still gets it, keeping the change; so is one that carries
    someone else's finalizer, which is kept."""
    from kubernetes import client

    from foundry.operator import runview
    from foundry.operator.controller import RunController
    from foundry.operator.kubeio import GROUP, MERGE_PATCH, RUNS, VERSION

    engine = make_engine(pg_url)
    try:
        with OperatorStack.open(control_plane.api_client(), engine, namespace) as stack:
            controller = RunController(stack.deps, workers=1)
            custom = client.CustomObjectsApi(stack.api)

            _, run = stack.ticket()
            controller.seen[(namespace, run)] = runview.seen(_without_finalizers(stack, run))
            calls = _count_calls(stack.api, run)
            ok, body = controller._add_finalizer((namespace, run))
            assert ok and body["metadata"]["finalizers"] == [runview.FINALIZER]
            assert calls == {("PATCH", "run"): 1}, calls

            _, changed = stack.ticket()
            controller.seen[(namespace, changed)] = runview.seen(_without_finalizers(stack, changed))
            custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, RUNS, changed,
                                                  {"metadata": {"labels": {"team": "blue"}}},
                                                  _content_type=MERGE_PATCH)
            calls = _count_calls(stack.api, changed)
            ok, body = controller._add_finalizer((namespace, changed))
            assert ok and body["metadata"]["finalizers"] == [runview.FINALIZER]
            assert body["metadata"]["labels"]["team"] == "blue"
            assert calls == {("PATCH", "run"): 2, ("GET", "run"): 1}, calls  # the 409, the read, the write

            _, theirs = stack.ticket()
            _without_finalizers(stack, theirs)
            custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, RUNS, theirs,
                                                  {"metadata": {"finalizers": ["example.com/keep"]}},
                                                  _content_type=MERGE_PATCH)
            controller.seen[(namespace, theirs)] = runview.seen(stack.run(theirs))
            ok, body = controller._add_finalizer((namespace, theirs))
            assert ok and body["metadata"]["finalizers"] == ["example.com/keep", runview.FINALIZER]
    finally:
        engine.dispose()
