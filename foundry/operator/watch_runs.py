"""The operator's watch on FoundryRuns: list, then watch, on a thread of its own; every event goes
to the run controller, nothing else (decision 0026).

Not kopf's watch: kopf wrapped each event of each run in its cause machinery on its one event
loop, which was more than a third of the operator's CPU during an intake burst (docs/benchmarks.md).
Here an event costs one JSON decode and a hand-over to the controller on the event loop, whose
queue and workers already decide what to do and when. The watch writes nothing and runs whether
or not this process leads, so a standby's cache stays warm.

Informer rules, kept small:
- the listing comes in pages (LIST_PAGE), so ten thousand runs are never one response;
- the watch resumes from the last resourceVersion seen (bookmarks included) after a timeout or a
  dropped connection, and lists again when the API server says that version is gone (410);
- a run the new listing no longer has was deleted while the watch was away: the controller is
  told so, as a DELETED event.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, Callable

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from foundry.kube.client import bound_requests
from foundry.operator.kubeio import GROUP, RUNS, VERSION

log = logging.getLogger(__name__)

LIST_PAGE = 500
# The API server ends a watch after this long (a fresh one resumes from the last version); the
# client gives up on a silent connection a little later, so a stalled stream is noticed well
# inside a resync period.
SERVER_TIMEOUT = 300
CLIENT_TIMEOUT = 330
CONNECT_TIMEOUT = 5
BACKOFF = (0.2, 1.0, 2.0, 5.0, 8.0)

# (event type, the run's object); type None: the run was in a listing.
Deliver = Callable[[str | None, dict[str, Any]], None]


class Gone(Exception):
    """The resourceVersion to resume from is no longer in the API server's history."""


class RunWatch:
    """List and watch FoundryRuns of `namespace` (None: every namespace), handing each event to
    `deliver` on this watch's thread. `forget(listed)` is told which runs a fresh listing found."""

    def __init__(self, configuration: client.Configuration, namespace: str | None, deliver: Deliver,
                 forget: Callable[[str | None, set[tuple[str, str]]], None]) -> None:
        # A client of its own: the watch holds a connection for minutes at a time, which must not
        # be one of the workers' pooled connections.
        self.api = bound_requests(client.ApiClient(configuration), connect=CONNECT_TIMEOUT, read=60)
        self.objects = client.CustomObjectsApi(self.api)
        self.namespace = namespace
        self.deliver = deliver
        self.forget = forget
        self.listings = 0  # how many times the runs were listed (tests read it)
        self._stop = threading.Event()
        self._response: Any = None
        self._thread = threading.Thread(target=self._run, name=f"foundry-watch-runs-{namespace or 'all'}",
                                        daemon=True)

    def start(self) -> "RunWatch":
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            try:
                response.shutdown()  # unblocks the read the thread is waiting in
            except Exception:  # noqa: BLE001 - already closed
                pass
        self._thread.join(timeout)
        self.api.close()

    # ------------------------------------------------------------ the loop (on its own thread)

    def _run(self) -> None:
        failures = 0
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._list()
                version = self._watch(version)
                failures = 0
            except Gone:
                log.info("FoundryRuns %s: resourceVersion %s is gone, listing again", self._where(), version)
                version = None
            except Exception as err:  # noqa: BLE001 - an outage: wait, then resume or list again
                if self._stop.is_set():
                    return
                wait = BACKOFF[min(failures, len(BACKOFF) - 1)]
                failures += 1
                log.warning("watching FoundryRuns %s failed (again in %.1fs): %s", self._where(), wait, err)
                self._stop.wait(wait)

    def _where(self) -> str:
        return f"in {self.namespace}" if self.namespace else "in every namespace"

    def _call(self, **kwargs: Any) -> Any:
        if self.namespace:
            return self.objects.list_namespaced_custom_object(GROUP, VERSION, self.namespace, RUNS,
                                                              _preload_content=False, **kwargs)
        return self.objects.list_cluster_custom_object(GROUP, VERSION, RUNS, _preload_content=False, **kwargs)

    def _list(self) -> str:
        """Every run, page by page, delivered as listed; returns the listing's resourceVersion."""
        listed: set[tuple[str, str]] = set()
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": LIST_PAGE}
            if token:
                kwargs["_continue"] = token
            try:
                page = json.loads(self._call(**kwargs).data)
            except ApiException as err:
                if err.status == 410 and token:  # the continue token expired: start the listing over
                    listed.clear()
                    token = None
                    continue
                raise
            for item in page.get("items") or ():
                meta = item.get("metadata") or {}
                listed.add((meta.get("namespace"), meta.get("name")))
                self.deliver(None, item)
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                self.listings += 1
                self.forget(self.namespace, listed)
                return str(page["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> str:
        """Events from `version` until the server ends the watch; returns the last version seen."""
        try:
            response = self._call(watch=True, resource_version=version, allow_watch_bookmarks=True,
                                  timeout_seconds=SERVER_TIMEOUT, _request_timeout=(CONNECT_TIMEOUT, CLIENT_TIMEOUT))
        except ApiException as err:
            if err.status == 410:
                raise Gone() from err
            raise
        self._response = response
        try:
            for line in iter_resp_lines(response):  # non-empty lines, one event each
                if self._stop.is_set():
                    break
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone()
                    raise RuntimeError(f"the watch ended with {obj.get('code')}: {obj.get('message')}")
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if kind != "BOOKMARK":
                    self.deliver(kind, obj)
        finally:
            self._response = None
            response.release_conn()
        return version
