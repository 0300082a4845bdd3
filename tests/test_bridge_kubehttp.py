"""The bridge's raw-HTTP FoundryRun create-or-attach, against the real API server.

It must behave exactly like foundry.kube.runs.create_or_attach (the official
client's path): same object, same attach rule, same exceptions and messages,
and one object however many callers race, whichever path each caller takes.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import Counter
from typing import Any

import pytest
from kubernetes import client

from foundry.bridge.kubehttp import KubeRuns, runs_path, target_from_configuration
from foundry.kube import runs
from foundry.kube.errors import AccessDenied, IdentityConflict, KubeRequestError, ObjectRejected
from foundry.kube.runs import TicketSnapshot, Trigger, build_run_manifest

ISSUE_ID = "7d1f0a8e-2b3c-4d5e-8f90-a1b2c3d4e5f6"


def manifest(issue_id: str = ISSUE_ID, attempt: int = 1, title: str = "first") -> dict[str, Any]:
    return build_run_manifest(
        TicketSnapshot("linear", issue_id, "ACME-7", title=title), attempt, Trigger("webhook", delivery_id="d-1")
    )


def call(configuration: client.Configuration, namespace: str, *manifests: dict[str, Any]) -> list[Any]:
    """create_or_attach every manifest concurrently through one KubeRuns; results or exceptions, in order."""

    async def go() -> list[Any]:
        kube = KubeRuns(target_from_configuration(configuration), connections=16, timeout_seconds=10)
        try:
            return list(
                await asyncio.gather(*(kube.create_or_attach(namespace, m) for m in manifests), return_exceptions=True)
            )
        finally:
            await kube.close()

    return asyncio.run(go())


def listed(kube_client: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    return client.CustomObjectsApi(kube_client).list_namespaced_custom_object(
        "foundry.dev", "v1alpha1", namespace, "foundryruns"
    )["items"]


@pytest.mark.kube
def test_create_then_attach_then_next_attempt(kube_client, crds, namespace: str) -> None:
    config = kube_client.configuration
    assert call(config, namespace, manifest()) == [True]
    # Another snapshot of the same issue and attempt attaches and changes nothing.
    assert call(config, namespace, manifest(title="edited")) == [False]
    objects = listed(kube_client, namespace)
    assert len(objects) == 1 and objects[0]["spec"]["ticket"]["title"] == "first"
    # The official client's path agrees that this object is the run.
    assert not runs.create_or_attach(kube_client, namespace, manifest()).created
    assert call(config, namespace, manifest(attempt=2)) == [True]
    assert len(listed(kube_client, namespace)) == 2


@pytest.mark.kube
def test_a_foreign_object_under_our_name_is_an_identity_conflict(kube_client, crds, namespace: str) -> None:
    ours = manifest()
    squatter = manifest(issue_id="someone-else")
    squatter["metadata"]["name"] = ours["metadata"]["name"]
    runs.create_or_attach(kube_client, namespace, squatter)
    [error] = call(kube_client.configuration, namespace, ours)
    assert isinstance(error, IdentityConflict)
    assert f"FoundryRun {namespace}/{ours['metadata']['name']} already exists" in str(error)
    assert "'someone-else'" in str(error) and repr(ISSUE_ID) in str(error)


@pytest.mark.kube
def test_refusals_are_the_official_paths_exceptions(control_plane, kube_client, crds, namespace: str) -> None:
    bad = manifest()
    bad["spec"]["colour"] = "red"  # strict field validation, as the official path asks for
    [rejected] = call(kube_client.configuration, namespace, bad)
    assert isinstance(rejected, ObjectRejected) and 'unknown field "spec.colour"' in rejected.message
    with pytest.raises(ObjectRejected) as official:
        runs.create_or_attach(kube_client, namespace, bad)
    assert (rejected.status, rejected.message) == (official.value.status, official.value.message)

    stranger = control_plane.api_client(token="not-a-token").configuration
    [denied] = call(stranger, namespace, manifest())
    assert isinstance(denied, AccessDenied) and denied.status == 401
    mallory = control_plane.api_client(token=control_plane.user_token("mallory")).configuration
    [forbidden] = call(mallory, namespace, manifest())
    assert isinstance(forbidden, AccessDenied) and forbidden.status == 403
    assert listed(kube_client, namespace) == []


@pytest.mark.kube
def test_an_unreachable_server_is_status_0(kube_client) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    config = client.Configuration()
    config.host = f"http://127.0.0.1:{port}"
    [error] = call(config, "ns", manifest())
    assert isinstance(error, KubeRequestError) and error.status == 0 and error.reason == "Unreachable"


def test_a_refreshable_token_is_read_per_request_and_a_static_one_once() -> None:
    config = client.Configuration()
    config.host = "https://kube.example:6443"
    config.api_key = {"authorization": "Bearer one"}
    static = target_from_configuration(config)
    config.api_key = {"authorization": "Bearer changed-behind-our-back"}
    assert static.headers()["authorization"] == "Bearer one"

    tokens = iter(["t-1", "t-2"])

    def refresh(configuration: client.Configuration) -> None:  # what in-cluster config installs
        configuration.api_key = {"authorization": f"Bearer {next(tokens)}"}

    config.refresh_api_key_hook = refresh
    rotating = target_from_configuration(config)  # no fixed headers: the hook runs per request
    assert [rotating.headers()["authorization"] for _ in range(2)] == ["Bearer t-1", "Bearer t-2"]
    assert rotating.fixed_headers is None


def test_names_are_quoted_into_the_path() -> None:
    assert runs_path("foundry") == "/apis/foundry.dev/v1alpha1/namespaces/foundry/foundryruns"
    assert runs_path("a/b", "x?y") == "/apis/foundry.dev/v1alpha1/namespaces/a%2Fb/foundryruns/x%3Fy"


@pytest.mark.kube
@pytest.mark.slow
def test_racing_raw_and_official_callers_get_one_object(kube_client, crds, namespace: str) -> None:
    wanted = manifest(title="race")
    results: list[Any] = []
    go = threading.Barrier(9)

    def official() -> None:
        go.wait()
        try:
            results.append(runs.create_or_attach(kube_client, namespace, wanted).created)
        except Exception as exc:  # collected and asserted below
            results.append(exc)

    threads = [threading.Thread(target=official) for _ in range(8)]
    for thread in threads:
        thread.start()
    go.wait()
    raw = call(kube_client.configuration, namespace, *[wanted] * 24)
    for thread in threads:
        thread.join(30)
    everything = raw + results
    assert len(everything) == 32
    assert Counter(everything) == Counter({True: 1, False: 31}), everything
    assert len(listed(kube_client, namespace)) == 1
