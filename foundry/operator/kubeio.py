"""The operator's Kubernetes reads and writes on FoundryRuns and FoundryApprovals.

Status writes carry the resourceVersion the step was computed from, so a
write based on a stale read is refused (409) and the step is recomputed from
fresh state instead of overwriting someone else's progress.
"""

from __future__ import annotations

from typing import Any, Callable

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from foundry.kube.client import bound_requests  # noqa: F401 (the operator's callers import it from here)
from foundry.kube.crds import GROUP, VERSION  # noqa: F401 (likewise)
from foundry.operator.errors import RetryLater

RUNS = "foundryruns"
APPROVALS = "foundryapprovals"

MERGE_PATCH = "application/merge-patch+json"


# Seconds to connect to the API server, and to wait for its answer. The
# operator's requests are small reads and writes (no watches: kopf has its own
# client): an API server that takes longer is stuck, and a reconcile waiting
# on it would hold one of the operator's few workers indefinitely
# (foundry.kube.client.bound_requests applies them).
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0


WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def fence_writes(api: client.ApiClient, fence: Callable[[], None]) -> client.ApiClient:
    """Call `fence` before every write made through `api` (reads pass): a process that has
    lost the operator's Lease raises NotLeading instead of sending a status write, a Job, a
    ConfigMap, a Secret, a delete or an Event. One place for every Kubernetes write of the
    operator and of the Job provider, which shares this client, so none can be forgotten.
    The latest `fence` wins: a Deps owns its ApiClient."""
    rest = api.rest_client
    rest._foundry_fence = fence
    if getattr(rest, "_foundry_fenced", False):
        return api
    original = rest.request

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if method.upper() in WRITES:
            rest._foundry_fence()
        return original(method, url, *args, **kwargs)

    rest.request = request
    rest._foundry_fenced = True
    return api


class Conflict(Exception):
    """The run changed since it was read; recompute from a fresh read."""


def _retryable(err: ApiException) -> bool:
    return err.status in (429, 500, 502, 503, 504) or err.status == 0 or err.status is None


def _unreachable(err: Urllib3Error) -> str:
    reason = getattr(err, "reason", None) or err
    return f"API server unreachable or silent ({type(reason).__name__}: {reason})"


def get_run(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, RUNS, name)
    except ApiException as err:
        if err.status == 404:
            return None
        if _retryable(err):
            raise RetryLater(f"reading FoundryRun {namespace}/{name}: HTTP {err.status}") from err
        raise
    except Urllib3Error as err:
        raise RetryLater(f"reading FoundryRun {namespace}/{name}: {_unreachable(err)}") from err


def patch_run_status(api: client.ApiClient, run: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    """Merge `status` into the run's status, only if the run is unchanged since read."""
    meta = run["metadata"]
    body = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": status}
    try:
        return client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
            GROUP, VERSION, meta["namespace"], RUNS, meta["name"], body, _content_type=MERGE_PATCH)
    except ApiException as err:
        if err.status == 409:
            raise Conflict(f"FoundryRun {meta['namespace']}/{meta['name']} changed since read") from err
        if _retryable(err):
            raise RetryLater(f"writing status of FoundryRun {meta['namespace']}/{meta['name']}: HTTP {err.status}") from err
        raise
    except Urllib3Error as err:
        # The write may or may not have been applied: the retry re-reads and recomputes.
        raise RetryLater(f"writing status of FoundryRun {meta['namespace']}/{meta['name']}: "
                         f"{_unreachable(err)}") from err


def list_approvals(api: client.ApiClient, namespace: str, run_name: str) -> list[dict[str, Any]]:
    """The FoundryApprovals that name this run (any decision).

    Selected by the `foundry.dev/run` label that foundry.kube.approvals puts on
    every approval (a namespace-wide list per reconcile would not scale), and
    checked against spec.run, which is what counts.
    """
    try:
        items = client.CustomObjectsApi(api).list_namespaced_custom_object(
            GROUP, VERSION, namespace, APPROVALS, label_selector=f"foundry.dev/run={run_name}")["items"]
    except ApiException as err:
        if _retryable(err):
            raise RetryLater(f"listing FoundryApprovals in {namespace}: HTTP {err.status}") from err
        raise
    except Urllib3Error as err:
        raise RetryLater(f"listing FoundryApprovals in {namespace}: {_unreachable(err)}") from err
    return [a for a in items if (a.get("spec") or {}).get("run") == run_name]
