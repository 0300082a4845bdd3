"""Create-or-attach: the API server's name uniqueness as the idempotency guard.

Every caller that means the same thing computes the same object name. One
create wins; the others get 409 AlreadyExists, read the winner and return it if
it is the same thing (same identity), so all callers agree on name and uid.
There is no retry loop here: after a 409 the only write is never repeated, and
a 409 whose object vanished before we could read it is reported, not retried,
so this function can never be the cause of a second object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Hashable

import urllib3
from kubernetes import client

from foundry.kube.crds import GROUP, VERSION
from foundry.kube.errors import IdentityConflict, KubeRequestError, api_status, translate

Identity = Callable[[dict[str, Any]], Hashable]


@dataclass(frozen=True)
class AttachResult:
    """The object every caller agrees on; `created` is True for exactly one of them."""

    name: str
    uid: str
    created: bool
    object: dict[str, Any]


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
    kind = manifest.get("kind", plural)
    name = manifest.get("metadata", {}).get("name")
    if not name:
        raise ValueError(f"{kind} manifest has no metadata.name; create-or-attach needs a deterministic name")
    where = f"{kind} {namespace}/{name}"
    api = client.CustomObjectsApi(api_client)
    try:
        created = api.create_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, manifest, field_validation="Strict"
        )
        return AttachResult(name, created["metadata"]["uid"], True, created)
    except client.ApiException as exc:
        status, reason, _ = api_status(exc)
        if status != 409 or reason != "AlreadyExists":
            raise translate(exc, f"creating {where}") from exc
    except urllib3.exceptions.HTTPError as exc:
        raise KubeRequestError(f"creating {where}", 0, "Unreachable", str(exc)) from exc

    try:
        existing = api.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
    except client.ApiException as exc:
        status, _, _ = api_status(exc)
        if status == 404:
            raise KubeRequestError(
                f"attaching to {where}",
                404,
                "NotFound",
                "the object existed when our create was refused but was deleted before we could read it; "
                "not retrying (a retry could create a second object), run the command again",
            ) from exc
        raise translate(exc, f"reading {where}") from exc
    except urllib3.exceptions.HTTPError as exc:
        raise KubeRequestError(f"reading {where}", 0, "Unreachable", str(exc)) from exc

    wanted, found = identity(manifest), identity(existing)
    if wanted != found:
        raise IdentityConflict(
            f"{where} already exists for {describe(found)}, not {describe(wanted)}; "
            f"refusing to attach (was it created by hand or by another tool?)"
        )
    return AttachResult(name, existing["metadata"]["uid"], False, existing)
