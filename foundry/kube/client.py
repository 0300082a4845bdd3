"""The one way Foundry builds a Kubernetes ApiClient (bridge, operator; the CLI loads its kubeconfig here too).

Credentials: a kubeconfig when one is named (argument or KUBECONFIG), the
ServiceAccount inside a pod, else ~/.kube/config. Every request made through
the client has a timeout and a bounded number of urllib3 retries
(bound_requests): the official client has no default timeout, so a silent API
server would block its caller forever, and urllib3 would retry a read timeout
three more times on its own. Each process picks the numbers that fit its
callers (the bridge answers a webhook within seconds; the operator's workers
can wait a little longer).
"""

from __future__ import annotations

import os
import time
from typing import Any

import urllib3
from kubernetes import client, config as kube_config

class ApiServerRetry(urllib3.Retry):
    """urllib3's retries, plus the API server's own "try again in N seconds".

    The API server answers 429 with Retry-After when it turned a request away before acting on
    it: its priority and fairness queues were full, or a custom resource's storage was still
    being (re)made after its CRD changed. Such a request is safe to send again whatever its
    method, which is what client-go does; urllib3 alone would retry only idempotent methods, and
    with no status retries it raised MaxRetryError ("too many 429 error responses") on a GET
    instead of handing the 429 back. Once the retries are spent the last answer is returned, so
    callers see the ApiException(429) they already handle. Retry-After is honoured up to
    RETRY_AFTER_MAX seconds."""

    RETRY_AFTER_MAX = 2.0

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if status_code == 429 and has_retry_after and self.respect_retry_after_header:
            return bool(self.total)  # the count of status retries is urllib3's to spend
        return super().is_retry(method, status_code, has_retry_after)

    def get_retry_after(self, response: Any) -> float | None:
        seconds = super().get_retry_after(response)
        return None if seconds is None else min(seconds, self.RETRY_AFTER_MAX)


# A read is tried at most twice (once more covers a pooled connection the server
# had closed); a request the API server turned away with Retry-After, up to three
# more times; after that the caller's own retry policy takes over.
DEFAULT_RETRIES = ApiServerRetry(total=5, connect=2, read=1, status=3, redirect=2, raise_on_status=False)


class KubeConfigError(kube_config.ConfigException):
    """No usable kubeconfig (the message names the file tried); a ConfigException like the client's own."""


def load_configuration(kubeconfig: str | None = None, *, context: str | None = None) -> client.Configuration:
    """A Configuration from `kubeconfig` or KUBECONFIG (its `context`, else the current one); in a
    pod without either, the ServiceAccount; else ~/.kube/config. A kubeconfig's token refresh
    hook is throttled (throttle_token_refresh)."""
    path = kubeconfig or os.environ.get("KUBECONFIG") or None
    configuration = client.Configuration()
    if path is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        kube_config.load_incluster_config(client_configuration=configuration)
        return configuration
    try:
        kube_config.load_kube_config(config_file=path, context=context, client_configuration=configuration)
    except (kube_config.ConfigException, OSError) as err:
        raise KubeConfigError(f"cannot load kubeconfig {path or '~/.kube/config'}: {err}") from err
    throttle_token_refresh(configuration)
    return configuration


def api_client(
    kubeconfig: str | None = None,
    *,
    timeouts: tuple[float, float],
    retries: urllib3.Retry = DEFAULT_RETRIES,
    pool_size: int | None = None,
) -> client.ApiClient:
    """An ApiClient whose every request is bounded by (connect, read) `timeouts` and `retries`.

    `pool_size`: HTTP connections kept per host (one per worker thread, so the
    pool never serialises requests); the client's default when None.
    """
    configuration = load_configuration(kubeconfig)
    if pool_size is not None:
        configuration.connection_pool_maxsize = pool_size
    return bound_requests(client.ApiClient(configuration), connect=timeouts[0], read=timeouts[1], retries=retries)


def bound_requests(api: client.ApiClient, *, connect: float, read: float,
                   retries: urllib3.Retry = DEFAULT_RETRIES) -> client.ApiClient:
    """Give every request made through `api` a (connect, read) timeout, unless the call names its
    own, and `retries` for urllib3. Applied once per client; a second call changes nothing."""
    rest = api.rest_client
    if getattr(rest, "_foundry_bounded", False):
        return api
    original = rest.request

    def request(method: str, url: str, *args: Any, _request_timeout: Any = None, **kwargs: Any) -> Any:
        return original(method, url, *args, _request_timeout=_request_timeout or (connect, read), **kwargs)

    rest.request = request
    # Pools are made per host on first use, with these keywords.
    rest.pool_manager.connection_pool_kw["retries"] = retries
    rest._foundry_bounded = True
    return api


def throttle_token_refresh(cfg: client.Configuration, every: float = 1.0) -> None:
    """Run a kubeconfig token's refresh hook at most once per `every` seconds.

    For a kubeconfig with a token the client calls the hook before *every*
    request, and the hook re-applies the whole kubeconfig (setting `host`
    rescans the environment for proxies): 14% of the operator's reconcile CPU
    in tools/bench_operator.py. The hook only reloads a token once it has
    expired, so a second's delay changes nothing that matters."""
    hook = cfg.refresh_api_key_hook
    if hook is None:
        return
    last = [float("-inf")]

    def throttled(configuration: client.Configuration) -> None:
        now = time.monotonic()
        if now - last[0] >= every:
            last[0] = now
            hook(configuration)

    cfg.refresh_api_key_hook = throttled
