"""Create-or-attach: the API server's name uniqueness as the idempotency guard.

Every caller that means the same thing computes the same object name. One
create wins; the others get 409 AlreadyExists, read the winner and return it if
it is the same thing (same identity), so all callers agree on name and uid.
There is no retry loop here: after a 409 the only write is never repeated, and
a 409 whose object vanished before we could read it is reported, not retried,
so this function can never be the cause of a second object.

The rules are written once, in `attach_rounds`, which says which request to
send next and decides from the answers. Two transports carry it out: the
official client here (threads: the operator, the CLI, the bridge's threaded
path), and aiohttp on the bridge's event loop (foundry.bridge.kubehttp), which
the bridge's intake takes for its CPU cost (docs/decisions/0002-bridge-lean-hot-path.md).
"""

from __future__ import annotations

import json
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Literal
from urllib.parse import quote

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from foundry.kube.crds import GROUP, VERSION
from foundry.kube.errors import IdentityConflict, KubeRequestError, api_status, translate

Identity = Callable[[dict[str, Any]], Hashable]
Request = Literal["create", "read"]
_UNREACHABLE = "Unreachable"


@dataclass(frozen=True)
class AttachResult:
    """The object every caller agrees on; `created` is True for exactly one of them."""

    name: str
    uid: str
    created: bool
    object: dict[str, Any]


@dataclass(frozen=True)
class Answer:
    """What the API server said to one request: the object for a 2xx, else the error body as text."""

    status: int
    reason: str | None
    body: Any


def unreachable(detail: str) -> Answer:
    """No HTTP answer came (refused, reset, timed out): `detail` is what the transport said."""
    return Answer(0, _UNREACHABLE, detail)


def object_path(plural: str, namespace: str, name: str | None = None) -> str:
    """The API path of the namespaced custom objects `plural` (one of them when `name` is given)."""
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace, safe='')}/{plural}"
    return base if name is None else f"{base}/{quote(name, safe='')}"


def attach_rounds(
    namespace: str, manifest: dict[str, Any], *, plural: str, identity: Identity, describe: Callable[[Hashable], str]
) -> Generator[Request, Answer, AttachResult]:
    """Create-or-attach as requests and decisions: yields "create" then, on 409 AlreadyExists,
    "read"; is sent each Answer; returns the AttachResult or raises the foundry.kube.errors
    exception (IdentityConflict, ObjectRejected, AccessDenied, KubeRequestError)."""
    kind = manifest.get("kind", plural)
    name = manifest.get("metadata", {}).get("name")
    if not name:
        raise ValueError(f"{kind} manifest has no metadata.name; create-or-attach needs a deterministic name")
    where = f"{kind} {namespace}/{name}"
    answer = yield "create"
    if answer.status in (200, 201):
        return AttachResult(name, answer.body["metadata"]["uid"], True, answer.body)
    if answer.status != 409 or _reason(answer) != "AlreadyExists":
        raise _error(answer, f"creating {where}")

    answer = yield "read"
    if answer.status == 404:
        raise KubeRequestError(
            f"attaching to {where}",
            404,
            "NotFound",
            "the object existed when our create was refused but was deleted before we could read it; "
            "not retrying (a retry could create a second object), run the command again",
        )
    if answer.status != 200:
        raise _error(answer, f"reading {where}")
    existing = answer.body
    wanted, found = identity(manifest), identity(existing)
    if wanted != found:
        raise IdentityConflict(
            f"{where} already exists for {describe(found)}, not {describe(wanted)}; "
            f"refusing to attach (was it created by hand or by another tool?)"
        )
    return AttachResult(name, existing["metadata"]["uid"], False, existing)


def _reason(answer: Answer) -> str:
    return api_status(ApiException(status=answer.status, reason=answer.reason, body=answer.body))[1]


def _error(answer: Answer, action: str) -> KubeRequestError:
    if answer.status == 0 and answer.reason == _UNREACHABLE:
        return KubeRequestError(action, 0, _UNREACHABLE, str(answer.body))
    # The same translation, so the same exception classes and messages, whichever transport asked.
    return translate(ApiException(status=answer.status, reason=answer.reason, body=answer.body), action)


def create_or_attach(
    api_client: client.ApiClient,
    namespace: str,
    manifest: dict[str, Any],
    *,
    plural: str,
    identity: Identity,
    describe: Callable[[Hashable], str],
) -> AttachResult:
    """Create `manifest` in `namespace`, or attach to the existing object of that name.

    identity(obj) extracts what must match for an existing object to count as
    "the same"; describe(identity) renders it for error messages.
    """
    api = client.CustomObjectsApi(api_client)
    name = manifest.get("metadata", {}).get("name")

    def send(request: Request) -> Answer:
        try:
            if request == "create":
                obj = api.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, manifest, field_validation="Strict"
                )
                return Answer(201, None, obj)
            return Answer(200, None, api.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name))
        except ApiException as exc:
            return Answer(int(exc.status or 0), exc.reason, exc.body)
        except urllib3.exceptions.HTTPError as exc:
            return unreachable(str(exc))

    rounds = attach_rounds(namespace, manifest, plural=plural, identity=identity, describe=describe)
    try:
        request = next(rounds)
        while True:
            request = rounds.send(send(request))
    except StopIteration as done:
        return done.value


def answer_from_http(status: int, reason: str | None, text: str) -> Answer:
    """An Answer from a raw HTTP exchange: a 2xx body parsed as the object, an error body kept as text."""
    return Answer(status, reason, json.loads(text) if 200 <= status < 300 else text)
