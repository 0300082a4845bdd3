"""foundry.operator.watch_runs: the plain list-and-watch of FoundryRuns (decision 0026), on the
real API server: listings in pages, events after them, resuming after a stop, a listing again
when the version is gone, and runs deleted while it was away told as DELETED."""

from __future__ import annotations

import threading
import time

import pytest
from kubernetes import client

from foundry.operator import watch_runs
from foundry.operator.kubeio import GROUP, RUNS, VERSION
from foundry.operator.watch_runs import Gone, RunWatch

pytestmark = pytest.mark.kube


class Heard:
    def __init__(self) -> None:
        self.events: list[tuple[str | None, str, str]] = []
        self.forgotten: list[set] = []
        self.lock = threading.Lock()

    def deliver(self, kind, obj) -> None:
        with self.lock:
            self.events.append((kind, obj["metadata"]["name"], obj["metadata"]["resourceVersion"]))

    def forget(self, namespace, listed) -> None:
        self.forgotten.append(set(listed))

    def names(self, kind) -> list[str]:
        with self.lock:
            return [name for k, name, _ in self.events if k == kind]


def _run(custom, namespace: str, name: str) -> dict:
    return custom.create_namespaced_custom_object(GROUP, VERSION, namespace, RUNS, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "FoundryRun", "metadata": {"name": name},
        "spec": {"tracker": "linear", "issueId": name, "issueKey": "ACME-1", "attempt": 1}})


def _wait(predicate, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_lists_in_pages_then_hears_changes_across_watches_the_server_ended(kube_client, crds, namespace,
                                                                            monkeypatch):
    monkeypatch.setattr(watch_runs, "LIST_PAGE", 2)
    monkeypatch.setattr(watch_runs, "SERVER_TIMEOUT", 1)  # the API server ends each watch after a second
    custom = client.CustomObjectsApi(kube_client)
    for i in range(5):
        _run(custom, namespace, f"r{i}")
    heard = Heard()
    watch = RunWatch(kube_client.configuration, namespace, heard.deliver, heard.forget).start()
    try:
        _wait(lambda: heard.forgotten, "the first listing")
        assert sorted(heard.names(None)) == [f"r{i}" for i in range(5)]  # three pages, every run once
        assert heard.forgotten == [{(namespace, f"r{i}") for i in range(5)}] and watch.listings == 1
        time.sleep(2.5)  # two watches end meanwhile; each next one resumes from the last version
        _run(custom, namespace, "new")
        custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, RUNS, "r0",
                                              {"metadata": {"labels": {"team": "blue"}}})
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, RUNS, "r1")
        _wait(lambda: heard.names("DELETED"), "the deletion")
        assert heard.names("ADDED") == ["new"] and heard.names("MODIFIED") == ["r0"]
        assert heard.names("DELETED") == ["r1"]
        assert watch.listings == 1  # resumed each time, never listed again
    finally:
        watch.stop()
    assert not watch._thread.is_alive()


def test_a_version_gone_from_the_servers_history_is_a_new_listing(kube_client, crds, namespace):
    heard = Heard()
    watch = RunWatch(kube_client.configuration, namespace, heard.deliver, heard.forget)
    try:
        with pytest.raises(Gone):
            watch._watch("1")  # long compacted away on any API server that has run a while
    finally:
        watch.api.close()


def test_the_controller_forgets_the_runs_a_new_listing_lacks():
    from foundry.operator.controller import RunController
    from foundry.operator.metrics import OperatorMetrics
    from foundry.operator.runview import seen

    class Deps:  # what RunController's constructor and run_event touch
        metrics = OperatorMetrics()

    controller = RunController(Deps(), workers=1)  # type: ignore[arg-type]
    body = {"metadata": {"namespace": "a", "name": "x", "resourceVersion": "3"}, "status": {"phase": "WaitingApproval"}}
    for key in (("a", "x"), ("a", "gone"), ("b", "other")):
        controller.seen[key] = seen({**body, "metadata": {**body["metadata"], "namespace": key[0], "name": key[1]}})
    controller._forget_unlisted("a", {("a", "x")})
    assert set(controller.seen) == {("a", "x"), ("b", "other")}  # another namespace's watch is not this one's
    controller._forget_unlisted(None, set())
    assert controller.seen == {}
