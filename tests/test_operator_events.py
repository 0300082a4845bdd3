"""The Events the operator posts for a run (foundry.operator.events), on the real API server."""

from __future__ import annotations

import logging

import pytest
from kubernetes import client

from foundry.operator.events import COMPONENT, post_event


def _run(namespace: str) -> dict:
    return {"apiVersion": "foundry.dev/v1alpha1", "kind": "FoundryRun",
            "metadata": {"name": "linear-abc-1", "namespace": namespace, "uid": "7f0c1e4a-0000-4000-8000-000000000001",
                         "resourceVersion": "42"}}


def test_an_event_names_the_run_and_says_what_happened(kube_client, namespace: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A long message is clipped to what the API server takes (it refused the whole Event
    before). Posted as a plain request: the generated create_namespaced_event (argument validation, the
    Event models both ways) is not used, and its absence changes nothing kubectl shows."""
    def generated(*_a, **_k):
        raise AssertionError("the generated Events call is not used")

    monkeypatch.setattr(client.CoreV1Api, "create_namespaced_event", generated)
    post_event(kube_client, _run(namespace), "Planned", "Analysing → WaitingApproval: " + "x" * 2000,
               type_="Warning")
    [event] = [e for e in client.CoreV1Api(kube_client).list_namespaced_event(namespace).items
               if e.involved_object.name == "linear-abc-1"]
    assert (event.reason, event.type, event.count, event.action) == ("Planned", "Warning", 1, "Reconcile")
    # Clipped to the API server's 1,024 bytes (not characters: the arrow is three).
    assert event.message.startswith("Analysing → WaitingApproval: x") and len(event.message.encode()) == 1024
    obj = event.involved_object
    assert (obj.kind, obj.api_version, obj.namespace, obj.uid, obj.resource_version) == (
        "FoundryRun", "foundry.dev/v1alpha1", namespace, "7f0c1e4a-0000-4000-8000-000000000001", "42")
    assert event.source.component == COMPONENT and event.reporting_component == COMPONENT
    assert event.event_time is not None and event.first_timestamp == event.last_timestamp is not None


def test_an_event_that_cannot_be_posted_is_logged_not_raised(kube_client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="foundry.operator.events")
    post_event(kube_client, _run("no-such-namespace-here"), "Claimed", "Pending → Analysing")
    assert "could not post event Claimed for no-such-namespace-here/linear-abc-1" in caplog.text
