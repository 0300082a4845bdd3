"""FoundryRun create-or-attach as raw HTTP from the bridge's event loop.

The official client costs the bridge a thread per request, urllib3, and the
generated (de)serialisation; on a 2-core machine that was the largest share of
the bridge's CPU per ticket (docs/decisions/0002-bridge-lean-hot-path.md). This
module does the same two requests with aiohttp and keeps every rule of
foundry.kube.attach.create_or_attach: one POST; a 409 AlreadyExists leads to
one GET and an exact identity comparison (foundry.kube.runs.run_identity); a
409 whose object has vanished is reported, never retried; failures become the
same foundry.kube.errors exceptions (via foundry.kube.errors.translate).

Credentials come from the kubernetes client's own Configuration (kubeconfig or
in-cluster, as loaded by foundry.bridge.backend.kube_api_client), so token
refresh hooks and CA/client-certificate settings are honoured.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from foundry.kube.crds import GROUP, VERSION
from foundry.kube.errors import IdentityConflict, KubeRequestError, api_status, translate
from foundry.kube.runs import PLURAL, run_identity

JSON = "application/json"


@dataclass(frozen=True)
class KubeTarget:
    """Where and how to reach the API server, taken from a client.Configuration."""

    server: str
    ssl_context: ssl.SSLContext | bool  # False: verification disabled in the kubeconfig; True: http
    server_hostname: str | None
    configuration: client.Configuration
    proxy: str | None = None
    # Built once when nothing can change them (no token refresh hook); else per request.
    fixed_headers: Mapping[str, str] | None = None

    def headers(self) -> Mapping[str, str]:
        return self.fixed_headers if self.fixed_headers is not None else request_headers(self.configuration)


def request_headers(configuration: client.Configuration) -> dict[str, str]:
    """JSON content negotiation plus the Configuration's auth (its refresh hook runs here, if any)."""
    headers = {"Content-Type": JSON, "Accept": JSON}
    for setting in configuration.auth_settings().values():
        if setting.get("in") == "header" and setting.get("value"):
            headers[str(setting["key"])] = str(setting["value"])
    if configuration.username and configuration.password:
        headers["Authorization"] = configuration.get_basic_auth_token()
    return headers


def target_from_configuration(configuration: client.Configuration) -> KubeTarget:
    """The API server address, TLS context and auth of a loaded kubernetes Configuration."""
    server = configuration.host.rstrip("/")
    proxy = getattr(configuration, "proxy", None) or None
    fixed = request_headers(configuration) if configuration.refresh_api_key_hook is None else None
    if not server.startswith("https://"):
        return KubeTarget(server, True, None, configuration, proxy, fixed)
    if not configuration.verify_ssl:
        return KubeTarget(server, False, None, configuration, proxy, fixed)
    context = ssl.create_default_context(
        cafile=configuration.ssl_ca_cert or None, cadata=getattr(configuration, "ca_cert_data", None) or None
    )
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file or None)
    if configuration.assert_hostname is False:
        context.check_hostname = False
    return KubeTarget(server, context, configuration.tls_server_name or None, configuration, proxy, fixed)


def runs_path(namespace: str, name: str | None = None) -> str:
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace, safe='')}/{PLURAL}"
    return base if name is None else f"{base}/{quote(name, safe='')}"


def _error(status: int, reason: str | None, body: str, action: str) -> KubeRequestError:
    # The same translation (and so the same exception classes and messages) as the official client's path.
    return translate(ApiException(status=status, reason=reason, body=body), action)


class KubeRuns:
    """FoundryRun create-or-attach over one aiohttp session (one per bridge process)."""

    def __init__(
        self, target: KubeTarget, *, connections: int, timeout_seconds: float, connect_seconds: float | None = None
    ) -> None:
        """`timeout_seconds` bounds each request from start to the last byte of its answer (a hung
        server included); `connect_seconds`, if given, the TCP and TLS connect within it."""
        self.target = target
        connector = aiohttp.TCPConnector(limit=connections, ssl=target.ssl_context)
        self.session = aiohttp.ClientSession(
            base_url=target.server,
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=timeout_seconds, connect=connect_seconds),
            json_serialize=json.dumps,
            skip_auto_headers=("User-Agent",),
        )

    async def close(self) -> None:
        await self.session.close()

    async def _request(self, method: str, path: str, action: str, body: bytes | None = None) -> tuple[int, str | None, str]:
        kwargs: dict[str, Any] = {"headers": self.target.headers()}
        if self.target.server_hostname:
            kwargs["server_hostname"] = self.target.server_hostname
        if body is not None:
            kwargs["data"] = body
        if self.target.proxy:
            kwargs["proxy"] = self.target.proxy
        try:
            async with self.session.request(method, path, **kwargs) as response:
                return response.status, response.reason, await response.text()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise KubeRequestError(action, 0, "Unreachable", str(exc) or type(exc).__name__) from exc

    async def create_or_attach(self, namespace: str, manifest: dict[str, Any]) -> bool:
        """True if this call created the FoundryRun, False if it attached to the same run already there.

        Raises IdentityConflict, ObjectRejected, AccessDenied or KubeRequestError
        exactly as foundry.kube.runs.create_or_attach does.
        """
        name = manifest.get("metadata", {}).get("name")
        if not name:
            raise ValueError("FoundryRun manifest has no metadata.name; create-or-attach needs a deterministic name")
        where = f"FoundryRun {namespace}/{name}"
        status, reason, text = await self._request(
            "POST", runs_path(namespace) + "?fieldValidation=Strict", f"creating {where}", json.dumps(manifest).encode()
        )
        if status in (200, 201):
            return True
        if status != 409 or _status_reason(status, reason, text) != "AlreadyExists":
            raise _error(status, reason, text, f"creating {where}")

        status, reason, text = await self._request("GET", runs_path(namespace, name), f"reading {where}")
        if status == 404:
            raise KubeRequestError(
                f"attaching to {where}",
                404,
                "NotFound",
                "the object existed when our create was refused but was deleted before we could read it; "
                "not retrying (a retry could create a second object), run the command again",
            )
        if status != 200:
            raise _error(status, reason, text, f"reading {where}")
        existing = json.loads(text)
        wanted, found = run_identity(manifest), run_identity(existing)
        if wanted != found:
            raise IdentityConflict(
                f"{where} already exists for {_describe(found)}, not {_describe(wanted)}; "
                "refusing to attach (was it created by hand or by another tool?)"
            )
        return False


def _status_reason(status: int, reason: str | None, text: str) -> str:
    return api_status(ApiException(status=status, reason=reason, body=text))[1]


def _describe(identity: Any) -> str:
    tracker, issue_id, attempt = identity
    return f"{tracker} issue {issue_id!r} attempt {attempt}"
