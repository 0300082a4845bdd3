"""The API server's 429 with Retry-After (its priority and fairness queues full, or a custom
resource's storage being remade after its CRD changed) is retried for any method, then handed
back as ApiException(429); before, a GET raised urllib3's MaxRetryError instead.

A local HTTP server plays the API server, answering from a script."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from kubernetes import client

from foundry.kube.client import api_client

LIST = "/apis/foundry.dev/v1alpha1/namespaces/ns/foundryapprovals"


class Scripted:
    """Answers each request with the next (status, Retry-After) of `script`, then 200 forever."""

    def __init__(self) -> None:
        self.script: list[tuple[int, str | None]] = []
        self.seen: list[tuple[str, float]] = []
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                scripted.seen.append((self.command, time.monotonic()))
                status, retry_after = scripted.script.pop(0) if scripted.script else (200, None)
                if status >= 400:
                    payload = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": status,
                               "reason": "TooManyRequests", "message": "storage is (re)initializing"}
                elif self.command == "POST":
                    status, payload = 201, {**body, "metadata": {**body.get("metadata", {}), "resourceVersion": "1"}}
                else:
                    payload = {"apiVersion": "foundry.dev/v1alpha1", "kind": "FoundryApprovalList", "items": []}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if retry_after is not None:
                    self.send_header("Retry-After", retry_after)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"


@pytest.fixture
def apiserver() -> Iterator[Scripted]:
    scripted = Scripted()
    yield scripted
    scripted.server.shutdown()


@pytest.fixture
def objects(apiserver: Scripted, tmp_path: Path) -> Iterator[client.CustomObjectsApi]:
    kubeconfig = tmp_path / "k.yaml"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": apiserver.url}}],
        "users": [{"name": "u", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
    }))
    api = api_client(str(kubeconfig), timeouts=(2.0, 5.0))  # the operator's and the tests' retries
    yield client.CustomObjectsApi(api)
    api.close()


def _list(objects: client.CustomObjectsApi) -> dict:
    return objects.list_namespaced_custom_object("foundry.dev", "v1alpha1", "ns", "foundryapprovals")


def test_a_get_turned_away_with_retry_after_is_sent_again(apiserver: Scripted, objects) -> None:
    apiserver.script = [(429, "0"), (429, "0")]
    assert _list(objects)["items"] == []
    assert [method for method, _ in apiserver.seen] == ["GET", "GET", "GET"]


def test_a_create_turned_away_is_sent_again_too(apiserver: Scripted, objects) -> None:
    apiserver.script = [(429, "0")]
    made = objects.create_namespaced_custom_object("foundry.dev", "v1alpha1", "ns", "foundryapprovals",
                                                   {"metadata": {"name": "a"}, "spec": {}})
    assert made["metadata"]["name"] == "a"
    assert [method for method, _ in apiserver.seen] == ["POST", "POST"]


def test_retries_spent_hand_back_the_429_and_a_429_without_retry_after_is_not_retried(
        apiserver: Scripted, objects) -> None:
    apiserver.script = [(429, "0")] * 10
    with pytest.raises(client.ApiException) as raised:
        _list(objects)
    assert raised.value.status == 429
    assert len(apiserver.seen) == 4  # the request and three more
    apiserver.script, apiserver.seen = [(429, None)], []
    with pytest.raises(client.ApiException) as raised:
        _list(objects)
    assert raised.value.status == 429 and len(apiserver.seen) == 1


def test_a_long_retry_after_is_waited_only_up_to_its_cap(apiserver: Scripted, objects) -> None:
    apiserver.script = [(429, "30")]
    _list(objects)
    (_, first), (_, second) = apiserver.seen
    assert 1.9 <= second - first < 4.0, second - first
