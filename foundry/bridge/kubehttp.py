"""FoundryRun create-or-attach as raw HTTP from the bridge's event loop.

The official client costs the bridge a thread per request, urllib3, and the
generated (de)serialisation; on a 2-core machine that was the largest share of
the bridge's CPU per ticket (docs/decisions/0002-bridge-lean-hot-path.md). This
module is only a transport: the requests to send and every decision on their
answers (one POST; a 409 AlreadyExists leads to one GET and an exact identity
comparison; a 409 whose object has vanished is reported, never retried; the
same foundry.kube.errors exceptions) are foundry.kube.attach.attach_rounds, the
very rules the threaded path runs.

Credentials come from the kubernetes client's own Configuration (kubeconfig or
in-cluster, as loaded by foundry.kube.client), so token refresh hooks and
CA/client-certificate settings are honoured.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes import client

from foundry.kube.attach import AttachResult, Answer, Request, answer_from_http, attach_rounds, object_path, unreachable
from foundry.kube.runs import PLURAL, describe_run, run_identity

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
    return object_path(PLURAL, namespace, name)


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

    async def _send(self, request: Request, namespace: str, manifest: dict[str, Any]) -> Answer:
        name = manifest["metadata"]["name"]
        kwargs: dict[str, Any] = {"headers": self.target.headers()}
        if request == "create":
            method, path = "POST", runs_path(namespace) + "?fieldValidation=Strict"
            kwargs["data"] = json.dumps(manifest).encode()
        else:
            method, path = "GET", runs_path(namespace, name)
        if self.target.server_hostname:
            kwargs["server_hostname"] = self.target.server_hostname
        if self.target.proxy:
            kwargs["proxy"] = self.target.proxy
        try:
            async with self.session.request(method, path, **kwargs) as response:
                return answer_from_http(response.status, response.reason, await response.text())
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            return unreachable(str(exc) or type(exc).__name__)

    async def create_or_attach(self, namespace: str, manifest: dict[str, Any]) -> bool:
        """True if this call created the FoundryRun, False if it attached to the same run already there."""
        return (await self.attach(namespace, manifest)).created

    async def attach(self, namespace: str, manifest: dict[str, Any]) -> AttachResult:
        """Create-or-attach, with the object agreed on (the run already there, when attached).

        Raises IdentityConflict, ObjectRejected, AccessDenied or KubeRequestError
        exactly as foundry.kube.runs.create_or_attach does (the same attach_rounds).
        """
        rounds = attach_rounds(namespace, manifest, plural=PLURAL, identity=run_identity, describe=describe_run)
        try:
            request = next(rounds)
            while True:
                request = rounds.send(await self._send(request, namespace, manifest))
        except StopIteration as done:
            return done.value

    async def merge_patch(self, namespace: str, name: str, body: dict[str, Any]) -> Answer:
        """One JSON merge patch of the run (the bridge's ticket update); the answer as it came."""
        kwargs: dict[str, Any] = {"headers": {**self.target.headers(), "Content-Type": "application/merge-patch+json"},
                                  "data": json.dumps(body).encode()}
        if self.target.server_hostname:
            kwargs["server_hostname"] = self.target.server_hostname
        if self.target.proxy:
            kwargs["proxy"] = self.target.proxy
        try:
            async with self.session.request("PATCH", runs_path(namespace, name), **kwargs) as response:
                return answer_from_http(response.status, response.reason, await response.text())
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            return unreachable(str(exc) or type(exc).__name__)
